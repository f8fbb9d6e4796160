"""Per-call cost of the shared price book vs the obvious baseline (pytest-benchmark).

Baseline: a numpy float64 array in SharedMemory guarded by a multiprocessing.Lock, which
is what the seqlock replaces. Each round runs INNER calls in a Python loop so the timer's
own overhead does not dominate; ``extra_info`` holds per-call nanoseconds (loop overhead
included; the ``read_call_floor`` row is the bare cost of a Python loop + C call).
Run:  python -m pytest bench/bench_shm.py --benchmark-only
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
from multiprocessing.shared_memory import SharedMemory
from types import ModuleType
from uuid import uuid4

import numpy as np
import pytest

from ext import pricebook_py

try:
    cpb: ModuleType | None = importlib.import_module("ext._pricebook")
except ImportError:
    cpb = None

INNER = 1000
NSYM = 64
SLOT = 7
IMPLS = {"cython": cpb, "python": pricebook_py}
ROUNDS = {"cython": 300, "python": 30, "numpy": 300, "floor": 300}


def _run(benchmark, fn, kind: str) -> None:
    benchmark.extra_info["calls_per_round"] = INNER
    benchmark.pedantic(fn, rounds=ROUNDS[kind], iterations=1, warmup_rounds=3)
    meta = getattr(benchmark, "stats", None)
    if meta:  # None under --benchmark-disable
        s = meta.stats
        benchmark.extra_info["ns_per_call_min"] = round(s.min / INNER * 1e9, 1)
        benchmark.extra_info["ns_per_call_median"] = round(s.median / INNER * 1e9, 1)


@pytest.fixture(params=["cython", "python"])
def book_bench(request):
    mod = IMPLS[request.param]
    if mod is None:
        pytest.skip("ext._pricebook is not built")
    name = f"tsbench_{uuid4().hex[:12]}"
    book = mod.SharedPriceBook([f"S{i}" for i in range(NSYM)], name=name)
    try:
        book.write(SLOT, 1.0, 1, 1)
        yield request.param, book
    finally:
        book.close()
        book.unlink()


@pytest.fixture
def book_numpy_baseline():
    shm = SharedMemory(name=f"tsbench_{uuid4().hex[:12]}", create=True, size=NSYM * 2 * 8)
    arr = np.ndarray((NSYM * 2,), dtype=np.float64, buffer=shm.buf)
    lock = mp.get_context("spawn").Lock()
    try:
        yield arr, lock
    finally:
        del arr  # drop the buffer export before closing the mapping
        shm.close()
        shm.unlink()


# --------------------------------------------------------------------------- write
@pytest.mark.benchmark(group="shm-write")
def test_write(benchmark, book_bench):
    """Seqlock write with the multiprocessing Lock taken in C (sem_trywait/sem_post)."""
    kind, book = book_bench
    write, rng = book.write, range(INNER)

    def loop():
        for _ in rng:
            write(SLOT, 101.25, 1_700_000_000_000, 42)

    _run(benchmark, loop, kind)


@pytest.mark.benchmark(group="shm-write")
def test_update_publish(benchmark, book_bench):
    """update(): dict lookup + write + publish (no sleepers, so no syscalls)."""
    kind, book = book_bench
    update, rng = book.update, range(INNER)

    def loop():
        for _ in rng:
            update("S7", 101.25, 1_700_000_000_000, 42)

    _run(benchmark, loop, kind)


@pytest.mark.benchmark(group="shm-write")
def test_write_numpy_lock_baseline(benchmark, book_numpy_baseline):
    """Baseline: `with lock: arr[k] = price; arr[k+1] = ts` (ts precomputed: favours it)."""
    arr, lock = book_numpy_baseline
    k, ts, rng = 2 * SLOT, 1.7e18, range(INNER)

    def loop():
        for _ in rng:
            with lock:
                arr[k] = 101.25
                arr[k + 1] = ts

    _run(benchmark, loop, "numpy")


# --------------------------------------------------------------------------- read
@pytest.mark.benchmark(group="shm-read")
def test_read_slot(benchmark, book_bench):
    """Consistent seqlock read of one slot; readers take no lock."""
    kind, book = book_bench
    read, rng = book.read_slot, range(INNER)

    def loop():
        for _ in rng:
            read(SLOT)

    _run(benchmark, loop, kind)


@pytest.mark.benchmark(group="shm-read")
def test_read_numpy_lock_baseline(benchmark, book_numpy_baseline):
    """Baseline: readers of a plain array must take the lock to see price+ts consistently."""
    arr, lock = book_numpy_baseline
    k, rng = 2 * SLOT, range(INNER)

    def loop():
        for _ in rng:
            with lock:
                arr[k]
                arr[k + 1]

    _run(benchmark, loop, "numpy")


@pytest.mark.benchmark(group="shm-read")
def test_poll_idle(benchmark, book_bench):
    """poll() with nothing published: one acquire load, no scan."""
    kind, book = book_bench
    reader = book.reader()
    reader.poll()
    poll, rng = reader.poll, range(INNER)

    def loop():
        for _ in rng:
            poll()

    try:
        _run(benchmark, loop, kind)
    finally:
        reader.close()


@pytest.mark.benchmark(group="shm-read")
def test_read_call_floor(benchmark):
    """Python loop + one 1-argument C call: the floor for read_slot(i)."""
    f, rng = abs, range(INNER)

    def loop():
        for _ in rng:
            f(SLOT)

    _run(benchmark, loop, "floor")


@pytest.mark.timeout(120)
@pytest.mark.benchmark(group="torn-reads")
def test_torn_reads(benchmark) -> None:
    """Cross-process stress: one writer process rewrites 4 slots flat out, two reader processes
    read every slot and check that all fields come from the same write (a torn read would mix
    two). The same harness fails at once against a reader that skips the sequence check (see
    tests/test_pricebook.py); here it runs long enough to count reads for the report."""
    if cpb is None:
        pytest.skip("ext._pricebook is not built")
    from tests.ext.test_pricebook import _run_stress

    duration = 1.0 if benchmark.disabled else 10.0
    out: dict = {}

    def run() -> None:
        # Goals no reader meets: the run lasts the whole deadline, `duration` seconds.
        wrote, readers = _run_stress("cython", f"tsbench_{uuid4().hex[:12]}", nreaders=2,
                                     goal=(1 << 62, 1 << 62), deadline=duration)
        out.update(writes=wrote, reads=sum(r[1] for r in readers),
                   torn=sum(r[2] for r in readers), non_monotonic=sum(r[3] for r in readers))

    benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(out, seconds=duration)
    assert out["torn"] == 0 and out["non_monotonic"] == 0 and out["reads"] > 0
