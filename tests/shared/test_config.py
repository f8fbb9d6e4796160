"""Settings: file < --set < flags; unknown keys and bad values are errors naming the key."""

from __future__ import annotations

import argparse
import re

import pytest

from processes.shared import config
from processes.strategy.loader import load_strategy

pytestmark = pytest.mark.timeout(10)


def parse(argv, sections=("gateway",), extra=()):
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, sections, extra)
    return config.from_args(parser.parse_args(argv))


def test_shipped_file_loads_and_matches_the_defaults():
    shipped = config.load(config.DEFAULT_CONFIG)
    assert shipped == config.Config()
    # The file shows the built-in strategy's params commented out (they belong to the class, so
    # another strategy.class must not inherit them); the values shown are its real defaults.
    text = config.DEFAULT_CONFIG.read_text()
    block = text.split("# [strategy.params]\n", 1)[1].split("\n\n", 1)[0]
    shown = {m[1]: int(m[2]) for m in re.finditer(r"(?m)^# (\w+) = (\d+)", block)}
    _, params = load_strategy(shipped.strategy)
    assert shown == {name: getattr(params, name) for name in params.__struct_fields__}


def test_precedence(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[gateway]\ntick_rate = 50\nnews_rate = 2\n[market]\nsymbols = ["A", "B"]\n')
    cfg = parse(["--config", str(path), "--set", "gateway.news_rate=9", "--tick-rate", "7",
                 "--symbols", "X,Y,Z"])
    assert cfg.gateway.tick_rate == 7.0
    assert cfg.gateway.news_rate == 9.0
    assert cfg.market.symbols == ["X", "Y", "Z"]


@pytest.mark.parametrize("text, key", [
    ("[gateway]\nspeed = 1\n", "gateway.speed"),
    ("[nope]\nx = 1\n", "[nope]"),
    ("[gateway]\ntick_rate = 'fast'\n", "gateway.tick_rate"),
    ("[network]\nprice_port = 70000\n", "network.price_port"),
    ("[strategy]\nshort_window = 30\n", "short_window"),
    ("[strategy]\nidle = 'nap'\n", "strategy.idle"),
    ("[market]\nsymbols = ['A*B']\n", "market.symbols"),
    ("[gateway]\nplain = 3\n", "gateway.plain"),
    ("[market]\nshm_name = ''\n", "market.shm_name"),
    ("[market]\nshm_name = '../etc'\n", "market.shm_name"),
    ("[strategy]\nname = 'a b'\n", "strategy.name"),
    ("[network]\ngateway_host = ' '\n", "network.gateway_host"),
    ("[network]\norder_host = 'a b'\n", "network.order_host"),
    ("[gateway]\nlisten = ''\n", "gateway.listen"),
    ("[order_manager]\nlisten = '10.0.0.1; rm'\n", "order_manager.listen"),
    ("[network]\nhost = '127.0.0.1'\n", "network.host"),
    ("[gateway]\ncsv = 5\n", "gateway.csv"),
    ("[gateway]\ncsv_speed = -1\n", "gateway.csv_speed"),
    ("[gateway]\ncsv_speed = nan\n", "gateway.csv_speed"),
    ("[gateway]\ncsv_loop = 'sometimes'\n", "gateway.csv_loop"),
    ("[logging]\nconsole = 2\n", "logging.console"),
    ("[monitor]\nrefresh = 0\n", "monitor.refresh"),
    ("[monitor]\nrefresh = 'fast'\n", "monitor.refresh"),
    ("[monitor]\ncolour = 1\n", "monitor.colour"),
    ("[gateway]\nslow_client = 'skip'\n", "gateway.slow_client"),
    ("[gateway]\nsocket_buffer = 100\n", "gateway.socket_buffer"),
    ("[strategy]\nmax_price_age = -1\n", "strategy.max_price_age"),
    ("[strategy]\nmax_price_age = inf\n", "strategy.max_price_age"),
    ("[supervisor]\nrestart = 'maybe'\n", "supervisor.restart"),
    ("[supervisor]\nmax_restarts = -1\n", "supervisor.max_restarts"),
    ("[supervisor]\nbackoff = 0\n", "supervisor.backoff"),
    ("[supervisor]\nbackoff = 5.0\nbackoff_max = 1.0\n", "supervisor.backoff_max"),
])
def test_errors_name_the_key(tmp_path, text, key):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        config.load(path)


def test_print_config_round_trips(tmp_path):
    cfg = config.load(None, {"gateway.tick_rate": "0", "market.symbols": "A,B"})
    path = tmp_path / "out.toml"
    path.write_text(cfg.to_toml())
    assert config.load(path) == cfg


def test_strategy_tables_round_trip_and_inherit(tmp_path):
    cfg = config.load(None, {
        "strategy.class": "examples.sentiment:SentimentOnly", "strategy.params.threshold": "85",
        "strategy.rt_priority": 0, "strategy.max_price_age": 3,
        "strategies.b.class": "examples.reply_aware:ReplyAware",
        "strategies.b.symbols": '["AAPL", "MSFT"]', "strategies.b.params.size": 5})
    extra = cfg.strategies["b"]
    # [strategies.b] inherits [strategy]'s host keys, never its own-keys.
    assert (extra.name, extra.symbols, extra.params) == ("b", ["AAPL", "MSFT"], {"size": 5})
    assert (extra.rt_priority, extra.max_price_age) == (0, 3.0)
    assert cfg.strategy.params == {"threshold": "85"}
    assert [name for name, _ in config.strategy_processes(cfg)] == ["strategy", "strategy.b"]
    path = tmp_path / "out.toml"
    path.write_text(cfg.to_toml())
    assert config.load(path) == cfg


def test_a_strategies_table_keeps_what_it_sets_even_when_it_looks_unset(tmp_path):
    cfg = config.load(None, {"strategy.cpus": "[1]", "strategy.token": "secret",
                             "strategies.b.cpus": "[]", "strategies.b.params.my key": 1})
    assert cfg.strategies["b"].cpus == [] and cfg.strategies["b"].token == "secret"
    path = tmp_path / "out.toml"
    path.write_text(cfg.to_toml())   # a params key that is no bare TOML key is quoted
    assert config.load(path) == cfg


@pytest.mark.parametrize(("overrides", "key"), [
    ({"strategies.x y.class": "a:B"}, "strategies.x y"),
    ({"strategies.b.name": "c"}, "strategies.b.name"),
    ({"strategy.class": "not a class path"}, "strategy.class"),
    ({"strategy.symbols": "ZZZ"}, "strategy.symbols"),
    ({"strategies.b.class": "a:B", "strategies.b.symbols": "AAPL,AAPL"}, "strategies.b.symbols"),
    ({"strategies.strat-1.class": "a:B"}, "strategies.strat-1.name"),
    ({"strategy.cls": "a:B"}, "strategy.cls"),
])
def test_strategy_errors_name_the_key(overrides, key):
    with pytest.raises(config.ConfigError, match=key):
        config.load(None, overrides)


def _cli(*argv: str) -> config.Config:
    parser = argparse.ArgumentParser()
    config.add_arguments(parser, ("gateway",))
    return config.from_args(parser.parse_args(list(argv)))


def test_boolean_flags_take_no_value_and_have_a_negation():
    assert _cli("--plain").gateway.plain is True
    assert _cli("--plain", "--no-plain").gateway.plain is False
    assert _cli("--set", "gateway.plain=true", "--no-csv-loop").gateway.csv_loop is False


def test_list_settings_accept_the_form_print_config_prints():
    printed = _cli("--set", "market.symbols=A,B").to_toml()
    line = next(ln for ln in printed.splitlines() if ln.startswith("symbols = "))
    assert _cli("--set", f"market.symbols={line.split(' = ', 1)[1]}").market.symbols == ["A", "B"]
    assert _cli("--set", "gateway.cpus=[0, 1]").gateway.cpus == [0, 1]
    with pytest.raises(config.ConfigError, match="market.symbols"):
        _cli("--set", "market.symbols=[A, B")


def test_a_missing_config_file_is_a_one_line_error(tmp_path):
    with pytest.raises(config.ConfigError, match="no such file"):
        _cli("--config", str(tmp_path / "nope.toml"))


def test_placement_defaults_come_from_the_default_layout(monkeypatch):
    from processes.shared import placement
    monkeypatch.setattr(placement, "DEFAULT_LAYOUT", "spread")
    cfg = config.load(None, {"strategies.extra.class": "x:Y"})
    assert cfg.strategy.cpus == [1] and cfg.gateway.cpus == [0] and cfg.gateway.rt_priority == 0
    assert cfg.strategies["extra"].cpus == [1]   # inherits [strategy]'s placement
    assert "rt_priority = 0" in cfg.to_toml()
