"""Native extensions of tradestack: the shared-memory seqlock price book and the price-feed
codec (PriceFeedDecoder, TickEncoder).

Picks the compiled ``ext._pricebook`` when it is importable, else the pure-Python twin
``ext.pricebook_py`` (with a RuntimeWarning, because it is ~20x slower). Set
``TRADESTACK_PURE_PYTHON=1`` to force the twin (tests, debugging, platforms without a
compiler). The order journal's record writer (``ext._journal``, twin ``ext.journal_py``)
and the histograms follow the book too. The codec follows the book: ``ext._wire`` with the
compiled book (its decoder writes through the book's C fast paths), ``ext.wire_py``
otherwise. The order path (the OrderManager's ``OrderDesk`` for the canonical order frame and
its per-connection consumer ``DeskSession``; the Strategy's ``OrderFramer`` and ``OrderGate``:
``ext._orders``, twin ``ext.orders_py``) follows the book too. Every module stays
importable for tests: ``ext.pricebook_py``, ``ext.wire_py`` and, when built,
``ext._pricebook`` and ``ext._wire``. This package must not import ``reactor`` or
``processes``.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

from ext import demote_py, hist_py, journal_py, layout, orders_py, pricebook_py, wire_py
from ext.layout import LayoutError, footprint, segment_size

_pricebook: ModuleType | None = None
_wire: ModuleType | None = None

if os.environ.get("TRADESTACK_PURE_PYTHON", "").strip().lower() in ("1", "true", "yes", "on"):
    _impl: ModuleType = pricebook_py
else:
    try:
        # importlib, not `from ext import _pricebook`: that would just return the
        # placeholder attribute above instead of importing the submodule.
        _pricebook = importlib.import_module("ext._pricebook")
    except ImportError as exc:  # not built on this machine
        warnings.warn(
            f"ext._pricebook is not built ({exc}); using the slow pure-Python price book. "
            "Run `python setup.py build_ext --inplace`.",
            RuntimeWarning,
            stacklevel=2,
        )
        _impl = pricebook_py
    else:
        _impl = _pricebook

_wire_impl: ModuleType = wire_py
if _impl is _pricebook:
    try:
        _wire = importlib.import_module("ext._wire")
    except ImportError as exc:  # an older build: the twin codec works with the compiled book
        warnings.warn(
            f"ext._wire is not built ({exc}); using the slow pure-Python price-feed codec. "
            "Run `python setup.py build_ext --inplace`.",
            RuntimeWarning,
            stacklevel=2,
        )
    else:
        _wire_impl = _wire


def _native(name: str, twin: ModuleType) -> ModuleType:
    """The compiled module `name` when the compiled book is in use, else its twin; also the
    twin for an older build without it (the twin does the same work, slower; ext.demote_py
    only between bytecodes)."""
    if _impl is not _pricebook:
        return twin
    try:
        return importlib.import_module(name)
    except ImportError:
        return twin


_hist_impl = _native("ext._hist", hist_py)
_journal_impl = _native("ext._journal", journal_py)
_demote_impl = _native("ext._demote", demote_py)
_orders_impl = _native("ext._orders", orders_py)

SharedPriceBook = _impl.SharedPriceBook
PriceReader = _impl.PriceReader
IMPLEMENTATION: str = "cython" if _impl is _pricebook else "python"
PriceFeedDecoder = _wire_impl.PriceFeedDecoder
TickEncoder = _wire_impl.TickEncoder
FrameTooLong = wire_py.FrameTooLong  # one class, shared by both codecs
WIRE_IMPLEMENTATION: str = "cython" if _wire_impl is _wire else "python"
LatencyHistogram = _hist_impl.LatencyHistogram
journal_records = _journal_impl   # put / put_order: the order journal's record writer
JOURNAL_IMPLEMENTATION: str = "python" if _journal_impl is journal_py else "cython"
OrderDesk = _orders_impl.OrderDesk
DeskSession = _orders_impl.DeskSession
OrderFramer = _orders_impl.OrderFramer
OrderGate = _orders_impl.OrderGate
ORDERS_IMPLEMENTATION: str = "python" if _orders_impl is orders_py else "cython"
demote: ModuleType = _demote_impl     # install() / uninstall() / demotions()

__all__ = [
    "IMPLEMENTATION",
    "JOURNAL_IMPLEMENTATION",
    "ORDERS_IMPLEMENTATION",
    "WIRE_IMPLEMENTATION",
    "FrameTooLong",
    "LatencyHistogram",
    "DeskSession",
    "LayoutError",
    "OrderDesk",
    "OrderFramer",
    "OrderGate",
    "PriceFeedDecoder",
    "PriceReader",
    "SharedPriceBook",
    "TickEncoder",
    "footprint",
    "hist_py",
    "journal_py",
    "journal_records",
    "layout",
    "orders_py",
    "pricebook_py",
    "segment_size",
    "demote",
    "demote_py",
    "wire_py",
]
