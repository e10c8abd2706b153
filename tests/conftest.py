"""Shared fixtures."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.net import Recorder, running_app


@pytest.fixture
async def recorder() -> AsyncIterator[Recorder]:
    """A recording upstream on loopback; its base URL is `recorder.url`."""
    upstream = Recorder()
    async with running_app(upstream.app()) as url:
        upstream.url = url
        yield upstream
