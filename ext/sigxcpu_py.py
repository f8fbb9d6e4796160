"""Pure-Python twin of ext/_sigxcpu.pyx: SIGXCPU drops the installing thread to SCHED_OTHER.

The same contract, with one difference that is the reason for the compiled one: a Python-level
handler runs between two bytecodes, so during a long C call (a garbage collection pass) the
demotion waits until the call returns.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

_state: dict[str, Any] = {"demotions": 0, "tid": 0, "fd": -1, "previous": None,
                          "installed": False}


def _on_sigxcpu(_signum: int, _frame: Any) -> None:
    try:
        os.sched_setscheduler(_state["tid"], os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        return
    _state["demotions"] += 1
    if _state["fd"] >= 0:
        try:
            os.write(_state["fd"], b"\x01")
        except BlockingIOError:
            pass   # a full pipe: already signalled


def install(fd: int = -1) -> None:
    """From now on SIGXCPU demotes the calling thread to SCHED_OTHER (in the handler), then
    writes one byte to `fd` (a non-blocking pipe: the loop's doorbell), if given."""
    _state["tid"] = threading.get_native_id()
    _state["fd"] = fd
    previous = signal.signal(signal.SIGXCPU, _on_sigxcpu)
    if not _state["installed"]:
        _state["previous"] = previous
    _state["installed"] = True


def uninstall() -> None:
    """The handler that was there before install()."""
    if _state["installed"]:
        signal.signal(signal.SIGXCPU, _state["previous"])
        _state["installed"] = False
        _state["tid"] = 0
        _state["fd"] = -1


def demotions() -> int:
    """SIGXCPUs that demoted the thread since the process started."""
    return _state["demotions"]
