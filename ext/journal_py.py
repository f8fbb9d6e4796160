"""Record writer of the order journal (processes.shared.journal), pure Python: the twin of
ext._journal, and the statement of the record format both write.

A record at an 8-byte aligned offset `off` of a writable buffer:

    u32 length (> 0) | u32 crc32(payload) (zlib's CRC-32) | payload | padding to 8 bytes

The payload is stored first and the header last (the commit marker). Both functions return the
offset of the next record, or -1 (nothing written) when this one does not fit the buffer.
"""

from __future__ import annotations

import struct
import zlib

HEADER = struct.Struct("<II")


def put(buf: bytearray | memoryview, off: int, payload: bytes) -> int:
    """One record holding `payload`."""
    end = off + HEADER.size + len(payload)
    if not payload or end > len(buf):
        return -1
    buf[off + HEADER.size:end] = payload
    HEADER.pack_into(buf, off, len(payload), zlib.crc32(payload))
    return (end + 7) & ~7


def put_order(buf: bytearray | memoryview, off: int, order_no: int, received_ns: int,
              fields: bytes, frame: bytes) -> int:
    """One order-log record: `{"order_no":N,"received_ns":N,<fields><the order>}`, where the
    order is an encoded order frame (`{...}*`) without its braces and terminator."""
    if len(frame) < 3 or frame[:1] != b"{" or frame[-2:] != b"}*":
        raise ValueError("not an encoded order frame")
    # Room for the longest such record (two 20-digit numbers), as the compiled twin checks.
    if off + HEADER.size + 12 + 20 + 15 + 20 + 1 + len(fields) + len(frame) - 3 + 1 > len(buf):
        return -1
    return put(buf, off, b'{"order_no":%d,"received_ns":%d,%b%b}' % (
        order_no, received_ns, fields, frame[1:-2]))
