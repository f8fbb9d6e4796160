"""Pure-Python twin of ext._pricebook: same API, same segment layout, ~20x slower.

Reference implementation and test oracle, and the fallback when the extension is not built.
It uses ``memoryview.cast`` word views (each aligned 4/8-byte item access is a single load or
store in CPython's C code) and ``struct`` for the header. Python cannot emit fences or atomic
RMWs, so its correctness argument is weaker than the C one and is x86-specific:

* Seqlock: x86-TSO keeps store->store and load->load order, so the writer's
  odd-seq / payload / even-seq stores and the reader's seq / payload / seq loads are seen in
  program order (CPython never reorders across these opaque C calls). Not valid on ARM.
* Writers: the book lock serialises writers; publish_seq is bumped while holding it (the RMW
  is not atomic) and its release (sem_post, a lock-prefixed instruction) is the store->load
  fence the Dekker doorbell needs on the writer side. Readers use ``_full_fence()``: an
  uncontended private threading.Lock round trip, whose locked instruction drains the store
  buffer on x86.
* The "CAS" on reader-entry state words is load-compare-store, not atomic: a twin reader
  disarming at the very instant a writer wakes it can double-decrement the sleepers hint.
  The twin writer therefore scans all reader entries on every publish instead of trusting
  the hint; a compiled writer paired with twin readers has no such protection.
"""

from __future__ import annotations

import array
import contextlib
import multiprocessing
import os
import secrets
import socket
import threading
import time
import weakref
from collections.abc import Sequence
from multiprocessing import resource_tracker

from ext.layout import (
    CACHE_LINE,
    CONTROL_OFFSET,
    CONTROL_OFFSETS,
    HEADER_OFFSETS,
    HEADER_SIZE,
    HEADER_STRUCT,
    LAYOUT_VERSION,
    LOCK_TIMEOUT_S,
    MAGIC,
    MAGIC_BYTES,
    MAX_READERS,
    MAX_SYMBOL_LEN,
    READER_ENTRY_SIZE,
    READER_NAME_MAX,
    READER_OFFSETS,
    READERS_OFFSET,
    SLOT_OFFSETS,
    SLOT_SIZE,
    STATE_AWAKE,
    STATE_FREE,
    STATE_SLEEPING,
    SYMBOL_WIDTH,
    SYMTAB_OFFSET,
    LayoutError,
    ReaderLost,
    attach_shm,
    check_symbols,
    create_shm,
    decode_header_bytes,
    decode_symtab,
    encode_symtab,
    expected_header,
    footprint,
    mapping_gone,
    pid_alive,
    segment_size,
    slots_offset,
    symtab_size,
    unlink_untracked,
    validate_header,
    validate_name,
    validate_symbols,
)

__all__ = [
    "SharedPriceBook",
    "PriceReader",
    "LayoutError",
    "ReaderLost",
    "segment_size",
    "footprint",
    "slots_offset",
    "symtab_size",
    "MAGIC",
    "MAGIC_BYTES",
    "LAYOUT_VERSION",
    "CACHE_LINE",
    "SLOT_SIZE",
    "SYMBOL_WIDTH",
    "MAX_SYMBOL_LEN",
    "MAX_READERS",
    "READER_ENTRY_SIZE",
    "READER_NAME_MAX",
    "HEADER_SIZE",
    "SYMTAB_OFFSET",
    "CONTROL_OFFSET",
    "READERS_OFFSET",
    "HEADER_OFFSETS",
    "CONTROL_OFFSETS",
    "READER_OFFSETS",
    "SLOT_OFFSETS",
    "STATE_FREE",
    "STATE_AWAKE",
    "STATE_SLEEPING",
    "READ_STALL_TIMEOUT_S",
]

_U32 = 0xFFFFFFFF
_SPINS_BEFORE_YIELD = 64
_POLL_TRIES = 8
READ_STALL_TIMEOUT_S = 1.0  # read_slot()/read() raise TimeoutError past this
_PUB_W32 = (CONTROL_OFFSET + CONTROL_OFFSETS["publish_seq"]) // 4
_SLEEPERS_W32 = (CONTROL_OFFSET + CONTROL_OFFSETS["sleepers"]) // 4
_HEARTBEAT_W64 = HEADER_OFFSETS["heartbeat_ns"] // 8
_fence_lock = threading.Lock()


def _full_fence() -> None:
    """StoreLoad barrier on x86: lock/unlock of a private lock executes a locked RMW."""
    _fence_lock.acquire()
    _fence_lock.release()


def _entry_w32(k: int, field: str) -> int:
    return (READERS_OFFSET + k * READER_ENTRY_SIZE + READER_OFFSETS[field]) // 4


def _spawn_lock():
    return multiprocessing.get_context("spawn").Lock()


class SharedPriceBook:
    """Writer/attacher handle on a shared price book segment (pure-Python twin)."""

    def __init__(
        self,
        symbols: Sequence[str] | None = None,
        name: str | None = None,
        create: bool = True,
        lock=None,
    ) -> None:
        self._closed = True
        self.name = name or ""
        self.nsymbols = 0
        self._unlinked = False
        self._views: tuple[memoryview, ...] = ()
        self._ring_sock: socket.socket | None = None
        self._readers: weakref.WeakSet[PriceReader] = weakref.WeakSet()
        self._lock = lock
        self.lock_skips = 0
        self.lock_timeout = LOCK_TIMEOUT_S
        self._lock_stalled = False
        self.created = False
        self.reclaimed = False
        self._shm = None
        if create:
            syms = validate_symbols(symbols)
            if name is None:
                name = "tsbook_" + secrets.token_hex(6)
            validate_name(name)
            shm, self.reclaimed = create_shm(name, segment_size(len(syms)))
            self._shm = shm
            self.created = True
            try:
                self._map()
                self._init_segment(syms)
            except BaseException:
                self._unmap()
                shm.close()
                shm.unlink()
                raise
        else:
            if name is None:
                raise ValueError("name is required when create=False")
            validate_name(name)
            shm = attach_shm(name)
            self._shm = shm
            try:
                syms = self._validate_attached(symbols)
                self._map()
            except BaseException:
                self._unmap()
                shm.close()
                raise
        self.name: str = name
        self.symbols: tuple[str, ...] = syms
        self.nsymbols: int = len(syms)
        self.size: int = shm.size
        self._index = {s: i for i, s in enumerate(syms)}
        self.byte_index: dict[bytes, int] = {s.encode("ascii"): i for i, s in enumerate(syms)}
        self._slot_w64 = slots_offset(self.nsymbols) // 8
        self._closed = False

    # -- mapping ------------------------------------------------------------------
    def _map(self) -> None:
        size = self._shm.size
        buf = self._shm.buf[: size - size % 8]  # cast() needs a whole number of words
        self._u8 = buf
        self._u32 = buf.cast("I")
        self._u64 = buf.cast("Q")
        self._i64 = buf.cast("q")
        self._f64 = buf.cast("d")
        self._views = (self._u32, self._u64, self._i64, self._f64, buf)

    def _unmap(self) -> None:
        for v in self._views:
            v.release()
        self._views = ()
        self._u8 = self._u32 = self._u64 = self._i64 = self._f64 = None

    def _init_segment(self, syms: tuple[str, ...]) -> None:
        n = len(syms)
        table = encode_symtab(syms)
        self._u8[SYMTAB_OFFSET : SYMTAB_OFFSET + len(table)] = table
        base = slots_offset(n) // 8
        for i in range(n):
            self._f64[base + i * 8 + 1] = float("nan")
        now = time.monotonic_ns()
        HEADER_STRUCT.pack_into(
            self._u8, 0, 0, LAYOUT_VERSION, HEADER_SIZE, SLOT_SIZE, n, SYMTAB_OFFSET,
            slots_offset(n), SYMBOL_WIDTH, MAX_READERS, os.getpid(), now, now,
        )
        self._u64[0] = MAGIC  # last (TSO: stores become visible in order)

    def _validate_attached(self, symbols: Sequence[str] | None) -> tuple[str, ...]:
        buf = self._shm.buf
        size = self._shm.size
        if size < CACHE_LINE:
            raise LayoutError(f"segment is {size} bytes, too small for a header: not a price book")
        n = validate_header(decode_header_bytes(bytes(buf[:CACHE_LINE])), size)
        found = decode_symtab(bytes(buf[SYMTAB_OFFSET : SYMTAB_OFFSET + n * SYMBOL_WIDTH]), n)
        check_symbols(symbols, found)
        return found

    def _check(self, i: int = 0) -> int:
        if self._closed:
            raise ValueError(f"price book {self.name!r} is closed")
        if not 0 <= i < self.nsymbols:
            raise IndexError(f"slot {i} out of range 0..{self.nsymbols - 1}")
        return self._slot_w64 + i * 8

    # -- lock -----------------------------------------------------------------------
    @property
    def lock(self):
        """The writer lock (created lazily from the spawn context; pass it to child writers)."""
        if self._lock is None:
            self._lock = _spawn_lock()
        return self._lock

    def _acquire(self) -> bool:
        """The writers' lock, bounded (see the compiled twin's _lock_slow for why); False means
        the caller skips its write (counted in lock_skips)."""
        if self.lock.acquire(True, 0 if self._lock_stalled else self.lock_timeout):
            self._lock_stalled = False
            return True
        self._lock_stalled = True
        self.lock_skips += 1
        return False

    @property
    def lock_stalled(self) -> bool:
        """True from a timed-out lock acquire until the next successful one."""
        return self._lock_stalled

    # -- hot paths (slow here) ----------------------------------------------------------
    def write(self, i: int, price: float, sent_ns: int = 0, tick_seq: int = 0) -> None:
        """Seqlock-write slot i under the writer lock (write_ns = now). Does not publish."""
        w = self._check(i)
        price = float(price)
        # Range-check before the odd store, as the C version converts arguments before it
        # touches the slot: a store that raises half way would leave the slot torn (or odd).
        if not (-(1 << 63) <= sent_ns < (1 << 63) and 0 <= tick_seq < (1 << 64)):
            raise OverflowError("sent_ns must fit int64 and tick_seq uint64")
        if not self._acquire():
            return
        try:
            u64 = self._u64
            s = u64[w] | 1  # odd even if a foreign odd value is there (seqlock.h)
            u64[w] = s
            self._f64[w + 1] = price
            self._i64[w + 2] = sent_ns
            u64[w + 3] = tick_seq
            self._i64[w + 4] = time.monotonic_ns()
            u64[w] = s + 1
        finally:
            self.lock.release()

    def update(self, symbol: str, price: float, sent_ns: int = 0, tick_seq: int = 0) -> None:
        """write() the symbol's slot and publish() it (one-tick batch)."""
        self.write(self._index[symbol], price, sent_ns, tick_seq)
        self.publish()

    def publish(self) -> int:
        """End a batch: bump publish_seq and ring sleeping readers; returns rings sent."""
        self._check()
        u32 = self._u32
        if not self._acquire():  # a held lock skips the publish too (never blocks the feed)
            return 0
        try:  # non-atomic RMW; the release is the StoreLoad fence (module doc)
            u32[_PUB_W32] = (u32[_PUB_W32] + 1) & _U32
        finally:
            self.lock.release()
        rings = 0
        for k in range(MAX_READERS):  # no trusting the sleepers hint (module doc)
            sw = _entry_w32(k, "state")
            if u32[sw] != STATE_SLEEPING:
                continue
            u32[sw] = STATE_AWAKE  # emulated CAS SLEEPING->AWAKE
            u32[_SLEEPERS_W32] = (u32[_SLEEPERS_W32] - 1) & _U32
            nlen = u32[_entry_w32(k, "name_len")]
            if not 0 < nlen <= READER_NAME_MAX:
                continue
            off = READERS_OFFSET + k * READER_ENTRY_SIZE + READER_OFFSETS["name"]
            addr = b"\0" + bytes(self._u8[off : off + nlen])
            if self._ring_sock is None:
                self._ring_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                self._ring_sock.sendto(b"!", socket.MSG_DONTWAIT, addr)
                rings += 1
            except OSError:  # EAGAIN: ring pending; ECONNREFUSED/ENOENT: reader gone
                pass
        return rings

    def _read_words(self, w: int) -> tuple[float, int, int, int]:
        u64, i64 = self._u64, self._i64
        spins = 0
        deadline = 0.0
        while True:
            s1 = u64[w]
            if not s1 & 1:
                rec = (self._f64[w + 1], i64[w + 2], u64[w + 3], i64[w + 4])
                if u64[w] == s1:
                    return rec
            spins += 1
            if spins >= _SPINS_BEFORE_YIELD:
                spins = 0
                os.sched_yield()
                now = time.monotonic()
                if not deadline:
                    deadline = now + READ_STALL_TIMEOUT_S
                elif now > deadline:  # writer killed mid-write: seq stays odd forever
                    i = (w - self._slot_w64) // 8
                    raise TimeoutError(
                        f"{self.name!r} slot {i} ({self.symbols[i]}) has been mid-write for "
                        f"{READ_STALL_TIMEOUT_S}s: the writer was probably killed while writing"
                    )

    def read(self, symbol: str) -> float:
        """Latest price of symbol (nan if never written)."""
        return self._read_words(self._check(self._index[symbol]))[0]

    def read_slot(self, i: int) -> tuple[float, int, int, int]:
        """Consistent (price, sent_ns, tick_seq, write_ns) of slot i."""
        return self._read_words(self._check(i))

    def seq(self, i: int) -> int:
        return self._u64[self._check(i)]

    def publish_seq(self) -> int:
        self._check()
        return self._u32[_PUB_W32]

    def index(self, symbol: str) -> int:
        return self._index[symbol]

    def heartbeat(self) -> None:
        """Owner liveness stamp (CLOCK_MONOTONIC ns) for crashed-segment reclaim."""
        self._check()
        self._i64[_HEARTBEAT_W64] = time.monotonic_ns()

    def header(self) -> dict:
        """Decoded header, control line and claimed reader entries, for diagnostics."""
        self._check()
        d = decode_header_bytes(bytes(self._u8[:CACHE_LINE]))
        d["magic"] = int(d["magic"]).to_bytes(8, "little")
        d["publish_seq"] = self._u32[_PUB_W32]
        d["sleepers"] = self._u32[_SLEEPERS_W32]
        readers = []
        for k in range(MAX_READERS):
            state = self._u32[_entry_w32(k, "state")]
            if state == STATE_FREE:
                continue
            nlen = min(self._u32[_entry_w32(k, "name_len")], READER_NAME_MAX)
            off = READERS_OFFSET + k * READER_ENTRY_SIZE + READER_OFFSETS["name"]
            readers.append({
                "index": k,
                "state": state,
                "pid": self._u32[_entry_w32(k, "pid")],
                "name": bytes(self._u8[off : off + nlen]).decode("ascii", "replace"),
            })
        d["readers"] = readers
        return d

    def reader(self) -> PriceReader:
        return PriceReader(self)

    # -- the owner's checks (heartbeat timer, never per tick) -----------------------------
    def check_segment(self) -> list[str]:
        """The owner's repair pass over what it owns; returns what it repaired (the compiled
        twin's docstring says why each repair is safe)."""
        self._check()
        if not self.created:
            raise ValueError("check_segment() is the creator's: it rewrites the segment")
        fixed: list[str] = []
        u8, u32, u64 = self._u8, self._u32, self._u64
        want = expected_header(self.nsymbols)
        got = decode_header_bytes(bytes(u8[:CACHE_LINE]))
        bad = [f for f, v in want.items() if got[f] != v]
        if bad:
            fixed.append("header (" + ", ".join(bad) + ")")
            u64[0] = 0
            HEADER_STRUCT.pack_into(
                u8, 0, 0, LAYOUT_VERSION, HEADER_SIZE, SLOT_SIZE, self.nsymbols, SYMTAB_OFFSET,
                slots_offset(self.nsymbols), SYMBOL_WIDTH, MAX_READERS, got["owner_pid"],
                got["created_ns"], got["heartbeat_ns"],
            )
            u64[0] = MAGIC  # last (TSO: stores become visible in order)
        table = encode_symtab(self.symbols)
        if bytes(u8[SYMTAB_OFFSET : SYMTAB_OFFSET + len(table)]) != table:
            fixed.append("symbol table")
            u8[SYMTAB_OFFSET : SYMTAB_OFFSET + len(table)] = table
        sleeping = 0
        for k in range(MAX_READERS):
            sw = _entry_w32(k, "state")
            state = u32[sw]
            if state > STATE_SLEEPING or u32[_entry_w32(k, "name_len")] > READER_NAME_MAX:
                fixed.append(f"reader entry {k}")
                u32[_entry_w32(k, "name_len")] = 0
                u32[_entry_w32(k, "pid")] = 0
                _full_fence()
                u32[sw] = STATE_FREE
            elif state == STATE_SLEEPING:
                sleeping += 1
        sl = u32[_SLEEPERS_W32]
        if sl > MAX_READERS or sl < sleeping:
            fixed.append("sleepers")
            u32[_SLEEPERS_W32] = sleeping
        if not self.lock.acquire(False):
            return fixed
        self._lock_stalled = False
        try:
            w = self._slot_w64
            for i in range(self.nsymbols):
                seq = u64[w + 8 * i]
                if seq & 1:
                    fixed.append(f"slot {i} ({self.symbols[i]}) seq odd")
                    u64[w + 8 * i] = seq + 1
        finally:
            self.lock.release()
        return fixed

    def mapping_gone(self) -> str | None:
        """None while the name still refers to the segment this handle maps, else why not
        (unlinked, or replaced by another file)."""
        self._check()
        return mapping_gone(self._shm, self.name)

    # -- lifecycle ------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Unmap (closing this process's readers first); idempotent. Does not unlink."""
        if self._closed:
            return
        for r in list(self._readers):
            r.close()
        self._closed = True
        self._unmap()  # casts pin the mmap: release them or shm.close() raises BufferError
        if self._ring_sock is not None:
            self._ring_sock.close()
            self._ring_sock = None
        if self._shm is not None:
            self._shm.close()

    def unlink(self) -> None:
        """Remove the name (mappings stay valid until closed); idempotent."""
        if self._unlinked or self._shm is None:
            return
        self._unlinked = True
        try:
            if self.created:
                self._shm.unlink()  # also unregisters from the resource tracker
            else:
                unlink_untracked(self.name)
        except FileNotFoundError:
            if self.created:
                resource_tracker.unregister(self._shm._name, "shared_memory")

    def __enter__(self) -> SharedPriceBook:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
        if self.created:
            self.unlink()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closed:
                self._unmap()

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{self.nsymbols} symbols"
        return f"<SharedPriceBook {getattr(self, 'name', '?')!r} {state} (python)>"


class PriceReader:
    """Change detection and doorbell for one consuming process; owns a doorbell socket.

    Reactor usage: poll(); if nothing and arm(): select on fileno(); on wake drain(),
    disarm(), poll(). arm() refuses (returns False) when a publish raced the last poll.
    """

    def __init__(self, book: SharedPriceBook) -> None:
        self._closed = True
        self.entry_index = -1
        book._check()
        self.book = book
        n = book.nsymbols
        self.capacity: int = n
        self.indices = array.array("q", bytes(8 * n))
        self.prices = array.array("d", bytes(8 * n))
        self.sent_ns = array.array("q", bytes(8 * n))
        self.tick_seqs = array.array("Q", bytes(8 * n))
        self.write_ns = array.array("q", bytes(8 * n))
        self._pins = [memoryview(a) for a in (self.indices, self.prices, self.sent_ns,
                                               self.tick_seqs, self.write_ns)]
        self._last_seen = [0] * n
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            sock.setblocking(False)
            for _ in range(16):
                name = f"tsbook.{os.getpid()}.{secrets.token_hex(8)}"
                try:
                    sock.bind("\0" + name)
                    break
                except OSError:
                    continue
            else:
                raise OSError(f"cannot bind a doorbell socket for {book.name!r}")
            k = self._claim_entry()
        except BaseException:
            sock.close()
            raise
        nb = name.encode("ascii")
        off = READERS_OFFSET + k * READER_ENTRY_SIZE + READER_OFFSETS["name"]
        book._u8[off : off + len(nb)] = nb
        book._u32[_entry_w32(k, "name_len")] = len(nb)
        self._state_w = _entry_w32(k, "state")
        self.entry_index = k
        self.doorbell_name = name
        self._sock = sock
        self._fd = sock.fileno()
        self._last_pub = book._u32[_PUB_W32]
        self._rescan = True  # first poll reports every slot written so far
        self._closed = False
        book._readers.add(self)

    def _claim_entry(self) -> int:
        # Emulated CAS (not atomic across processes; see module doc).
        u32 = self.book._u32
        me = os.getpid()
        for k in range(MAX_READERS):
            sw = _entry_w32(k, "state")
            if u32[sw] == STATE_FREE:
                u32[sw] = STATE_AWAKE
                u32[_entry_w32(k, "pid")] = me
                return k
        for k in range(MAX_READERS):
            sw, pw = _entry_w32(k, "state"), _entry_w32(k, "pid")
            pid = u32[pw]
            if u32[sw] != STATE_FREE and pid not in (0, me) and not pid_alive(pid):
                u32[pw] = me
                self._disarm_entry(sw)  # the dead one may have been asleep
                return k
        raise RuntimeError(
            f"price book {self.book.name!r}: all {MAX_READERS} reader entries are held "
            "by live processes; close unused PriceReaders"
        )

    def _disarm_entry(self, sw: int) -> None:
        u32 = self.book._u32
        if u32[sw] == STATE_SLEEPING:
            u32[sw] = STATE_AWAKE
            u32[_SLEEPERS_W32] = (u32[_SLEEPERS_W32] - 1) & _U32

    def _check(self) -> None:
        if self._closed:
            raise ValueError("PriceReader is closed")

    def poll(self) -> int:
        """Append every slot changed since the last poll to the output arrays; return count."""
        self._check()
        book = self.book
        pub = book._u32[_PUB_W32]
        if pub == self._last_pub and not self._rescan:
            return 0
        self._last_pub = pub
        self._rescan = False
        u64, i64, f64 = book._u64, book._i64, book._f64
        last = self._last_seen
        w = book._slot_w64
        n = 0
        for i in range(self.capacity):
            if u64[w] != last[i]:
                for _ in range(_POLL_TRIES):
                    s1 = u64[w]
                    if not s1 & 1:
                        rec = (f64[w + 1], i64[w + 2], u64[w + 3], i64[w + 4])
                        if u64[w] == s1:
                            break
                else:
                    self._rescan = True  # writer stalled mid-write: report next poll
                    w += 8
                    continue
                last[i] = s1
                self.indices[n] = i
                self.prices[n], self.sent_ns[n], self.tick_seqs[n], self.write_ns[n] = rec
                n += 1
            w += 8
        return n

    def fileno(self) -> int:
        return self._fd

    def arm(self) -> bool:
        """Announce sleep; False means a publish (or deferred slot) is pending: poll again."""
        self._check()
        if self._rescan:
            return False
        u32 = self.book._u32
        st = u32[self._state_w]
        if st == STATE_AWAKE:
            u32[self._state_w] = STATE_SLEEPING
            u32[_SLEEPERS_W32] = (u32[_SLEEPERS_W32] + 1) & _U32
        elif st != STATE_SLEEPING:
            raise ReaderLost("reader entry is no longer owned by this PriceReader")
        _full_fence()
        if u32[_PUB_W32] == self._last_pub:
            return True
        self._disarm_entry(self._state_w)
        return False

    def disarm(self) -> None:
        self._check()
        self._disarm_entry(self._state_w)

    def drain(self) -> int:
        """Discard one doorbell datagram (non-blocking); 1, or 0 if none was queued (see the
        compiled twin for why one)."""
        self._check()
        while True:
            try:
                self._sock.recv(16)
            except BlockingIOError:
                return 0
            except InterruptedError:
                continue
            return 1

    def _release_entry(self) -> None:
        book = self.book
        if book is None or book._closed or self.entry_index < 0:
            return
        u32 = book._u32
        if u32[_entry_w32(self.entry_index, "pid")] != os.getpid():
            return  # overwritten and reset by the owner: maybe another reader's by now
        self._disarm_entry(self._state_w)
        u32[_entry_w32(self.entry_index, "name_len")] = 0
        u32[_entry_w32(self.entry_index, "pid")] = 0  # before FREE: reclaimers skip pid 0
        _full_fence()
        u32[self._state_w] = STATE_FREE

    def close(self) -> None:
        """Free the reader entry and close the doorbell; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._release_entry()
        self._sock.close()
        self._fd = -1
        self.book._readers.discard(self)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> PriceReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            if not self._closed:
                self._closed = True
                self._release_entry()

    def __repr__(self) -> str:
        return f"<PriceReader entry={self.entry_index} of {self.book!r}>"
