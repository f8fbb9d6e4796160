"""CSV replay: parsing and its report, pacing arithmetic, frames, and a real Gateway streaming a
file to a raw socket subscriber."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from stackutil import Child, make_config, parse_price, recv_frames, wait_until

from processes.gateway.replay import CsvPrices
from processes.shared import telemetry
from processes.shared.market_file import ReplayError, load, parse_rows, parse_timestamp

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "prices_with_bad_rows.csv"
SAMPLE = ROOT / "data" / "sample_prices.csv"
SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA"]

pytestmark = pytest.mark.timeout(60)


# --- parsing -------------------------------------------------------------------------------------

def test_bad_rows_are_reported_with_their_line_numbers_and_skipped():
    rows, report = load(FIXTURE, SYMBOLS)
    assert [(sym, price) for _, sym, price in rows] == [
        ("AAPL", 187.40), ("MSFT", 414.10), ("AAPL", 187.45), ("MSFT", 414.20)]
    assert report.rows == 4
    assert report.span_s == pytest.approx(2.0)
    by_line = dict(report.errors)
    assert sorted(by_line) == [6, 7, 8, 9, 10, 12, 13, 14]
    assert report.bad == 8
    assert "expected 3 fields, got 2" in by_line[6]
    assert "bad timestamp 'yesterday'" in by_line[7]
    assert "bad price 'abc'" in by_line[8]
    assert "> 0" in by_line[9] and "> 0" in by_line[12]
    assert "empty symbol" in by_line[10]
    assert "got 4" in by_line[13]
    assert "back in time" in by_line[14]
    assert report.unknown == {"XYZ": 1}
    assert report.missing == ["GOOG", "AMZN", "TSLA"]
    lines = report.lines()
    assert f"{FIXTURE}:7: bad timestamp 'yesterday'" in "\n".join(lines)
    assert any("XYZ (1)" in line for line in lines)


def test_only_the_first_bad_rows_are_listed_the_rest_counted():
    text = ["timestamp,symbol,price"] + [f"{i},AAPL,oops" for i in range(30)] + ["31,AAPL,1.5"]
    rows, report = parse_rows(text, SYMBOLS, max_errors=10)
    assert len(rows) == 1 and report.bad == 30
    assert [line for line, _ in report.errors] == list(range(2, 12))
    assert "20 more bad rows" in "\n".join(report.lines())


def test_no_header_float_timestamps_and_a_header_in_another_order():
    rows, report = parse_rows(["0.5,AAPL,10", "1.25,MSFT,20.5"], SYMBOLS)
    assert rows == [(0.5, "AAPL", 10.0), (1.25, "MSFT", 20.5)] and report.bad == 0
    rows, report = parse_rows(["price,venue,symbol,timestamp", "10,X,AAPL,2024-01-01T00:00:01",
                               "11,X,AAPL,2024-01-01T00:00:03+00:00"], SYMBOLS)
    assert [p for _, _, p in rows] == [10.0, 11.0]
    assert rows[1][0] - rows[0][0] == pytest.approx(2.0)
    with pytest.raises(ReplayError, match="gateway.csv.*header needs"):
        parse_rows(["timestamp,price", "1,2"], SYMBOLS)


def test_timestamps():
    assert parse_timestamp("12.5") == 12.5
    assert parse_timestamp("2024-05-14T13:30:00Z") == parse_timestamp("2024-05-14 09:30:00-04:00")
    assert parse_timestamp("2024-05-14T13:30:00.250") - parse_timestamp(
        "2024-05-14T13:30:00Z") == pytest.approx(0.25)
    for bad in ("", "inf", "noon", "2024-13-01"):
        with pytest.raises(ValueError):
            parse_timestamp(bad)


def test_unusable_files_are_errors_naming_the_key(tmp_path):
    with pytest.raises(ReplayError, match="gateway.csv: cannot read"):
        load(tmp_path / "missing.csv", SYMBOLS)
    empty = tmp_path / "empty.csv"
    empty.write_text("timestamp,symbol,price\n1,XYZ,2\n1,AAPL,x\n")
    with pytest.raises(ReplayError, match="no usable rows.*1 bad.*XYZ"):
        load(empty, SYMBOLS)


def test_the_shipped_sample_is_clean():
    rows, report = load(SAMPLE, SYMBOLS)
    assert report.bad == 0 and not report.unknown and not report.missing
    assert report.rows >= 2000
    assert {sym for _, sym, _ in rows} == set(SYMBOLS)


# --- pacing and frames ---------------------------------------------------------------------------

ROWS = [(100.0, "AAPL", 10.0), (100.5, "MSFT", 20.0), (101.0, "AAPL", 10.5),
        (101.0, "MSFT", 20.5), (102.0, "AAPL", 11.0)]


def test_due_follows_the_recorded_timestamps_and_the_speed():
    src = CsvPrices(ROWS, ["AAPL", "MSFT"], loop=False)
    sched, fast = src.schedule(1.0), src.schedule(2.0)
    assert sched.due(0.0) == 1               # the first row is due at once
    assert sched.due(0.49) == 1
    assert sched.due(1.0) == 4               # rows at +0.5 and the two at +1.0
    assert fast.due(0.5) == 4                # twice the pace: +1.0 recorded is 0.5 s wall
    assert fast.when(0) == 0.0
    assert sched.when(3) == pytest.approx(1.0)
    assert src.schedule(4.0).when(3) == pytest.approx(0.25)
    assert sched.due(100.0) == 5             # never more than the file holds
    assert sched.total == 5 and not sched.skips
    src.batch(3, 1, False)
    src.batch(10, 1, False)                  # asks too many: gets the rest
    assert src.pos == 5 and src.remaining == 0
    assert src.batch(3, 1, False) == b""


def test_a_looping_replay_starts_again_one_mean_interval_later():
    src = CsvPrices(ROWS, ["AAPL", "MSFT"], loop=True)
    assert src.period == pytest.approx(2.0 + 0.5)
    sched = src.schedule(1.0)
    assert sched.when(5) == pytest.approx(2.5)
    assert sched.due(3.0) == 7               # second pass: rows at 2.5 and 3.0
    src.batch(7, 1, False)
    assert src.loops == 1
    # Sequence numbers keep counting across passes: the OrderBook sees no reset.
    frames = [parse_price(f) for f in src.batch(3, 7, False).split(b"*")[:-1]]
    assert [(s, q) for s, _, q, _ in frames] == [(b"AAPL", 5), (b"MSFT", 4), (b"AAPL", 6)]


def test_frames_snapshot_and_plain_form():
    src = CsvPrices(ROWS, ["AAPL", "MSFT", "GOOG"], loop=False)
    # Before anything was sent the snapshot is empty: a replay shows no price before its time.
    assert src.snapshot(99, False) == b""
    data = src.batch(1, 12345, False)
    snap = [parse_price(f) for f in src.snapshot(99, False).split(b"*")[:-1]]
    assert snap == [(b"AAPL", 10.0, 1, 99)]   # MSFT not sent yet; GOOG is not in the file
    data += src.batch(2, 12345, False)
    frames = [parse_price(f) for f in data.split(b"*")[:-1]]
    assert frames == [(b"AAPL", 10.0, 1, 12345), (b"MSFT", 20.0, 1, 12345),
                      (b"AAPL", 10.5, 2, 12345)]
    snap = [parse_price(f) for f in src.snapshot(5, False).split(b"*")[:-1]]
    assert snap == [(b"AAPL", 10.5, 2, 5), (b"MSFT", 20.0, 1, 5)]
    assert src.batch(1, 0, True) == b"MSFT,20.5*"
    assert src.stats() == {"replay_rows": 5, "replay_sent": 4, "replay_loops": 0,
                           "replay_done": False}


# --- a real Gateway ------------------------------------------------------------------------------

def _subscribe(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def test_gateway_streams_a_csv_to_a_raw_subscriber(tmp_path):
    """Unpaced, no loop: the subscriber gets an empty snapshot, then every row in file order with
    per-symbol sequence numbers 1, 2, 3...; then the feed stops and says so in its stats."""
    rows, _ = load(SAMPLE, SYMBOLS)
    cfg = make_config(tmp_path, **{"gateway.csv": str(SAMPLE), "gateway.csv_speed": 0.0,
                                   "gateway.csv_loop": False, "logging.stats_interval": 0.1})
    gw = Child("gateway", cfg)
    info = gw.start()
    try:
        # Its ready line names the pace that applies: the CSV's, not tick_rate.
        assert (info["csv"], info["csv_speed"], info["csv_loop"]) == (str(SAMPLE), 0.0, False)
        assert "tick_rate" not in info
        with _subscribe(info["price_port"]) as sock, _subscribe(info["news_port"]):
            ticks = [parse_price(f) for f in recv_frames(sock, len(rows), 30)]
        # The clock starts with this subscriber (the sample has news, so with the news one),
        # and nothing was sent before: the snapshot is empty and every row follows in order.
        assert [(s.decode(), p) for s, p, _, _ in ticks] == [(s, p) for _, s, p in rows]
        last: dict[bytes, int] = {}
        for sym, _, seq, sent_ns in ticks:
            assert seq == last.get(sym, 0) + 1
            assert sent_ns > 0
            last[sym] = seq
        stats = tmp_path / "logs" / "stats" / "gateway.json"
        wait_until(lambda: (telemetry.read_snapshot(stats) or {}).get("counters", {}).get(
            "replay_done"), 10, what="replay_done in the gateway's stats")
        counters = telemetry.read_snapshot(stats)["counters"]
        assert counters["ticks"] == counters["replay_sent"] == len(rows)
    finally:
        assert gw.stop() == 0
    log = (tmp_path / "logs" / "gateway.log").read_text()
    assert f"replaying {SAMPLE}: {len(rows)} rows" in log and "replay of" in log


def test_gateway_paces_a_csv_and_reports_bad_rows(tmp_path):
    """Recorded pace x speed: the fixture's 2 s at speed 2 takes about 1 s (bounds generous),
    and the Gateway's log lists the bad rows by line number."""
    cfg = make_config(tmp_path, **{"gateway.csv": str(FIXTURE), "gateway.csv_speed": 2.0,
                                   "gateway.csv_loop": False})
    gw = Child("gateway", cfg)
    info = gw.start()
    try:
        with _subscribe(info["price_port"]) as sock:
            start = time.monotonic()
            frames = [parse_price(f) for f in recv_frames(sock, 4, 30)]
            took = time.monotonic() - start
        assert [(s, p, q) for s, p, q, _ in frames] == [
            (b"AAPL", 187.40, 1), (b"MSFT", 414.10, 1), (b"AAPL", 187.45, 2),
            (b"MSFT", 414.20, 2)]
        assert 0.6 < took < 20, f"2 s of recorded time at speed 2 took {took:.2f}s"
    finally:
        assert gw.stop() == 0
    log = (tmp_path / "logs" / "gateway.log").read_text()
    for line in (6, 7, 8, 9, 10, 12, 13, 14):
        assert f"{FIXTURE}:{line}: " in log, log
    assert "XYZ (1)" in log and "no rows for GOOG, AMZN, TSLA" in log


def test_gateway_refuses_to_start_on_a_missing_file(tmp_path):
    cfg = make_config(tmp_path, **{"gateway.csv": str(tmp_path / "nope.csv")})
    with pytest.raises(RuntimeError, match="gateway.csv: cannot read"):
        Child("gateway", cfg).start()
