"""Settings for every process: built-in defaults < TOML file < CLI flags.

One dataclass per TOML section; the same tables drive parsing, validation, `--print-config` and the
per-process command-line flags, so a setting is declared exactly once.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from processes.shared.errors import OperatorError
from processes.shared.placement import (
    LAYOUTS,
    PLACEMENT_KEYS,
    PROCESSES,
    Placement,
    default_section,
    layout_overrides,
)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "tradestack.toml"
TOKEN_ENV = "TRADESTACK_TOKEN"
MAX_TOKEN = 256
SLOW_CLIENT_POLICIES = ("drop", "close", "conflate")

class ConfigError(OperatorError, ValueError):
    """A setting is unknown or out of range; the message names the key."""


@dataclass
class Network:
    """Where the stack's ports are: the dialling side's view (what a process binds is its own
    section's `listen`)."""
    gateway_host: str = "127.0.0.1"  # the OrderBook and the Strategy dial the Gateway here
    order_host: str = "127.0.0.1"    # the Strategy dials the OrderManager here
    price_port: int = 5001
    news_port: int = 5002
    order_port: int = 5003


@dataclass
class Market:
    symbols: list[str] = field(default_factory=lambda: ["AAPL", "MSFT", "GOOG", "AMZN", "TSLA"])
    shm_name: str = "tradestack_prices"


@dataclass
class Gateway(Placement):
    listen: str = "127.0.0.1"    # address the price and news ports bind (not loopback: a warning,
                                 # the feed is unauthenticated)
    tick_rate: float = 1000.0
    news_rate: float = 4.0
    volatility: float = 0.0005
    seed: int = 0
    plain: bool = False
    max_client_buffer: int = 1 << 20
    slow_client: str = "drop"   # "drop" | "close" | "conflate" (latest price per symbol on drain)
    socket_buffer: int = 262144  # kernel buffer of a feed connection: the Gateway's SO_SNDBUF per
                                 # client and the OrderBook's SO_RCVBUF; 0 = kernel autotuning
    csv: str = ""                # market file to replay instead of the random walk ("" = walk):
                                 # timestamp,symbol,price[,sentiment]; its news rows, if any,
                                 # replace the random sentiment. Its clock starts with the first
                                 # price subscriber, and with news rows only once a news
                                 # subscriber is there too (processes.gateway.replay)
    csv_speed: float = 1.0       # x the recorded pace; 0 = as fast as clients drain
    csv_loop: bool = True        # at the end of the file: start again (true) or stop sending


@dataclass
class OrderBook(Placement):
    """Only placement keys."""


BUILTIN_STRATEGY = "processes.strategy.builtin:MovingAverageSentiment"


@dataclass
class Strategy(Placement):
    name: str = "strat-1"       # the client name the OrderManager books this strategy's orders by
    cls: str = BUILTIN_STRATEGY  # TOML key `class`: "package.module:ClassName" of a Strategy
    symbols: list[str] = field(default_factory=list)   # what it trades; [] = every market symbol
    params: dict[str, Any] = field(default_factory=dict)  # [strategy.params]: checked by the
                                                          # strategy's own config class
    token: str = ""             # sent in the hello to the OrderManager; TRADESTACK_TOKEN overrides
    max_price_age: float = 2.0  # seconds; no order on an older price (0 = no limit)
    max_price_jump: float = 0.5  # fraction; a price further than this from the symbol's last
                                 # accepted one is implausible: not used (0 = off)


@dataclass
class OrderManager(Placement):
    listen: str = "127.0.0.1"   # address the order port binds; not loopback needs a token
    allow_no_token: bool = False  # let a non-loopback listen start without a token
    order_log: str = "logs/orders.jsonl"
    fsync: bool = False         # msync each order's journal record before its ack (survives
                                # power loss; ~ms each)
    token: str = ""             # clients must send it in their hello; "" = none required;
                                # TRADESTACK_TOKEN overrides
    max_position: int = 0       # |net position| per client and symbol after an order; 0 = no limit
    max_order_rate: int = 0     # orders per client in any 1 s window; 0 = no limit
    max_notional: float = 0.0   # qty * price of one order; 0 = no limit
    max_bad_frames: int = 20    # consecutive malformed frames before a client is closed; 0 = never
    kill_switch: bool = False   # start with the kill switch on (SIGUSR1 toggles it)
    resume: bool = False        # continue the order log's last session (positions, dedup);
                                # false = a new session (main.py --resume sets it)


@dataclass
class Logging:
    dir: str = "logs"
    level: str = "INFO"
    stats_dir: str = ""          # "" = <dir>/stats
    stats_interval: float = 1.0  # seconds between published snapshots
    console: bool = True         # log lines to the console too (off while a dashboard draws)


@dataclass
class Monitor:
    refresh: float = 0.5         # seconds between dashboard redraws


@dataclass
class Supervisor:
    restart: bool = True         # main.py restarts a child that dies; false = stop the stack
    max_restarts: int = 5        # restarts per child before the stack stops; 0 = no limit
    backoff: float = 0.5         # seconds before the first restart; doubles per restart, +jitter
    backoff_max: float = 10.0    # longest wait before a restart


@dataclass
class Config:
    network: Network = field(default_factory=Network)
    market: Market = field(default_factory=Market)
    gateway: Gateway = field(default_factory=lambda: default_section(Gateway, "gateway"))
    orderbook: OrderBook = field(default_factory=lambda: default_section(OrderBook, "orderbook"))
    strategy: Strategy = field(default_factory=lambda: default_section(Strategy, "strategy"))
    order_manager: OrderManager = field(
        default_factory=lambda: default_section(OrderManager, "order_manager"))
    logging: Logging = field(default_factory=Logging)
    monitor: Monitor = field(default_factory=Monitor)
    supervisor: Supervisor = field(default_factory=Supervisor)
    # More strategy processes, [strategies.NAME] each: a table inherits every key of [strategy]
    # except name (NAME), class, symbols and params.
    strategies: dict[str, Strategy] = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """Render the effective settings as TOML (for --print-config)."""
        lines: list[str] = []
        data = self.as_dict()
        extras = data.pop("strategies")
        for section, values in data.items():
            _toml_table(lines, section, values)
        for name, values in extras.items():
            _toml_table(lines, f"strategies.{name}",
                        {k: v for k, v in values.items() if k != "name"})
        return "\n".join(lines)


def _toml_table(lines: list[str], section: str, values: dict[str, Any]) -> None:
    lines.append(f"[{section}]")
    tables = {k: v for k, v in values.items() if isinstance(v, dict)}
    # Placement keys last, as tradestack.toml lists them.
    keys = sorted((k for k in values if k not in tables), key=lambda k: k in PLACEMENT_KEYS)
    lines.extend(f"{_toml_key(_TOML_KEYS.get(key, key))} = {_toml_value(values[key])}"
                 for key in keys)
    lines.append("")
    for key, sub in tables.items():
        _toml_table(lines, f"{section}.{key}", sub)


# Field names that cannot be Python identifiers under their TOML name.
_TOML_KEYS = {"cls": "class"}
_FIELD_KEYS = {v: k for k, v in _TOML_KEYS.items()}


def _toml_key(key: str) -> str:
    """A bare TOML key, or a quoted one (a strategy's params may be named anything)."""
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    return repr(value)


def _coerce(key: str, kind: Any, value: Any) -> Any:
    """Convert a TOML or CLI value to the field's type, naming the key on failure."""
    kind = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if kind == "bool":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered in ("1", "true", "yes", "on"):
                    return True
                if lowered in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            if isinstance(value, bool):
                return value
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            return float(value)
        if kind == "str":
            if not isinstance(value, str):
                raise ValueError(value)
            return value
        if kind.startswith("list") and isinstance(value, str) and value.lstrip().startswith("["):
            # The TOML list --print-config prints: ["AAPL", "MSFT"] or [0, 1].
            try:
                value = tomllib.loads(f"v = {value}")["v"]
            except tomllib.TOMLDecodeError:
                raise ValueError(value) from None
        if kind == "list[int]":
            if isinstance(value, str):
                value = [int(part) for part in value.split(",") if part.strip()]
            if not isinstance(value, list) or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise ValueError(value)
            return list(value)
        if kind.startswith("list"):
            if isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(value)
            return list(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected {kind}, got {value!r}") from None
    raise ConfigError(f"{key}: unsupported type {kind}")


def _apply(cfg: Config, section: str, key: str, value: Any,
           extras: dict[str, list[tuple[str, Any]]]) -> None:
    """Set `section.key` (a TOML key or a --set SECTION.KEY); nested keys are
    strategy.params.X, strategies.NAME.KEY and strategies.NAME.params.X. A [strategies.NAME]
    key is collected in `extras` and applied once [strategy] is complete (_build_extras)."""
    if section == "strategies":
        name, _, rest = key.partition(".")
        if not rest:
            raise ConfigError(f"strategies.{name}: expected strategies.NAME.KEY")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise ConfigError(f"strategies.{name}: the name must be 1-64 of A-Z a-z 0-9 _ -")
        extras.setdefault(name, []).append((rest, value))
        return
    sect = getattr(cfg, section, None)
    if sect is None or not dataclasses.is_dataclass(sect):
        raise ConfigError(f"unknown section [{section}]")
    if section == "strategy":
        _apply_strategy(sect, "strategy", key, value)
        return
    _set_field(sect, section, key, value)


def _set_field(sect: Any, section: str, key: str, value: Any) -> None:
    attr = _FIELD_KEYS.get(key, key)
    types = {f.name: f.type for f in fields(sect)}
    if attr not in types or attr in _TOML_KEYS and key == attr:
        raise ConfigError(f"unknown key {section}.{key}")
    setattr(sect, attr, _coerce(f"{section}.{key}", types[attr], value))


def _apply_strategy(sect: Strategy, section: str, key: str, value: Any) -> None:
    if key == "params":
        if not isinstance(value, dict):
            raise ConfigError(f"{section}.params: expected a table of the strategy's settings")
        sect.params.update(value)
    elif key.startswith("params."):
        sect.params[key[len("params."):]] = value   # typed by the strategy's config class
    elif key == "name" and section != "strategy":
        raise ConfigError(f"{section}.name: the table's name is the strategy's name")
    else:
        _set_field(sect, section, key, value)


def _build_extras(cfg: Config, extras: dict[str, list[tuple[str, Any]]]) -> None:
    """cfg.strategies from the collected [strategies.NAME] keys: each starts as a copy of the
    finished [strategy] (so it inherits every key it does not set) with its own name, the
    built-in class, every symbol and no params, and then takes its own keys."""
    for name, items in extras.items():
        sect = copy.deepcopy(cfg.strategy)
        sect.name, sect.cls, sect.symbols, sect.params = name, BUILTIN_STRATEGY, [], {}
        for key, value in items:
            _apply_strategy(sect, f"strategies.{name}", key, value)
        cfg.strategies[name] = sect


def strategy_processes(cfg: Config) -> list[tuple[str, Config]]:
    """(process name, its Config) per strategy process: "strategy" for [strategy], then
    "strategy.NAME" per [strategies.NAME]. In each Config, `strategy` is that process's own
    section and `strategies` is empty."""
    out = [("strategy", dataclasses.replace(cfg, strategies={}))]
    for name, sect in cfg.strategies.items():
        out.append((f"strategy.{name}", dataclasses.replace(cfg, strategy=sect, strategies={})))
    return out


def section_of(process: str) -> str:
    """The config section of a process name: "strategy.NAME" -> "strategy"."""
    return process.partition(".")[0]


def load(path: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Config:
    """Defaults, then the TOML file (if any), then `overrides` {"section.key": value}; validated."""
    cfg = Config()
    extras: dict[str, list[tuple[str, Any]]] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        for section, values in data.items():
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: top-level key {section!r} must be a [section]")
            for key, value in _flatten(section, values):
                _apply(cfg, section, key, value, extras)
    for dotted, value in (overrides or {}).items():
        section, _, key = dotted.partition(".")
        _apply(cfg, section, key, value, extras)
    _build_extras(cfg, extras)
    validate(cfg)
    return cfg


def _flatten(section: str, values: dict[str, Any]) -> list[tuple[str, Any]]:
    """A TOML section's (key, value) pairs; [strategies.NAME] and [*.params] tables become
    dotted keys, as --set spells them."""
    out: list[tuple[str, Any]] = []
    for key, value in values.items():
        if isinstance(value, dict) and (section == "strategies" or key == "params"):
            out.extend((f"{key}.{k}", v) for k, v in _flatten("", value))
        else:
            out.append((key, value))
    return out


def validate(cfg: Config) -> None:
    """Reject settings that would fail later in a less obvious way."""
    for name in ("price_port", "news_port", "order_port"):
        port = getattr(cfg.network, name)
        if not 0 <= port <= 65535:
            raise ConfigError(f"network.{name}: {port} is not a TCP port")
    for key, value in (("network.gateway_host", cfg.network.gateway_host),
                       ("network.order_host", cfg.network.order_host),
                       ("gateway.listen", cfg.gateway.listen),
                       ("order_manager.listen", cfg.order_manager.listen)):
        if not re.fullmatch(r"[A-Za-z0-9_.:%-]{1,253}", value):
            raise ConfigError(f"{key}: {value!r} must be an IP address or a host name")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", cfg.market.shm_name):
        raise ConfigError(f"market.shm_name: {cfg.market.shm_name!r} must be 1-200 of "
                          "A-Z a-z 0-9 _ . - (it names a file in /dev/shm)")
    symbols = cfg.market.symbols
    if not symbols:
        raise ConfigError("market.symbols: at least one symbol is needed")
    if len(set(symbols)) != len(symbols):
        raise ConfigError("market.symbols: duplicates")
    for sym in symbols:
        if not (0 < len(sym) <= 15 and sym.isascii() and sym.isprintable()) or any(
            c in sym for c in ",*{}\" "
        ):
            raise ConfigError(
                f"market.symbols: {sym!r} must be 1-15 printable ASCII, no , * or space")
    g = cfg.gateway
    for key in ("tick_rate", "news_rate", "volatility"):
        value = getattr(g, key)
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"gateway.{key}: must be a finite number >= 0")
    if g.max_client_buffer < 4096:
        raise ConfigError("gateway.max_client_buffer: at least 4096 bytes")
    if g.slow_client not in SLOW_CLIENT_POLICIES:
        raise ConfigError("gateway.slow_client: 'drop', 'close' or 'conflate'")
    if g.socket_buffer and not 4096 <= g.socket_buffer <= 1 << 30:
        raise ConfigError("gateway.socket_buffer: 0 (kernel default) or 4096..1073741824 bytes")
    if not math.isfinite(g.csv_speed) or g.csv_speed < 0:
        raise ConfigError("gateway.csv_speed: must be a finite number >= 0 (0 = unpaced)")
    names: set[str] = set()
    for process, sub in strategy_processes(cfg):
        _validate_strategy(sub.strategy, "strategy" if process == "strategy" else
                           f"strategies.{sub.strategy.name}", cfg.market.symbols, names)
    _validate_order_manager(cfg.order_manager)
    if len(cfg.order_manager.token) > MAX_TOKEN:
        raise ConfigError(f"order_manager.token: at most {MAX_TOKEN} characters")
    placed = [(section, getattr(cfg, section)) for section in PROCESSES]
    placed += [(f"strategies.{name}", sect) for name, sect in cfg.strategies.items()]
    for section, sect in placed:
        problem = sect.placement_problem(section)
        if problem:
            raise ConfigError(problem)
    if not 0.05 <= cfg.logging.stats_interval <= 3600:
        raise ConfigError("logging.stats_interval: 0.05..3600 seconds")
    if cfg.logging.level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("logging.level: DEBUG, INFO, WARNING or ERROR")
    if not (math.isfinite(cfg.monitor.refresh) and 0.05 <= cfg.monitor.refresh <= 60):
        raise ConfigError("monitor.refresh: 0.05..60 seconds")
    _validate_supervisor(cfg.supervisor)


def _validate_strategy(s: Strategy, section: str, symbols: list[str], names: set[str]) -> None:
    """The host's keys; the class and its params are checked by processes.strategy.loader,
    which imports the user's code (the supervisor does that once, before anything starts)."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", s.name):
        raise ConfigError(f"{section}.name: {s.name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
    if s.name in names:
        raise ConfigError(f"{section}.name: {s.name!r} is another strategy's name too (the "
                          "OrderManager books orders by it)")
    names.add(s.name)
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*", s.cls):
        raise ConfigError(f"{section}.class: {s.cls!r} must be \"package.module:ClassName\"")
    unknown = sorted(set(s.symbols) - set(symbols))
    if unknown:
        raise ConfigError(f"{section}.symbols: {', '.join(unknown)} not in market.symbols")
    if len(set(s.symbols)) != len(s.symbols):
        raise ConfigError(f"{section}.symbols: duplicates")
    if not (math.isfinite(s.max_price_age) and s.max_price_age >= 0):
        raise ConfigError(f"{section}.max_price_age: must be a finite number of seconds >= 0 "
                          "(0 = no limit)")
    if not (math.isfinite(s.max_price_jump) and s.max_price_jump >= 0):
        raise ConfigError(f"{section}.max_price_jump: must be a finite fraction >= 0 "
                          "(0.5 = +-50 % of the last accepted price; 0 = off)")
    if len(s.token) > MAX_TOKEN:
        raise ConfigError(f"{section}.token: at most {MAX_TOKEN} characters")


def _validate_supervisor(sup: Supervisor) -> None:
    if sup.max_restarts < 0:
        raise ConfigError("supervisor.max_restarts: must be >= 0 (0 = no limit)")
    for key in ("backoff", "backoff_max"):
        value = getattr(sup, key)
        if not (math.isfinite(value) and 0 < value <= 3600):
            raise ConfigError(f"supervisor.{key}: 0 < seconds <= 3600")
    if sup.backoff_max < sup.backoff:
        raise ConfigError("supervisor.backoff_max: must be >= supervisor.backoff")


def _validate_order_manager(om: OrderManager) -> None:
    """Risk limits are >= 0 (0 = no limit); a NaN limit would silently never trigger."""
    for key in ("max_position", "max_order_rate", "max_bad_frames"):
        if getattr(om, key) < 0:
            raise ConfigError(f"order_manager.{key}: must be >= 0 (0 = no limit)")
    if not (math.isfinite(om.max_notional) and om.max_notional >= 0):
        raise ConfigError("order_manager.max_notional: must be a finite number >= 0 (0 = no limit)")


def effective_token(configured: str) -> str:
    """TRADESTACK_TOKEN if set and non-empty, else the configured token.

    Read at start-up by the OrderManager and the Strategy, so a secret need not sit in a file
    or on a command line; an empty variable never clears a configured token (that would turn
    authentication off by accident).
    """
    return os.environ.get(TOKEN_ENV) or configured


# --- command line -------------------------------------------------------------------------------

_FLAG_NAMES = {("logging", "dir"): "--log-dir", ("logging", "level"): "--log-level",
               ("gateway", "listen"): "--gateway-listen",
               ("order_manager", "listen"): "--order-listen"}
_COMMON = (("network", "gateway_host"), ("network", "order_host"), ("market", "symbols"),
           ("market", "shm_name"),
           ("logging", "level"), ("logging", "dir"))


def add_arguments(parser: argparse.ArgumentParser, sections: tuple[str, ...],
                  extra: tuple[tuple[str, str], ...] = ()) -> None:
    """Flags for the common keys, every key of `sections`, and `extra` (section, key) pairs."""
    parser.add_argument("--config", metavar="PATH", default=None,
                        help=f"TOML settings file (default: {DEFAULT_CONFIG.name} if present)")
    parser.add_argument("--set", metavar="SECTION.KEY=VALUE", action="append", default=[],
                        help="override any setting, e.g. --set gateway.tick_rate=0")
    parser.add_argument("--print-config", action="store_true",
                        help="print the effective settings and exit")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default=None,
                        help="CPU placement and idle strategy preset (explicit keys override it)")
    wanted = list(_COMMON) + list(extra)
    defaults = Config()
    for section in sections:
        wanted.extend((section, _TOML_KEYS.get(f.name, f.name))
                      for f in fields(getattr(defaults, section)) if f.name != "params")
    seen: set[str] = set()
    for section, key in wanted:
        flag = _FLAG_NAMES.get((section, key), "--" + key.replace("_", "-"))
        if flag in seen:
            continue
        seen.add(flag)
        default = getattr(getattr(defaults, section), _FIELD_KEYS.get(key, key))
        if isinstance(default, bool):
            parser.add_argument(flag, dest=f"cfg:{section}.{key}", default=None,
                                action=argparse.BooleanOptionalAction,
                                help=f"{section}.{key} (default {'on' if default else 'off'})")
            continue
        parser.add_argument(flag, dest=f"cfg:{section}.{key}", default=None, metavar="V",
                            help=f"{section}.{key} (default {default!r})")


def from_args(args: argparse.Namespace) -> Config:
    """Build the Config for parsed CLI args: file, then --set, then dedicated flags."""
    path = args.config
    if path is None and DEFAULT_CONFIG.exists():
        path = DEFAULT_CONFIG
    elif path is not None and not Path(path).is_file():
        raise ConfigError(f"--config {path}: no such file")
    overrides: dict[str, Any] = {}
    if getattr(args, "layout", None):
        overrides.update(layout_overrides(args.layout))
    for item in args.set:
        dotted, sep, value = item.partition("=")
        if not sep or "." not in dotted:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE")
        overrides[dotted.strip()] = value
    for dest, value in vars(args).items():
        if dest.startswith("cfg:") and value is not None:
            overrides[dest[4:]] = value
    return load(path, overrides)
