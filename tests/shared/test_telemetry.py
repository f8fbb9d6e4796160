"""Telemetry: HdrHistogram-exact bucketing, recording, snapshots, the exit summary, placement."""

from __future__ import annotations

import json
import logging
import os
import threading

import numpy as np
import pytest
from hdrh.histogram import HdrHistogram

from ext import hist_py
from processes.shared import config, placement, runtime, telemetry
from processes.supervisor import summary

try:
    import ext._hist as _hist
except ImportError:  # not built: the twin alone
    _hist = None

pytestmark = pytest.mark.timeout(60)


IMPLS = [pytest.param(hist_py, id="python")]
if _hist is not None:
    IMPLS.insert(0, pytest.param(_hist, id="cython"))


@pytest.mark.parametrize("impl", IMPLS)
def test_buckets_match_hdrhistogram(impl):
    """Every sample lands in the bucket HdrHistogram(1, 60 s, 3 digits) would report."""
    hist = HdrHistogram(1, telemetry.HIGHEST_NS, telemetry.SIGNIFICANT_DIGITS)
    rng = np.random.default_rng(3)
    powers = 2 ** np.arange(1, 36, dtype=np.int64)
    values = np.concatenate([rng.integers(1, telemetry.HIGHEST_NS, 5000), powers, powers - 1,
                             powers + 1, np.arange(1, 5000)])
    for v in values.tolist():
        assert impl.bucket_value(v) == hist.get_lowest_equivalent_value(v), v
    assert impl.bucket_value(0) == 1 and impl.bucket_value(-5) == 1
    assert impl.bucket_value(10**15) == hist.get_lowest_equivalent_value(telemetry.HIGHEST_NS)


@pytest.mark.parametrize("impl", IMPLS)
def test_histogram_counts_windows_and_twin_agree(impl):
    rng = np.random.default_rng(9)
    values = (rng.lognormal(10.5, 0.8, 5000).astype(np.int64) + 1).tolist()
    h, twin = impl.LatencyHistogram(), hist_py.LatencyHistogram()
    for v in values[:3000]:
        h.record(v)
        twin.record(v)
    assert h.window() == twin.window() and sum(c for _, c in h.pairs()) == 3000
    h.record_many(np.array(values[3000:], dtype=np.int64))
    twin.record_many(values[3000:])
    win = h.window()
    assert sum(c for _, c in win) == 2000 and win == twin.window()
    assert h.window() == []                      # nothing new since
    assert h.pairs() == twin.pairs() and h.count == twin.count == 5000
    assert h.max == twin.max == max(values)


@pytest.mark.parametrize("impl", IMPLS)
def test_encode_both_is_encode_then_the_window(impl):
    """A snapshot's two encodings in one call: the same bytes as encode() and then
    encode(window=True), window reset included."""
    rng = np.random.default_rng(4)
    h, ref = impl.LatencyHistogram(), hist_py.LatencyHistogram()
    assert h.encode_both() == (b"", b"")
    for n in (3000, 0, 700):
        for v in (rng.lognormal(11, 1.5, n).astype(np.int64) + 1).tolist():
            h.record(v)
            ref.record(v)
        total, window = h.encode_both()
        assert (total, window) == (ref.encode(), ref.encode(True))
        assert sum(c for _, c in hist_py.decode(window)) == n


def test_recorder_percentiles_equal_a_direct_hdrhistogram():
    rng = np.random.default_rng(5)
    values = rng.lognormal(10.5, 0.6, 20_000).astype(np.int64) + 1
    rec = telemetry.Recorder("hop")
    direct = HdrHistogram(1, telemetry.HIGHEST_NS, telemetry.SIGNIFICANT_DIGITS)
    for v in values.tolist():
        rec.record(v)
        direct.record_value(v)
    snap = rec.snapshot()
    assert snap["count"] == len(values) and snap["max"] == int(values.max())
    stats = telemetry.summarize(snap["pairs"], snap["max"])
    for p in telemetry.PERCENTILES:
        assert stats[f"p{p:g}"] == direct.get_value_at_percentile(p)
    # The window restarts after each snapshot; the cumulative pairs do not.
    rec.record(123)
    snap2 = rec.snapshot()
    assert telemetry.decode_pairs(snap2["window"]) == [(123, 1)]
    assert snap2["count"] == len(values) + 1


def test_recorder_extend_and_empty():
    rec = telemetry.Recorder("x")
    assert rec.snapshot() == {"count": 0, "max": 0, "pairs": "", "window": ""}
    rec.extend(np.array([], dtype=np.int64))
    rec.extend(np.array([5, 5, 7000], dtype=np.int64))
    snap = rec.snapshot()
    assert snap["count"] == 3 and dict(telemetry.decode_pairs(snap["pairs"])) == {5: 2, 7000: 1}
    assert telemetry.summarize([])["count"] == 0


def test_publisher_writes_atomic_snapshots_with_rates(tmp_path):
    counters = {"ticks": 0, "symbols": ["A"]}
    rec = telemetry.Recorder("tick_to_x")
    pub = telemetry.Publisher("proc", tmp_path / "stats", lambda: dict(counters), lambda: (rec,))
    pub.publish()
    counters["ticks"] = 500
    rec.record(1500)
    snap = pub.publish(final=True)
    on_disk = json.loads((tmp_path / "stats" / "proc.json").read_text())
    assert on_disk["final"] and on_disk["pid"] == os.getpid()
    assert on_disk["counters"] == {"ticks": 500, "symbols": ["A"]}
    assert on_disk["rates"]["ticks"] > 0 and "symbols" not in on_disk["rates"]
    assert on_disk["latency"]["tick_to_x"]["count"] == 1 == snap["latency"]["tick_to_x"]["count"]
    assert [p.name for p in (tmp_path / "stats").iterdir()] == ["proc.json"]  # no tmp left
    assert telemetry.read_all(tmp_path / "stats")["proc"]["counters"]["ticks"] == 500
    (tmp_path / "stats" / "broken.json").write_text("{")
    assert set(telemetry.read_all(tmp_path / "stats")) == {"proc"}
    pub.close()


def test_snapshots_are_written_in_place_and_a_torn_one_is_never_read(tmp_path):
    """One file, rewritten in place (same inode, shorter text padded), read by a thread while
    another rewrites it as fast as it can: every snapshot read is one whole publish (its
    counters agree with each other), never a mix of two."""
    state = {"n": 0}
    pub = telemetry.Publisher("proc", tmp_path, lambda: {"a": state["n"], "pad": "x" * (
        state["n"] % 3000), "b": state["n"]}, lambda: ())
    path = tmp_path / "proc.json"
    pub.publish()
    inode = path.stat().st_ino
    state["n"] = 2999
    pub.publish()
    state["n"] = 3000                        # much shorter text over the long one
    pub.publish()
    assert json.loads(path.read_text())["counters"]["a"] == 3000   # still one JSON document
    assert path.stat().st_ino == inode and [p.name for p in tmp_path.iterdir()] == ["proc.json"]
    raw = path.read_bytes()
    cut = raw.index(b'"b":')
    torn = raw[:cut] + raw[cut:].replace(b'"b":3000', b'"b":3001')
    assert telemetry.parse_snapshot(torn) is None            # the checksum tells
    assert telemetry.parse_snapshot(raw)["counters"]["b"] == 3000
    stop = threading.Event()

    def writer() -> None:
        while not stop.is_set():
            state["n"] += 1
            pub.publish()
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        reads = [telemetry.read_snapshot(path) for _ in range(2000)]
    finally:
        stop.set()
        thread.join(10)
    pub.close()
    whole = [r for r in reads if r is not None]
    assert len(whole) > 1000
    assert all(r["counters"]["a"] == r["counters"]["b"] for r in whole)
    assert all(len(r["counters"]["pad"]) == r["counters"]["a"] % 3000 for r in whole)


def test_summary_renders_flow_latency_and_problems():
    rec = telemetry.Recorder("tick_to_decision")
    for v in (20_000, 25_000, 30_000, 90_000):
        rec.record(v)
    snaps = {
        "strategy": {"uptime_s": 2.0, "counters": {"ticks": 4, "decisions": 4, "orders": 1,
                                                   "rejects": 0, "unsent": 0, "reconnects": 1},
                     "latency": {"tick_to_decision": rec.snapshot()}},
        "orderbook": {"uptime_s": 2.0, "counters": {"ticks": 4, "malformed": 2},
                      "latency": {}},
    }
    built = summary.build(snaps)
    row = next(r for r in built["latency"] if r["name"] == "tick_to_decision")
    # Percentiles are bucket values (3 significant digits); max is the exact recorded one.
    assert row["count"] == 4 and abs(row["p50"] - 25_000) <= 25 and row["max"] == 90_000
    assert {"label": "Strategy ticks read from shm", "count": 4, "per_s": 2.0}.items() <= \
        next(r for r in built["flow"] if r["label"] == "Strategy ticks read from shm").items()
    assert built["problems"]["orderbook.malformed"] == 2
    text = summary.render(built)
    assert "tick -> decision (Strategy)" in text and "25.0" in text and "90.0" in text
    assert "(no snapshots found)" in summary.render(summary.build({}))


def test_layouts_and_cpu_lists():
    cfg = config.load(None, placement.layout_overrides("spread"))
    assert cfg.strategy.cpus == [1] and cfg.gateway.cpus == [0] and cfg.strategy.idle == "block"
    cfg = config.load(None, {**placement.layout_overrides("strategy-spin"), "strategy.cpus": "0,1"})
    assert cfg.strategy.idle == "spin" and cfg.strategy.cpus == [0, 1]
    with pytest.raises(ValueError, match="layout .nope."):
        placement.layout_overrides("nope")
    with pytest.raises(config.ConfigError, match="strategy.cpus"):
        config.load(None, {"strategy.cpus": "x"})
    with pytest.raises(config.ConfigError, match="gateway.cpus"):
        config.load(None, {"gateway.cpus": [-1]})
    with pytest.raises(config.ConfigError, match="order_manager.idle"):
        config.load(None, {"order_manager.idle": "nap"})


def test_the_default_config_is_the_default_layout():
    cfg = config.load(None)
    want = placement.layout_overrides(placement.DEFAULT_LAYOUT)
    for key, value in want.items():
        section, _, field = key.partition(".")
        assert getattr(getattr(cfg, section), field) == value, key
    assert all(getattr(cfg, p).idle == "block" for p in placement.PROCESSES)  # no busy loop


def test_real_time_is_skipped_for_an_unpaced_feed():
    assert placement.unpaced(config.load(None, {"gateway.tick_rate": 0}))
    assert not placement.unpaced(config.load(None, {"gateway.tick_rate": 10}))
    assert placement.unpaced(config.load(None, {"gateway.csv": "x.csv", "gateway.csv_speed": 0}))
    assert placement.unpaced(config.load(None, {"gateway.news_rate": 0}))


def test_pin_drops_cpus_the_machine_lacks(caplog):
    before = os.sched_getaffinity(0)
    try:
        log = logging.getLogger("pin-test")
        with caplog.at_level(logging.WARNING):
            got = placement.pin("strategy", [0, 4096], log)
        assert got == [0]
        assert "4096" in caplog.text
        assert placement.pin("strategy", [], log) == [0]  # [] leaves the affinity alone
    finally:
        os.sched_setaffinity(0, before)


def test_a_failing_snapshot_is_logged_once_and_retried(tmp_path, caplog):
    """Telemetry never takes a process down: a removed stats directory is logged, then made
    again on the next interval."""
    import shutil

    pub = telemetry.Publisher("proc", tmp_path / "stats", lambda: {"ticks": 1}, lambda: ())
    log = logging.getLogger("pub-test")
    shutil.rmtree(tmp_path / "stats")
    (tmp_path / "stats").write_text("not a directory")   # makes every write fail
    with caplog.at_level(logging.INFO):
        runtime._publish(log, pub)
        runtime._publish(log, pub)
        assert pub.failing and caplog.text.count("stats snapshot not written") == 1
        (tmp_path / "stats").unlink()
        runtime._publish(log, pub)
    assert not pub.failing and "written again" in caplog.text
    assert telemetry.read_snapshot(tmp_path / "stats" / "proc.json")["counters"] == {"ticks": 1}


def test_percentiles_never_exceed_the_exact_max():
    rec = telemetry.Recorder("x")
    for v in [186_000] * 15 + [298_500]:
        rec.record(v)
    snap = rec.snapshot()
    stats = telemetry.summarize(snap["pairs"], snap["max"])
    assert stats["max"] == 298_500 and stats["p99"] <= 298_500 and stats["p99.9"] <= 298_500
