"""The OrderBook: the Gateway's price feed into the shared-memory price book."""
