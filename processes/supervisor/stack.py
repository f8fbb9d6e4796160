"""Start the processes in dependency order and stop them all, whatever happens.

The order: OrderManager, Gateway, OrderBook, then one Strategy process per strategy of the
config ("strategy", then "strategy.NAME" per [strategies.NAME]); they stop in reverse, the
strategies first. A role starts part of it on this host (ROLES): the "core" (OrderManager and
Gateway) or a "trading" host (OrderBook and strategies, dialling the core's address).

Each child is started only when the one before it reports ready through a pipe (port bound,
segment created): no sleeps, and ports may be 0 (ephemeral) because each child reports the port it
really bound and the next child is configured with it.
"""

from __future__ import annotations

import copy
import importlib
import logging
import multiprocessing as mp
import os
import signal
import socket
import time
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any, Protocol

from ext import layout
from processes.shared import config as config_mod
from processes.shared import session as session_mod
from processes.shared import telemetry
from processes.supervisor import summary
from processes.supervisor.supervision import RestartPolicy

log = logging.getLogger("main")

READY_TIMEOUT = 15.0   # seconds a child may take to report ready
STOP_TIMEOUT = 5.0     # seconds a child may take to exit after SIGTERM before SIGKILL
ORDER = ("order_manager", "gateway", "orderbook", "strategy")   # with the default config
# The config sections each role runs ("strategy" stands for every strategy process).
ROLES = {"all": ("order_manager", "gateway", "orderbook", "strategy"),
         "core": ("order_manager", "gateway"),
         "trading": ("orderbook", "strategy")}
# The module whose run() is each process, by config section (`python -m processes.<name>` runs
# its main()).
ENTRY = {"gateway": "processes.gateway.service", "orderbook": "processes.orderbook.service",
         "strategy": "processes.strategy.host", "order_manager": "processes.order_manager.service"}


def _child(name: str, cfg: config_mod.Config, ready: Any, lock: Any) -> None:
    """Entry point of every child (spawn context): import its module and run it."""
    section = config_mod.section_of(name)
    module = importlib.import_module(ENTRY[section])
    kwargs: dict[str, Any] = {"ready": ready, "supervised": True}
    if section == "orderbook":
        kwargs["lock"] = lock
    elif section == "strategy":
        kwargs["name"] = name
    raise SystemExit(module.run(cfg, **kwargs))


def process_order(cfg: config_mod.Config, role: str = "all") -> tuple[str, ...]:
    """The process names of `role` in start-up order: the feed, then every strategy."""
    sections = ROLES[role]
    names = tuple(name for name in ORDER[:-1] if name in sections)
    if "strategy" in sections:
        names += tuple(name for name, _ in config_mod.strategy_processes(cfg))
    return names


def role_problem(cfg: config_mod.Config, role: str) -> str | None:
    """Why `cfg` cannot run as `role`, or None: a trading host dials the core's ports, which an
    ephemeral port (0) would not tell it."""
    if role != "trading":
        return None
    zero = [f"network.{key}" for key in ("price_port", "news_port", "order_port")
            if getattr(cfg.network, key) == 0]
    if zero:
        return (f"--role trading dials the core's ports: {', '.join(zero)} must be the port "
                "the core listens on, not 0")
    return None


def describe_exit(code: int | None) -> str:
    """How a child stopped, in words: "exit 0", "exit 1", "stopped by SIGTERM", "killed by
    SIGKILL" (multiprocessing reports a signal as a negative exit code, which reads as noise)."""
    if code is None:
        return "still running"
    if code >= 0:
        return f"exit {code}"
    try:
        sig = signal.Signals(-code)
    except ValueError:
        return f"killed by signal {-code}"
    verb = "stopped" if sig in (signal.SIGTERM, signal.SIGINT) else "killed"
    return f"{verb} by {sig.name}"


def describe_exits(codes: dict[str, int | None]) -> str:
    """"gateway exit 0, orderbook stopped by SIGTERM, ..." for a log line."""
    return ", ".join(f"{name} {describe_exit(code)}" for name, code in codes.items()) or "none"


class StackError(RuntimeError):
    """A child failed to start or died."""


class StartInterrupted(Exception):
    """A stop was requested (Ctrl+C, SIGTERM) while the stack was still starting."""


class Stack:
    """The running processes of one stack; `stop()` is safe to call at any point, more than once."""

    def __init__(self, cfg: config_mod.Config, role: str = "all") -> None:
        self.cfg = copy.deepcopy(cfg)
        self.ctx = mp.get_context("spawn")
        self.order = process_order(self.cfg, role)
        self.procs: dict[str, mp.process.BaseProcess] = {}
        self.info: dict[str, dict[str, Any]] = {}
        self.lock = self.ctx.Lock()   # shared by every writer of the price book
        # One session per stack (see processes.shared.session): every child, and every restart
        # of one, gets it, so a restarted OrderManager continues this run's positions and ids.
        om = self.cfg.order_manager
        self.session = session_mod.choose_session(Path(om.order_log), om.resume, inherit=False)

    def start(self, stop_fd: Any = None) -> None:
        """Start every child in order; `stop_fd` becoming readable aborts the start-up."""
        # One resource tracker for all children, started before them: if the OrderBook is killed,
        # the tracker (not the dead process) unlinks its segment when the stack exits.
        from multiprocessing import resource_tracker
        resource_tracker.ensure_running()
        for name in self.order:
            self._start_one(name, stop_fd)

    def config_of(self, name: str) -> config_mod.Config:
        """The Config a child gets: a strategy process's own [strategy] section; the ports
        bound so far (network is shared, not copied)."""
        if config_mod.section_of(name) != "strategy":
            return self.cfg
        return dict(config_mod.strategy_processes(self.cfg))[name]

    def _start_one(self, name: str, stop_fd: Any = None) -> None:
        reader, writer = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=_child, name=name,
                                args=(name, self.config_of(name), writer, self.lock),
                                daemon=False)
        previous = os.environ.get(session_mod.SESSION_ENV)
        os.environ[session_mod.SESSION_ENV] = self.session   # inherited by this child only
        try:
            proc.start()
        finally:
            if previous is None:
                del os.environ[session_mod.SESSION_ENV]
            else:
                os.environ[session_mod.SESSION_ENV] = previous
        writer.close()
        self.procs[name] = proc
        watch = [reader, proc.sentinel] + ([stop_fd] if stop_fd is not None else [])
        ready = wait(watch, timeout=READY_TIMEOUT)
        if stop_fd is not None and stop_fd in ready and reader not in ready:
            reader.close()
            raise StartInterrupted(name)
        info = None
        if reader in ready:
            try:
                info = reader.recv()
            except EOFError:
                info = None
        reader.close()
        if not info and stop_fd is not None and self._stopped_by_signal(proc, stop_fd):
            raise StartInterrupted(name)
        if not info or "error" in info:
            if info:
                why = info["error"]
            elif proc.is_alive():
                why = f"no ready report within {READY_TIMEOUT:.0f}s"
            else:
                why = f"exit code {proc.exitcode}"
            log_file = os.path.join(self.cfg.logging.dir, f"{name}.log")
            raise StackError(f"{name} failed to start: {why} (see {log_file})")
        self.info[name] = info
        net = self.cfg.network
        if name == "order_manager":
            net.order_port = info["order_port"]
        elif name == "gateway":
            net.price_port, net.news_port = info["price_port"], info["news_port"]
        log.info("%s ready (pid %d) %s", name, proc.pid, info)

    @staticmethod
    def _stopped_by_signal(proc: mp.process.BaseProcess, stop_fd: Any) -> bool:
        """A terminal's Ctrl+C reaches the whole group at once: a child still starting may die
        of it a moment before our own handler wakes stop_fd. That is a stop, not a failure."""
        proc.join(1.0)
        return (proc.exitcode in (-signal.SIGINT, -signal.SIGTERM)
                and bool(wait([stop_fd], timeout=1.0)))

    def restart(self, name: str, stop_fd: Any = None) -> None:
        """Start `name` again (after it died or was killed) on the ports already bound once.

        Its peers recover by themselves: the OrderBook and the Strategy redial a restarted
        Gateway, the Strategy resends its unacknowledged orders to a restarted OrderManager
        and re-attaches to the segment a restarted OrderBook creates (reclaiming the dead
        one's). A restarted Strategy starts flat, with no pending orders.
        """
        proc = self.procs.get(name)
        if proc is not None and proc.is_alive():
            raise StackError(f"{name} is still running")
        if proc is not None:
            proc.join(1.0)
        self._start_one(name, stop_fd)

    def snapshots(self) -> dict[str, dict[str, Any]]:
        """This stack's processes' latest stats snapshots (files of other runs are ignored)."""
        log_cfg = self.cfg.logging
        found = telemetry.read_all(telemetry.stats_dir(log_cfg.dir, log_cfg.stats_dir))
        pids = {name: p.pid for name, p in self.procs.items()}
        return {name: snap for name, snap in found.items() if snap.get("pid") == pids.get(name)}

    def sentinels(self) -> dict[int, str]:
        return {p.sentinel: name for name, p in self.procs.items()}

    def reap(self, names: list[str]) -> list[tuple[str, int | None]]:
        """Exit codes of children whose sentinel fired.

        The sentinel becomes readable when the child's descriptors close, a moment before the
        kernel makes it reapable, so join briefly instead of asking is_alive().
        """
        out = []
        for name in names:
            proc = self.procs[name]
            proc.join(1.0)
            out.append((name, proc.exitcode))
        return out

    def stop(self) -> dict[str, int | None]:
        """SIGTERM downstream first (Strategy) so no order is sent into a closed OrderManager."""
        for name in reversed(self.order):
            proc = self.procs.get(name)
            if proc is not None and proc.is_alive():
                proc.terminate()
                proc.join(STOP_TIMEOUT)
                if proc.is_alive():
                    log.warning("%s ignored SIGTERM for %.0fs; killing it", name, STOP_TIMEOUT)
                    proc.kill()
                    proc.join(STOP_TIMEOUT)
        codes = {name: p.exitcode for name, p in self.procs.items()}
        self._unlink_segment()
        return codes

    def _unlink_segment(self) -> None:
        """The OrderBook unlinks its segment on a clean exit; this covers a crashed one.

        Only a segment that OUR OrderBook created (header owner_pid == its pid) is removed: a
        stack that failed to start because another one is running must not delete that
        other stack's live segment.
        """
        proc = self.procs.get("orderbook")
        if proc is None or "orderbook" not in self.info:
            return
        name = self.cfg.market.shm_name.lstrip("/")
        path = f"/dev/shm/{name}"
        if layout.segment_owner(name) != proc.pid:
            return
        try:
            os.unlink(path)
        except FileNotFoundError:
            return
        log.warning("removed segment %s left by a crashed OrderBook", path)
        # The dead OrderBook registered it with our shared resource tracker; tell the tracker it
        # is gone, or it warns about a "leaked" segment it then fails to unlink.
        from multiprocessing import resource_tracker
        resource_tracker.unregister(f"/{name}", "shared_memory")


def _supervise(stack: Stack, policy: RestartPolicy, died: list[str]) -> bool:
    """Log each death with how it ended and schedule its restart; False = stop the stack."""
    keep_running = True
    for name, exitcode in stack.reap(died):
        delay = policy.died(name, time.monotonic())
        if delay is None:
            why = ("supervisor.restart is off" if not policy.cfg.restart else
                   f"it was restarted {policy.restarts.get(name, 0)} times in a row "
                   "(supervisor.max_restarts)")
            log.error("%s died (%s); stopping the stack (%s)", name, describe_exit(exitcode), why)
            keep_running = False
        else:
            limit = policy.cfg.max_restarts or "unlimited"
            log.error("%s died (%s); restarting it in %.2fs (restart %d of %s)",
                      name, describe_exit(exitcode), delay, policy.restarts[name], limit)
    return keep_running


def _restart_due(stack: Stack, policy: RestartPolicy, stop_fd: Any) -> bool:
    """Restart the children whose backoff is over; a failed start is another death."""
    for name in policy.due(time.monotonic()):
        t0 = time.monotonic()
        try:
            stack.restart(name, stop_fd=stop_fd)
        except StackError as exc:
            log.error("%s", exc)
            proc = stack.procs.get(name)
            if proc is not None and proc.is_alive():   # started but never reported ready
                proc.kill()
                proc.join(STOP_TIMEOUT)
            if not _supervise(stack, policy, [name]):
                return False
            continue
        log.warning("%s restarted (pid %d) in %.2fs", name, stack.procs[name].pid,
                    time.monotonic() - t0)
    return True


class LoopHook(Protocol):
    """Something main.py runs alongside the stack (the --dashboard): poll() every `interval`
    seconds and when one of waitables() is readable; a reason it returns stops the stack as
    Ctrl+C does. close() runs first thing when the stack stops, before anything is logged."""

    interval: float

    def waitables(self) -> list[int]: ...
    def poll(self, stack: Stack) -> str | None: ...
    def close(self) -> None: ...


class Supervisor:
    """Runs one stack until Ctrl+C, SIGTERM or `duration` seconds: start(), loop(), teardown()
    (or run(), which is all three and never leaves a child running).

    A child that dies is logged with its exit code and restarted with backoff
    (processes.supervisor.supervision); with `supervisor.restart = false`, or once a child has
    used up `supervisor.max_restarts`, its death stops the stack instead (exit code 1).
    """

    def __init__(self, cfg: config_mod.Config, duration: float | None = None,
                 hook: LoopHook | None = None, role: str = "all") -> None:
        self.cfg = cfg
        self.duration = duration
        self.hook = hook
        self.role = role
        self.stop_reason: list[str] = []
        self.stack: Stack | None = None
        self.code = 0
        self.policy = RestartPolicy(cfg.supervisor, process_order(cfg, role))
        self._wake_r: socket.socket | None = None
        self._wake_w: socket.socket | None = None
        self._old_wakeup = -1
        self._old_handlers: dict[int, Any] = {}

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self.stop_reason.append(signal.Signals(signum).name)

    def start(self) -> None:
        """Install the stop signals, then start every child in order (StackError if one fails,
        StartInterrupted if a stop is requested meanwhile)."""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._old_wakeup = signal.set_wakeup_fd(self._wake_w.fileno())
        self._old_handlers = {s: signal.signal(s, self._on_signal)
                              for s in (signal.SIGINT, signal.SIGTERM)}
        self.stack = Stack(self.cfg, self.role)
        self.stack.start(stop_fd=self._wake_r)
        log.info("stack running%s; Ctrl+C to stop",
                 f" for {self.duration:.0f}s" if self.duration else "")

    def loop(self) -> None:
        """Supervise until a stop is requested, the duration is over or a death stops it."""
        stack, policy, hook, wake_r = self.stack, self.policy, self.hook, self._wake_r
        assert stack is not None and wake_r is not None
        duration = self.duration
        deadline = None if duration is None else time.monotonic() + duration
        sentinels = stack.sentinels()
        while not self.stop_reason:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            if hook is not None:
                timeout = hook.interval if timeout is None else min(timeout, hook.interval)
            if (due := policy.next_due()) is not None:
                wait_due = max(0.0, due - time.monotonic())
                timeout = wait_due if timeout is None else min(timeout, wait_due)
            ready = wait([*sentinels, wake_r, *(hook.waitables() if hook else ())],
                         timeout=timeout)
            if self.stop_reason:
                break
            died = [sentinels[s] for s in ready if s in sentinels]
            if died and not _supervise(stack, policy, died):
                self.code = 1
                break
            if policy.next_due() is not None and not _restart_due(stack, policy, wake_r):
                self.code = 1
                break
            # Wait only on children that are running (a dead one's sentinel stays readable).
            sentinels = {s: n for s, n in stack.sentinels().items()
                         if n not in policy.pending()}
            if hook is not None and (why := hook.poll(stack)):
                self.stop_reason.append(why)
                break
            if deadline is not None and time.monotonic() >= deadline:
                self.stop_reason.append("duration elapsed")

    def teardown(self) -> int:
        """Stop every child, print the summary, restore the signal handlers; the exit code
        (0 only for a clean stop)."""
        # Ignore further Ctrl+C while we stop the children, so a double Ctrl+C cannot orphan them.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if self.hook is not None:
            try:
                self.hook.close()
            except Exception:   # a broken terminal must not keep the children running
                log.exception("closing the dashboard failed")
        log.info("stopping (%s)", ", ".join(self.stop_reason) or "error")
        codes: dict[str, int | None] = {}
        if self.stack is not None:
            codes = self.stack.stop()
            snaps = self.stack.snapshots()
            if snaps:
                log.info("%s", summary.render(summary.build(snaps)))
        for s, handler in self._old_handlers.items():
            signal.signal(s, handler)
        if self._wake_w is not None:
            signal.set_wakeup_fd(self._old_wakeup)
        for sock in (self._wake_r, self._wake_w):
            if sock is not None:
                sock.close()
        code = self.code
        # -SIGINT: a terminal Ctrl+C reaches every child; one still starting up dies of it.
        bad = {n: c for n, c in codes.items() if c not in (0, -signal.SIGTERM, -signal.SIGINT)}
        if bad:
            log.error("children exited badly: %s", describe_exits(bad))
            code = code or 1
        log.info("stopped: %s", describe_exits(codes))
        return code

    def run(self) -> int:
        try:
            self.start()
            self.loop()
        except StartInterrupted as exc:
            log.info("stop requested while starting %s", exc)
        except StackError as exc:
            log.error("%s", exc)
            self.code = 1
        except BaseException:
            self.teardown()
            raise
        return self.teardown()

