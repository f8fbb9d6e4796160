"""Print the README's "Config reference" table: every key of processes.shared.config, its
default, and what it means (the comment beside it in tradestack.toml, else the placement block
at its top, else a line from NOTES below).

    python scripts/config_reference.py > /tmp/table.md

Keys and defaults come from the dataclasses, so the table cannot list a key that does not exist
or a default that is not the real one; paste the output over the table in README.md.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from processes.shared import config  # noqa: E402
from processes.strategy.loader import load_strategy  # noqa: E402

# For keys whose line in tradestack.toml has no comment.
NOTES = {
    "network.price_port": "Gateway price stream (Gateway -> OrderBook); 0 = any free port",
    "network.news_port": "Gateway news stream (Gateway -> Strategy); 0 = any free port",
    "network.order_port": "OrderManager orders (Strategy -> OrderManager); 0 = any free port",
    "market.symbols": "traded symbols: the segment's slots, the Gateway's feed, the "
                      "OrderManager's accepted symbols",
    "market.shm_name": "name of the shared-memory price book (/dev/shm/NAME)",
    "strategy.params": "[strategy.params]: the class's own settings, checked by its "
                       "config_class (below: the built-in's)",
    "strategy.params.short_window": "ticks in the short moving average",
    "strategy.params.long_window": "ticks in the long moving average",
    "strategy.params.bullish": "sentiment strictly above it confirms a rising trend",
    "strategy.params.bearish": "sentiment strictly below it confirms a falling trend",
    "strategy.params.quantity": "order size; a flip long <-> short trades 2 x quantity",
    "strategies.NAME": "one more strategy process per table, named NAME (its client name); "
                       "inherits every [strategy] key but name, class, symbols and params",
    "logging.dir": "logs/<process>.log and, by default, the stats snapshots",
    "logging.level": "DEBUG, INFO, WARNING or ERROR",
}
# The placement keys' block in tradestack.toml: "#   KEY   meaning", for that key in any section.
PLACEMENT_LINE = re.compile(r"#\s{3}(\w+)\s{2,}(\S.*)")


def comments(path: Path) -> dict[str, str]:
    """{"section.key": comment} from the shipped TOML (continuation comment lines included)."""
    out: dict[str, str] = {}
    section, last = "", None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if m := re.fullmatch(r"\[(\w+)\]", line):
            section, last = m[1], None
        elif m := re.match(r"(\w+)\s*=\s*(\"[^\"]*\"|[^#]*?)\s*(#\s*(.*))?$", line):
            last = f"{section}.{m[1]}"
            if m[4]:
                out[last] = m[4].strip()
        elif line.startswith("#") and last and raw.startswith(" "):
            out[last] = f"{out.get(last, '')} {line.lstrip('# ').strip()}".strip()
    return out


def by_name(path: Path) -> dict[str, str]:
    """{key: meaning} of the placement block, which states the four keys once for all sections."""
    return {m[1]: m[2].strip() for line in path.read_text().splitlines()
            if (m := PLACEMENT_LINE.fullmatch(line))}


def builtin_params() -> list[tuple[str, object]]:
    """(name, default) of the built-in strategy's [strategy.params]."""
    _, params = load_strategy(config.Strategy())
    return [(name, getattr(params, name)) for name in params.__struct_fields__]


def table() -> str:
    commented = comments(config.DEFAULT_CONFIG)
    if shadowed := sorted(NOTES.keys() & commented.keys()):
        # One statement per key: a note the file's comment overrides is never printed.
        raise SystemExit(f"config_reference: NOTES repeats what {config.DEFAULT_CONFIG.name} "
                         f"says: {', '.join(shadowed)}")
    notes = {**NOTES, **commented}
    names = by_name(config.DEFAULT_CONFIG)
    rows = ["| key | default | meaning |", "|---|---|---|"]
    defaults = config.Config()

    def row(key: str, value: str, name: str) -> None:
        meaning = notes.get(key, names.get(name, "")).replace("|", "\\|")
        rows.append(f"| `{key}` | `{value}` | {meaning} |")

    for section in dataclasses.fields(defaults):
        if section.name == "strategies":
            row("strategies.NAME", "(none)", "")
            continue
        for f in dataclasses.fields(getattr(defaults, section.name)):
            name = config._TOML_KEYS.get(f.name, f.name)
            value = getattr(getattr(defaults, section.name), f.name)
            if section.name == "strategy" and f.name == "params":
                row("strategy.params", "{}", name)
                for param, default in builtin_params():
                    row(f"strategy.params.{param}", config._toml_value(default), param)
                continue
            row(f"{section.name}.{name}", config._toml_value(value), name)
    return "\n".join(rows)


if __name__ == "__main__":
    print(table())
