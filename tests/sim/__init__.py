"""Deterministic simulation tests of the dledger consensus core."""
