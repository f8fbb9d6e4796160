# cython: language_level=3
"""C declarations of the shared price book: the segment layout (declared ONCE, here) and the
memory-ordering primitives of seqlock.h. Other Cython modules may cimport the classes and
call the cdef fast paths (write_c / read_c / publish_c / poll_c) without Python call overhead."""

from libc.stdint cimport int64_t, uint32_t, uint64_t


cdef extern from "seqlock.h" nogil:
    uint32_t TSB_STATE_FREE
    uint32_t TSB_STATE_AWAKE
    uint32_t TSB_STATE_SLEEPING

    void tsb_cpu_relax()
    uint64_t tsb_f64_bits(double d)
    double tsb_bits_f64(uint64_t u)
    int64_t tsb_now_ns()

    uint64_t tsb_u64_load_acquire(const uint64_t *p)
    uint64_t tsb_u64_load_relaxed(const uint64_t *p)
    void tsb_u64_store_release(uint64_t *p, uint64_t v)
    void tsb_u64_store_relaxed(uint64_t *p, uint64_t v)
    int64_t tsb_i64_load_relaxed(const int64_t *p)
    void tsb_i64_store_release(int64_t *p, int64_t v)
    uint32_t tsb_u32_load_acquire(const uint32_t *p)
    uint32_t tsb_u32_load_relaxed(const uint32_t *p)
    uint32_t tsb_u32_load_seqcst(const uint32_t *p)
    void tsb_u32_store_release(uint32_t *p, uint32_t v)
    void tsb_u32_store_seqcst(uint32_t *p, uint32_t v)
    uint32_t tsb_u32_fetch_sub_seqcst(uint32_t *p, uint32_t v)
    int tsb_u32_cas_seqcst(uint32_t *p, uint32_t expected, uint32_t desired)

    void tsb_seq_write(uint64_t *seq, uint64_t *words, const uint64_t *src, unsigned n)
    int tsb_seq_try_read(const uint64_t *seq, const uint64_t *words, uint64_t *dst,
                         unsigned n, uint64_t *ver)
    int tsb_seq_read(const uint64_t *seq, const uint64_t *words, uint64_t *dst, unsigned n,
                     unsigned max_yields, uint64_t *ver)
    void tsb_seq_write_slow(uint64_t *seq, uint64_t *words, const uint64_t *src, unsigned n,
                            unsigned spins)
    void tsb_unchecked_read(const uint64_t *words, uint64_t *dst, unsigned n)

    uint32_t tsb_publish(uint32_t *publish_seq, const uint32_t *sleepers)
    int tsb_wake_claim(uint32_t *state, uint32_t *sleepers)
    int tsb_arm(uint32_t *state, uint32_t *sleepers, const uint32_t *publish_seq, uint32_t seen)
    int tsb_disarm(uint32_t *state, uint32_t *sleepers)


cdef extern from "<semaphore.h>" nogil:
    ctypedef struct sem_t:
        pass
    int sem_wait(sem_t *sem)
    int sem_trywait(sem_t *sem)
    int sem_post(sem_t *sem)


cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int CLOCK_REALTIME
    int clock_gettime(int clk, timespec *ts)


cdef extern from "<semaphore.h>" nogil:
    int sem_timedwait(sem_t *sem, const timespec *abstime)


cdef extern from "<sys/socket.h>" nogil:
    ctypedef unsigned int socklen_t
    ctypedef unsigned short sa_family_t
    struct sockaddr:
        pass
    int AF_UNIX
    int SOCK_DGRAM
    int SOCK_CLOEXEC
    int MSG_DONTWAIT
    int MSG_NOSIGNAL
    int socket(int domain, int type, int protocol)
    ssize_t sendto(int fd, const void *buf, size_t n, int flags, const sockaddr *addr,
                   socklen_t addrlen)
    ssize_t recv(int fd, void *buf, size_t n, int flags)


cdef extern from "<sys/un.h>" nogil:
    struct sockaddr_un:
        sa_family_t sun_family
        char sun_path[108]


# ------------------------------------------------------------------ segment layout
cdef extern from *:
    """
    #define TSB_MAGIC 0x314B4F4F42505354ULL  /* b"TSPBOOK1" read as a little-endian u64 */
    """
    const uint64_t TSB_MAGIC

cdef enum:
    TSB_LAYOUT_VERSION = 1
    TSB_CACHE_LINE = 64
    TSB_SYMBOL_WIDTH = 16
    TSB_MAX_READERS = 16
    TSB_READER_NAME_MAX = 48
    TSB_PAYLOAD_WORDS = 4            # price, sent_ns, tick_seq, write_ns


# All native little-endian, naturally aligned (no packing needed: every field sits at a
# multiple of its size), every struct exactly one or more 64-byte cache lines. Sizes and
# offsets are checked at import time and exported to Python (see _pricebook.pyx).

cdef struct tsb_header:              # header line 0 (64 B)
    uint64_t magic                   # b"TSPBOOK1" as little-endian u64; stored last on create
    uint32_t layout_version
    uint32_t header_size             # bytes before the symbol table (multiple of 64)
    uint32_t slot_size
    uint32_t nsymbols
    uint32_t symtab_offset
    uint32_t slots_offset
    uint32_t symbol_width
    uint32_t max_readers
    uint64_t owner_pid
    int64_t created_ns               # CLOCK_MONOTONIC
    int64_t heartbeat_ns             # CLOCK_MONOTONIC, refreshed by the owner

cdef struct tsb_control:             # header line 1 (64 B), written by everyone
    uint32_t publish_seq             # aligned 32-bit: usable as a futex word later
    uint32_t sleepers
    char _pad[56]

cdef struct tsb_reader_entry:        # one per reader, own cache line (64 B)
    uint32_t state                   # TSB_STATE_FREE / AWAKE / SLEEPING
    uint32_t pid
    uint32_t name_len
    uint32_t _pad
    char name[TSB_READER_NAME_MAX]   # abstract AF_UNIX name, without the leading NUL

cdef struct tsb_slot:                # one per symbol, own cache line (64 B)
    uint64_t seq                     # even = stable, odd = write in progress
    # Payload: exactly 4 consecutive 64-bit words, only ever accessed as uint64_t through
    # seqlock.h (the double travels as its bits) so every access has one effective type.
    double price
    int64_t sent_ns
    uint64_t tick_seq
    int64_t write_ns
    char _pad[24]

cdef struct tsb_head:                # everything before the symbol table (1152 B)
    tsb_header h
    tsb_control c
    tsb_reader_entry readers[TSB_MAX_READERS]

cdef struct tsb_payload:             # a reader's private copy of one slot
    double price
    int64_t sent_ns
    uint64_t tick_seq
    int64_t write_ns


# ------------------------------------------------------------------ classes
cdef class SharedPriceBook:
    cdef readonly str name
    cdef readonly tuple symbols
    cdef readonly Py_ssize_t nsymbols
    cdef readonly Py_ssize_t size
    cdef readonly bint created
    cdef readonly bint reclaimed
    cdef readonly dict byte_index
    cdef dict _index
    cdef object _shm
    cdef object _lock
    cdef object _acquire
    cdef object _release
    cdef sem_t *_sem
    cdef Py_buffer _view
    cdef bint _has_view
    cdef bint _unlinked
    cdef bint _closed
    cdef char *_base
    cdef tsb_head *_head
    cdef tsb_slot *_slots
    cdef int _ring_fd
    cdef object _readers
    cdef readonly unsigned long long lock_skips   # writes skipped: the lock stayed held
    cdef readonly double lock_timeout             # seconds a write waits for the lock
    cdef bint _lock_stalled                       # the last acquire timed out
    cdef object __weakref__

    cdef int _check_slot(self, Py_ssize_t i) except -1
    cdef int _lock_slow(self) except -1
    cdef int64_t write_c(self, Py_ssize_t i, double price, int64_t sent_ns,
                         uint64_t tick_seq) except -1
    cdef int read_c(self, Py_ssize_t i, tsb_payload *out) except -1
    cdef int _read_stalled(self, Py_ssize_t i, uint64_t *w) except -1
    cdef int publish_c(self) except -1
    cdef int _ring(self) except -1


cdef class PriceReader:
    cdef readonly SharedPriceBook book
    cdef readonly Py_ssize_t capacity
    cdef readonly object indices
    cdef readonly object prices
    cdef readonly object sent_ns
    cdef readonly object tick_seqs
    cdef readonly object write_ns
    cdef readonly str doorbell_name
    cdef readonly Py_ssize_t entry_index
    cdef list _pins
    cdef long long *_o_idx
    cdef double *_o_price
    cdef long long *_o_sent
    cdef unsigned long long *_o_tick
    cdef long long *_o_wns
    cdef uint64_t *_last_seen
    cdef uint32_t _last_pub
    cdef bint _rescan
    cdef tsb_reader_entry *_entry
    cdef object _sock
    cdef int _fd
    cdef bint _closed
    cdef object __weakref__

    cdef Py_ssize_t poll_c(self) except -1
    cdef void _release_entry(self) noexcept
