"""The Gateway: random-walk or replayed prices and news sentiment over TCP."""
