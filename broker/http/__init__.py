"""The HTTP API v1: thin aiohttp handlers over ``broker.service.Broker``."""
