# cython: language_level=3
"""Record writer of the order journal, compiled: the twin of ext.journal_py (which states the
record format). One call formats, checksums and stores an order's record, where the Python
twin makes several: on a process woken cold, every Python-level operation costs microseconds.
store_order (declared in _journal.pxd) is the writer ext._orders stores its records with."""

from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef uint32_t _CRC_TABLE[256]


cdef void _init_table():
    cdef uint32_t c
    cdef int n, k
    for n in range(256):
        c = <uint32_t>n
        for k in range(8):
            c = (<uint32_t>0xEDB88320U ^ (c >> 1)) if (c & 1) else (c >> 1)
        _CRC_TABLE[n] = c


_init_table()


cdef inline uint32_t _crc32(const unsigned char *p, Py_ssize_t n) noexcept nogil:
    """zlib's CRC-32 (reflected 0xEDB88320, init and final xor 0xFFFFFFFF)."""
    cdef uint32_t c = <uint32_t>0xFFFFFFFFU
    cdef Py_ssize_t i
    for i in range(n):
        c = _CRC_TABLE[(c ^ p[i]) & 0xFF] ^ (c >> 8)
    return c ^ <uint32_t>0xFFFFFFFFU


cdef Py_ssize_t put_uint(unsigned char *p, uint64_t v) noexcept nogil:
    """v in decimal at p; returns the bytes written."""
    cdef unsigned char tmp[20]
    cdef Py_ssize_t n = 0, k = 0
    while True:
        tmp[n] = <unsigned char>(48 + v % 10)
        n += 1
        v //= 10
        if v == 0:
            break
    while n:
        n -= 1
        p[k] = tmp[n]
        k += 1
    return k


cdef inline Py_ssize_t _decimal(unsigned char *p, int64_t v) noexcept nogil:
    """v in decimal at p (as Python's %d); returns the bytes written."""
    if v < 0:
        p[0] = 45  # '-'
        return 1 + put_uint(p + 1, <uint64_t>(-(v + 1)) + 1)
    return put_uint(p, <uint64_t>v)


cdef inline void _header(unsigned char *p, uint32_t length, uint32_t crc) noexcept nogil:
    # Little-endian, as ext.journal_py's struct "<II".
    p[0] = length & 0xFF
    p[1] = (length >> 8) & 0xFF
    p[2] = (length >> 16) & 0xFF
    p[3] = length >> 24
    p[4] = crc & 0xFF
    p[5] = (crc >> 8) & 0xFF
    p[6] = (crc >> 16) & 0xFF
    p[7] = crc >> 24


def put(unsigned char[::1] buf, Py_ssize_t off, const unsigned char[::1] payload):
    """One record holding `payload` (see ext.journal_py.put)."""
    cdef Py_ssize_t n = payload.shape[0]
    cdef Py_ssize_t end = off + 8 + n
    if n == 0 or off < 0 or end > buf.shape[0]:
        return -1
    cdef unsigned char *base = &buf[0]
    memcpy(base + off + 8, &payload[0], n)
    _header(base + off, <uint32_t>n, _crc32(base + off + 8, n))   # the commit marker: last
    return (end + 7) & ~7


cdef Py_ssize_t store_order(unsigned char *base, Py_ssize_t size, Py_ssize_t off,
                            int64_t order_no, int64_t received_ns,
                            const unsigned char *fields, Py_ssize_t nfl,
                            const unsigned char *body, Py_ssize_t nb) noexcept nogil:
    """The order-log record `{"order_no":N,"received_ns":N,<fields><body>}` at `off` of the
    `size` bytes at `base`, where body is an encoded order without its braces; the next
    record's offset, or -1 (nothing written) when the longest such record would not fit."""
    # 12 + 15 + 2 commas/braces + up to 2 x 20 digits: the longest the record can be.
    cdef Py_ssize_t most = 12 + 20 + 15 + 20 + 1 + nfl + nb + 1
    if off < 0 or off + 8 + most > size:
        return -1
    cdef unsigned char *p = base + off + 8
    cdef Py_ssize_t k = 0
    memcpy(p, b'{"order_no":', 12)
    k = 12
    k += _decimal(p + k, order_no)
    memcpy(p + k, b',"received_ns":', 15)
    k += 15
    k += _decimal(p + k, received_ns)
    p[k] = 44  # ','
    k += 1
    if nfl:
        memcpy(p + k, fields, nfl)
        k += nfl
    if nb:
        memcpy(p + k, body, nb)
        k += nb
    p[k] = 125  # '}'
    k += 1
    _header(base + off, <uint32_t>k, _crc32(p, k))   # the commit marker: last
    return (off + 8 + k + 7) & ~7


def put_order(unsigned char[::1] buf, Py_ssize_t off, int64_t order_no, int64_t received_ns,
              const unsigned char[::1] fields, const unsigned char[::1] frame):
    """One order-log record (see ext.journal_py.put_order)."""
    cdef Py_ssize_t nf = frame.shape[0], nfl = fields.shape[0]
    if nf < 3 or frame[0] != 123 or frame[nf - 2] != 125 or frame[nf - 1] != 42:
        raise ValueError("not an encoded order frame")
    return store_order(&buf[0], buf.shape[0], off, order_no, received_ns,
                       &fields[0] if nfl else NULL, nfl, &frame[1], nf - 3)
