"""ext.sigxcpu (compiled, and its pure-Python twin): RLIMIT_RTTIME's SIGXCPU drops a SCHED_FIFO
thread to SCHED_OTHER and rings the doorbell; the compiled handler does it even inside a long C
call. Each case runs in a child process, which the kernel really signals."""

from __future__ import annotations

import hashlib
import importlib
import multiprocessing as mp
import os
import resource
import time

import pytest
from floodutil import sched_fifo_problem

CTX = mp.get_context("spawn")
BUDGET_US = 5000
C_CALL_ROUNDS = 4_000_000   # pbkdf2 rounds: one C call of a second or more


def _compiled():
    try:
        return importlib.import_module("ext._sigxcpu")
    except ImportError:
        return None


IMPLS = [pytest.param("ext.sigxcpu_py", id="python"),
         pytest.param("ext._sigxcpu", id="cython", marks=pytest.mark.skipif(
             _compiled() is None, reason="ext._sigxcpu is not built (python setup.py "
                                         "build_ext --inplace)"))]


@pytest.fixture(autouse=True)
def _needs_sched_fifo():
    problem = sched_fifo_problem()
    if problem:
        pytest.skip(problem)


def _over_budget(impl: str, in_c_call: bool, report) -> None:
    mod = importlib.import_module(impl)
    r, w = os.pipe2(os.O_NONBLOCK)
    mod.install(w)
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    time.sleep(0.001)   # the kernel's count starts at a real-time wake-up
    resource.setrlimit(resource.RLIMIT_RTTIME, (BUDGET_US, resource.RLIM_INFINITY))
    report.send("start")
    if in_c_call:
        hashlib.pbkdf2_hmac("sha256", b"flood", b"salt", C_CALL_ROUNDS)
    else:
        deadline = time.monotonic() + 5
        while os.sched_getscheduler(0) == os.SCHED_FIFO and time.monotonic() < deadline:
            pass
    policy = os.sched_getscheduler(0)
    resource.setrlimit(resource.RLIMIT_RTTIME, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    mod.uninstall()
    try:
        bell = os.read(r, 64)
    except BlockingIOError:
        bell = b""
    report.send({"policy": policy, "demotions": mod.demotions(), "bell": bell})


def _run(impl: str, in_c_call: bool, during=None) -> dict:
    parent, child = CTX.Pipe()
    proc = CTX.Process(target=_over_budget, args=(impl, in_c_call, child))
    proc.start()
    try:
        assert parent.poll(15) and parent.recv() == "start"
        if during is not None:
            during(proc.pid, parent)
        assert parent.poll(30), "the child never finished"
        return parent.recv()
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", IMPLS)
def test_a_thread_over_its_budget_drops_to_normal_scheduling(impl):
    got = _run(impl, in_c_call=False)
    assert got == {"policy": os.SCHED_OTHER, "demotions": 1, "bell": b"\x01"}


@pytest.mark.timeout(60)
@pytest.mark.skipif(_compiled() is None, reason="ext._sigxcpu is not built")
def test_the_compiled_handler_demotes_inside_a_long_c_call():
    """What the twin cannot do: its handler waits for the C call to return."""
    seen: list[int] = []

    def watch(pid: int, conn) -> None:
        while not conn.poll(0.001):   # until the child leaves its C call
            try:
                seen.append(os.sched_getscheduler(pid))
            except OSError:
                return

    got = _run("ext._sigxcpu", in_c_call=True, during=watch)
    assert got["demotions"] == 1 and got["policy"] == os.SCHED_OTHER, got
    assert os.SCHED_OTHER in seen, "still SCHED_FIFO for the whole C call"
