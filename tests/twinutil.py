"""The compiled modules of ext/ for the twin tests: every test of a native path runs against its
pure-Python twin and, when it is built, the compiled module; and what the tests of the native
senders share."""

from __future__ import annotations

import glob
import importlib
import socket
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXT = Path(__file__).resolve().parents[1] / "ext"


def compiled(name: str) -> ModuleType | None:
    """ext.<name> (e.g. "_orders"), or None when it is not built. One that is built but does
    not load fails loudly: skipping every compiled test would hide it."""
    try:
        return importlib.import_module(f"ext.{name}")
    except ImportError:
        if glob.glob(str(EXT / f"{name}*.so")):
            raise
        return None


def needs(module: ModuleType | None, name: str) -> pytest.MarkDecorator:
    """Skip a test of the compiled `name` when it is not built, saying how to build it."""
    return pytest.mark.skipif(module is None, reason=f"ext.{name} is not built "
                                                     "(python setup.py build_ext --inplace)")


def twin_params(twin: ModuleType, module: ModuleType | None, name: str) -> list[Any]:
    """pytest params: the twin ("python") and the compiled module ("cython")."""
    return [pytest.param(twin, id="python"),
            pytest.param(module, id="cython", marks=needs(module, name))]


def fill_send_buffer(sock: socket.socket) -> None:
    """Send on the non-blocking `sock` until the kernel takes nothing more (its peer unread)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    try:
        while True:
            sock.send(b"x" * 1024)
    except BlockingIOError:
        pass
