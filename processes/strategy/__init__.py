"""Strategies: the API a user subclasses (api), the process that runs one live (host), the
built-in rule (builtin) and the offline backtester (backtest)."""

from processes.strategy.api import BUY, SELL, Context, OrderReply, Strategy, StrategyConfig, Tick

__all__ = ["BUY", "SELL", "Context", "OrderReply", "Strategy", "StrategyConfig", "Tick"]
