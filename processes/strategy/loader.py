"""strategy.class and strategy.params -> the Strategy class and its validated config.

Run by the supervisor for every strategy process before anything starts (a typo is one line at
start-up, not a crashed child) and again by each host when it starts.
"""

from __future__ import annotations

import importlib
import re

import msgspec

from processes.shared import config as config_mod
from processes.strategy.api import Strategy, StrategyConfig


def section_name(process: str) -> str:
    """The config section a strategy process reads: "strategy" or "strategies.NAME"."""
    _, _, name = process.partition(".")
    return f"strategies.{name}" if name else "strategy"


def load_strategy(section: config_mod.Strategy, where: str = "strategy"
                  ) -> tuple[type[Strategy], StrategyConfig]:
    """Import `section.cls` ("package.module:ClassName") and check `section.params` against its
    config_class; any failure is a ConfigError naming the key under `where`."""
    cls = _import(section.cls, f"{where}.class")
    try:
        params = msgspec.convert(section.params, cls.config_class, strict=False)
    except msgspec.ValidationError as exc:
        raise _named(f"{where}.params", exc) from None
    except (TypeError, ValueError) as exc:   # __post_init__ of the user's config
        raise config_mod.ConfigError(f"{where}.params: {exc}") from None
    return cls, params


def _named(key: str, exc: msgspec.ValidationError) -> config_mod.ConfigError:
    """msgspec says "Expected `int`, got `str` - at `$.threshold`"; we say which key."""
    text = str(exc)
    m = re.fullmatch(r"(.*?)(?: - at `\$\.?(.*)`)?", text, re.S)
    message, path = (m[1], m[2]) if m else (text, None)
    if unknown := re.fullmatch(r"Object contains unknown field `(.*)`", message):
        return config_mod.ConfigError(f"{key}: unknown key {unknown[1]!r}")
    return config_mod.ConfigError(f"{key}.{path}: {message}" if path else f"{key}: {message}")


def _import(spec: str, key: str) -> type[Strategy]:
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise config_mod.ConfigError(f"{key}: {spec!r} must be \"package.module:ClassName\"")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        by = "" if module_name == missing or module_name.startswith(f"{missing}.") else \
            f" (imported by {module_name!r})"
        raise config_mod.ConfigError(f"{key}: no module named {missing!r}{by}") from None
    except Exception as exc:   # the user's module itself failed to import
        raise config_mod.ConfigError(f"{key}: importing {module_name!r} failed: "
                                     f"{type(exc).__name__}: {exc}") from None
    cls = getattr(module, attr, None)
    if cls is None:
        raise config_mod.ConfigError(f"{key}: module {module_name!r} has no {attr!r}")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise config_mod.ConfigError(f"{key}: {spec} is not a subclass of "
                                     "processes.strategy.api.Strategy")
    if not (isinstance(cls.config_class, type) and issubclass(cls.config_class, StrategyConfig)):
        raise config_mod.ConfigError(f"{key}: {spec}.config_class is not a StrategyConfig")
    return cls


def check_all(cfg: config_mod.Config) -> None:
    """load_strategy for every strategy process of `cfg` (what the supervisor runs first)."""
    for process, sub in config_mod.strategy_processes(cfg):
        load_strategy(sub.strategy, section_name(process))
