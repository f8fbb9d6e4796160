"""Write data/sample_prices.csv: ten minutes of a market open for the five default symbols.

Reproducible (fixed seed), so the shipped file can be regenerated and reviewed as code:

    python scripts/make_sample_prices.py [--rows 3000] [--out data/sample_prices.csv]

Each symbol trades as a Poisson process (about one tick per second per symbol, busier in the
first minutes, as at an open) with a geometric random walk whose per-tick volatility is set per
symbol (TSLA wildest, MSFT calmest), quoted in cents. Timestamps are ISO-8601 UTC with
milliseconds, 2024-05-14 13:30:00Z being 09:30 New York.
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPEN = datetime(2024, 5, 14, 13, 30, tzinfo=UTC)
# symbol: (opening price, per-tick volatility, relative activity)
SYMBOLS = {
    "AAPL": (187.43, 0.00022, 1.2),
    "MSFT": (414.19, 0.00018, 1.0),
    "GOOG": (171.93, 0.00025, 0.9),
    "AMZN": (186.57, 0.00024, 1.0),
    "TSLA": (177.55, 0.00045, 1.4),
}


def generate(rows: int, seed: int = 20240514) -> list[tuple[datetime, str, float]]:
    rng = random.Random(seed)
    total_activity = sum(a for _, _, a in SYMBOLS.values())
    base_rate = 5.0 / total_activity          # ~5 ticks/s over all symbols
    prices = {s: p for s, (p, _, _) in SYMBOLS.items()}
    drift = {s: rng.gauss(0.0, 0.02) * vol for s, (_, vol, _) in SYMBOLS.items()}
    heap = [(rng.expovariate(base_rate * a), s) for s, (_, _, a) in SYMBOLS.items()]
    heapq.heapify(heap)
    out = []
    while len(out) < rows:
        t, sym = heapq.heappop(heap)
        _, vol, activity = SYMBOLS[sym]
        busy = 1.0 + 2.0 * math.exp(-t / 120.0)   # the open is busier and wilder
        step = drift[sym] + vol * math.sqrt(busy) * rng.gauss(0.0, 1.0)
        prices[sym] = max(0.01, prices[sym] * math.exp(step))
        out.append((OPEN + timedelta(seconds=t), sym, round(prices[sym], 2)))
        heapq.heappush(heap, (t + rng.expovariate(base_rate * activity * busy), sym))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "sample_prices.csv")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "w", encoding="utf-8", newline="") as fh:
        fh.write("timestamp,symbol,price\n")
        for stamp, sym, price in generate(args.rows):
            fh.write(f"{stamp.isoformat(timespec='milliseconds').replace('+00:00', 'Z')},"
                     f"{sym},{price:.2f}\n")
    print(f"wrote {args.rows} rows to {args.out}")


if __name__ == "__main__":
    main()
