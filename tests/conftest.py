"""Fixtures every test module shares."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from stackutil import Child


@pytest.fixture
def children() -> Iterator[list[Child]]:
    """Stack processes a test starts (see stackutil.start); all stopped at teardown, newest
    first, whatever the outcome."""
    started: list[Child] = []
    yield started
    for child in reversed(started):
        child.stop()
