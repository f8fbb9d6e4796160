"""Live terminal dashboard of a running stack (also drawn by `python main.py --dashboard`).

    python -m processes.tools.monitor              # the stack of tradestack.toml, until q or Ctrl+C
    python -m processes.tools.monitor --stats-dir DIR --shm-name NAME --refresh 1
    python -m processes.tools.monitor --once       # print one frame and exit

It only reads: the processes' stats snapshots (JSON files they publish every stats_interval) and
the shared-memory price book, attached read-only (seqlock reads never block the writer; no reader
entry is taken, so the OrderBook does not even know we are there). Nothing it does can slow a
hot path. The picture itself is processes.tools.dashboard.render (pure); this module is the I/O
around it: files, shared memory, the terminal, keys and signals. Every strategy process's snapshot
(stats/strategy.json, stats/strategy.NAME.json) is shown.
"""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import termios
import time
import tty
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live

from ext.layout import pid_alive
from ext.segment import SegmentWatcher
from processes.shared import runtime, telemetry
from processes.tools import dashboard
from reactor import Backoff

QUIT_KEYS = ("q", "Q")


class Monitor:
    """Everything one frame needs: the snapshot source, the price book, the previous prices."""

    def __init__(self, shm_name: str, snapshots: Callable[[], dict[str, dict[str, Any]]],
                 stats_interval: float = 1.0, label: str = "") -> None:
        self.watcher = SegmentWatcher(shm_name, Backoff(initial=0.1, maximum=2.0))
        self.snapshots = snapshots
        self.stats_interval = stats_interval
        self.label = label
        self._prev: dict[str, dashboard.Quote] | None = None
        self._shown: dict[str, dashboard.Quote] | None = None

    def frame(self, footer: str = "q or Ctrl+C quits") -> RenderableType:
        snaps = self.snapshots()
        slots = self.watcher.quotes()
        quotes = None if slots is None else {s: dashboard.Quote(*q) for s, q in slots.items()}
        # "chg" compares with the quote before the symbol's latest tick, so a refresh that saw
        # no new tick keeps its arrow instead of blanking it.
        if quotes is not None:
            shown, prev = self._shown or {}, self._prev or {}
            self._prev = {}
            for sym, quote in quotes.items():
                old = shown.get(sym)
                before = old if old is not None and old.write_ns != quote.write_ns else \
                    prev.get(sym)
                if before is not None:
                    self._prev[sym] = before
            self._shown = quotes
        # Before the first snapshot the segment does not exist yet either: say what we wait
        # for, not the FileNotFoundError of the attach that is retried.
        shm = (self.watcher.status.replace("(FileNotFoundError;", "(not created yet;") if snaps
               else "waiting for the first stats")
        source = f"{self.label}  shm: {shm}" if snaps else f"{self.label}  {shm}"
        return dashboard.render(snaps, quotes, now=time.time(), mono_ns=time.monotonic_ns(),
                                stats_interval=self.stats_interval, alive=pid_alive,
                                prev_prices=self._prev, source=source, footer=footer)

    def close(self) -> None:
        self.watcher.close()


class Screen:
    """The terminal while the dashboard owns it: alternate screen, no cursor, keys without Enter.

    Restored on exit whatever happens (q, Ctrl+C, an exception). Ctrl+C still raises SIGINT:
    cbreak mode keeps the terminal's signal keys.
    """

    def __init__(self, console: Console | None = None) -> None:
        if console is None and sys.stdout.isatty():
            # An exported COLUMNS/LINES is a size someone's shell saw once; rich would prefer it
            # to the terminal's real (and resizable) size.
            os.environ.pop("COLUMNS", None)
            os.environ.pop("LINES", None)
        self.console = console or Console()
        self.live = Live(console=self.console, screen=True, auto_refresh=False,
                         redirect_stdout=False, redirect_stderr=False)
        self._fd: int | None = None
        self._saved: list[Any] | None = None

    def __enter__(self) -> Screen:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            fd = -1
        if fd >= 0 and os.isatty(fd):
            self._fd = fd
            self._saved = termios.tcgetattr(fd)
            tty.setcbreak(fd, termios.TCSANOW)
        self.live.start()

    def stop(self) -> None:
        try:
            self.live.stop()
        finally:
            if self._fd is not None and self._saved is not None:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._fd = self._saved = None

    def update(self, renderable: RenderableType) -> None:
        self.live.update(renderable, refresh=True)

    def fileno(self) -> int | None:
        """The keyboard's fd while keys are read, else None (no terminal, or it hit EOF)."""
        return self._fd

    def read_keys(self, timeout: float = 0.0) -> str:
        """Keys typed so far (waiting up to `timeout` s for the first); '' if none."""
        if self._fd is None:
            if timeout > 0:
                time.sleep(timeout)
            return ""
        readable, _, _ = select.select([self._fd], [], [], timeout)
        if not readable:
            return ""
        data = os.read(self._fd, 64)
        if not data:          # EOF: stop watching, or every wait would return at once
            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._fd = self._saved = None
        return data.decode(errors="replace")


class DashboardHook:
    """main.py --dashboard: processes.supervisor.stack.Supervisor calls poll() every `interval`
    seconds and whenever a key arrives; a stop reason it returns stops the stack as Ctrl+C does."""

    def __init__(self, refresh: float, stats_interval: float) -> None:
        self.interval = refresh
        self.stats_interval = stats_interval
        self.screen: Screen | None = None
        self.monitor: Monitor | None = None

    def waitables(self) -> list[int]:
        fd = self.screen.fileno() if self.screen is not None else None
        return [] if fd is None else [fd]

    def poll(self, stack: Any) -> str | None:
        if self.monitor is None:
            self.monitor = Monitor(stack.cfg.market.shm_name, stack.snapshots,
                                   self.stats_interval, label=f"main.py pid {os.getpid()}")
            runtime.set_console(False)   # main's log lines would scroll the picture apart
            self.screen = Screen()
            self.screen.start()
        assert self.screen is not None
        if any(k in QUIT_KEYS for k in self.screen.read_keys()):
            return "dashboard quit"
        self.screen.update(self.monitor.frame(footer="q or Ctrl+C stops the stack"))
        return None

    def close(self) -> None:
        """Hand the terminal back (and main.py's log lines with it) before the stack stops."""
        if self.screen is not None:
            self.screen.stop()
            self.screen = None
        if self.monitor is not None:
            self.monitor.close()
            self.monitor = None
        runtime.set_console(True)


def _interrupt(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def run(monitor: Monitor, refresh: float, duration: float | None = None) -> int:
    """Draw until q, Ctrl+C, SIGTERM/SIGHUP or `duration`; the terminal is restored each way."""
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _interrupt)
    deadline = None if duration is None else time.monotonic() + duration
    try:
        with Screen() as screen:
            while deadline is None or time.monotonic() < deadline:
                screen.update(monitor.frame())
                wait = refresh if deadline is None else min(refresh, deadline - time.monotonic())
                if any(k in QUIT_KEYS for k in screen.read_keys(max(0.0, wait))):
                    break
    except KeyboardInterrupt:
        pass
    finally:
        monitor.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processes.tools.monitor",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--once", action="store_true",
                        help="print one frame to stdout and exit (no terminal needed)")
    parser.add_argument("--width", type=int, default=None,
                        help="columns for --once (default: the terminal's, else 160)")
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="quit after this many seconds (default: until q or Ctrl+C)")
    cfg, args = runtime.parse_cli(parser, ("monitor",), argv, extra=(
        ("logging", "stats_dir"), ("logging", "stats_interval")))
    if cfg is None:
        return 0
    stats = telemetry.stats_dir(cfg.logging.dir, cfg.logging.stats_dir)
    monitor = Monitor(cfg.market.shm_name, lambda: telemetry.read_all(stats),
                      cfg.logging.stats_interval, label=f"stats: {Path(stats)}")
    if args.once:
        width = args.width or (None if sys.stdout.isatty() else 160)
        try:
            Console(width=width).print(monitor.frame(footer=""))
        finally:
            monitor.close()
        return 0
    return run(monitor, cfg.monitor.refresh, args.duration)


if __name__ == "__main__":
    raise SystemExit(main())
