"""Latency histograms and counters, recorded cheaply on the hot path and published off it.

Recording: `Recorder.record(ns)` increments the sample's HdrHistogram bucket in a native counts
array (ext.LatencyHistogram): one C call, where HdrHistogram's own record_value is Python, and
no raw samples are kept, so there is nothing to fold on a timer (folding would put cold-cache
work on the tick path).
Publishing: every `interval` the process writes one JSON snapshot file with its counters and
each histogram's non-empty buckets, varint-encoded. The file is written in place (one pwrite(2)
into a file kept open: no create, rename or block allocation per publish, work that sits on the
core the ticks need) and msgspec-encoded; it ends with a crc32 of the text before it, so a
reader (read_snapshot) that catches it mid-write sees the mismatch and reads again, and
shorter text is padded with spaces over the longer text it replaces (still one JSON document).
Readers (main.py's exit summary, the monitor, the benchmarks) rebuild HdrHistograms from them and
take percentiles there: percentile extraction walks the whole histogram, too slow for a process
that must answer the next tick.

Time base: CLOCK_MONOTONIC ns (time.monotonic_ns()), comparable across processes on one host.
"""

from __future__ import annotations

import base64
import os
import time
import zlib
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from hdrh.histogram import HdrHistogram

from ext import LatencyHistogram, hist_py

SIGNIFICANT_DIGITS = 3
HIGHEST_NS = 60_000_000_000      # 60 s: a latency beyond that is a clock or feed bug, clamped
FOLD_INTERVAL = 0.25             # seconds between pulls of latencies buffered elsewhere (the
                                 # OrderBook's native decoder keeps its own) into the recorders
PERCENTILES = (50.0, 99.0, 99.9)
CHECK_KEY = b',"crc32":"'      # a snapshot file ends with ,"crc32":"<8 hex digits>"}
CHECK_LEN = len(CHECK_KEY) + 10
READ_ATTEMPTS = 5                # a torn read (the writer was mid-pwrite) is retried...
READ_RETRY_S = 0.002             # ...this far apart


class Recorder:
    """Latency samples of one hop, in an ext.LatencyHistogram (HdrHistogram's buckets).

    `record` is the histogram's own bound method: one C call, nothing to fold later.
    """

    __slots__ = ("name", "hist", "record")

    def __init__(self, name: str) -> None:
        self.name = name
        self.hist = LatencyHistogram()
        self.record = self.hist.record

    @property
    def count(self) -> int:
        return int(self.hist.count)

    @property
    def max(self) -> int:
        return int(self.hist.max)

    def extend(self, values: np.ndarray) -> None:
        """Add values recorded elsewhere (e.g. by a C decoder's own buffer)."""
        if len(values):
            self.hist.record_many(np.ascontiguousarray(values, dtype=np.int64))

    def snapshot(self, reset_window: bool = True) -> dict[str, Any]:
        """count, max, and the buckets since start ("pairs") and since the last snapshot
        ("window"), each encoded (see encode_pairs): a JSON list of thousands of pairs is
        slow to publish, on the same core as the ticks."""
        hist = self.hist
        if reset_window:
            total, window = hist.encode_both()
            return {"count": self.count, "max": self.max, "pairs": encode_pairs(total),
                    "window": encode_pairs(window)}
        return {"count": self.count, "max": self.max, "pairs": encode_pairs(hist.encode()),
                "window": ""}


def encode_pairs(blob: bytes) -> str:
    """A histogram's bytes (LatencyHistogram.encode) as JSON-safe text."""
    return base64.b64encode(blob).decode("ascii")


def decode_pairs(pairs: str | Iterable[tuple[int, int] | list[int]]) -> list[tuple[int, int]]:
    """[(bucket value, count)] from a snapshot's "pairs"/"window" (encoded text, or a list)."""
    if isinstance(pairs, str):
        return hist_py.decode(base64.b64decode(pairs)) if pairs else []
    return [(int(v), int(c)) for v, c in pairs]


# --- reading side ------------------------------------------------------------------------------

def histogram(pairs: str | Iterable[tuple[int, int] | list[int]]) -> HdrHistogram:
    """An HdrHistogram from published (bucket, count) pairs (encoded text or a list)."""
    hist = HdrHistogram(1, HIGHEST_NS, SIGNIFICANT_DIGITS)
    for value, count in decode_pairs(pairs):
        hist.record_value(int(value), int(count))
    return hist


def summarize(pairs: str | Iterable[tuple[int, int] | list[int]],
              exact_max: int | None = None) -> dict[str, float]:
    """count, p50, p99, p99.9 and max in ns (max exact when the publisher knows it)."""
    hist = histogram(pairs)
    out: dict[str, float] = {"count": hist.get_total_count()}
    if not out["count"]:
        return out
    values = hist.get_percentile_to_value_dict(list(PERCENTILES))
    top = exact_max if exact_max else hist.get_max_value()
    for p in PERCENTILES:
        # HdrHistogram reports a bucket's top; never above the largest sample recorded.
        out[f"p{p:g}"] = min(values[p], top)
    out["max"] = top
    return out


def summarize_merged(hists: list[dict[str, Any]]) -> dict[str, float]:
    """summarize() of several published histograms ({"pairs", "max"} each: one hop over several
    runs or processes) merged into one."""
    total = histogram(hists[0]["pairs"])
    for h in hists[1:]:
        total.add(histogram(h["pairs"]))
    top = max(h["max"] for h in hists)
    values = total.get_percentile_to_value_dict(list(PERCENTILES))
    return {"count": total.get_total_count(),
            **{f"p{p:g}": min(values[p], top) for p in PERCENTILES}, "max": top}


def read_snapshot(path: str | Path) -> dict[str, Any] | None:
    """One process's latest snapshot, or None if it is missing or unreadable (a snapshot caught
    mid-write, which its checksum shows, is read again a few times first)."""
    for attempt in range(READ_ATTEMPTS):
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError:
            return None
        snap = parse_snapshot(raw)
        if snap is not None:
            return snap
        if attempt + 1 < READ_ATTEMPTS:
            time.sleep(READ_RETRY_S)
    return None


def parse_snapshot(raw: bytes) -> dict[str, Any] | None:
    """A snapshot file's text -> the snapshot; None if it is torn (checksum) or not JSON. Text
    without the checksum (written by hand or an older publisher) is taken as plain JSON."""
    text = raw.rstrip()
    if text[-CHECK_LEN:-10] == CHECK_KEY and text.endswith(b'"}'):
        try:
            crc = int(text[-10:-2], 16)
        except ValueError:
            return None
        if zlib.crc32(text[:-CHECK_LEN]) != crc:
            return None
    try:
        snap = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return None
    if not isinstance(snap, dict):
        return None
    snap.pop("crc32", None)
    return snap


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
        self._fd = -1
        self._ino: tuple[int, int] | None = None
        self._written = 0      # bytes of the file's current text (with its padding)
        self.stats = stats
        self.recorders = recorders
        self.interval = interval
        self.started_ns = time.monotonic_ns()
        self.started_at = time.time()
        self._prev: tuple[int, dict[str, Any]] | None = None
        self.rates: dict[str, float] = {}
        self.failing = False   # the last publish raised OSError
        self.path.parent.mkdir(parents=True, exist_ok=True)

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
        body = _ENCODER.encode(snap)[:-1]   # without its closing brace: the checksum follows
        data = body + CHECK_KEY + b'%08x"}' % zlib.crc32(body)
        fd = self._open()
        if len(data) < self._written:   # spaces over the rest of the longer text before it
            data += b" " * (self._written - len(data))
        if os.pwrite(fd, data, 0) != len(data):
            raise OSError(f"short write of {self.path}")
        self._written = len(data)
        return snap

    def _open(self) -> int:
        """The snapshot file's descriptor, (re)opened when the file at the path is not the one
        we hold (never made yet, removed, or replaced along with its directory)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        if st is not None and self._fd >= 0 and (st.st_dev, st.st_ino) == self._ino:
            return self._fd
        self.close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        st = os.fstat(fd)
        self._fd, self._ino, self._written = fd, (st.st_dev, st.st_ino), st.st_size
        return fd

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise NotImplementedError(f"not JSON-able: {type(value).__name__}")


_ENCODER = msgspec.json.Encoder(enc_hook=_jsonable)


def stats_dir(log_dir: str, configured: str) -> Path:
    """Where snapshots go: the configured directory, else <log dir>/stats."""
    return Path(configured) if configured else Path(log_dir or ".") / "stats"
