"""Pure-Python twin of ext._hist (same buckets, same API); see that module for why.

Used when the extension is not built or TRADESTACK_PURE_PYTHON=1, and as the test oracle.
"""

from __future__ import annotations

from collections.abc import Iterable

SUB_BITS = 11
HALF = 1024
MAX_SHIFT = 25
NUM_BUCKETS = 2048 + MAX_SHIFT * HALF
HIGHEST = 60_000_000_000


def _index(v: int) -> int:
    if v < 2048:
        return v
    shift = v.bit_length() - SUB_BITS
    return 2048 + (shift - 1) * HALF + ((v >> shift) - HALF)


def _value(i: int) -> int:
    if i < 2048:
        return i
    shift = (i - 2048) // HALF + 1
    return ((i - 2048) % HALF + HALF) << shift


def bucket_value(v: int) -> int:
    return _value(_index(min(max(int(v), 1), HIGHEST)))


class LatencyHistogram:
    """Counts per HdrHistogram bucket, since start and since the last window()."""

    __slots__ = ("_counts", "_seen", "count", "max")

    def __init__(self) -> None:
        self._counts: dict[int, int] = {}
        self._seen: dict[int, int] = {}
        self.count = 0
        self.max = 0

    def record(self, v: int) -> None:
        if not -(1 << 63) <= v < (1 << 63):  # the compiled record() takes an int64
            raise OverflowError("latency sample out of int64 range")
        v = 1 if v < 1 else (HIGHEST if v > HIGHEST else int(v))
        i = _index(v)
        self._counts[i] = self._counts.get(i, 0) + 1
        self.count += 1
        if v > self.max:
            self.max = v

    def record_many(self, values: Iterable[int]) -> None:
        for v in values:
            self.record(int(v))

    def encode(self, window: bool = False) -> bytes:
        """Same bytes as the compiled encode(): LEB128 (index delta, count) per bucket."""
        out = bytearray()
        prev = -1
        for i, c in sorted(self._counts.items()):
            if window:
                c -= self._seen.get(i, 0)
            if not c:
                continue
            _varint(out, i - prev)
            _varint(out, c)
            prev = i
        if window:
            self._seen = dict(self._counts)
        return bytes(out)

    def pairs(self) -> list[tuple[int, int]]:
        return [(_value(i), c) for i, c in sorted(self._counts.items())]

    def encode_both(self) -> tuple[bytes, bytes]:
        """(encode(), encode(window=True)), as the compiled twin returns them in one call."""
        return self.encode(), self.encode(True)

    def window(self) -> list[tuple[int, int]]:
        out = [(_value(i), c - self._seen.get(i, 0)) for i, c in sorted(self._counts.items())
               if c != self._seen.get(i, 0)]
        self._seen = dict(self._counts)
        return out


def _varint(out: bytearray, x: int) -> None:
    while x >= 0x80:
        out.append((x & 0x7F) | 0x80)
        x >>= 7
    out.append(x)


def decode(blob: bytes) -> list[tuple[int, int]]:
    """[(bucket value, count)] from encode()'s bytes (either implementation)."""
    out: list[tuple[int, int]] = []
    nums: list[int] = []
    x = shift = 0
    for b in blob:
        x |= (b & 0x7F) << shift
        if b & 0x80:
            shift += 7
            continue
        nums.append(x)
        x = shift = 0
    if x or shift or len(nums) % 2:
        raise ValueError("truncated histogram encoding")
    index = -1
    for k in range(0, len(nums), 2):
        index += nums[k]
        out.append((_value(index), nums[k + 1]))
    return out
