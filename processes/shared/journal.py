"""A preallocated, memory-mapped, append-only journal of length-prefixed records (the
OrderManager's durable order record; Chronicle Queue's design in miniature).

Layout: a directory of chunk files `00000001.chunk`, `00000002.chunk`, ... each `chunk_bytes`
long, preallocated (posix_fallocate: no block allocation, so no ENOSPC and no SIGBUS, on the
hot path) and zero-filled. Records follow each other at 8-byte aligned offsets, written by
ext.journal_records (compiled ext._journal, or its twin ext.journal_py, which states the format):

    u32 length (> 0) | u32 crc32(payload) | payload | zero padding to the next 8-byte boundary

A length of 0 ends a chunk's records. A record that does not fit the rest of its chunk goes to
the start of the next one.

Why a store into the mapping is as durable as write(2): the mapping is MAP_SHARED over a regular
file, so its pages ARE the file's page-cache pages. A store is in the kernel's page cache the
moment the instruction retires; when the process dies (kill -9 included) the kernel unmaps the
pages, keeps them and their dirty state, and writes them back like any write(2)'s pages. Only a
kernel crash or power loss can lose them, as with write(2); `sync=True` adds an msync(MS_SYNC) of
the record's pages (fdatasync of that range: on disk before append returns).

Why a torn record is never read as one: the payload is stored first and the header last (the
commit marker). SIGKILL is taken at an instruction boundary, so a process killed inside append
leaves either no header (length 0: the end) or a header whose crc32 does not match what was
stored (a header or payload cut short); readers stop at either. Only one process appends, and
nothing is appended after a torn record (a restarted writer starts a fresh journal once the
records are safely elsewhere), so a torn record is always the last one.
"""

from __future__ import annotations

import mmap
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

from ext import journal_records
from ext.journal_py import HEADER

CHUNK_BYTES = 16 * 1024 * 1024     # per chunk file; tens of thousands of orders
SUFFIX = ".chunk"
PAGE = mmap.PAGESIZE


def journal_dir(log_path: Path) -> Path:
    """Where the journal of a log file lives: `<log>.journal/` next to it."""
    return log_path.with_name(log_path.name + ".journal")


def _chunks(directory: Path) -> list[Path]:
    try:
        names = sorted(n for n in os.listdir(directory) if n.endswith(SUFFIX))
    except FileNotFoundError:
        return []
    return [directory / n for n in names]


def read_records(directory: Path) -> tuple[list[bytes], int]:
    """(every committed payload, oldest first; how many torn records were skipped)."""
    out: list[bytes] = []
    torn = 0
    for path in _chunks(directory):
        data = path.read_bytes()
        for payload in _records(data):
            if payload is None:
                torn += 1
                break
            out.append(payload)
    return out, torn


def _records(data: bytes | mmap.mmap, off: int = 0, size: int = -1) -> Iterator[bytes | None]:
    """The payloads of a chunk's bytes from `off` (up to `size`); None for a torn record (then
    the iteration ends)."""
    if size < 0:
        size = len(data)
    while off + HEADER.size <= size:
        length, crc = HEADER.unpack_from(data, off)
        if length == 0:
            return
        start = off + HEADER.size
        end = start + length
        if end > size or zlib.crc32(data[start:end]) != crc:
            yield None
            return
        yield data[start:end]
        off = (end + 7) & ~7


def msync(mm: mmap.mmap, offset: int, length: int) -> None:
    """msync(MS_SYNC) of the pages holding [offset, offset + length)."""
    start = offset & ~(PAGE - 1)
    mm.flush(start, offset + length - start)


class _Chunk:
    __slots__ = ("path", "fd", "mm", "size")

    def __init__(self, path: Path, size: int, sync: bool) -> None:
        self.path = path
        self.size = size
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            os.posix_fallocate(self.fd, 0, size)
            self.mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(self.fd)
            path.unlink(missing_ok=True)
            raise
        # Touch every page now, so the first record on a page does not pay a page-cache fault.
        mm = self.mm
        for off in range(0, size, PAGE):
            mm[off] = 0
        if sync:   # the file and its name on disk before any record relies on them
            os.fsync(self.fd)
            dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)


class Journal:
    """The writing side: `append` (hot path: two slice stores and a crc), `prepare` (off it:
    make the next chunk before it is needed), `release` (off it: remove the chunks already
    left once their records are safely elsewhere), `discard` (remove every chunk likewise)."""

    def __init__(self, directory: Path, chunk_bytes: int = 0, sync: bool = False) -> None:
        self.directory = directory
        self.chunk_bytes = chunk_bytes or CHUNK_BYTES
        self.sync = sync
        self._chunk: _Chunk | None = None
        self._spare: _Chunk | None = None
        self._seq = 0
        # The write cursor: the current chunk's mapping (None when closed) and the next
        # record's offset in it. ext.OrderDesk (the OrderManager's native order path) stores a
        # record at `off` and advances `off` and `records` itself, as commit_order does.
        self.mm: mmap.mmap | None = None
        self.off = 0
        self._size = 0
        self._taken = 0                  # records before this offset were handed to take()
        self._untaken: list[bytes] = []  # of chunks already left, not yet taken
        self._left: list[Path] = []      # chunks already left, their records all taken
        self.records = 0

    def open(self) -> None:
        """Start a fresh journal: any chunks of an earlier run are removed (read them with
        read_records and put their records elsewhere first), the first chunk made."""
        self.discard()
        self.directory.mkdir(parents=True, exist_ok=True)
        self._use(self._new_chunk())

    def _new_chunk(self) -> _Chunk:
        self._seq += 1
        return _Chunk(self.directory / f"{self._seq:08d}{SUFFIX}", self.chunk_bytes, self.sync)

    def _use(self, chunk: _Chunk) -> None:
        self._chunk = chunk
        self.mm = chunk.mm
        self.off = self._taken = 0
        self._size = chunk.size

    def append(self, payload: bytes) -> None:
        """Commit one record (see the module docstring for why it survives a kill -9 once this
        returns). OSError if no chunk can be made for it (disk full): nothing is committed.
        ValueError for an empty payload: its record could not be told from unwritten space."""
        off = self.off
        end = journal_records.put(self.mm, off, payload) if self.mm is not None else -1
        if end < 0:
            if not payload:
                raise ValueError("an empty journal record: nothing to tell it from unwritten "
                                 "space")
            off = self._next(HEADER.size + len(payload))
            end = journal_records.put(self.mm, off, payload)
        self._committed(off, end)

    def commit_order(self, order_no: int, received_ns: int, fields: bytes, frame: bytes) -> None:
        """append() of an order-log record (ext.journal_py.put_order: its text is built and
        stored by one native call, the hot path of the OrderManager)."""
        off = self.off
        end = (journal_records.put_order(self.mm, off, order_no, received_ns, fields, frame)
               if self.mm is not None else -1)
        if end < 0:
            off = self._next(HEADER.size + 69 + len(fields) + len(frame))
            end = journal_records.put_order(self.mm, off, order_no, received_ns, fields, frame)
        self._committed(off, end)

    def _committed(self, off: int, end: int) -> None:
        if end < 0:   # cannot happen after _next's size check; never ack on it
            raise OSError("journal record did not fit a fresh chunk")
        if self.sync:
            msync(self.mm, off, end - off)
        self.off = end
        self.records += 1

    def take(self) -> list[bytes]:
        """The payloads committed since the last take(), oldest first (read back from the
        mapping: the hot path keeps no copy)."""
        out, self._untaken = self._untaken, []
        if self.mm is not None and self._taken < self.off:
            out += [p for p in _records(self.mm, self._taken, self.off) if p is not None]
            self._taken = self.off
        return out

    def _next(self, length: int) -> int:
        """Move to the next chunk (the spare if made); its first offset."""
        if length > self.chunk_bytes:
            raise ValueError(f"a record of {length} bytes does not fit a journal chunk")
        if self.mm is None:
            raise OSError("journal is not open")
        spare, self._spare = self._spare, None
        nxt = spare if spare is not None else self._new_chunk()   # OSError: nothing changes
        # take() returns _untaken with the current chunk's records appended (the same list):
        # assigned, not +=, which would add that list to itself and hand every record twice.
        self._untaken = self.take()
        old = self._chunk
        self._use(nxt)
        if old is not None:
            old.close()
            self._left.append(old.path)
        return 0

    def prepare(self) -> None:
        """Off the hot path: make the next chunk once the current one is half full, so append
        only switches mappings. OSError (disk full) is left for append to meet."""
        if self._spare is None and self._chunk is not None and self.off * 2 >= self._size:
            self._spare = self._new_chunk()

    def release(self) -> None:
        """Remove the chunk files already left. Call it only once every record take() has
        returned is safely elsewhere: a chunk left holds nothing else, and without this the
        chunks of a long run (or a flood) would fill the disk and be read back at every start."""
        left, self._left = self._left, []
        for path in left:
            path.unlink(missing_ok=True)

    def discard(self) -> None:
        """Close and remove every chunk file (and the directory when empty)."""
        self.close()
        self.off = self._size = 0
        self._left = []
        for path in _chunks(self.directory):
            path.unlink(missing_ok=True)
        try:
            self.directory.rmdir()
        except OSError:
            pass

    def close(self) -> None:
        """Close the mappings; the files stay (their records are the durable copy)."""
        for chunk in (self._chunk, self._spare):
            if chunk is not None:
                chunk.close()
        self._chunk = self._spare = None
        self.mm = None
