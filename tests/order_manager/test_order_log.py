"""The order log on real files: what a record must hold, the torn tail a crash leaves (cut off),
a damaged line anywhere else (fatal, named), a failed mirror write (cut back, kept in the journal,
retried), and the orders only the journal holds after a crash (mirrored on the next open)."""

from __future__ import annotations

import json
import os

import pytest

from processes.order_manager.service import OrderLog, OrderLogError, parse_record
from processes.shared import journal as journal_mod
from processes.shared.journal import read_records

pytestmark = pytest.mark.timeout(30)
GOOD = {"order_no": 1, "id": "o-1", "client": "c1", "symbol": "AAPL", "side": "BUY", "qty": 5,
        "price": 10.0, "session": "s1"}


def line(**fields) -> bytes:
    return json.dumps({**GOOD, **fields}).encode() + b"\n"


def book(log: OrderLog, record: dict | bytes) -> None:
    """What the OrderManager does per order: commit its record to the journal (before the ack),
    then mirror it into the JSONL (after)."""
    log.journal.append(record if isinstance(record, bytes) else json.dumps(record).encode())
    log.mirror()


def test_a_good_record_reads_back_whole():
    assert parse_record(line()) == GOOD
    bare = {k: v for k, v in GOOD.items() if k not in ("client", "session")}
    assert parse_record(json.dumps(bare).encode()) == {**bare, "client": "", "session": ""}


@pytest.mark.parametrize("raw, why", [
    (b"[1]", "not a JSON object"),
    (line(order_no=0), "bad order_no 0"),
    (line(order_no=-3), "bad order_no -3"),
    (line(order_no=True), "bad order_no True"),
    (line(order_no="1"), "bad order_no '1'"),
    (line(id=""), "bad id or client"),
    (line(id=7), "bad id or client"),
    (line(client=5), "bad id or client"),
    (line(side="buy"), "bad symbol, side or qty"),
    (line(symbol=1), "bad symbol, side or qty"),
    (line(qty=0), "bad symbol, side or qty"),
    (line(qty=True), "bad symbol, side or qty"),
    (line(qty=1.5), "bad symbol, side or qty"),
    (line(session=3), "bad session"),
])
def test_a_bad_record_says_what_is_wrong(raw, why):
    with pytest.raises(ValueError) as exc:
        parse_record(raw)
    assert str(exc.value) == why


def test_unparseable_json_is_a_value_error():
    with pytest.raises(ValueError) as exc:
        parse_record(b'{"order_no": 1,')
    assert str(exc.value) == "Input data was truncated"
    with pytest.raises(ValueError):
        parse_record(b"[" * 100_000)


def test_qty_of_one_and_order_no_of_one_are_records():
    assert parse_record(line(qty=1, order_no=1))["qty"] == 1


def test_read_back_keeps_good_lines_and_cuts_a_torn_tail(tmp_path):
    path = tmp_path / "orders.jsonl"
    torn = b'{"order_no": 3, "id": "o-3", "cli'
    path.write_bytes(line() + b"\n" + line(order_no=2, id="o-2") + torn)
    log = OrderLog(path)
    records = log.open()
    try:
        assert [r["id"] for r in records] == ["o-1", "o-2"]
        good = len(line()) + 1 + len(line(order_no=2, id="o-2"))
        assert path.stat().st_size == good == log.size
        book(log, json.loads(line(order_no=3, id="o-3")))
    finally:
        log.close()
    assert [json.loads(x)["id"] for x in path.read_text().splitlines() if x] == [
        "o-1", "o-2", "o-3"]


def test_a_last_record_without_its_newline_gets_one(tmp_path):
    path = tmp_path / "orders.jsonl"
    path.write_bytes(line() + line(order_no=2, id="o-2")[:-1])
    log = OrderLog(path)
    try:
        assert len(log.open()) == 2
        book(log, line(order_no=3, id="o-3")[:-1])     # the record's text + a newline
    finally:
        log.close()
    assert [json.loads(x)["order_no"] for x in path.read_text().splitlines()] == [1, 2, 3]


def test_a_bad_line_before_the_last_is_fatal_and_named(tmp_path):
    path = tmp_path / "orders.jsonl"
    path.write_bytes(line() + b"garbage\n" + line(order_no=2, id="o-2"))
    with pytest.raises(OrderLogError) as exc:
        OrderLog(path).open()
    assert str(exc.value) == (f"order log {path} line 2 is corrupt (JSON is malformed: invalid "
                              "character (byte 0)); fix or move the file before starting")
    assert path.read_bytes().count(b"\n") == 3       # nothing cut


def test_a_missing_log_starts_empty_in_a_new_folder(tmp_path):
    path = tmp_path / "new" / "orders.jsonl"
    log = OrderLog(path)
    try:
        assert log.open() == [] and log.size == 0
        book(log, GOOD)
        assert log.size == len(path.read_bytes())
    finally:
        log.close()
    log.close()                                        # a second close is harmless
    assert json.loads(path.read_text()) == GOOD


def test_a_failed_mirror_write_is_cut_back_kept_in_the_journal_and_retried(tmp_path, monkeypatch):
    path = tmp_path / "orders.jsonl"
    log = OrderLog(path)
    log.open()
    try:
        book(log, GOOD)
        book(log, GOOD)
        size = log.size
        real_write = os.write
        calls = []

        def half_then_full(fd: int, data: bytes) -> int:
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, data[:10])           # a short write...
            raise OSError(28, "No space left on device")   # ...then the disk is full
        monkeypatch.setattr(os, "write", half_then_full)
        book(log, GOOD)                                     # committed; its mirror write fails
        monkeypatch.undo()
        assert calls[1] == calls[0] - 10                    # the rest was retried
        assert "No space" in (log.mirror_failed or "")
        assert path.stat().st_size == size == log.size      # the partial line is gone
        assert len(read_records(log.journal.directory)[0]) == 3   # the journal still has it
        log.mirror()                                        # the retry writes it whole
        assert log.mirror_failed is None
        book(log, GOOD)
    finally:
        log.close()
    assert [json.loads(x) for x in path.read_text().splitlines()] == [GOOD] * 4
    assert not log.journal.directory.exists()               # all mirrored: the journal goes


def test_orders_only_the_journal_holds_are_mirrored_on_the_next_open(tmp_path):
    """A kill -9 between an order's commit (acked) and its mirror write: the next open reads it
    back from the journal, appends it to the JSONL after the mirrored ones, and starts a fresh
    journal."""
    path = tmp_path / "orders.jsonl"
    log = OrderLog(path)
    log.open()
    book(log, GOOD)
    log.journal.append(line(order_no=2, id="o-2")[:-1])     # committed, never mirrored
    log.journal.close()                                     # the process dies: no close()
    log._file.close()
    again = OrderLog(path)
    try:
        assert [r["id"] for r in again.open()] == ["o-1", "o-2"]
        assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["o-1", "o-2"]
        assert read_records(again.journal.directory) == ([], 0)   # fresh
    finally:
        again.close()


def test_an_empty_or_blank_log_is_left_as_it_is(tmp_path):
    for text in (b"", b"\n\n"):
        path = tmp_path / "orders.jsonl"
        path.write_bytes(text)
        log = OrderLog(path)
        try:
            assert log.open() == [] and path.read_bytes() == text
        finally:
            log.close()


def test_short_writes_are_completed(tmp_path, monkeypatch):
    path = tmp_path / "orders.jsonl"
    log = OrderLog(path, fsync=True)
    log.open()
    real_write = os.write
    synced = []
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, data[:7]))
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    try:
        book(log, GOOD)
    finally:
        monkeypatch.undo()
        log.close()
    assert json.loads(path.read_text()) == GOOD and len(synced) == 1
    assert log.size == len(path.read_bytes())


def test_nothing_is_committed_or_mirrored_after_close(tmp_path):
    path = tmp_path / "orders.jsonl"
    log = OrderLog(path)
    log.open()
    log.close()
    with pytest.raises(OSError, match="journal is not open"):
        log.commit(1, 1, b"", b'{"id":"o-1"}*')
    log.mirror()
    assert path.read_bytes() == b"" and not log.journal.directory.exists()


def test_mirroring_removes_the_journal_chunks_it_has_copied(tmp_path, monkeypatch):
    """A long run (or a flood) moves through many chunks; once their records are in the JSONL
    the chunks go, so the journal never grows past the chunk in use (and a spare)."""
    monkeypatch.setattr(journal_mod, "CHUNK_BYTES", 4096)
    path = tmp_path / "orders.jsonl"
    log = OrderLog(path)
    log.open()
    try:
        for n in range(1, 201):
            book(log, json.loads(line(order_no=n, id=f"o-{n}")))
            log.journal.prepare()
            assert len(list(log.journal.directory.iterdir())) <= 2
    finally:
        log.close()
    assert [json.loads(x)["order_no"] for x in path.read_text().splitlines()] == list(
        range(1, 201))


def test_a_second_order_log_on_the_same_file_is_refused_and_touches_nothing(tmp_path):
    """A second OrderManager started on a log in use (a second main.py on the same config):
    refused before it reads, repairs or recovers anything, so the running one's journal (its
    acked orders not yet mirrored) stays where it is."""
    path = tmp_path / "orders.jsonl"
    first = OrderLog(path)
    first.open()
    try:
        book(first, GOOD)
        first.journal.append(line(order_no=2, id="o-2")[:-1])   # committed, not yet mirrored
        before = path.read_bytes()
        second = OrderLog(path)
        with pytest.raises(OrderLogError, match="in use by another OrderManager"):
            second.open()
        second.close()
        assert path.read_bytes() == before
        assert len(read_records(first.journal.directory)[0]) == 2
        first.mirror()
    finally:
        first.close()
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["o-1", "o-2"]


def test_a_journal_record_that_is_not_an_order_stops_the_start_and_is_kept(tmp_path):
    """Its checksum matched, so a writer put it there: the start is refused, naming the
    journal, and the journal (with the acked orders beside it) is left for the operator."""
    path = tmp_path / "orders.jsonl"
    log = OrderLog(path)
    log.open()
    log.journal.append(line(order_no=1, id="o-1")[:-1])
    log.journal.append(b'{"not": "an order"}')
    log.journal.close()                                     # the process dies: no close()
    log._file.close()
    again = OrderLog(path)
    with pytest.raises(OrderLogError) as exc:
        again.open()
    again.close()
    assert str(exc.value) == (f"order journal {again.journal.directory} holds a record that is "
                              "not an order (bad order_no None); fix or move it before starting")
    assert len(read_records(again.journal.directory)[0]) == 2


def crashed_with_journal_only(path, *records: bytes) -> None:
    """An OrderLog whose process died after committing `records` to the journal (acked) and
    before mirroring them."""
    log = OrderLog(path)
    log.open()
    for rec in records:
        log.journal.append(rec)
    log.journal.close()
    log._file.close()


def test_a_recovery_that_cannot_be_mirrored_stops_the_start_and_keeps_the_journal(tmp_path,
                                                                                  monkeypatch):
    path = tmp_path / "orders.jsonl"
    crashed_with_journal_only(path, line(order_no=1, id="o-1")[:-1],
                              line(order_no=2, id="o-2")[:-1])

    def full(fd: int, data: bytes) -> int:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    again = OrderLog(path)
    with pytest.raises(OrderLogError) as exc:
        again.open()
    monkeypatch.undo()
    again.close()
    assert str(exc.value) == (f"order log {path}: the journal's 2 orders could not be copied "
                              "into it ([Errno 28] No space left on device)")
    assert path.read_bytes() == b""
    assert len(read_records(again.journal.directory)[0]) == 2   # nothing lost: still there


def test_with_fsync_the_recovered_orders_are_synced_before_the_start(tmp_path, monkeypatch):
    path = tmp_path / "orders.jsonl"
    crashed_with_journal_only(path, line(order_no=1, id="o-1")[:-1])
    real_fsync = os.fsync
    synced: list[int] = []

    def spy(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", spy)
    again = OrderLog(path, fsync=True)
    try:
        assert [r["id"] for r in again.open()] == ["o-1"]
        assert synced.count(again._fd) == 2          # the mirror's write, then the recovery's
    finally:
        monkeypatch.undo()
        again.close()
    assert [json.loads(x)["id"] for x in path.read_text().splitlines()] == ["o-1"]
