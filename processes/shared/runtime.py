"""What every process does around its reactor: logging, signals, readiness, parent death, stats.

Kept apart from the hot paths: nothing here runs per tick.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from processes.shared import config as config_mod
from processes.shared import telemetry
from processes.shared.errors import OperatorError
from processes.shared.placement import pin, set_rt_priority, unpaced
from processes.shared.rt_budget import RtBudget
from reactor import Reactor

PR_SET_PDEATHSIG = 1
LOG_STATS_INTERVAL = 5.0  # seconds between the periodic one-line counters in the log

_FORMAT = "%(asctime)s.%(msecs)03d %(name)-13s %(levelname)-7s %(message)s"
_DATEFMT = "%H:%M:%S"


class Service(Protocol):
    """A process body: started on a reactor, reports counters, closes cleanly.

    stats() returns cumulative counters (rates are derived by the telemetry publisher);
    an optional recorders() returns its latency telemetry.Recorders.
    """

    def start(self) -> dict[str, Any]: ...
    def stats(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def setup_logging(name: str, cfg: config_mod.Logging) -> logging.Logger:
    """Console (if cfg.console) and logs/<name>.log, both with the process name; replaces
    earlier handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(cfg.level.upper())
    formatter = logging.Formatter(_FORMAT, _DATEFMT)
    set_console(cfg.console)
    if cfg.dir:
        Path(cfg.dir).mkdir(parents=True, exist_ok=True)
        file_handler = logging.FileHandler(Path(cfg.dir) / f"{name}.log")
        file_handler.setFormatter(formatter)
        root.addHandler(file_handler)
    return logging.getLogger(name)


def set_console(enabled: bool) -> None:
    """Add or remove the console log handler: a dashboard owns the terminal while it draws (log
    lines would scroll it apart), and hands it back to the log when it closes."""
    root = logging.getLogger()
    current = [h for h in root.handlers if getattr(h, "_tradestack_console", False)]
    if enabled and not current:
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter(_FORMAT, _DATEFMT))
        console._tradestack_console = True  # type: ignore[attr-defined]
        root.addHandler(console)
    elif not enabled:
        for handler in current:
            root.removeHandler(handler)


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
          ready: Any = None, supervised: bool = False) -> int:
    """Run one process body until SIGINT/SIGTERM; returns the exit code.

    `ready` is the write end of a multiprocessing Pipe: main.py waits on it so each process starts
    only once its upstream is listening (no sleeps); we send the bound ports or segment name.
    Placement (cpus, idle, spin_us) comes from the process's own config section.
    """
    if supervised:
        die_with_parent()
    log = setup_logging(name, cfg.logging)
    place = getattr(cfg, config_mod.section_of(name))
    cpus = pin(name, place.cpus, log)
    rt = set_rt_priority(name, 0 if unpaced(cfg) else place.rt_priority, log)
    if place.rt_priority and unpaced(cfg):
        log.warning("%s.rt_priority %d not applied: the feed is unpaced (a rate of 0), so the "
                    "pipeline never sleeps and at SCHED_FIFO it would starve the machine",
                    name, place.rt_priority)
    reactor = Reactor(idle=place.idle, spin_us=place.spin_us)
    # Handlers first: a SIGTERM between "ready" and run() must still mean a clean stop (the
    # OrderBook unlinks its segment), not the default handler's instant death.
    for signum in (signal.SIGINT, signal.SIGTERM):
        reactor.add_signal_handler(signum, reactor.stop)
    service = None
    budget: RtBudget | None = None
    publisher: telemetry.Publisher | None = None
    try:
        service = build(reactor)
        info = service.start()
        info.update(pid=os.getpid(), cpus=cpus, idle=place.idle, rt_priority=rt)
        log.info("ready %s", format_stats(info))
        publisher = _publisher(name, cfg.logging, service, lambda: budget)
        quiet_gc()
        if ready is not None:
            ready.send(info)
            ready.close()
        reactor.call_every(cfg.logging.stats_interval, _publish, log, publisher)
        reactor.call_every(LOG_STATS_INTERVAL, _log_line, log, publisher)
        if rt and place.rt_budget_us:
            # A real-time rank is kept only while the process uses at most half of its core
            # (see rt_budget): one client's flood of orders must not stop the price path.
            # Start-up work is not the loop's, so the budget starts here.
            try:
                budget = RtBudget(reactor, name, rt, place.rt_budget_us, log)
            except OSError as exc:
                log.warning("%s.rt_budget_us %d not applied (%s): a flood of work can starve "
                            "the real-time processes ranked below it", name,
                            place.rt_budget_us, exc)
        reactor.run()
        log.info("stopping: %s", format_stats(_scalars(service.stats())))
        return 0
    except Exception as exc:
        if isinstance(exc, OperatorError):
            log.error("%s failed: %s", name, exc)
        else:
            log.exception("%s failed: %s", name, exc)
        if ready is not None and not ready.closed:
            ready.send({"error": f"{type(exc).__name__}: {exc}"})
        return 1
    finally:
        # The final snapshot first: stats() may read resources close() releases (the
        # OrderManager's marks come from the price book).
        if publisher is not None:
            try:
                publisher.publish(final=True)
            except OSError as exc:
                log.warning("final stats snapshot not written: %s", exc)
            publisher.close()
        if service is not None:
            service.close()
        if budget is not None:
            budget.close()
        reactor.close()
        logging.shutdown()


def _publish(log: logging.Logger, publisher: telemetry.Publisher) -> None:
    """A periodic snapshot; telemetry must never take a trading process down (disk full, stats
    directory removed): log the first failure of a run of them, retry next interval."""
    try:
        publisher.publish()
    except OSError as exc:
        if not publisher.failing:
            log.warning("stats snapshot not written (%s); retrying every %.1fs", exc,
                        publisher.interval)
        publisher.failing = True
    else:
        if publisher.failing:
            log.info("stats snapshots written again")
        publisher.failing = False


def quiet_gc() -> None:
    """Keep the cyclic GC off the hot path.

    Everything allocated at start-up (modules, config, buffers) is frozen into the permanent
    generation, so a collection never walks it again; and gen-0 runs every 50k container
    allocations instead of every 700. The hot paths create few cycles (refcounting frees the rest),
    so this trades a few MB of delayed cycle freeing for no GC pause every few ticks.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _publisher(name: str, cfg: config_mod.Logging, service: Service,
               budget: Callable[[], RtBudget | None]) -> telemetry.Publisher:
    """Snapshots of the service's stats, and of its real-time budget once there is one."""
    recorders = getattr(service, "recorders", None) or (lambda: ())

    def stats() -> dict[str, Any]:
        held = budget()
        return service.stats() if held is None else {**service.stats(), **held.stats()}

    return telemetry.Publisher(name, telemetry.stats_dir(cfg.dir, cfg.stats_dir), stats,
                               recorders, cfg.stats_interval)


def _log_line(log: logging.Logger, publisher: telemetry.Publisher) -> None:
    """Counters plus the per-second rate of the busiest one (ticks, orders)."""
    counters = publisher.stats()
    rates = {f"{k}_per_s": v for k, v in publisher.rates.items() if k in ("ticks", "orders")}
    log.info("%s", format_stats({**rates, **_scalars(counters)}))


def _scalars(stats: dict[str, Any]) -> dict[str, Any]:
    """The one-line counters; lists (per-symbol state) are for the snapshot files only."""
    return {k: v for k, v in stats.items() if not isinstance(v, (list, dict))}


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
        try:
            print(cfg.to_toml(), flush=True)
        except BrokenPipeError:
            # `--print-config | head`: the reader has all it wanted. Point stdout at /dev/null
            # so the interpreter's exit flush does not raise again.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return None, args
    return cfg, args


def cli(name: str, description: str, sections: tuple[str, ...],
        argv: list[str] | None = None,
        extra: tuple[tuple[str, str], ...] = ()) -> config_mod.Config | None:
    """Parse a standalone process's command line; None means --print-config was handled."""
    parser = argparse.ArgumentParser(prog=f"python -m processes.{name}", description=description)
    return parse_cli(parser, sections, argv, extra)[0]
