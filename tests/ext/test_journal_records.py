"""The order journal's record writer, compiled (ext._journal) and twin (ext.journal_py): the same
bytes for the same record, records the journal reader reads back, nothing written when a record
does not fit."""

from __future__ import annotations

import json
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twinutil import compiled, needs, twin_params

from ext import journal_py

pytestmark = pytest.mark.timeout(60)

cjournal = compiled("_journal")
IMPLS = twin_params(journal_py, cjournal, "_journal")
SETTINGS = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow], max_examples=300)
FRAME = (b'{"id":"s-1-2-3","client":"strat-1","symbol":"AAPL","side":"BUY","qty":10,'
         b'"price":172.53,"tick_ns":1,"tick_seq":2,"sent_ns":3}*')
FIELDS = b'"peer":"127.0.0.1:5555","session":"s1",'


def records(buf: bytes | bytearray) -> list[bytes]:
    """Payloads of a buffer of records, checked the way the journal's reader checks them."""
    out, off = [], 0
    while off + 8 <= len(buf):
        length, crc = journal_py.HEADER.unpack_from(buf, off)
        if not length:
            break
        payload = bytes(buf[off + 8:off + 8 + length])
        assert zlib.crc32(payload) == crc
        out.append(payload)
        off = (off + 8 + length + 7) & ~7
    return out


@pytest.mark.parametrize("impl", IMPLS)
def test_an_order_record_is_the_order_log_line(impl):
    buf = bytearray(4096)
    end = impl.put_order(buf, 0, 7, 123456789, FIELDS, FRAME)
    assert end > 0 and end % 8 == 0
    end = impl.put(buf, end, b'{"x":1}')
    [rec, other] = records(buf)
    assert other == b'{"x":1}'
    assert json.loads(rec) == {"order_no": 7, "received_ns": 123456789, "peer": "127.0.0.1:5555",
                               "session": "s1", **json.loads(FRAME[:-1])}
    assert list(json.loads(rec))[:4] == ["order_no", "received_ns", "peer", "session"]


@pytest.mark.parametrize("impl", IMPLS)
def test_a_record_that_does_not_fit_writes_nothing(impl):
    buf = bytearray(256)
    assert impl.put(buf, 200, b"x" * 60) == -1
    assert impl.put(buf, 0, b"") == -1
    assert impl.put_order(buf, 64, 1, 1, FIELDS, FRAME) == -1
    assert buf == bytearray(256)
    with pytest.raises(ValueError, match="not an encoded order frame"):
        impl.put_order(bytearray(4096), 0, 1, 1, FIELDS, FRAME[:-1])


@needs(cjournal, "_journal")
@SETTINGS
@given(order_no=st.integers(-(2 ** 63), 2 ** 63 - 1), received_ns=st.integers(0, 2 ** 63 - 1),
       fields=st.binary(max_size=64), body=st.binary(max_size=300),
       off=st.integers(0, 80).map(lambda k: 8 * k), size=st.integers(0, 1200))
def test_the_twins_write_the_same_bytes(order_no, received_ns, fields, body, off, size):
    frame = b"{" + body + b"}*"
    a, b = bytearray(size), bytearray(size)
    assert cjournal.put_order(a, off, order_no, received_ns, fields, frame) == \
        journal_py.put_order(b, off, order_no, received_ns, fields, frame)
    assert a == b
    a, b = bytearray(size), bytearray(size)
    assert cjournal.put(a, off, body) == journal_py.put(b, off, body)
    assert a == b
