"""Reconnect delays: exponential growth with jitter."""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff"]


class Backoff:
    """Delay before the next reconnect attempt.

    The base delay starts at ``initial`` and multiplies by ``factor`` per attempt up to
    ``maximum``; each returned delay is drawn from ``[base * (1 - jitter), base]`` so that
    many clients losing the same server do not come back in lockstep.
    """

    __slots__ = ("initial", "maximum", "factor", "jitter", "attempts", "_rng", "_base")

    def __init__(
        self,
        initial: float = 0.05,
        maximum: float = 2.0,
        factor: float = 2.0,
        jitter: float = 0.5,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if initial <= 0 or maximum < initial:
            raise ValueError("need 0 < initial <= maximum")
        if factor < 1:
            raise ValueError("factor must be >= 1")
        if not 0 <= jitter <= 1:
            raise ValueError("jitter must be in [0, 1]")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.jitter = jitter
        self.attempts = 0
        self._rng = rng
        self._base = initial

    def next(self) -> float:
        base = self._base
        self._base = min(base * self.factor, self.maximum)
        self.attempts += 1
        return base * (1.0 - self.jitter * self._rng())

    def reset(self) -> None:
        self._base = self.initial
        self.attempts = 0
