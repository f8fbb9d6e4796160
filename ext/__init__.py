"""Native extensions of tradestack: the shared-memory seqlock price book.

Picks the compiled ``ext._pricebook`` when it is importable, else the pure-Python twin
``ext.pricebook_py`` (with a RuntimeWarning, because it is ~20x slower). Set
``TRADESTACK_PURE_PYTHON=1`` to force the twin (tests, debugging, platforms without a
compiler). Both modules stay importable for tests: ``ext.pricebook_py`` and, when built,
``ext._pricebook``. This package must not import ``reactor`` or ``processes``.
"""

from __future__ import annotations

import importlib
import os
import warnings
from types import ModuleType

from ext import layout, pricebook_py
from ext.layout import LayoutError, footprint, segment_size

_pricebook: ModuleType | None = None

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

SharedPriceBook = _impl.SharedPriceBook
PriceReader = _impl.PriceReader
IMPLEMENTATION: str = "cython" if _impl is _pricebook else "python"

__all__ = [
    "IMPLEMENTATION",
    "LayoutError",
    "PriceReader",
    "SharedPriceBook",
    "footprint",
    "layout",
    "pricebook_py",
    "segment_size",
]
