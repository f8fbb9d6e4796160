# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
# cython: cdivision=True, binding=False, embedsignature=True
"""Seqlock "latest price per symbol" book in POSIX shared memory (compiled implementation).

One writer process publishes ticks; any number of reader processes read without locks and
without ever blocking the writer. The segment layout is declared in _pricebook.pxd and the
memory-ordering argument lives in seqlock.h. ext/pricebook_py.py is the pure-Python twin.
"""

import _multiprocessing
import array as _array
import multiprocessing
import os
import secrets
import socket as _socket
import weakref
from multiprocessing import resource_tracker

from cpython.array cimport array
from cpython.buffer cimport PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EINTR, ETIMEDOUT, errno
from libc.math cimport NAN
from libc.stdint cimport int64_t, uint32_t, uint64_t, uintptr_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
from posix.unistd cimport close as c_close, getpid as c_getpid

from ext.layout import (
    LOCK_TIMEOUT_S,
    LayoutError,
    ReaderLost,
    expected_header,
    footprint,
    mapping_gone,
    attach_shm,
    check_symbols,
    create_shm,
    decode_symtab,
    encode_symtab,
    pid_alive,
    unlink_untracked,
    validate_header,
    validate_name,
    validate_symbols,
)

__all__ = ["SharedPriceBook", "PriceReader", "LayoutError", "ReaderLost", "segment_size",
           "footprint"]

# ------------------------------------------------------------------ layout constants
# Exported so tests can check ext/layout.py (the twin's mirror) against the C structs.
MAGIC = TSB_MAGIC
MAGIC_BYTES = MAGIC.to_bytes(8, "little")
LAYOUT_VERSION = TSB_LAYOUT_VERSION
CACHE_LINE = TSB_CACHE_LINE
SLOT_SIZE = sizeof(tsb_slot)
SYMBOL_WIDTH = TSB_SYMBOL_WIDTH
MAX_SYMBOL_LEN = TSB_SYMBOL_WIDTH - 1
MAX_READERS = TSB_MAX_READERS
READER_ENTRY_SIZE = sizeof(tsb_reader_entry)
READER_NAME_MAX = TSB_READER_NAME_MAX
HEADER_SIZE = sizeof(tsb_head)
SYMTAB_OFFSET = sizeof(tsb_head)
STATE_FREE = TSB_STATE_FREE
STATE_AWAKE = TSB_STATE_AWAKE
STATE_SLEEPING = TSB_STATE_SLEEPING

# offsetof() via address differences on a static instance (Cython has no offsetof for its
# own structs); evaluated once at import.
cdef tsb_head _ph
cdef tsb_slot _ps
cdef inline Py_ssize_t _d(void *field, void *base) noexcept:
    return <char *>field - <char *>base

CONTROL_OFFSET = _d(&_ph.c, &_ph)
READERS_OFFSET = _d(&_ph.readers[0], &_ph)
HEADER_OFFSETS = {
    "magic": _d(&_ph.h.magic, &_ph.h),
    "layout_version": _d(&_ph.h.layout_version, &_ph.h),
    "header_size": _d(&_ph.h.header_size, &_ph.h),
    "slot_size": _d(&_ph.h.slot_size, &_ph.h),
    "nsymbols": _d(&_ph.h.nsymbols, &_ph.h),
    "symtab_offset": _d(&_ph.h.symtab_offset, &_ph.h),
    "slots_offset": _d(&_ph.h.slots_offset, &_ph.h),
    "symbol_width": _d(&_ph.h.symbol_width, &_ph.h),
    "max_readers": _d(&_ph.h.max_readers, &_ph.h),
    "owner_pid": _d(&_ph.h.owner_pid, &_ph.h),
    "created_ns": _d(&_ph.h.created_ns, &_ph.h),
    "heartbeat_ns": _d(&_ph.h.heartbeat_ns, &_ph.h),
}
CONTROL_OFFSETS = {
    "publish_seq": _d(&_ph.c.publish_seq, &_ph.c),
    "sleepers": _d(&_ph.c.sleepers, &_ph.c),
}
READER_OFFSETS = {
    "state": _d(&_ph.readers[0].state, &_ph.readers[0]),
    "pid": _d(&_ph.readers[0].pid, &_ph.readers[0]),
    "name_len": _d(&_ph.readers[0].name_len, &_ph.readers[0]),
    "pad": _d(&_ph.readers[0]._pad, &_ph.readers[0]),
    "name": _d(&_ph.readers[0].name[0], &_ph.readers[0]),
}
SLOT_OFFSETS = {
    "seq": _d(&_ps.seq, &_ps),
    "price": _d(&_ps.price, &_ps),
    "sent_ns": _d(&_ps.sent_ns, &_ps),
    "tick_seq": _d(&_ps.tick_seq, &_ps),
    "write_ns": _d(&_ps.write_ns, &_ps),
}

if (sizeof(tsb_header) != TSB_CACHE_LINE or sizeof(tsb_control) != TSB_CACHE_LINE
        or sizeof(tsb_reader_entry) != TSB_CACHE_LINE or sizeof(tsb_slot) != TSB_CACHE_LINE
        or HEADER_SIZE % TSB_CACHE_LINE
        or SLOT_OFFSETS["seq"] != 0
        # seqlock.h copies the payload as TSB_PAYLOAD_WORDS consecutive words after seq
        or [SLOT_OFFSETS[k] for k in ("price", "sent_ns", "tick_seq", "write_ns")]
        != [8 * (1 + i) for i in range(TSB_PAYLOAD_WORDS)]):
    raise ImportError("ext._pricebook: C struct layout does not match the segment spec")

cdef inline Py_ssize_t _symtab_size(Py_ssize_t n) noexcept:
    return (n * TSB_SYMBOL_WIDTH + TSB_CACHE_LINE - 1) // TSB_CACHE_LINE * TSB_CACHE_LINE

cdef inline Py_ssize_t _slots_offset(Py_ssize_t n) noexcept:
    return <Py_ssize_t>sizeof(tsb_head) + _symtab_size(n)


def symtab_size(Py_ssize_t nsymbols) -> int:
    """Symbol table bytes, padded so the slots start on a fresh cache line."""
    return _symtab_size(nsymbols)


def slots_offset(Py_ssize_t nsymbols) -> int:
    return _slots_offset(nsymbols)


def segment_size(Py_ssize_t nsymbols) -> int:
    """Exact byte size of a book for ``nsymbols`` symbols."""
    if nsymbols < 1:
        raise ValueError("nsymbols must be >= 1")
    return _slots_offset(nsymbols) + nsymbols * <Py_ssize_t>sizeof(tsb_slot)


cdef sockaddr_un _psun
cdef Py_ssize_t _SUN_PATH_OFFSET = _d(&_psun.sun_path[0], &_psun)
cdef int _POLL_TRIES = 64      # a slot still odd after this many attempts is deferred
cdef unsigned _READ_YIELDS = 64  # read_c yields this often before its slow path
READ_STALL_TIMEOUT_S = 1.0       # read_slot()/read() raise TimeoutError past this


def _spawn_lock():
    return multiprocessing.get_context("spawn").Lock()


cdef dict _header_dict(tsb_header *h):
    # magic is acquire-loaded: the creator stores it last with release, so once it reads
    # valid every other immutable header field below is initialised.
    return {
        "magic": tsb_u64_load_acquire(&h.magic),
        "layout_version": h.layout_version,
        "header_size": h.header_size,
        "slot_size": h.slot_size,
        "nsymbols": h.nsymbols,
        "symtab_offset": h.symtab_offset,
        "slots_offset": h.slots_offset,
        "symbol_width": h.symbol_width,
        "max_readers": h.max_readers,
        "owner_pid": tsb_u64_load_relaxed(&h.owner_pid),
        "created_ns": tsb_i64_load_relaxed(&h.created_ns),
        "heartbeat_ns": tsb_i64_load_relaxed(&h.heartbeat_ns),
    }


# ------------------------------------------------------------------ the book
cdef class SharedPriceBook:
    """Writer/attacher handle on a shared price book segment.

    Writers serialise on a multiprocessing Lock (pass the same ``lock`` to every writing
    process); readers never touch it. Hot methods are C with no allocation except the
    Python return values.
    """

    def __cinit__(self):
        self._ring_fd = -1
        self._closed = True

    def __init__(self, symbols=None, name=None, bint create=True, lock=None):
        self._readers = weakref.WeakSet()
        self.lock_timeout = LOCK_TIMEOUT_S
        if lock is not None:
            self._set_lock(lock)
        if create:
            syms = validate_symbols(symbols)
            if name is None:
                name = "tsbook_" + secrets.token_hex(6)
            validate_name(name)
            shm, reclaimed = create_shm(name, segment_size(len(syms)))
            self._shm = shm
            self.created = True
            self.reclaimed = reclaimed
            try:
                self._map(shm)
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
                self._map(shm)
                syms = self._validate_attached(symbols)
            except BaseException:
                self._unmap()
                shm.close()
                raise
        self.name = name
        self.symbols = syms
        self.nsymbols = len(syms)
        self.size = shm.size
        self._index = {s: i for i, s in enumerate(syms)}
        self.byte_index = {s.encode("ascii"): i for i, s in enumerate(syms)}
        self._head = <tsb_head *>self._base
        self._slots = <tsb_slot *>(self._base + _slots_offset(self.nsymbols))
        self._closed = False

    # -- mapping ----------------------------------------------------------------
    def _map(self, shm):
        if PyObject_GetBuffer(shm.buf, &self._view, PyBUF_WRITABLE) < 0:
            raise BufferError("cannot map shared memory buffer")
        self._has_view = True
        self._base = <char *>self._view.buf
        if <uintptr_t>self._base % TSB_CACHE_LINE:
            raise LayoutError("shared memory mapping is not cache-line aligned")

    def _unmap(self):
        self._head = NULL
        self._slots = NULL
        self._base = NULL
        if self._has_view:
            self._has_view = False
            PyBuffer_Release(&self._view)

    def _init_segment(self, tuple syms):
        cdef tsb_header *h = <tsb_header *>self._base
        cdef Py_ssize_t n = len(syms), i
        cdef bytes table = encode_symtab(syms)
        cdef tsb_slot *slots = <tsb_slot *>(self._base + _slots_offset(n))
        cdef int64_t now = tsb_now_ns()
        memcpy(self._base + sizeof(tsb_head), <char *>table, len(table))
        for i in range(n):     # never-written slots read as NaN (seq stays 0)
            tsb_u64_store_relaxed(<uint64_t *>&slots[i].price, tsb_f64_bits(NAN))
        h.layout_version = TSB_LAYOUT_VERSION
        h.header_size = sizeof(tsb_head)
        h.slot_size = sizeof(tsb_slot)
        h.nsymbols = n
        h.symtab_offset = sizeof(tsb_head)
        h.slots_offset = _slots_offset(n)
        h.symbol_width = TSB_SYMBOL_WIDTH
        h.max_readers = TSB_MAX_READERS
        tsb_u64_store_relaxed(&h.owner_pid, os.getpid())
        h.created_ns = now
        tsb_i64_store_release(&h.heartbeat_ns, now)
        tsb_u64_store_release(&h.magic, TSB_MAGIC)   # last: attachers validate magic first

    def _validate_attached(self, symbols):
        cdef Py_ssize_t size = self._view.len
        if size < <Py_ssize_t>sizeof(tsb_header):
            raise LayoutError(f"segment is {size} bytes, too small for a header: not a price book")
        n = validate_header(_header_dict(<tsb_header *>self._base), size)
        raw = PyBytes_FromStringAndSize(self._base + sizeof(tsb_head), n * TSB_SYMBOL_WIDTH)
        found = decode_symtab(raw, n)
        check_symbols(symbols, found)
        return found

    # -- lock -------------------------------------------------------------------
    def _set_lock(self, lock):
        # Fast path: a multiprocessing.Lock is a POSIX semaphore and on Linux
        # lock._semlock.handle is its sem_t*. SemLock.acquire()/release() for a plain Lock
        # are sem_trywait/sem_wait/sem_post plus bookkeeping (count, owner tid) that only
        # RLock/Condition consult, so calling sem_* directly keeps mutual exclusion with any
        # Python-level `with lock:` user while skipping the method dispatch, argument
        # parsing and GIL release/re-acquire. RLocks or foreign locks use acquire()/release().
        # We keep a reference to `lock`: it owns the sem_t (sem_close on dealloc).
        self._sem = NULL
        self._acquire = None
        self._release = None
        sl = getattr(lock, "_semlock", None)
        if (type(sl) is _multiprocessing.SemLock and sl.kind == 1 and sl.maxvalue == 1
                and isinstance(sl.handle, int) and sl.handle):
            self._sem = <sem_t *><uintptr_t>sl.handle
        else:
            self._acquire = lock.acquire
            self._release = lock.release
        self._lock = lock

    @property
    def lock(self):
        """The writer lock (created lazily from the spawn context; pass it to child writers)."""
        if self._lock is None:
            self._set_lock(_spawn_lock())
        return self._lock

    cdef int _lock_slow(self) except -1:
        # Returns 0 with the lock held, 1 when the write is to be skipped. Why bounded: the
        # lock is a POSIX semaphore any process that can reach it may hold (a foreign process,
        # or a writer stopped or killed inside its critical section); an unbounded wait stalls
        # the feed silently. The writers' critical section is a few stores, so a lock still
        # held after lock_timeout is not a writer mid-write: the write is skipped and counted
        # (lock_skips), and until an acquire succeeds again (here, or the owner's
        # check_segment()) every later write skips at once instead of waiting again, so a held
        # lock costs the feed one timeout per episode, not one per tick. The slots then stop
        # advancing, which is how readers see the episode (their prices go stale).
        cdef int rc, err
        cdef timespec ts
        cdef long long ns
        if self._lock is None:
            self._set_lock(_spawn_lock())
        if self._sem == NULL:
            if self._acquire(True, 0 if self._lock_stalled else self.lock_timeout):
                self._lock_stalled = False
                return 0
            self._lock_stalled = True
            self.lock_skips += 1
            return 1
        if self._lock_stalled:       # the caller's sem_trywait has just failed
            self.lock_skips += 1
            return 1
        clock_gettime(CLOCK_REALTIME, &ts)   # sem_timedwait's clock
        ns = ts.tv_nsec + <long long>(self.lock_timeout * 1e9)
        ts.tv_sec += ns // 1000000000
        ts.tv_nsec = ns % 1000000000
        while True:      # contended: block without holding the GIL, up to the deadline
            with nogil:
                rc = sem_timedwait(self._sem, &ts)
                err = errno
            if rc == 0:
                return 0
            if err == ETIMEDOUT:
                self._lock_stalled = True
                self.lock_skips += 1
                return 1
            if err != EINTR:
                raise OSError(err, os.strerror(err))
            PyErr_CheckSignals()

    @property
    def lock_stalled(self):
        """True from a timed-out lock acquire until the next successful one."""
        return self._lock_stalled

    # -- hot paths ----------------------------------------------------------------
    cdef int _check_slot(self, Py_ssize_t i) except -1:
        if self._closed:
            raise ValueError(f"price book {self.name!r} is closed")
        if <size_t>i >= <size_t>self.nsymbols:
            raise IndexError(f"slot {i} out of range 0..{self.nsymbols - 1}")
        return 0

    cdef int64_t write_c(self, Py_ssize_t i, double price, int64_t sent_ns,
                         uint64_t tick_seq) except -1:
        # Returns the write's write_ns stamp, or 0 when the write was skipped (lock held).
        cdef uint64_t w[TSB_PAYLOAD_WORDS]
        cdef tsb_slot *s
        if <size_t>i >= <size_t>self.nsymbols or self._slots == NULL:
            self._check_slot(i)
        if self._sem == NULL or sem_trywait(self._sem) != 0:
            if self._lock_slow():
                return 0
        s = &self._slots[i]
        w[0] = tsb_f64_bits(price)
        w[1] = <uint64_t>sent_ns
        w[2] = tick_seq
        w[3] = <uint64_t>tsb_now_ns()     # inside the lock: write_ns is monotone per slot
        tsb_seq_write(&s.seq, <uint64_t *>&s.price, w, TSB_PAYLOAD_WORDS)
        if self._sem != NULL:
            sem_post(self._sem)
        else:
            self._release()
        return <int64_t>w[3]

    cdef int read_c(self, Py_ssize_t i, tsb_payload *out) except -1:
        cdef uint64_t w[TSB_PAYLOAD_WORDS]
        cdef uint64_t ver
        cdef tsb_slot *s
        if <size_t>i >= <size_t>self.nsymbols or self._slots == NULL:
            self._check_slot(i)
        s = &self._slots[i]
        if not tsb_seq_read(&s.seq, <const uint64_t *>&s.price, w, TSB_PAYLOAD_WORDS,
                            _READ_YIELDS, &ver):
            self._read_stalled(i, w)
        out.price = tsb_bits_f64(w[0])
        out.sent_ns = <int64_t>w[1]
        out.tick_seq = w[2]
        out.write_ns = <int64_t>w[3]
        return 0

    cdef int _read_stalled(self, Py_ssize_t i, uint64_t *w) except -1:
        # Slot odd for a long time: the writer is descheduled or died mid-write. Keep
        # trying, but stay interruptible (Ctrl-C) and give up rather than hang forever.
        cdef uint64_t ver
        cdef int64_t deadline = tsb_now_ns() + <int64_t>(READ_STALL_TIMEOUT_S * 1e9)
        cdef tsb_slot *s = &self._slots[i]
        while not tsb_seq_read(&s.seq, <const uint64_t *>&s.price, w, TSB_PAYLOAD_WORDS,
                               _READ_YIELDS, &ver):
            PyErr_CheckSignals()
            if tsb_now_ns() > deadline:
                raise TimeoutError(
                    f"{self.name!r} slot {i} ({self.symbols[i]}) has been mid-write for "
                    f"{READ_STALL_TIMEOUT_S}s: the writer was probably killed while writing"
                )
        return 0

    cdef int publish_c(self) except -1:
        if self._head == NULL:
            self._check_slot(0)
        if tsb_publish(&self._head.c.publish_seq, &self._head.c.sleepers) == 0:
            return 0
        return self._ring()

    cdef int _ring(self) except -1:
        # Only reached when some reader announced it is going to sleep.
        cdef int k, rings = 0
        cdef uint32_t nlen
        cdef tsb_reader_entry *e
        cdef sockaddr_un addr
        cdef char one = 33
        if self._ring_fd < 0:   # before claiming any entry: a claimed sleeper must be rung
            self._ring_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)
            if self._ring_fd < 0:
                raise OSError(errno, os.strerror(errno))
        addr.sun_family = AF_UNIX
        addr.sun_path[0] = 0
        for k in range(TSB_MAX_READERS):
            e = &self._head.readers[k]
            if not tsb_wake_claim(&e.state, &self._head.c.sleepers):
                continue
            nlen = tsb_u32_load_acquire(&e.name_len)
            if nlen == 0 or nlen > TSB_READER_NAME_MAX:
                continue
            memcpy(&addr.sun_path[1], e.name, nlen)
            if sendto(self._ring_fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL, <sockaddr *>&addr,
                      <socklen_t>(_SUN_PATH_OFFSET + 1 + nlen)) == 1:
                rings += 1
            # else EAGAIN: a ring is already queued there; ECONNREFUSED/ENOENT: that reader
            # died (its entry stays AWAKE and is reclaimed by pid). Nothing to do, no logging.
        return rings

    def write(self, Py_ssize_t i, double price, int64_t sent_ns=0, uint64_t tick_seq=0):
        """Seqlock-write slot i under the writer lock (write_ns = now). Does not publish."""
        self.write_c(i, price, sent_ns, tick_seq)

    def update(self, str symbol, double price, int64_t sent_ns=0, uint64_t tick_seq=0):
        """write() the symbol's slot and publish() it (one-tick batch)."""
        self.write_c(self._index[symbol], price, sent_ns, tick_seq)
        self.publish_c()

    def publish(self):
        """End a batch: bump publish_seq and ring sleeping readers; returns rings sent."""
        return self.publish_c()

    def read(self, str symbol):
        """Latest price of symbol (nan if never written)."""
        cdef tsb_payload p
        self.read_c(self._index[symbol], &p)
        return p.price

    def read_slot(self, Py_ssize_t i):
        """Consistent (price, sent_ns, tick_seq, write_ns) of slot i."""
        cdef tsb_payload p
        self.read_c(i, &p)
        return (p.price, p.sent_ns, p.tick_seq, p.write_ns)

    def seq(self, Py_ssize_t i):
        self._check_slot(i)
        return tsb_u64_load_acquire(&self._slots[i].seq)

    def publish_seq(self):
        if self._head == NULL:
            self._check_slot(0)
        return tsb_u32_load_acquire(&self._head.c.publish_seq)

    def index(self, str symbol):
        return self._index[symbol]

    def heartbeat(self):
        """Owner liveness stamp (CLOCK_MONOTONIC ns) for crashed-segment reclaim."""
        if self._head == NULL:
            self._check_slot(0)
        tsb_i64_store_release(&self._head.h.heartbeat_ns, tsb_now_ns())

    def header(self):
        """Decoded header, control line and claimed reader entries, for diagnostics."""
        cdef tsb_reader_entry *e
        cdef int k
        cdef uint32_t nlen
        if self._head == NULL:
            self._check_slot(0)
        d = _header_dict(&self._head.h)
        d["magic"] = int(d["magic"]).to_bytes(8, "little")
        d["publish_seq"] = tsb_u32_load_acquire(&self._head.c.publish_seq)
        d["sleepers"] = tsb_u32_load_acquire(&self._head.c.sleepers)
        readers = []
        for k in range(TSB_MAX_READERS):
            e = &self._head.readers[k]
            state = tsb_u32_load_acquire(&e.state)
            if state == TSB_STATE_FREE:
                continue
            nlen = min(tsb_u32_load_acquire(&e.name_len), <uint32_t>TSB_READER_NAME_MAX)
            readers.append({
                "index": k,
                "state": state,
                "pid": tsb_u32_load_acquire(&e.pid),
                "name": PyBytes_FromStringAndSize(e.name, nlen).decode("ascii", "replace"),
            })
        d["readers"] = readers
        return d

    def reader(self):
        return PriceReader(self)

    # -- the owner's checks (heartbeat timer, never per tick) ---------------------------------
    def check_segment(self):
        """The owner's repair pass over what it owns; returns what it repaired (list of str).

        Why the owner may simply rewrite: it is the only writer and holds the lock for the slot
        pass, so a value that differs from what it wrote is corruption, never a write in
        progress. Header fields are rewritten magic last (release), as on create, so an
        attacher that reads the repaired magic sees the repaired fields. A reader entry is
        reset to FREE only when it cannot be a reader's (state or name length out of range):
        a live reader whose entry is reset finds it not armable and re-attaches. An odd slot
        seq is made even with its payload kept: readers retry on odd, so nothing they copied
        while it was odd is used, and a foreign payload is judged by their price checks. The
        lock is only tried, never waited for: when it is held the slot pass waits for the
        next heartbeat (and a successful try ends a lock_stalled episode).
        """
        cdef tsb_header *h
        cdef tsb_reader_entry *e
        cdef tsb_slot *s
        cdef Py_ssize_t i
        cdef int k
        cdef uint32_t state, sleeping = 0, sl
        cdef uint64_t seq
        cdef bytes table
        if self._head == NULL:
            self._check_slot(0)
        if not self.created:
            raise ValueError("check_segment() is the creator's: it rewrites the segment")
        fixed = []
        h = &self._head.h
        want = expected_header(self.nsymbols)
        got = _header_dict(h)
        if any(got[f] != v for f, v in want.items()):
            fixed.append("header (" + ", ".join(f for f, v in want.items() if got[f] != v) + ")")
            tsb_u64_store_relaxed(&h.magic, 0)
            h.layout_version = want["layout_version"]
            h.header_size = want["header_size"]
            h.slot_size = want["slot_size"]
            h.nsymbols = want["nsymbols"]
            h.symtab_offset = want["symtab_offset"]
            h.slots_offset = want["slots_offset"]
            h.symbol_width = want["symbol_width"]
            h.max_readers = want["max_readers"]
            tsb_u64_store_release(&h.magic, TSB_MAGIC)
        table = encode_symtab(self.symbols)
        if PyBytes_FromStringAndSize(self._base + sizeof(tsb_head), len(table)) != table:
            fixed.append("symbol table")
            memcpy(self._base + sizeof(tsb_head), <char *>table, len(table))
        for k in range(TSB_MAX_READERS):
            e = &self._head.readers[k]
            state = tsb_u32_load_acquire(&e.state)
            if state > TSB_STATE_SLEEPING or tsb_u32_load_relaxed(&e.name_len) > TSB_READER_NAME_MAX:
                fixed.append(f"reader entry {k}")
                tsb_u32_store_release(&e.name_len, 0)
                tsb_u32_store_release(&e.pid, 0)
                tsb_u32_store_seqcst(&e.state, TSB_STATE_FREE)
            elif state == TSB_STATE_SLEEPING:
                sleeping += 1
        # The sleepers hint may overcount for a moment (seqlock.h) but never exceeds the
        # entries; outside that it is garbage: a lower count loses wake-ups, a higher one costs a
        # scan per publish. The CAS loses to any concurrent arm/disarm, which is then correct.
        sl = tsb_u32_load_seqcst(&self._head.c.sleepers)
        if sl > TSB_MAX_READERS or sl < sleeping:
            if tsb_u32_cas_seqcst(&self._head.c.sleepers, sl, sleeping):
                fixed.append("sleepers")
        if self._sem != NULL:
            if sem_trywait(self._sem) != 0:
                return fixed
        elif not self._lock_try():
            return fixed
        self._lock_stalled = False
        try:
            for i in range(self.nsymbols):
                s = &self._slots[i]
                seq = tsb_u64_load_relaxed(&s.seq)
                if seq & 1u:
                    fixed.append(f"slot {i} ({self.symbols[i]}) seq odd")
                    tsb_u64_store_release(&s.seq, seq + 1)
        finally:
            if self._sem != NULL:
                sem_post(self._sem)
            else:
                self._release()
        return fixed

    def _lock_try(self):
        if self._lock is None:
            self._set_lock(_spawn_lock())
        if self._sem != NULL:
            return sem_trywait(self._sem) == 0
        return bool(self._acquire(False))

    def mapping_gone(self):
        """None while the name still refers to the segment this handle maps, else why not
        (unlinked, or replaced by another file)."""
        if self._closed:
            raise ValueError(f"price book {self.name!r} is closed")
        return mapping_gone(self._shm, self.name)

    # -- lifecycle -----------------------------------------------------------------
    @property
    def closed(self):
        return self._closed

    def close(self):
        """Unmap (closing this process's readers first); idempotent. Does not unlink."""
        if self._closed:
            return
        for r in list(self._readers):
            r.close()
        self._closed = True
        self._unmap()       # release our buffer export before shm.close() or it refuses
        if self._ring_fd >= 0:
            c_close(self._ring_fd)
            self._ring_fd = -1
        if self._shm is not None:
            self._shm.close()

    def unlink(self):
        """Remove the name (mappings stay valid until closed); idempotent."""
        if self._unlinked or self._shm is None:
            return
        self._unlinked = True
        try:
            if self.created:
                self._shm.unlink()     # also unregisters from the resource tracker
            else:
                unlink_untracked(self.name)
        except FileNotFoundError:
            if self.created:
                resource_tracker.unregister(self._shm._name, "shared_memory")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        if self.created:
            self.unlink()

    def __dealloc__(self):
        if self._has_view:
            PyBuffer_Release(&self._view)
        if self._ring_fd >= 0:
            c_close(self._ring_fd)

    def __repr__(self):
        state = "closed" if self._closed else f"{self.nsymbols} symbols"
        return f"<SharedPriceBook {self.name!r} {state} (cython)>"


# ------------------------------------------------------------------ reader
cdef class PriceReader:
    """Change detection and doorbell for one consuming process; owns a doorbell socket.

    Reactor usage: poll(); if nothing and arm(): select on fileno(); on wake drain(),
    disarm(), poll(). arm() refuses (returns False) when a publish raced the last poll.
    """

    def __cinit__(self):
        self._fd = -1
        self._closed = True
        self.entry_index = -1

    def __init__(self, SharedPriceBook book not None):
        cdef Py_ssize_t n
        cdef array a
        cdef bytes nb
        cdef tsb_reader_entry *e
        if book._closed:
            raise ValueError(f"price book {book.name!r} is closed")
        self.book = book
        n = book.nsymbols
        self.capacity = n
        self.indices = _array.array("q", bytes(8 * n))
        self.prices = _array.array("d", bytes(8 * n))
        self.sent_ns = _array.array("q", bytes(8 * n))
        self.tick_seqs = _array.array("Q", bytes(8 * n))
        self.write_ns = _array.array("q", bytes(8 * n))
        # Raw pointers into the arrays; the memoryview pins keep them from ever resizing.
        self._pins = [memoryview(x) for x in (self.indices, self.prices, self.sent_ns,
                                               self.tick_seqs, self.write_ns)]
        a = self.indices
        self._o_idx = a.data.as_longlongs
        a = self.prices
        self._o_price = a.data.as_doubles
        a = self.sent_ns
        self._o_sent = a.data.as_longlongs
        a = self.tick_seqs
        self._o_tick = a.data.as_ulonglongs
        a = self.write_ns
        self._o_wns = a.data.as_longlongs
        self._last_seen = <uint64_t *>calloc(n, sizeof(uint64_t))
        if self._last_seen == NULL:
            raise MemoryError()

        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
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
        e = &book._head.readers[k]
        memcpy(e.name, <char *>nb, len(nb))
        tsb_u32_store_release(&e.name_len, len(nb))
        self._entry = e
        self.entry_index = k
        self.doorbell_name = name
        self._sock = sock
        self._fd = sock.fileno()
        self._last_pub = tsb_u32_load_acquire(&book._head.c.publish_seq)
        self._rescan = True          # first poll reports every slot written so far
        self._closed = False
        book._readers.add(self)

    def _claim_entry(self):
        # FREE -> AWAKE by CAS, then pid. A reclaimer only takes entries with a non-zero dead
        # pid, and does so by CAS on the pid word, so two claimants can never share an entry.
        # Known leak: a process killed between the state CAS and the pid store leaves an
        # AWAKE entry with pid 0 that nobody reclaims (a window of a few instructions).
        cdef tsb_head *head = self.book._head
        cdef tsb_reader_entry *e
        cdef uint32_t me = os.getpid(), pid
        cdef int k
        for k in range(TSB_MAX_READERS):
            e = &head.readers[k]
            if tsb_u32_cas_seqcst(&e.state, TSB_STATE_FREE, TSB_STATE_AWAKE):
                tsb_u32_store_release(&e.pid, me)
                return k
        for k in range(TSB_MAX_READERS):
            e = &head.readers[k]
            pid = tsb_u32_load_acquire(&e.pid)
            if (tsb_u32_load_acquire(&e.state) != TSB_STATE_FREE and pid != 0 and pid != me
                    and not pid_alive(pid) and tsb_u32_cas_seqcst(&e.pid, pid, me)):
                tsb_disarm(&e.state, &head.c.sleepers)   # the dead one may have been asleep
                return k
        raise RuntimeError(
            f"price book {self.book.name!r}: all {TSB_MAX_READERS} reader entries are held "
            "by live processes; close unused PriceReaders"
        )

    cdef Py_ssize_t poll_c(self) except -1:
        cdef tsb_head *head
        cdef tsb_slot *slots
        cdef tsb_slot *s
        cdef uint32_t pub
        cdef uint64_t w[TSB_PAYLOAD_WORDS]
        cdef uint64_t ver
        cdef Py_ssize_t i, n = 0
        cdef int tries
        if self._closed:
            raise ValueError("PriceReader is closed")
        head = self.book._head
        pub = tsb_u32_load_acquire(&head.c.publish_seq)
        if pub == self._last_pub and not self._rescan:
            return 0
        self._last_pub = pub
        self._rescan = False
        slots = self.book._slots
        for i in range(self.capacity):
            s = &slots[i]
            # Relaxed pre-filter is enough: try_read below re-loads seq with acquire.
            if tsb_u64_load_relaxed(&s.seq) == self._last_seen[i]:
                continue
            tries = _POLL_TRIES
            while not tsb_seq_try_read(&s.seq, <const uint64_t *>&s.price, w,
                                       TSB_PAYLOAD_WORDS, &ver):
                tries -= 1
                if tries == 0:
                    break
                tsb_cpu_relax()
            if tries == 0:
                # Writer stalled mid-write (e.g. preempted): don't block, report it next poll.
                self._rescan = True
                continue
            self._last_seen[i] = ver
            self._o_idx[n] = i
            self._o_price[n] = tsb_bits_f64(w[0])
            self._o_sent[n] = <long long>w[1]
            self._o_tick[n] = w[2]
            self._o_wns[n] = <long long>w[3]
            n += 1
        return n

    def poll(self):
        """Append every slot changed since the last poll to the output arrays; return count."""
        return self.poll_c()

    def fileno(self):
        return self._fd

    def arm(self):
        """Announce sleep; False means a publish (or deferred slot) is pending: poll again."""
        cdef int r
        if self._closed:
            raise ValueError("PriceReader is closed")
        if self._rescan:
            return False
        r = tsb_arm(&self._entry.state, &self.book._head.c.sleepers,
                    &self.book._head.c.publish_seq, self._last_pub)
        if r < 0:
            raise ReaderLost("reader entry is no longer owned by this PriceReader")
        return r == 1

    def disarm(self):
        if self._closed:
            raise ValueError("PriceReader is closed")
        tsb_disarm(&self._entry.state, &self.book._head.c.sleepers)

    def drain(self):
        """Discard one doorbell datagram (non-blocking); returns 1, or 0 if none was queued.

        One, not all: a writer rings once per sleep (it claims SLEEPING -> AWAKE first), so a
        second datagram is rare, and reading until EAGAIN would cost a syscall on every wake-up.
        A leftover datagram keeps the (level-triggered) fd readable: one more cheap wake-up.
        """
        cdef char buf[16]
        cdef ssize_t r
        if self._closed:
            raise ValueError("PriceReader is closed")
        while True:
            r = recv(self._fd, buf, sizeof(buf), MSG_DONTWAIT)
            if r >= 0:
                return 1
            if errno != EINTR:
                return 0

    cdef void _release_entry(self) noexcept:
        cdef tsb_reader_entry *e = self._entry
        self._entry = NULL
        if e == NULL or self.book is None or self.book._head == NULL:
            return
        # Only an entry still ours (by pid) is freed: one that was overwritten and reset by
        # the owner (check_segment) may belong to another reader by now.
        if tsb_u32_load_acquire(&e.pid) != <uint32_t>c_getpid():
            return
        tsb_disarm(&e.state, &self.book._head.c.sleepers)
        tsb_u32_store_release(&e.name_len, 0)
        tsb_u32_store_release(&e.pid, 0)         # before FREE: reclaimers skip pid 0
        tsb_u32_store_seqcst(&e.state, TSB_STATE_FREE)

    def close(self):
        """Free the reader entry and close the doorbell; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._release_entry()
        if self._sock is not None:
            self._sock.close()
        self._fd = -1
        if self.book is not None:
            self.book._readers.discard(self)

    @property
    def closed(self):
        return self._closed

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __dealloc__(self):
        if not self._closed:
            self._release_entry()
        free(self._last_seen)

    def __repr__(self):
        return f"<PriceReader entry={self.entry_index} of {self.book!r}>"


# ------------------------------------------------------------------ test hooks
def _debug_read_slot_unchecked(SharedPriceBook book, Py_ssize_t i):
    """Read slot i WITHOUT the seqlock protocol. Tests use it to prove tears are detectable."""
    cdef uint64_t w[TSB_PAYLOAD_WORDS]
    book._check_slot(i)
    tsb_unchecked_read(<const uint64_t *>&book._slots[i].price, w, TSB_PAYLOAD_WORDS)
    return (tsb_bits_f64(w[0]), <int64_t>w[1], w[2], <int64_t>w[3])


def _debug_write_slow(SharedPriceBook book, Py_ssize_t i, double price, int64_t sent_ns,
                      uint64_t tick_seq, unsigned spins):
    """write() with a pause after each payload store: widens the odd window for tests."""
    cdef uint64_t w[TSB_PAYLOAD_WORDS]
    cdef tsb_slot *s
    book._check_slot(i)
    with book.lock:
        s = &book._slots[i]
        w[0] = tsb_f64_bits(price)
        w[1] = <uint64_t>sent_ns
        w[2] = tick_seq
        w[3] = <uint64_t>tsb_now_ns()
        tsb_seq_write_slow(&s.seq, <uint64_t *>&s.price, w, TSB_PAYLOAD_WORDS, spins)
