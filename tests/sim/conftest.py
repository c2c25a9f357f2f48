"""Shared setup of the simulation tests."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(autouse=True)
def _quiet_core_logs(caplog: pytest.LogCaptureFixture) -> None:
    """The core logs every role change and step-down; thousands per run are noise
    here (a failing seed prints its event trace, which says the same in order)."""
    caplog.set_level(logging.CRITICAL, logger="dledger")
