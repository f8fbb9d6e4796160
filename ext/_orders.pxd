# Declarations of ext/_orders.pyx (the OrderManager's native order path); the logic and the
# frame shape it takes are in the .pyx, the contract in its twin ext/orders_py.py.
from libc.stdint cimport int64_t, uint64_t


cdef struct order_text:
    # Offsets into one frame: [start, end) of each string field, and the numbers parsed.
    Py_ssize_t id0, id1, client0, client1, symbol0, symbol1, price0, price1
    int buy
    uint64_t qty, tick_ns, tick_seq, sent_ns
    double price


cdef class OrderDesk:
    cdef object order_type    # the protocol's Order struct, built for a booked order
    cdef object symbols       # the symbols an order may name (a frozenset of str)
    cdef dict booked          # (client, id) -> order_no: an id found here is not ours to book
    cdef object journal       # the journal's write cursor: .mm, .off, .records
    cdef Py_ssize_t max_id
    cdef Py_ssize_t max_client
    cdef double max_price
    cdef readonly unsigned long long booked_here   # orders this desk booked
    cdef public int64_t order_no  # the last number given: a DeskSession books the next one
    cdef public bint enabled      # False: a DeskSession hands every frame to its `other`
    cdef order_text last          # the last booked frame's fields, for last_order()
    cdef object last_id
    cdef object last_client
    cdef object last_symbol

    cdef object _book(self, const unsigned char *p, Py_ssize_t n, str client, bytes fields,
                      int64_t order_no, int64_t received_ns)
    cdef Py_ssize_t _book_c(self, const unsigned char *p, Py_ssize_t n, str client,
                            bytes fields, int64_t order_no, int64_t received_ns,
                            char *a) except -2


cdef class DeskSession:
    cdef OrderDesk desk
    cdef str client
    cdef bytes fields
    cdef object send              # the connection's send(ack)
    cdef object booked            # booked(received_ns, journaled_ns, acked_ns) -> stop?
    cdef object other             # other(frame) -> stop?
    cdef Py_ssize_t max_frame
    cdef unsigned char delimiter
    cdef public int fd            # the connection's socket while it is lent (set_direct), else -1
    cdef char ack[256]            # the ack being sent (ACK_MAX in the .pyx)


cdef class OrderFramer:
    cdef readonly tuple symbols
    cdef readonly str id_prefix
    cdef readonly str client
    cdef object order_type        # the protocol's Order and encoder: the frames with an
    cdef object encode            # exponent in the price, and the parts cut at construction
    cdef bytes head               # '{"id":"<the id prefix>-'
    cdef list mids                # per 2 * symbol + buy: '","client":..,"side":"..","qty":'
    cdef unsigned char delimiter
    cdef char *buf                # where frames are written: `capacity` bytes, the longest
    cdef Py_ssize_t capacity

    cdef Py_ssize_t _write(self, Py_ssize_t j, bint buy, uint64_t seq, uint64_t qty,
                           double price, uint64_t tick_ns, uint64_t tick_seq,
                           uint64_t sent_ns) except -1
    cdef Py_ssize_t _encoded(self, Py_ssize_t j, bint buy, uint64_t seq, uint64_t qty,
                             double price, uint64_t tick_ns, uint64_t tick_seq,
                             uint64_t sent_ns) except -1


cdef class OrderGate:
    cdef OrderFramer framer
    # The Strategy host's own lists, shared: the host mutates them in place and never rebinds
    # or resizes them (they are indexed here without bounds checks), per symbol j or per
    # key 2 * j + buy.
    cdef list positions           # net position per symbol
    cdef list pending             # orders in flight per key
    cdef list last_tick_ns        # the send time of each symbol's last tick; 0 = none
    cdef list prices              # each symbol's last accepted price; None = none yet
    cdef list stale               # per symbol: stale as of the last watch (plain feeds)
    cdef list backoff_until       # per key: monotonic ns a backoff ends; 0 = none
    cdef list refusing            # per key: the reason last refused; None once an order goes
    cdef public int64_t max_age_ns    # 0 = prices never go stale
    cdef public int fd            # the order socket while it is lent (Connection.set_direct)
    cdef readonly Py_ssize_t length   # of this send()'s frame (0: no order made)
    cdef readonly Py_ssize_t written  # of it, the bytes send() wrote
    cdef readonly unsigned long long seq   # the last order's number (its id's suffix)
    cdef readonly unsigned long long orders  # orders made
    cdef list made                # orders made since the last take(), as tuples
