"""Fixtures shared by the process-based benchmarks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.harness import Procs


@pytest.fixture
def procs() -> Iterator[Procs]:
    """Processes, sockets and segments of one benchmark, all undone even if it fails."""
    group = Procs()
    try:
        yield group
    finally:
        group.close()
