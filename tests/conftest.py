"""Shared fixtures."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

from tests.net import Recorder, running_app

# The start-up probe (http/startup.py) connects once to each upstream; tests that count an
# upstream's connections would see it. Off here; tests/test_serve_startup.py turns it on.
os.environ["CORSPROXY_PROBE_TIMEOUT"] = "0"


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    """A recording upstream on loopback; its base URL is `recorder.url`."""
    upstream = Recorder()
    async with running_app(upstream.app()) as url:
        upstream.url = url
        yield upstream
