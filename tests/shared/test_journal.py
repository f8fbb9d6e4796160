"""The memory-mapped order journal: records back in order across chunks, torn records never read
as records, chunk files made ahead and removed (real files in tmp_path)."""

from __future__ import annotations

import os
import zlib

import pytest

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
