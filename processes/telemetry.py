"""Latency histograms and counters, recorded on the hot path for ~0.1 us and published off it.

Recording: `Recorder.record(ns)` stores one int into a preallocated int64 array; nothing else runs
per event. Folding: a timer every FOLD_INTERVAL moves the raw values into cumulative counts keyed
by their HdrHistogram bucket (vectorised with numpy: quantise, then unique), so the per-value
Python cost of `HdrHistogram.record_value` (~1 us) is paid per distinct bucket, not per event.
Publishing: every `interval` the process writes one JSON snapshot file (tmp + rename, so readers
never see half a file) with its counters and each histogram's (bucket, count) pairs. Readers
(main.py's exit summary, the monitor, the benchmarks) rebuild HdrHistograms from the pairs and take
percentiles there: percentile extraction costs ~0.7 ms per histogram, too much for a process that
must answer the next tick.

Time base: CLOCK_MONOTONIC ns (time.monotonic_ns()), comparable across processes on one host.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from hdrh.histogram import HdrHistogram

SIGNIFICANT_DIGITS = 3
HIGHEST_NS = 60_000_000_000      # 60 s: a latency beyond that is a clock or feed bug, clamped
SUB_BUCKET_BITS = 11             # 3 significant digits -> 2048 sub-buckets, as HdrHistogram uses
RAW_CAPACITY = 1 << 16           # raw values held between folds; a full buffer folds at once
FOLD_INTERVAL = 0.25             # seconds
PERCENTILES = (50.0, 99.0, 99.9)


def quantize(values: np.ndarray) -> np.ndarray:
    """Each value's HdrHistogram bucket floor (3 significant digits), vectorised.

    A value with bit length b sits in a bucket of width 2**(b - 11) in a 3-digit HdrHistogram
    (2048 sub-buckets, the upper half of which is used per power of two), so clearing the low
    b - 11 bits maps it to the value HdrHistogram itself would report for that bucket.
    """
    v = np.clip(values.astype(np.int64, copy=False), 1, HIGHEST_NS)
    bits = np.floor(np.log2(v.astype(np.float64))).astype(np.int64) + 1
    shift = np.maximum(bits - SUB_BUCKET_BITS, 0)
    return (v >> shift) << shift


class Recorder:
    """Latency samples of one hop: raw ring on the hot path, bucket counts off it."""

    __slots__ = ("name", "_buf", "_n", "_cap", "counts", "window", "count", "max")

    def __init__(self, name: str, capacity: int = RAW_CAPACITY) -> None:
        self.name = name
        self._buf = np.zeros(capacity, dtype=np.int64)
        self._n = 0
        self._cap = capacity
        self.counts: dict[int, int] = {}   # since start
        self.window: dict[int, int] = {}   # since the last published snapshot
        self.count = 0
        self.max = 0

    def record(self, ns: int) -> None:
        """Hot path: one store (and, once per RAW_CAPACITY events, a fold)."""
        n = self._n
        self._buf[n] = ns
        n += 1
        self._n = n
        if n == self._cap:
            self.fold()

    def extend(self, values: np.ndarray) -> None:
        """Add values recorded elsewhere (e.g. by a C decoder's own buffer)."""
        if len(values):
            self._fold_array(np.asarray(values, dtype=np.int64))

    def fold(self) -> None:
        n = self._n
        if n:
            self._n = 0
            self._fold_array(self._buf[:n])

    def _fold_array(self, values: np.ndarray) -> None:
        buckets, counts = np.unique(quantize(values), return_counts=True)
        total, window = self.counts, self.window
        for b, c in zip(buckets.tolist(), counts.tolist()):
            total[b] = total.get(b, 0) + c
            window[b] = window.get(b, 0) + c
        self.count += len(values)
        top = int(values.max())
        if top > self.max:
            self.max = top

    def snapshot(self, reset_window: bool = True) -> dict[str, Any]:
        self.fold()
        out = {"count": self.count, "max": self.max,
               "pairs": sorted(self.counts.items()), "window": sorted(self.window.items())}
        if reset_window:
            self.window = {}
        return out


# --- reading side ------------------------------------------------------------------------------

def histogram(pairs: Iterable[tuple[int, int] | list[int]]) -> HdrHistogram:
    """An HdrHistogram from published (bucket, count) pairs."""
    hist = HdrHistogram(1, HIGHEST_NS, SIGNIFICANT_DIGITS)
    for value, count in pairs:
        hist.record_value(int(value), int(count))
    return hist


def summarize(pairs: Iterable[tuple[int, int] | list[int]],
              exact_max: int | None = None) -> dict[str, float]:
    """count, p50, p99, p99.9 and max in ns (max exact when the publisher knows it)."""
    hist = histogram(pairs)
    out: dict[str, float] = {"count": hist.get_total_count()}
    if not out["count"]:
        return out
    values = hist.get_percentile_to_value_dict(list(PERCENTILES))
    for p in PERCENTILES:
        out[f"p{p:g}"] = values[p]
    out["max"] = exact_max if exact_max else hist.get_max_value()
    return out


def read_snapshot(path: str | Path) -> dict[str, Any] | None:
    """One process's latest snapshot, or None if it is missing or being replaced."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def read_all(directory: str | Path) -> dict[str, dict[str, Any]]:
    """process name -> snapshot, for every snapshot file in `directory`."""
    out: dict[str, dict[str, Any]] = {}
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return out
    for name in names:
        if name.endswith(".json"):
            snap = read_snapshot(Path(directory) / name)
            if snap is not None:
                out[snap.get("process", name[:-5])] = snap
    return out


# --- publishing side ---------------------------------------------------------------------------

class Publisher:
    """Writes `<directory>/<process>.json` every `interval` and once more at close.

    Counters come from `stats()` (cumulative numbers, plus anything JSON-able the dashboard wants);
    rates are derived here from consecutive snapshots, so services keep no rate state.
    """

    def __init__(self, process: str, directory: str | Path, stats: Callable[[], dict[str, Any]],
                 recorders: Callable[[], Iterable[Recorder]], interval: float = 1.0) -> None:
        self.process = process
        self.path = Path(directory) / f"{process}.json"
        self._tmp = self.path.with_name(f".{process}.{os.getpid()}.tmp")
        self.stats = stats
        self.recorders = recorders
        self.interval = interval
        self.started_ns = time.monotonic_ns()
        self.started_at = time.time()
        self._prev: tuple[int, dict[str, Any]] | None = None
        self.rates: dict[str, float] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def fold(self) -> None:
        for rec in self.recorders():
            rec.fold()

    def snapshot(self, final: bool = False) -> dict[str, Any]:
        now = time.monotonic_ns()
        counters = self.stats()
        if self._prev is not None:
            t, prev = self._prev
            dt = max((now - t) / 1e9, 1e-9)
            self.rates = {k: (v - prev[k]) / dt for k, v in counters.items()
                          if isinstance(v, int) and not isinstance(v, bool)
                          and isinstance(prev.get(k), int)}
        self._prev = (now, counters)
        return {"process": self.process, "pid": os.getpid(), "time": time.time(),
                "mono_ns": now, "started_ns": self.started_ns, "started_at": self.started_at,
                "uptime_s": (now - self.started_ns) / 1e9, "final": final,
                "counters": counters, "rates": self.rates,
                "latency": {rec.name: rec.snapshot() for rec in self.recorders()}}

    def publish(self, final: bool = False) -> dict[str, Any]:
        snap = self.snapshot(final)
        with open(self._tmp, "w", encoding="utf-8") as fh:
            json.dump(snap, fh, separators=(",", ":"), default=_jsonable)
        os.replace(self._tmp, self.path)
        return snap


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def stats_dir(log_dir: str, configured: str) -> Path:
    """Where snapshots go: the configured directory, else <log dir>/stats."""
    return Path(configured) if configured else Path(log_dir or ".") / "stats"
