# Declarations of ext/_journal.pyx shared with the other compiled modules (ext/_orders.pyx
# stores an order's record with the same writer, and writes its decimals with put_uint).
from libc.stdint cimport int64_t, uint64_t


cdef Py_ssize_t put_uint(unsigned char *p, uint64_t v) noexcept nogil


cdef Py_ssize_t store_order(unsigned char *base, Py_ssize_t size, Py_ssize_t off,
                            int64_t order_no, int64_t received_ns,
                            const unsigned char *fields, Py_ssize_t nfl,
                            const unsigned char *body, Py_ssize_t nb) noexcept nogil
