"""Type stubs for the compiled order path (ext/_orders.pyx); ext/orders_py.py is its twin."""

from collections.abc import Callable
from types import ModuleType
from typing import Any

class OrderDesk:
    order_no: int
    enabled: bool
    @property
    def booked_here(self) -> int: ...
    def __init__(self, protocol: ModuleType, symbols: frozenset[str] | set[str],
                 booked: dict[tuple[str, str], int], journal: Any) -> None: ...
    def book(self, frame: memoryview | bytes | bytearray, client: str, fields: bytes,
             order_no: int, received_ns: int) -> bytes | None: ...
    def last_order(self) -> Any: ...

class DeskSession:
    def __init__(self, desk: OrderDesk, client: str, fields: bytes,
                 send: Callable[[bytes], Any], booked: Callable[[int, int, int], Any],
                 other: Callable[[memoryview], Any], max_frame: int, delimiter: bytes) -> None: ...
    def consume(self, buf: bytearray, start: int, end: int) -> int: ...
