"""Fixtures every test module shares."""

from __future__ import annotations

import uuid
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


@pytest.fixture(autouse=True)
def order_session(monkeypatch: pytest.MonkeyPatch) -> str:
    """One order-log session per test, inherited by every process it starts: the test is the
    supervisor (as main.py, which hands its children TRADESTACK_SESSION), so an OrderManager it
    restarts continues the session. Tests of new sessions delete the variable."""
    session = f"test-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TRADESTACK_SESSION", session)
    return session
