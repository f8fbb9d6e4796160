"""News rows in a replayed file: parsing and bad rows by line, the news stream and its snapshot,
and a real Gateway's start rule (prices and news on one clock, started by both subscribers)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from stackutil import Child, make_config, parse_price, recv_frames, wait_until

from processes.gateway.replay import CsvMarket
from processes.shared import telemetry
from processes.shared.market_file import Event, load_events, parse_events
from processes.shared.protocol import parse_news

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "data" / "sample_prices.csv"
SYMBOLS = ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA"]

pytestmark = pytest.mark.timeout(60)

MARKET = """timestamp,symbol,price,sentiment
0.0,AAPL,10.00,
0.5,AAPL,,70
1.0,MSFT,20.00,
1.5,MSFT,,30
2.0,AAPL,10.50,
"""


def test_news_rows_are_events_in_file_order():
    events, report = parse_events(MARKET.splitlines(), SYMBOLS)
    assert events == [Event(0.0, "AAPL", 10.0, None), Event(0.5, "AAPL", None, 70),
                      Event(1.0, "MSFT", 20.0, None), Event(1.5, "MSFT", None, 30),
                      Event(2.0, "AAPL", 10.5, None)]
    assert (report.rows, report.news, report.bad) == (3, 2, 0)
    assert "3 rows and 2 news rows over 2.0s" in report.lines()[0]
    # The three-column form stays valid: prices only.
    events, report = parse_events(["timestamp,symbol,price", "1,AAPL,2"], SYMBOLS)
    assert events == [Event(1.0, "AAPL", 2.0, None)] and report.news == 0


def test_bad_news_rows_are_reported_by_line():
    text = MARKET.splitlines() + [
        "2.5,AAPL,,101",        # line 7: out of range
        "2.5,AAPL,,-1",         # 8
        "2.5,AAPL,,good",       # 9: not an integer
        "2.5,AAPL,,55.5",       # 10
        "2.5,AAPL,11.0,55",     # 11: both
        "2.5,AAPL,,",           # 12: neither
        "2.5,XYZ,,50",          # unknown symbol: counted, not bad
        "1.0,MSFT,,50",         # 14: back in time
        "3.0,GOOG,,50",         # fine
    ]
    events, report = parse_events(text, SYMBOLS)
    by_line = dict(report.errors)
    assert sorted(by_line) == [7, 8, 9, 10, 11, 12, 14] and report.bad == 7
    assert "0..100" in by_line[7] and "0..100" in by_line[8]
    assert "bad sentiment 'good'" in by_line[9] and "bad sentiment '55.5'" in by_line[10]
    assert "both a price and a sentiment" in by_line[11]
    assert "empty price and no sentiment" in by_line[12]
    assert "back in time" in by_line[14]
    assert report.unknown == {"XYZ": 1}
    assert events[-1] == Event(3.0, "GOOG", None, 50) and report.news == 3
    assert report.missing == ["GOOG", "AMZN", "TSLA"]     # news alone does not price a symbol


def test_a_file_of_news_only_is_an_error(tmp_path):
    path = tmp_path / "news.csv"
    path.write_text("timestamp,symbol,price,sentiment\n1,AAPL,,50\n")
    with pytest.raises(ValueError, match="no usable rows.*1 news rows but no prices"):
        load_events(path, SYMBOLS)


def test_news_stream_frames_and_snapshot_share_the_files_clock():
    events, report = parse_events(MARKET.splitlines(), SYMBOLS)
    market = CsvMarket(events, SYMBOLS, False, report)
    news, prices = market.news, market.prices
    assert news is not None
    # Both streams are timed from the file's first row, one period per pass.
    assert news.times == [0.5, 1.5] and prices.times == [0.0, 1.0, 2.0]
    assert news.period == prices.period == pytest.approx(2.5)
    assert news.schedule(1.0).when(0) == pytest.approx(0.5)
    assert news.snapshot() == b""          # nothing sent: no sentiment before its time
    assert news.batch(1) == b"AAPL,70*"
    assert news.snapshot() == b"AAPL,70*"
    assert news.batch(5) == b"MSFT,30*"    # asks too many: gets the rest
    assert news.remaining == 0
    assert news.stats() == {"replay_news_rows": 2, "replay_news_sent": 2,
                            "replay_news_done": True}
    assert [parse_news(f) for f in news.snapshot().split(b"*")[:-1]] == [
        (b"AAPL", 70), (b"MSFT", 30)]


def test_the_shipped_sample_has_news_and_no_two_rows_closer_than_50_ms():
    events, report = load_events(SAMPLE, SYMBOLS)
    assert report.bad == 0 and not report.unknown and not report.missing
    assert report.news >= 100
    assert {e.symbol for e in events if e.price is None} == set(SYMBOLS)
    # Milliseconds as written: the float seconds of an epoch timestamp are not exact.
    ms = [round(e.ts * 1000) for e in events]
    assert min(b - a for a, b in zip(ms, ms[1:])) >= 50


# --- a real Gateway ------------------------------------------------------------------------------

def _subscribe(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def _snapshot(tmp_path: Path) -> dict:
    path = tmp_path / "logs" / "stats" / "gateway.json"
    return telemetry.read_snapshot(path) or {}


def _counters(tmp_path: Path) -> dict:
    return _snapshot(tmp_path).get("counters", {})


def test_a_replay_with_news_starts_with_both_subscribers_and_shows_nothing_early(tmp_path):
    """The price subscriber alone does not start the clock; a snapshot holds only what has been
    sent (empty before the start, every symbol's last row after the end); prices and news each
    arrive whole and in file order."""
    path = tmp_path / "market.csv"
    path.write_text(MARKET)
    cfg = make_config(tmp_path, **{"gateway.csv": str(path), "gateway.csv_speed": 0.0,
                                   "gateway.csv_loop": False, "logging.stats_interval": 0.05})
    gw = Child("gateway", cfg)
    info = gw.start()
    try:
        with _subscribe(info["price_port"]) as prices:
            # A snapshot published a stats interval after one that already counted the client:
            # a started replay at csv_speed 0 would have sent every row by then.
            wait_until(lambda: _snapshot(tmp_path).get("counters", {}).get("price_clients") == 1,
                       10, what="the price client in the gateway's stats")
            counted = _snapshot(tmp_path)["time"]
            wait_until(lambda: _snapshot(tmp_path).get("time", 0) > counted + 0.1, 10,
                       what="a later stats snapshot")
            later = _snapshot(tmp_path)["counters"]
            assert later["price_clients"] == 1
            assert later["replay_sent"] == 0 and later["replay_news_sent"] == 0
            with _subscribe(info["news_port"]) as news:
                ticks = [parse_price(f) for f in recv_frames(prices, 3, 10)]
                items = [parse_news(f) for f in recv_frames(news, 2, 10)]
            # Seq 1 first: the snapshot at connect was empty.
            assert [(s, p, q) for s, p, q, _ in ticks] == [
                (b"AAPL", 10.0, 1), (b"MSFT", 20.0, 1), (b"AAPL", 10.5, 2)]
            assert items == [(b"AAPL", 70), (b"MSFT", 30)]
        wait_until(lambda: _counters(tmp_path).get("replay_news_done")
                   and _counters(tmp_path).get("replay_done"), 10, what="both streams done")
        with _subscribe(info["price_port"]) as late, _subscribe(info["news_port"]) as late_news:
            snap = [parse_price(f) for f in recv_frames(late, 2, 10)]
            news_snap = [parse_news(f) for f in recv_frames(late_news, 2, 10)]
        assert [(s, p, q) for s, p, q, _ in snap] == [(b"AAPL", 10.5, 2), (b"MSFT", 20.0, 1)]
        assert news_snap == [(b"AAPL", 70), (b"MSFT", 30)]
    finally:
        assert gw.stop() == 0
    log = (tmp_path / "logs" / "gateway.log").read_text()
    assert "3 rows and 2 news rows" in log and "news rows sent" in log
