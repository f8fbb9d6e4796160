"""The tradestack processes, one sub-package each, over the layers they share.

    shared/         what every process uses: wire protocol, config, placement, runtime, telemetry
    gateway/        prices (random walk or CSV replay) and news over TCP
    orderbook/      the price feed into the shared-memory book
    strategy/       the Strategy API, its process host, the built-in rule and the backtester
    order_manager/  validates, books, journals and acknowledges orders
    supervisor/     main.py's side: start in order, supervise, stop, summarize
    tools/          operator tools: the live dashboard

Each process package runs alone as `python -m processes.<name>`. `reactor/` and `ext/` sit below
all of this and never import it.
"""
