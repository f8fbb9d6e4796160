"""Type stubs for the compiled order path (ext/_orders.pyx); ext/orders_py.py is its twin."""

from types import ModuleType
from typing import Any

class OrderDesk:
    @property
    def booked_here(self) -> int: ...
    def __init__(self, protocol: ModuleType, symbols: frozenset[str] | set[str],
                 booked: dict[tuple[str, str], int], journal: Any) -> None: ...
    def book(self, frame: memoryview | bytes | bytearray, client: str, fields: bytes,
             order_no: int, received_ns: int) -> tuple[bytes, Any] | None: ...
