"""What every process does around its reactor: logging, signals, readiness, parent death, stats.

Kept apart from the hot paths: nothing here runs per tick.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from processes import config as config_mod
from reactor import Reactor

PR_SET_PDEATHSIG = 1
STATS_INTERVAL = 5.0  # seconds between the periodic one-line counters in the log

_FORMAT = "%(asctime)s.%(msecs)03d %(name)-13s %(levelname)-7s %(message)s"
_DATEFMT = "%H:%M:%S"


class Service(Protocol):
    """A process body: started on a reactor, reports counters, closes cleanly."""

    def start(self) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def setup_logging(name: str, cfg: config_mod.Logging) -> logging.Logger:
    """Console and logs/<name>.log, both with the process name; replaces earlier handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(cfg.level.upper())
    formatter = logging.Formatter(_FORMAT, _DATEFMT)
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(formatter)
    root.addHandler(console)
    if cfg.dir:
        Path(cfg.dir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(cfg.dir) / f"{name}.log")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    return logging.getLogger(name)


def die_with_parent() -> None:
    """Ask the kernel to SIGTERM us when the parent dies, so a crash of main.py leaves no orphan."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def format_stats(stats: dict[str, Any]) -> str:
    return " ".join(f"{k}={v:.0f}" if isinstance(v, float) else f"{k}={v}"
                    for k, v in stats.items())


def serve(name: str, cfg: config_mod.Config, build: Callable[[Reactor], Service],
          ready: Any = None, idle: str = "block", supervised: bool = False) -> int:
    """Run one process body until SIGINT/SIGTERM; returns the exit code.

    `ready` is the write end of a multiprocessing Pipe: main.py waits on it so each process starts
    only once its upstream is listening (no sleeps); we send the bound ports or segment name.
    """
    if supervised:
        die_with_parent()
    log = setup_logging(name, cfg.logging)
    reactor = Reactor(idle=idle)
    # Handlers first: a SIGTERM between "ready" and run() must still mean a clean stop (the
    # OrderBook unlinks its segment), not the default handler's instant death.
    for signum in (signal.SIGINT, signal.SIGTERM):
        reactor.add_signal_handler(signum, reactor.stop)
    service = None
    try:
        service = build(reactor)
        info = service.start()
        log.info("ready %s", format_stats(info))
        if ready is not None:
            ready.send(info)
            ready.close()
        reactor.call_every(STATS_INTERVAL, lambda: log.info("%s", format_stats(service.stats())))
        reactor.run()
        log.info("stopping: %s", format_stats(service.stats()))
        return 0
    except Exception as exc:
        log.exception("%s failed: %s", name, exc)
        if ready is not None and not ready.closed:
            ready.send({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    finally:
        if service is not None:
            service.close()
        reactor.close()
        logging.shutdown()


def parse_cli(parser: argparse.ArgumentParser, sections: tuple[str, ...],
              argv: list[str] | None = None, extra: tuple[tuple[str, str], ...] = (),
              ) -> tuple[config_mod.Config | None, argparse.Namespace]:
    """Add the settings flags, parse, build the Config; (None, args) if --print-config ran."""
    config_mod.add_arguments(parser, sections, extra)
    args = parser.parse_args(argv)
    try:
        cfg = config_mod.from_args(args)
    except config_mod.ConfigError as exc:
        parser.error(str(exc))
    if args.print_config:
        print(cfg.to_toml())
        return None, args
    return cfg, args


def cli(name: str, description: str, sections: tuple[str, ...],
        argv: list[str] | None = None,
        extra: tuple[tuple[str, str], ...] = ()) -> config_mod.Config | None:
    """Parse a standalone process's command line; None means --print-config was handled."""
    parser = argparse.ArgumentParser(prog=f"python -m processes.{name}", description=description)
    return parse_cli(parser, sections, argv, extra)[0]
