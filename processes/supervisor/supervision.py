"""When main.py restarts a child that died, and when it gives up: pure bookkeeping, no processes.

Each child has its own exponential backoff with jitter (`supervisor.backoff` doubling up to
`supervisor.backoff_max`, each delay drawn from its upper half), so a child that crashes at once
after every start is retried ever more slowly instead of in a tight loop, and two children that die
together do not come back in lockstep. `supervisor.max_restarts` bounds the restarts of a child in
a row: past it the stack stops, as it always does with `supervisor.restart = false`. A child that
has then run for STABLE_AFTER seconds counts as healthy again (its count and backoff start afresh),
so a long-lived stack is not stopped by rare crashes days apart.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from processes.shared import config as config_mod
from reactor import Backoff

STABLE_AFTER = 60.0   # seconds a restarted child must run before its restart count resets


class RestartPolicy:
    """Per-child restart schedule: died() -> delay or None (give up); due() -> who restarts now."""

    def __init__(self, cfg: config_mod.Supervisor, order: tuple[str, ...],
                 rng: Callable[[], float] = random.random) -> None:
        self.cfg = cfg
        self.order = order                        # restart in start-up order when due together
        self.rng = rng
        self.restarts: dict[str, int] = {}        # in a row, per child
        self.total = 0                            # over the whole run
        self._backoff: dict[str, Backoff] = {}
        self._due: dict[str, float] = {}          # child -> monotonic time of its restart
        self._started: dict[str, float] = {}      # child -> when it was last restarted

    def died(self, name: str, now: float) -> float | None:
        """Schedule the restart of `name`; its delay in seconds, or None to stop the stack."""
        if not self.cfg.restart:
            return None
        if now - self._started.get(name, now) >= STABLE_AFTER:
            self.restarts[name] = 0
            self._backoff.pop(name, None)
        count = self.restarts.get(name, 0)
        if self.cfg.max_restarts and count >= self.cfg.max_restarts:
            return None
        backoff = self._backoff.get(name)
        if backoff is None:
            backoff = self._backoff[name] = Backoff(self.cfg.backoff, self.cfg.backoff_max,
                                                    rng=self.rng)
        delay = backoff.next()
        self.restarts[name] = count + 1
        self._due[name] = now + delay
        return delay

    def next_due(self) -> float | None:
        """The earliest pending restart time, or None."""
        return min(self._due.values(), default=None)

    def pending(self) -> list[str]:
        return sorted(self._due, key=self.order.index)

    def due(self, now: float) -> list[str]:
        """Children whose restart time has come (removed from the schedule), in start-up order."""
        names = [n for n in self.pending() if self._due[n] <= now]
        for name in names:
            del self._due[name]
            self._started[name] = now
            self.total += 1
        return names
