"""The built-in strategy, recording every tick and news item its host hands it (a tape).

Loaded by the live replay test as `strategy.class = "tape_strategy:TapedMovingAverageSentiment"`
(the spawned Strategy process inherits the test's sys.path). The tape is what this strategy saw,
in the order it saw it, so the backtester can be run on exactly the live inputs.
"""

from __future__ import annotations

import json
from typing import IO

from processes.strategy.api import Context, Tick
from processes.strategy.builtin import MovingAverageSentiment, MovingAverageSentimentConfig


class TapedConfig(MovingAverageSentimentConfig):
    tape: str = ""   # the JSON-lines file the tape is written to


class TapedMovingAverageSentiment(MovingAverageSentiment):
    config_class = TapedConfig
    config: TapedConfig

    def on_start(self, ctx: Context) -> None:
        super().on_start(ctx)
        # Line-buffered: each event is in the kernel before the strategy acts on it, so the
        # tape is whole however the process is stopped.
        self._tape: IO[str] = open(self.config.tape, "a", buffering=1)   # noqa: SIM115

    def on_news(self, symbol: str, sentiment: int) -> None:
        self._tape.write(json.dumps({"symbol": symbol, "sentiment": sentiment}) + "\n")
        super().on_news(symbol, sentiment)

    def on_tick(self, symbol: str, price: float, tick: Tick) -> None:
        self._tape.write(json.dumps({"symbol": symbol, "price": price}) + "\n")
        super().on_tick(symbol, price, tick)

    def on_stop(self) -> None:
        self._tape.close()
        super().on_stop()
