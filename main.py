"""Run the whole tradestack: OrderManager, Gateway, OrderBook, Strategies, until Ctrl+C.

    python main.py                  # until Ctrl+C (or SIGTERM)
    python main.py --duration 10    # ten seconds, then a clean stop
    python main.py --print-config   # effective settings
    python main.py --dashboard      # with the live dashboard in this terminal; q stops the stack
    python main.py --csv data/sample_prices.csv   # replay a price file instead of the random walk
    python main.py --resume         # continue the last session's positions (default: a new one)
    python main.py --set strategy.class=examples.sentiment:SentimentOnly   # another strategy
    python main.py --role core      # this host's part only: Gateway + OrderManager ...
    python main.py --role trading   # ... or OrderBook + strategies, dialling the core
"""

from __future__ import annotations

import argparse
import sys

from processes.shared.config import ConfigError
from processes.shared.runtime import parse_cli, set_console, setup_logging
from processes.strategy.loader import check_all
from processes.supervisor.stack import ROLES, Supervisor, role_problem
from processes.tools.monitor import DashboardHook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python main.py", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop cleanly after this many seconds (default: run until Ctrl+C)")
    parser.add_argument("--dashboard", action="store_true",
                        help="draw the live dashboard in this terminal instead of log lines "
                             "(logs/ is still written); q or Ctrl+C stops the stack")
    parser.add_argument("--role", choices=tuple(ROLES), default="all",
                        help="what runs on this host: all (default), core (Gateway + "
                             "OrderManager) or trading (OrderBook + strategies, dialling "
                             "network.gateway_host and network.order_host)")
    cfg, args = parse_cli(parser, (), argv, extra=(
        ("network", "price_port"), ("network", "news_port"), ("network", "order_port"),
        ("gateway", "tick_rate"), ("gateway", "news_rate"), ("order_manager", "order_log"),
        ("order_manager", "resume"),
        ("gateway", "csv"), ("gateway", "csv_speed"), ("gateway", "csv_loop"),
        ("monitor", "refresh"), ("gateway", "listen"), ("order_manager", "listen")))
    if cfg is None:
        return 0
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be > 0")
    if problem := role_problem(cfg, args.role):
        parser.error(problem)
    try:
        if "strategy" in ROLES[args.role]:
            check_all(cfg)   # every strategy class and its params, before any process starts
    except ConfigError as exc:
        parser.error(str(exc))
    hook = None
    if args.dashboard:
        # The dashboard owns the terminal: no child logs to it (their files are still written).
        # main's own lines go to the console until the dashboard starts (a failed start-up is
        # then still explained there) and again once it closes.
        cfg.logging.console = False
        hook = DashboardHook(cfg.monitor.refresh, cfg.logging.stats_interval)
    setup_logging("main", cfg.logging)
    if hook is not None:
        set_console(True)
    return Supervisor(cfg, args.duration, hook=hook, role=args.role).run()


if __name__ == "__main__":
    sys.exit(main())
