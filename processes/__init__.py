"""The four tradestack processes; each composes `reactor` and `ext` and adds only policy."""
