"""ext.demote (compiled, and its pure-Python twin): a SCHED_FIFO thread using over half of its
core drops to SCHED_OTHER and rings the doorbell; one using a tenth keeps its rank; the compiled
handler acts even inside a long C call. Each case runs in a child process, which the kernel
really signals."""

from __future__ import annotations

import hashlib
import importlib
import multiprocessing as mp
import os
import time

import pytest
from floodutil import sched_fifo_problem

CTX = mp.get_context("spawn")
INTERVAL_US = 4000
C_CALL_ROUNDS = 4_000_000   # pbkdf2 rounds: one C call of a second or more


def _compiled():
    try:
        return importlib.import_module("ext._demote")
    except ImportError:
        return None


IMPLS = [pytest.param("ext.demote_py", id="python"),
         pytest.param("ext._demote", id="cython", marks=pytest.mark.skipif(
             _compiled() is None, reason="ext._demote is not built (python setup.py "
                                         "build_ext --inplace)"))]


@pytest.fixture(autouse=True)
def _needs_sched_fifo():
    problem = sched_fifo_problem()
    if problem:
        pytest.skip(problem)


def _work(impl: str, work: str, report) -> None:
    mod = importlib.import_module(impl)
    r, w = os.pipe2(os.O_NONBLOCK)
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(10))
    mod.install(w, INTERVAL_US)
    report.send("start")
    deadline = time.monotonic() + 2
    if work == "c-call":
        hashlib.pbkdf2_hmac("sha256", b"flood", b"salt", C_CALL_ROUNDS)
    elif work == "busy":
        while os.sched_getscheduler(0) == os.SCHED_FIFO and time.monotonic() < deadline:
            pass
    else:   # a tenth of the core: 1 ms of work every 10 ms, for 2 s
        while time.monotonic() < deadline:
            until = time.monotonic() + 0.001
            while time.monotonic() < until:
                pass
            time.sleep(0.009)
    policy = os.sched_getscheduler(0)
    mod.uninstall()
    try:
        bell = os.read(r, 64)
    except BlockingIOError:
        bell = b""
    report.send({"policy": policy, "demotions": mod.demotions(), "bell": bell})


def _run(impl: str, work: str, during=None) -> dict:
    parent, child = CTX.Pipe()
    proc = CTX.Process(target=_work, args=(impl, work, child))
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
def test_a_thread_using_its_whole_core_drops_to_normal_scheduling(impl):
    got = _run(impl, "busy")
    assert got == {"policy": os.SCHED_OTHER, "demotions": 1, "bell": b"\x01"}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("impl", IMPLS)
def test_a_thread_using_a_tenth_of_its_core_keeps_its_rank(impl):
    got = _run(impl, "light")
    assert got == {"policy": os.SCHED_FIFO, "demotions": 0, "bell": b""}


@pytest.mark.timeout(60)
@pytest.mark.skipif(_compiled() is None, reason="ext._demote is not built")
def test_the_compiled_handler_demotes_inside_a_long_c_call():
    """What the twin cannot do: its handler waits for the C call to return."""
    seen: list[int] = []

    def watch(pid: int, conn) -> None:
        while not conn.poll(0.001):   # until the child leaves its C call
            try:
                seen.append(os.sched_getscheduler(pid))
            except OSError:
                return

    got = _run("ext._demote", "c-call", during=watch)
    assert got["demotions"] == 1 and got["policy"] == os.SCHED_OTHER, got
    assert os.SCHED_OTHER in seen, "still SCHED_FIFO for the whole C call"
