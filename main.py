"""Run the whole tradestack: OrderManager, Gateway, OrderBook, Strategy, until Ctrl+C.

    python main.py                  # until Ctrl+C (or SIGTERM)
    python main.py --duration 10    # ten seconds, then a clean stop
    python main.py --print-config   # effective settings
"""

from __future__ import annotations

import argparse
import sys

from processes.runtime import parse_cli, setup_logging
from processes.stack import run_stack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python main.py", description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                        help="stop cleanly after this many seconds (default: run until Ctrl+C)")
    cfg, args = parse_cli(parser, (), argv, extra=(
        ("network", "price_port"), ("network", "news_port"), ("network", "order_port"),
        ("gateway", "tick_rate"), ("gateway", "news_rate"), ("order_manager", "order_log")))
    if cfg is None:
        return 0
    if args.duration is not None and args.duration <= 0:
        parser.error("--duration must be > 0")
    setup_logging("main", cfg.logging)
    return run_stack(cfg, args.duration)


if __name__ == "__main__":
    sys.exit(main())
