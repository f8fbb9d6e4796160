"""The memory-mapped order journal: records back in order across chunks, torn records never read
as records, chunk files made ahead and removed (real files in tmp_path)."""

from __future__ import annotations

import os
import zlib

import pytest

from ext import journal_py
from processes.shared import journal as jm

pytestmark = pytest.mark.timeout(30)


def payloads(n: int, start: int = 0) -> list[bytes]:
    return [b'{"order_no":%d,"id":"j-%d","pad":"%s"}' % (i, i, b"x" * (i % 37))
            for i in range(start, start + n)]


def test_records_come_back_in_order_across_chunks(tmp_path):
    j = jm.Journal(tmp_path / "j", chunk_bytes=4096)
    j.open()
    recs = payloads(200)
    for k, rec in enumerate(recs):
        j.append(rec)
        if k % 10 == 0:
            j.prepare()
    j.close()
    assert len(list((tmp_path / "j").iterdir())) >= 3         # it grew chunk by chunk
    assert jm.read_records(tmp_path / "j") == (recs, 0)


def test_a_record_cut_short_is_not_read(tmp_path):
    """What a kill -9 inside append can leave: the payload stored without its header, or a
    header whose payload is incomplete. Neither is read; everything before is."""
    j = jm.Journal(tmp_path / "j", chunk_bytes=4096)
    j.open()
    recs = payloads(5)
    for rec in recs:
        j.append(rec)
    off = j.off
    j.close()
    chunk = tmp_path / "j" / "00000001.chunk"
    torn = b'{"order_no":5,"id":"j-5"}'
    with open(chunk, "r+b") as fh:          # the payload only: no commit marker yet
        fh.seek(off + jm.HEADER.size)
        fh.write(torn)
    assert jm.read_records(tmp_path / "j") == (recs, 0)
    with open(chunk, "r+b") as fh:          # a header over a payload cut in half
        fh.seek(off)
        fh.write(jm.HEADER.pack(len(torn), zlib.crc32(torn)))
        fh.seek(off + jm.HEADER.size + len(torn) // 2)
        fh.write(b"\0" * (len(torn) - len(torn) // 2))
    assert jm.read_records(tmp_path / "j") == (recs, 1)
    with open(chunk, "r+b") as fh:          # a length without its checksum
        fh.seek(off)
        fh.write(jm.HEADER.pack(len(torn), 0))
    assert jm.read_records(tmp_path / "j") == (recs, 1)


def test_open_starts_fresh_and_discard_removes_every_file(tmp_path):
    j = jm.Journal(tmp_path / "j", chunk_bytes=4096)
    j.open()
    for rec in payloads(3):
        j.append(rec)
    j.close()
    j = jm.Journal(tmp_path / "j", chunk_bytes=4096)
    j.open()                                 # the caller has put the old records elsewhere
    assert jm.read_records(tmp_path / "j") == ([], 0)
    j.append(b"{}")
    assert jm.read_records(tmp_path / "j") == ([b"{}"], 0)
    j.discard()
    assert not (tmp_path / "j").exists()


def test_chunks_are_preallocated_and_a_record_too_big_is_refused(tmp_path):
    j = jm.Journal(tmp_path / "j", chunk_bytes=8192)
    j.open()
    chunk = tmp_path / "j" / "00000001.chunk"
    assert os.stat(chunk).st_blocks * 512 >= 8192     # blocks reserved: no ENOSPC later
    with pytest.raises(ValueError, match="does not fit"):
        j.append(b"x" * 8192)
    j.discard()


def test_no_chunk_to_grow_into_is_an_oserror_and_commits_nothing(tmp_path, monkeypatch):
    j = jm.Journal(tmp_path / "j", chunk_bytes=4096)
    j.open()
    recs = payloads(1)
    j.append(recs[0])

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match="No space"):
        for rec in payloads(100, 1):
            j.append(rec)
    monkeypatch.undo()
    got, torn = jm.read_records(tmp_path / "j")
    assert torn == 0 and got == [recs[0], *payloads(len(got) - 1, 1)]
    assert sorted(p.name for p in (tmp_path / "j").iterdir()) == ["00000001.chunk"]
    j.discard()


def test_take_hands_each_record_once_across_chunks(tmp_path):
    """What the OrderManager mirrors into the JSONL: every record once, in order, however many
    chunks were left between two take() calls."""
    j = jm.Journal(tmp_path / "j", chunk_bytes=4096)
    j.open()
    recs = payloads(400)
    got: list[bytes] = []
    for k, rec in enumerate(recs):
        j.append(rec)
        if k % 7 == 0 or 150 <= k < 300:   # often, then not for several chunks
            got += j.take()
    got += j.take()
    j.close()
    assert len(list((tmp_path / "j").iterdir())) >= 5
    assert got == recs


def test_release_removes_only_the_chunks_already_left(tmp_path):
    j = jm.Journal(tmp_path / "j", chunk_bytes=4096)
    j.open()
    recs = payloads(200)
    for rec in recs[:150]:
        j.append(rec)
    assert j.take() == recs[:150]            # the caller has them elsewhere now...
    j.release()                              # ...so every chunk but the current one goes
    assert [p.name for p in (tmp_path / "j").iterdir()] == [j._chunk.path.name]
    for rec in recs[150:]:
        j.append(rec)
    got, torn = jm.read_records(tmp_path / "j")
    assert torn == 0 and got == recs[len(recs) - len(got):] and len(got) >= 50
    j.discard()


def test_records_of_a_chunk_left_behind_are_taken_once(tmp_path):
    j = jm.Journal(tmp_path / "j", chunk_bytes=4096)
    j.open()
    try:
        data = payloads(200)   # several chunks, nothing taken in between
        for p in data:
            j.append(p)
        assert j.take() == data
        assert j.take() == []
    finally:
        j.discard()


# --- the writing side's contract, record by record ------------------------------------------------

@pytest.fixture(params=["compiled", "python"])
def writer(request, monkeypatch):
    """The journal with each record writer: ext._journal (what runs) and its Python twin."""
    if request.param == "python":
        monkeypatch.setattr(jm, "journal_records", journal_py)
    elif jm.journal_records is journal_py:
        pytest.skip("ext._journal is not built (python setup.py build_ext --inplace)")
    return request.param


def order_record(order_no: int, received_ns: int, fields: bytes, frame: bytes) -> bytes:
    """The record commit_order stores (ext.journal_py.put_order states it)."""
    return b'{"order_no":%d,"received_ns":%d,%b%b}' % (order_no, received_ns, fields, frame[1:-2])


def test_a_journal_not_open_refuses_every_record_with_oserror(tmp_path, writer):
    """Before open() and after close() there is no mapping: append and commit_order raise
    OSError (what the OrderManager rejects an order on) and count nothing."""
    j = jm.Journal(tmp_path / "j", chunk_bytes=4096)
    for attempt in (lambda: j.append(b"{}"), lambda: j.commit_order(1, 1, b"", b'{"id":"a"}*')):
        with pytest.raises(OSError, match="^journal is not open$"):
            attempt()
    assert j.records == 0 and j.take() == [] and not (tmp_path / "j").exists()
    j.open()
    j.append(b"{}")
    j.close()
    for attempt in (lambda: j.append(b"{}"), lambda: j.commit_order(2, 2, b"", b'{"id":"b"}*')):
        with pytest.raises(OSError, match="^journal is not open$"):
            attempt()
    assert j.records == 1
    # take() after close hands nothing more (the mapping is gone); the record is in its file.
    assert j.take() == []
    assert jm.read_records(tmp_path / "j") == ([b"{}"], 0)
    j.discard()


def test_order_records_come_back_whole_across_chunks_and_are_counted(tmp_path, writer):
    j = jm.Journal(tmp_path / "j", chunk_bytes=4096)
    j.open()
    try:
        fields = b'"peer":"127.0.0.1:5000","session":"s1",'
        want = []
        for n in range(1, 121):
            frame = b'{"id":"o-%d","symbol":"AAPL","pad":"%s"}*' % (n, b"x" * (n % 29))
            j.commit_order(n, 1_000_000 + n, fields, frame)
            want.append(order_record(n, 1_000_000 + n, fields, frame))
            assert j.records == n
        assert len(list((tmp_path / "j").iterdir())) >= 3        # it crossed chunks
        assert j.take() == want
        assert jm.read_records(tmp_path / "j") == (want, 0)
    finally:
        j.discard()


def test_an_order_record_is_admitted_by_its_longest_form(tmp_path, writer):
    """A chunk switch admits an order record by the longest text it can take: the header,
    68 bytes of keys and two 20-digit numbers, the closing brace, and fields and frame as
    given. The longest admitted is committed at the start of a fresh chunk; one byte more is
    a ValueError with nothing changed (never an OSError, which would halt trading)."""
    chunk = 4096
    j = jm.Journal(tmp_path / "j", chunk_bytes=chunk)
    j.open()
    try:
        j.append(b"{}")
        room = chunk - jm.HEADER.size - 69           # fields + frame of the longest admitted
        fields = b'"peer":"%s",' % (b"p" * 1000)
        too_big = b'{"id":"big","pad":"%s"}*' % (b"y" * (room + 1 - len(fields) - 22))
        assert len(fields) + len(too_big) == room + 1
        with pytest.raises(ValueError, match="does not fit a journal chunk"):
            j.commit_order(2, 5, fields, too_big)
        assert (j.records, j.off, len(list((tmp_path / "j").iterdir()))) == (1, 16, 1)
        fits = too_big[:19] + too_big[20:]
        j.commit_order(2, 5, fields, fits)
        assert j.records == 2 and len(list((tmp_path / "j").iterdir())) == 2
        assert jm.read_records(tmp_path / "j") == ([b"{}", order_record(2, 5, fields, fits)], 0)
    finally:
        j.discard()


def test_a_record_filling_a_whole_chunk_is_committed_and_read_back(tmp_path, writer):
    chunk = 4096
    j = jm.Journal(tmp_path / "j", chunk_bytes=chunk)
    j.open()
    try:
        j.append(b"{}")
        whole = b"w" * (chunk - jm.HEADER.size)
        j.append(whole)                              # the next chunk, to its last byte
        assert j.off == chunk
        j.append(b"[]")
        assert j.take() == [b"{}", whole, b"[]"]
        assert jm.read_records(tmp_path / "j") == ([b"{}", whole, b"[]"], 0)
    finally:
        j.discard()


def test_prepare_makes_the_next_chunk_from_half_full_and_append_uses_it(tmp_path, monkeypatch):
    chunk = 4096
    j = jm.Journal(tmp_path / "j", chunk_bytes=chunk)
    j.prepare()                                      # not open: nothing to prepare for
    assert not (tmp_path / "j").exists()
    j.open()
    try:
        rec = b"r" * 56                              # 64 bytes a record: 32 fill half a chunk
        for _ in range(31):
            j.append(rec)
        j.prepare()
        assert [p.name for p in (tmp_path / "j").iterdir()] == ["00000001.chunk"]
        j.append(rec)
        assert j.off * 2 == chunk
        j.prepare()
        j.prepare()                                  # one spare, however often it is asked
        assert sorted(p.name for p in (tmp_path / "j").iterdir()) == [
            "00000001.chunk", "00000002.chunk"]

        def full(*args: object) -> None:
            raise OSError(28, "No space left on device")
        monkeypatch.setattr(os, "posix_fallocate", full)
        for _ in range(64):                          # into the spare: no chunk to make
            j.append(rec)
        assert j.records == 96 and j._chunk.path.name == "00000002.chunk"
        with pytest.raises(OSError, match="No space"):
            for _ in range(64):                      # past the spare: none can be made
                j.append(rec)
        monkeypatch.undo()
        assert jm.read_records(tmp_path / "j") == ([rec] * j.records, 0)
    finally:
        j.discard()


def test_sync_msyncs_each_record_and_fsyncs_each_new_chunk(tmp_path, monkeypatch):
    msynced: list[tuple[int, int]] = []
    fsynced: list[int] = []
    real_msync, real_fsync = jm.msync, os.fsync

    def spy_msync(mm, offset: int, length: int) -> None:
        msynced.append((offset, length))
        real_msync(mm, offset, length)

    def spy_fsync(fd: int) -> None:
        fsynced.append(fd)
        real_fsync(fd)
    monkeypatch.setattr(jm, "msync", spy_msync)
    monkeypatch.setattr(os, "fsync", spy_fsync)
    plain = jm.Journal(tmp_path / "plain", chunk_bytes=4096)    # sync is off by default
    plain.open()
    for rec in payloads(80):
        plain.append(rec)
    plain.discard()
    assert msynced == [] and fsynced == []

    j = jm.Journal(tmp_path / "j", chunk_bytes=4096, sync=True)
    j.open()
    try:
        assert len(fsynced) == 2                     # the first chunk's file and its directory
        spans = []
        for rec in payloads(80):
            before = j.off if j.off + jm.HEADER.size + len(rec) <= 4096 else 0
            j.append(rec)
            spans.append((before, (jm.HEADER.size + len(rec) + 7) & ~7))
        assert msynced == spans                      # exactly each record (and its padding)
        assert len(fsynced) == 2 * len(list((tmp_path / "j").iterdir()))
    finally:
        j.discard()


def test_open_makes_missing_parents_and_reuses_a_directory_holding_other_files(tmp_path):
    j = jm.Journal(tmp_path / "a" / "b" / "j", chunk_bytes=4096)
    j.open()
    j.append(b"{}")
    j.close()
    (tmp_path / "a" / "b" / "j" / "README").write_text("the operator's note")
    again = jm.Journal(tmp_path / "a" / "b" / "j", chunk_bytes=4096)
    again.open()                                     # the old chunk goes, the note stays
    try:
        assert sorted(p.name for p in (tmp_path / "a" / "b" / "j").iterdir()) == [
            "00000001.chunk", "README"]
        assert jm.read_records(tmp_path / "a" / "b" / "j") == ([], 0)
    finally:
        again.discard()


def test_release_tolerates_a_left_chunk_already_gone(tmp_path):
    j = jm.Journal(tmp_path / "j", chunk_bytes=4096)
    j.open()
    try:
        for rec in payloads(150):
            j.append(rec)
        j.take()
        (tmp_path / "j" / "00000001.chunk").unlink()   # removed by hand meanwhile
        j.release()
        assert [p.name for p in (tmp_path / "j").iterdir()] == [j._chunk.path.name]
    finally:
        j.discard()


def test_an_empty_record_is_a_valueerror_not_a_disk_failure(tmp_path, writer):
    """An OSError from append means "no chunk can be made" (the OrderManager stops trading on
    it); an empty payload is the caller's mistake and changes nothing."""
    j = jm.Journal(tmp_path / "j", chunk_bytes=4096)
    j.open()
    try:
        j.append(b"{}")
        with pytest.raises(ValueError, match="^an empty journal record: nothing to tell it from "
                                              "unwritten space$"):
            j.append(b"")
        assert (j.records, j.off, len(list((tmp_path / "j").iterdir()))) == (1, 16, 1)
        j.append(b"[]")
        assert j.take() == [b"{}", b"[]"]
    finally:
        j.discard()
