# cython: language_level=3
"""The order path, compiled: the twin of ext.orders_py (which states the contract). On the
OrderManager's side one call parses, validates, looks up the id, stores the journal record and
sends the ack of the canonical order frame; on the Strategy's side one call checks, frames and
sends an order and counts it in the host's books. The Python paths make a dozen Python-level
calls each, and on a process woken cold every one of them costs microseconds.

The canonical frame is the one the Strategy's encoder (and OrderFramer) writes (msgspec,
fields in declaration order, every field present, no whitespace):

    {"id":"..","client":"..","symbol":"..","side":"BUY","qty":N,"price":X,
     "tick_ns":N,"tick_seq":N,"sent_ns":N}

with strings of printable ASCII and no escapes, integers without sign or leading zeros, and the
price as Python's (and msgspec's) shortest repr of its double, without an exponent. Anything
else, and any frame that breaks a rule, returns None: the caller's Python path then decides, so
every reject reason is its own.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_GET_ITEM, PyList_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.unicode cimport PyUnicode_DecodeASCII
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy, strlen
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

from ext._journal cimport put_uint, store_order
from ext import orders_py

cdef extern from "<sys/socket.h>" nogil:
    ssize_t c_send "send" (int fd, const void *buf, size_t n, int flags)
    int MSG_DONTWAIT
    int MSG_NOSIGNAL

cdef extern from "Python.h":
    ctypedef struct PyObject
    object PyUnicode_FromFormat(const char *format, ...)
    int Py_DTSF_ADD_DOT_0
    const char *PyUnicode_AsUTF8AndSize(object unicode, Py_ssize_t *size) except NULL
    char *PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int *ptype) except NULL
    double PyOS_string_to_double(const char *s, char **endptr, object overflow_exception) \
        except? -1.0

cdef uint64_t MAX_I64 = 9223372036854775807ULL
# The longest ack: {"type":"ack","id":"<MAX_ID = 128>","order_no":<20 digits>}* is 183 bytes.
DEF ACK_MAX = 256
cdef object _BUY = "BUY"
cdef object _SELL = "SELL"


cdef inline Py_ssize_t _key(const unsigned char *p, Py_ssize_t i, Py_ssize_t n,
                            const char *key, Py_ssize_t klen) noexcept nogil:
    """i past `key` if the frame has it at i, else -1."""
    if i < 0 or i + klen > n or memcmp(p + i, key, klen) != 0:
        return -1
    return i + klen


cdef inline Py_ssize_t _string(const unsigned char *p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """The offset of the closing quote of a string of printable ASCII without quotes or
    backslashes starting at i, else -1."""
    cdef unsigned char c
    if i < 0:
        return -1
    while i < n:
        c = p[i]
        if c == 34:   # '"'
            return i
        if c < 32 or c > 126 or c == 92:   # control, non-ASCII, backslash: not canonical
            return -1
        i += 1
    return -1


cdef inline Py_ssize_t _uint(const unsigned char *p, Py_ssize_t i, Py_ssize_t n,
                             uint64_t *out) noexcept nogil:
    """Past the unsigned integer at i ("0" or no leading zero, at most 2**64-1), else -1."""
    cdef uint64_t v = 0, d
    cdef Py_ssize_t start = i
    if i < 0 or i >= n:
        return -1
    while i < n and 48 <= p[i] <= 57:
        d = p[i] - 48
        if v > (0xFFFFFFFFFFFFFFFFULL - d) // 10:
            return -1
        v = v * 10 + d
        i += 1
    if i == start or (p[start] == 48 and i - start > 1):
        return -1
    out[0] = v
    return i


cdef inline Py_ssize_t _price(const unsigned char *p, Py_ssize_t i, Py_ssize_t n,
                              double *out) except -2:
    """Past the price at i, digits '.' digits written as repr() writes its double, else -1."""
    cdef char text[40]
    cdef Py_ssize_t start = i, dot = -1, k, first = -1, last = -1, j
    cdef char *endp
    cdef char *back
    cdef double v
    cdef bint same
    if i < 0:
        return -1
    while i < n and (48 <= p[i] <= 57 or (p[i] == 46 and dot < 0)):
        if p[i] == 46:
            dot = i
        elif p[i] != 48:
            if first < 0:
                first = i
            last = i
        i += 1
    k = i - start
    # One digit at least on each side of the dot, no leading zero, at most 30 characters.
    if dot <= start or dot == i - 1 or k > 30 or (p[start] == 48 and dot != start + 1):
        return -1
    memcpy(text, p + start, k)
    text[k] = 0
    v = PyOS_string_to_double(text, &endp, None)
    if endp != text + k:
        return -1
    # repr() writes a double in [1e-4, 1e16) as the shortest digits that read back as it. Text
    # with at most 15 significant digits reads back as itself (DBL_DIG), so it is that shortest
    # form exactly when it has no trailing zero after the dot (but the one of "173.0"):
    # the common case, decided without formatting the double.
    if first >= 0 and 1e-4 <= v < 1e16 and (p[i - 1] != 48 or dot == i - 2):
        j = last - first + 1 - (1 if first < dot < last else 0)
        if j <= 15:
            out[0] = v
            return i
    back = PyOS_double_to_string(v, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)   # as repr(): "1.0"
    same = <Py_ssize_t>strlen(back) == k and memcmp(back, text, k) == 0
    PyMem_Free(back)
    if not same:
        return -1   # not how an encoder writes this double ("1.50", "1e-05")
    out[0] = v
    return i


cdef Py_ssize_t _parse(const unsigned char *p, Py_ssize_t n, order_text *o) except -2:
    """0 if the frame is canonical (o filled), else -1."""
    cdef Py_ssize_t i
    i = _key(p, 0, n, b'{"id":"', 7)
    o.id0 = i
    i = _string(p, i, n)
    o.id1 = i
    i = _key(p, i, n, b'","client":"', 12)
    o.client0 = i
    i = _string(p, i, n)
    o.client1 = i
    i = _key(p, i, n, b'","symbol":"', 12)
    o.symbol0 = i
    i = _string(p, i, n)
    o.symbol1 = i
    i = _key(p, i, n, b'","side":"', 10)
    if i < 0:
        return -1
    if _key(p, i, n, b'BUY"', 4) >= 0:
        o.buy = 1
        i += 4
    elif _key(p, i, n, b'SELL"', 5) >= 0:
        o.buy = 0
        i += 5
    else:
        return -1
    i = _key(p, i, n, b',"qty":', 7)
    i = _uint(p, i, n, &o.qty)
    i = _key(p, i, n, b',"price":', 9)
    o.price0 = i
    i = _price(p, i, n, &o.price)
    o.price1 = i
    i = _key(p, i, n, b',"tick_ns":', 11)
    i = _uint(p, i, n, &o.tick_ns)
    i = _key(p, i, n, b',"tick_seq":', 12)
    i = _uint(p, i, n, &o.tick_seq)
    i = _key(p, i, n, b',"sent_ns":', 11)
    i = _uint(p, i, n, &o.sent_ns)
    if i < 0 or i + 1 != n or p[i] != 125:   # '}' and nothing after it
        return -1
    return 0


cdef inline int64_t _now_ns() noexcept nogil:
    """CLOCK_MONOTONIC in ns, as time.monotonic_ns()."""
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return <int64_t>t.tv_sec * 1000000000 + t.tv_nsec


cdef inline Py_ssize_t _put(char *a, const char *s, Py_ssize_t n) noexcept nogil:
    memcpy(a, s, n)
    return n


cdef class OrderDesk:
    """See ext.orders_py.OrderDesk (the contract); this one books the canonical frame only."""

    def __init__(self, protocol, symbols, dict booked, journal):
        self.order_type = protocol.Order
        self.symbols = symbols
        self.booked = booked
        self.journal = journal
        # The protocol's limits, read from it: its rules are stated there once.
        self.max_id = protocol.MAX_ID
        self.max_client = protocol.MAX_CLIENT
        self.max_price = protocol.MAX_PRICE
        if 20 + self.max_id + 13 + 20 + 2 > ACK_MAX:
            raise ValueError("the protocol's longest ack does not fit this desk's buffer")
        if protocol.MAX_I64 != MAX_I64:
            raise ValueError("the protocol's qty limit is not the one this desk checks")
        self.booked_here = 0
        self.order_no = 0
        self.enabled = True
        self.last_id = None

    def book(self, frame, str client, bytes fields, int64_t order_no, int64_t received_ns):
        """The ack frame of a booked order, its record committed; None: not booked (not
        canonical, a reject, a duplicate, no room in the journal chunk), nothing done."""
        # Raw buffers, not typed memoryviews: acquiring one of those builds an object per call.
        cdef Py_buffer view
        PyObject_GetBuffer(frame, &view, PyBUF_SIMPLE)
        try:
            return self._book(<const unsigned char *>view.buf, view.len, client, fields,
                              order_no, received_ns)
        finally:
            PyBuffer_Release(&view)

    cdef object _book(self, const unsigned char *p, Py_ssize_t n, str client, bytes fields,
                      int64_t order_no, int64_t received_ns):
        cdef char out[ACK_MAX]
        cdef Py_ssize_t k = self._book_c(p, n, client, fields, order_no, received_ns, out)
        return None if k < 0 else PyBytes_FromStringAndSize(out, k)

    cdef Py_ssize_t _book_c(self, const unsigned char *p, Py_ssize_t n, str client,
                            bytes fields, int64_t order_no, int64_t received_ns,
                            char *a) except -2:
        """_book's work with the ack written at `a` (ACK_MAX bytes): its length, or -1."""
        cdef order_text o
        cdef Py_ssize_t end, nid, ncl, k
        cdef Py_buffer out
        cdef const char *cb
        if n < 8 or _parse(p, n, &o) < 0:
            return -1
        nid = o.id1 - o.id0
        ncl = o.client1 - o.client0
        if (nid < 1 or nid > self.max_id or ncl > self.max_client or o.qty < 1
                or o.qty > MAX_I64 or not 0.0 < o.price <= self.max_price):
            return -1
        # Booked under the hello's name: the frame's text is the record only when it says so.
        cb = PyUnicode_AsUTF8AndSize(client, &k)   # cached in the str: no copy per call
        if k != ncl or memcmp(cb, p + o.client0, ncl) != 0:
            return -1
        symbol = PyUnicode_DecodeASCII(<const char *>p + o.symbol0, o.symbol1 - o.symbol0, NULL)
        if symbol not in self.symbols:
            return -1
        oid = PyUnicode_DecodeASCII(<const char *>p + o.id0, nid, NULL)
        if (client, oid) in self.booked:
            return -1   # a resend: the Python path acks it again with its number
        journal = self.journal
        mm = journal.mm
        if mm is None:
            return -1
        PyObject_GetBuffer(mm, &out, PyBUF_WRITABLE)
        end = store_order(<unsigned char *>out.buf, out.len, journal.off, order_no, received_ns,
                          <const unsigned char *>PyBytes_AS_STRING(fields), len(fields),
                          p + 1, n - 2)
        PyBuffer_Release(&out)
        if end < 0:
            return -1   # the next chunk: the Python path switches to it
        journal.off = end
        journal.records += 1
        self.booked_here += 1
        self.last = o
        self.last_id = oid
        self.last_client = client
        self.last_symbol = symbol
        # The ack: {"type":"ack","id":"<id>","order_no":N}* as the protocol's encoder writes it
        # (the id needs no escape: printable ASCII without quotes or backslashes, and no '*',
        # the delimiter, which no frame contains).
        memcpy(a, b'{"type":"ack","id":"', 20)
        memcpy(a + 20, p + o.id0, nid)
        k = 20 + nid
        memcpy(a + k, b'","order_no":', 13)
        k += 13
        k += put_uint(<unsigned char *>a + k, <uint64_t>order_no)
        a[k] = 125   # '}'
        a[k + 1] = 42   # '*'
        return k + 2

    def last_order(self):
        """The Order of the last frame book() booked (None before the first): built here, after
        the caller has sent the ack, because nothing before the ack needs it."""
        cdef order_text *o = &self.last
        if self.last_id is None:
            return None
        return self.order_type(id=self.last_id, client=self.last_client,
                               symbol=self.last_symbol, side=_BUY if o.buy else _SELL,
                               qty=<int64_t>o.qty, price=o.price, tick_ns=o.tick_ns,
                               tick_seq=o.tick_seq, sent_ns=o.sent_ns)


cdef class DeskSession:
    """See ext.orders_py.DeskSession (the contract): one connection's bulk consumer, so a read's
    frames reach the desk without a Python call per frame between the read and the ack."""

    def __init__(self, OrderDesk desk, str client, bytes fields, send, booked, other,
                 Py_ssize_t max_frame, bytes delimiter):
        if len(delimiter) != 1:
            raise ValueError("the desk frames on a one-byte delimiter")
        self.desk = desk
        self.client = client
        self.fields = fields
        self.send = send
        self.booked = booked
        self.other = other
        self.max_frame = max_frame
        self.delimiter = delimiter[0]
        self.fd = -1

    def consume(self, buf, Py_ssize_t start, Py_ssize_t end):
        cdef Py_buffer view
        cdef const unsigned char *p
        cdef const unsigned char *q
        cdef Py_ssize_t i = start, pos, k
        cdef ssize_t wrote
        cdef int64_t received_ns, journaled_ns
        cdef OrderDesk desk = self.desk
        PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
        try:
            if start < 0 or end > view.len or start > end:
                raise ValueError(f"[{start}, {end}) is outside the buffer")
            p = <const unsigned char *>view.buf
            while i < end:
                q = <const unsigned char *>memchr(p + i, self.delimiter, end - i)
                if q == NULL:
                    break
                pos = q - p
                if pos == i:   # an empty frame
                    i += 1
                    continue
                if pos - i > self.max_frame:
                    raise ValueError(f"{pos - i} bytes > max_frame {self.max_frame}")
                received_ns = _now_ns()
                k = (desk._book_c(p + i, pos - i, self.client, self.fields, desk.order_no + 1,
                                  received_ns, self.ack) if desk.enabled else -1)
                if k < 0:
                    frame = memoryview(buf)[i:pos]
                    i = pos + 1
                    if self.other(frame):
                        break
                    continue
                i = pos + 1
                journaled_ns = _now_ns()
                desk.order_no += 1
                wrote = c_send(self.fd, self.ack, k, MSG_DONTWAIT | MSG_NOSIGNAL) \
                    if self.fd >= 0 else 0
                if wrote < k:   # lent no socket, EAGAIN, an error, a part: the rest the usual way
                    self.send(PyBytes_FromStringAndSize(self.ack + (wrote if wrote > 0 else 0),
                                                        k - (wrote if wrote > 0 else 0)))
                if self.booked(received_ns, journaled_ns, _now_ns()):
                    break
            return i
        finally:
            PyBuffer_Release(&view)


# The numeric tail of the template order OrderFramer encodes to find its string parts.
_TEMPLATE_TAIL = b',"qty":1,"price":1.0,"tick_ns":0,"tick_seq":0,"sent_ns":0}'


cdef class OrderFramer:
    """See ext.orders_py.OrderFramer (the contract): the Strategy's order frame written in one
    call, before any Order exists, so the order is on the wire sooner.

    The string parts (the id's prefix, the client, each symbol and side) are cut once from
    frames the protocol's own encoder writes, so their escaping is the encoder's; the numbers
    are written here, and a sample frame is checked against the encoder at construction. A
    price that repr() writes with an exponent (outside [1e-4, 1e16)) is left to the encoder.
    """

    def __init__(self, protocol, str id_prefix not None, str client not None, symbols):
        cdef list mids = []
        cdef Py_ssize_t longest
        order, encode = protocol.Order, protocol.encode_order
        self.symbols = tuple(symbols)
        if not self.symbols:
            raise ValueError("a framer needs at least one symbol")
        self.id_prefix = id_prefix
        self.client = client
        self.order_type = order
        self.encode = encode
        delimiter = protocol.MESSAGE_DELIMITER
        if len(delimiter) != 1:
            raise ValueError("the framer writes a one-byte delimiter")
        for sym in self.symbols:
            for side in ("SELL", "BUY"):
                text = encode(order(id=id_prefix + "-0", client=client, symbol=sym, side=side,
                                    qty=1, price=1.0))
                if not text.endswith(_TEMPLATE_TAIL + delimiter):
                    raise ValueError("the protocol's order frame is not the one this framer "
                                     "writes")
                text = text[:len(text) - len(_TEMPLATE_TAIL) - 1]
                k = text.index(b'-0","client":')   # the id's end: its quote is never escaped
                self.head = text[:k + 1]
                mids.append(text[k + 2:] + b',"qty":')
        self.mids = mids
        self.delimiter = delimiter[0]
        # Besides the parts: five integers of at most 20 digits, the price (at most 24
        # characters, exponent included), 45 bytes of keys and punctuation, the delimiter.
        longest = len(self.head) + max([len(m) for m in mids]) + 200
        PyMem_Free(self.buf)   # NULL unless __init__ runs again
        self.buf = <char *>PyMem_Malloc(longest)
        if self.buf == NULL:
            raise MemoryError()
        self.capacity = longest
        sample = dict(id=f"{id_prefix}-1234", client=client, symbol=self.symbols[0],
                      side="BUY", qty=10, price=173.25, tick_ns=12345, tick_seq=6, sent_ns=789)
        if self.frame(0, True, 1234, 10, 173.25, 12345, 6, 789) != encode(order(**sample)):
            raise ValueError("this framer does not write what the protocol's encoder writes")

    def frame(self, Py_ssize_t j, bint buy, uint64_t seq, uint64_t qty, double price,
              uint64_t tick_ns, uint64_t tick_seq, uint64_t sent_ns):
        cdef Py_ssize_t n
        if not 0 <= j < len(self.symbols):
            raise IndexError(f"symbol index {j} out of range")
        n = self._write(j, buy, seq, qty, price, tick_ns, tick_seq, sent_ns)
        return PyBytes_FromStringAndSize(self.buf, n)

    cdef Py_ssize_t _write(self, Py_ssize_t j, bint buy, uint64_t seq, uint64_t qty,
                           double price, uint64_t tick_ns, uint64_t tick_seq,
                           uint64_t sent_ns) except -1:
        """The frame into buf (j in range); its length."""
        cdef bytes mid = <bytes>PyList_GET_ITEM(self.mids, 2 * j + buy)
        cdef char *text
        cdef char *a = self.buf
        cdef Py_ssize_t k = 0, n
        if not 1e-4 <= price < 1e16:
            return self._encoded(j, buy, seq, qty, price, tick_ns, tick_seq, sent_ns)
        k += _put(a + k, PyBytes_AS_STRING(self.head), PyBytes_GET_SIZE(self.head))
        k += put_uint(<unsigned char *>a + k, seq)
        k += _put(a + k, PyBytes_AS_STRING(mid), PyBytes_GET_SIZE(mid))
        k += put_uint(<unsigned char *>a + k, qty)
        k += _put(a + k, b',"price":', 9)
        text = PyOS_double_to_string(price, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)   # as repr()
        n = <Py_ssize_t>strlen(text)
        k += _put(a + k, text, n)
        PyMem_Free(text)
        k += _put(a + k, b',"tick_ns":', 11)
        k += put_uint(<unsigned char *>a + k, tick_ns)
        k += _put(a + k, b',"tick_seq":', 12)
        k += put_uint(<unsigned char *>a + k, tick_seq)
        k += _put(a + k, b',"sent_ns":', 11)
        k += put_uint(<unsigned char *>a + k, sent_ns)
        a[k] = 125   # '}'
        a[k + 1] = self.delimiter
        return k + 2

    cdef Py_ssize_t _encoded(self, Py_ssize_t j, bint buy, uint64_t seq, uint64_t qty,
                             double price, uint64_t tick_ns, uint64_t tick_seq,
                             uint64_t sent_ns) except -1:
        """The protocol's encoder writes the frame (a price repr() writes with an exponent,
        which msgspec spells differently); copied into buf."""
        cdef bytes text = self.encode(self.order_type(
            id=f"{self.id_prefix}-{seq}", client=self.client, symbol=self.symbols[j],
            side=_BUY if buy else _SELL, qty=qty, price=price, tick_ns=tick_ns,
            tick_seq=tick_seq, sent_ns=sent_ns))
        if len(text) > self.capacity:
            raise ValueError("an order frame longer than the framer's buffer")
        memcpy(self.buf, PyBytes_AS_STRING(text), len(text))
        return len(text)

    def __dealloc__(self):
        PyMem_Free(self.buf)


# The gate's answers, stated once in its contract (ext.orders_py).
cdef Py_ssize_t _PENDING = orders_py.GATE_PENDING
cdef Py_ssize_t _NO_PRICE = orders_py.GATE_NO_PRICE
cdef Py_ssize_t _STALE = orders_py.GATE_STALE
cdef Py_ssize_t _BACKOFF = orders_py.GATE_BACKOFF


cdef class OrderGate:
    """See ext.orders_py.OrderGate (the contract): from the strategy's submit to the kernel and
    the host's books in one call, the Order itself built later (take())."""

    def __init__(self, OrderFramer framer not None, list positions not None,
                 list pending not None, list last_tick_ns not None, list prices not None,
                 list stale not None, list backoff_until not None, list refusing not None,
                 int64_t max_age_ns):
        cdef Py_ssize_t n = len(framer.symbols)
        if not (len(last_tick_ns) == len(prices) == len(stale) == len(positions) == n
                and len(pending) == len(backoff_until) == len(refusing) == 2 * n):
            raise ValueError("the gate's lists do not match the framer's symbols")
        self.framer = framer
        self.positions = positions
        self.pending = pending
        self.last_tick_ns = last_tick_ns
        self.prices = prices
        self.stale = stale
        self.backoff_until = backoff_until
        self.refusing = refusing
        self.max_age_ns = max_age_ns
        self.fd = -1
        self.length = 0
        self.written = 0
        self.seq = 0
        self.orders = 0
        self.made = []

    @property
    def id_prefix(self):
        return self.framer.id_prefix

    def send(self, Py_ssize_t j, bint buy, int64_t qty, double price, int64_t now,
             uint64_t tick_ns, uint64_t tick_seq):
        cdef Py_ssize_t key = 2 * j + buy, n
        cdef int64_t last
        cdef ssize_t wrote = 0
        self.length = self.written = 0
        if not 0 <= j < PyList_GET_SIZE(self.prices):
            raise IndexError(f"symbol index {j} out of range")
        if qty < 1:
            raise ValueError(f"qty {qty} is not > 0")
        if self.pending[key]:
            return _PENDING
        if self.max_age_ns:
            if self.prices[j] is None:
                return _NO_PRICE
            last = self.last_tick_ns[j]
            if (now - last > self.max_age_ns) if last else self.stale[j]:
                return _STALE
        if self.backoff_until[key]:
            return _BACKOFF
        n = self.framer._write(j, buy, self.seq + 1, <uint64_t>qty, price, tick_ns, tick_seq,
                               <uint64_t>now)
        if self.fd >= 0:
            wrote = c_send(self.fd, self.framer.buf, n, MSG_DONTWAIT | MSG_NOSIGNAL)
            if wrote < 0:
                wrote = 0   # EAGAIN, or an error the caller's own send then meets
        self.length = n
        self.written = wrote
        self.seq += 1
        self.orders += 1
        self.refusing[key] = None
        self.pending[key] += 1
        self.positions[j] += qty if buy else -qty
        self.made.append((self.seq, j, buy, qty, price, tick_ns, tick_seq, now,
                          wrote == n, _now_ns() - now))
        return PyUnicode_FromFormat("%U-%llu", <PyObject *>self.framer.id_prefix,
                                    <unsigned long long>self.seq)

    def frame(self):
        """The frame of the last order made."""
        return PyBytes_FromStringAndSize(self.framer.buf, self.length)

    def sent_last(self, bint sent):
        """The last order made went on the wire (or is queued) after all: `sent`."""
        if not self.made:
            raise IndexError("no order made since the last take()")
        rec = self.made[len(self.made) - 1]
        self.made[len(self.made) - 1] = (*rec[:8], sent, rec[9])

    @property
    def unsettled(self):
        return len(self.made)

    def take(self):
        """(Order, sent, took_ns) of every order made since the last take(), oldest first."""
        made, self.made = self.made, []
        framer = self.framer
        symbols, order, prefix = framer.symbols, framer.order_type, framer.id_prefix
        return [(order(id=f"{prefix}-{seq}", client=framer.client, symbol=symbols[j],
                       side=_BUY if buy else _SELL, qty=qty, price=price, tick_ns=tick_ns,
                       tick_seq=tick_seq, sent_ns=sent_ns), sent, took)
                for seq, j, buy, qty, price, tick_ns, tick_seq, sent_ns, sent, took in made]
