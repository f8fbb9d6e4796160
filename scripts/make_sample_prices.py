"""Write data/sample_prices.csv: a few minutes of a market open, prices and news, for the five
default symbols: a complete, deterministic market for `gateway.csv` replay and the backtester.

Reproducible (fixed seed), so the shipped file can be regenerated and reviewed as code:

    python scripts/make_sample_prices.py [--rows 3000] [--out data/sample_prices.csv]

The default file holds 3000 rows over DURATION_S = 274.847 seconds of recorded time
(13:30:00.000Z to 13:34:34.847Z): 2694 prices and 306 news rows.

Each symbol has a mood (bullish, neutral or bearish) that changes every half minute or so; the
mood tilts its price drift and its news. Events arrive as one Poisson stream over all symbols
(busier in the first minutes, as at an open) with at least MIN_GAP_S between any two rows, so a
live replay at csv_speed 10 keeps every row in order and unconflated (one row per 5 ms).
A price row moves its symbol by a geometric random walk whose volatility is set per symbol
(TSLA wildest, MSFT calmest), quoted in cents; a news row (about one in ten) carries a sentiment
0..100 around its symbol's mood. Timestamps are ISO-8601 UTC with milliseconds, 2024-05-14
13:30:00Z being 09:30 New York.
"""

from __future__ import annotations

import argparse
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OPEN = datetime(2024, 5, 14, 13, 30, tzinfo=UTC)
DURATION_S = 274.847      # recorded time of the default file (first to last row)
MIN_GAP_S = 0.050         # no two rows closer than this in file time
MEAN_EXTRA_S = 0.070      # mean of the exponential gap on top of MIN_GAP_S, after the open
NEWS_SHARE = 0.1          # fraction of rows that are news
MOOD_HOLD_S = 30.0        # mean seconds a mood lasts
MOOD_DRIFT = 0.35         # per-tick drift of a mood, in units of the symbol's volatility
MOOD_SENTIMENT = {1: 72, 0: 50, -1: 28}   # sentiment a mood's news centres on
# symbol: (opening price, per-tick volatility, relative activity)
SYMBOLS = {
    "AAPL": (187.43, 0.00022, 1.2),
    "MSFT": (414.19, 0.00018, 1.0),
    "GOOG": (171.93, 0.00025, 0.9),
    "AMZN": (186.57, 0.00024, 1.0),
    "TSLA": (177.55, 0.00045, 1.4),
}


def generate(rows: int, seed: int = 20240514) -> list[tuple[datetime, str, float | None,
                                                           int | None]]:
    """[(time, symbol, price, None) | (time, symbol, None, sentiment)] in time order."""
    rng = random.Random(seed)
    names = list(SYMBOLS)
    weights = [a for _, _, a in SYMBOLS.values()]
    prices = {s: p for s, (p, _, _) in SYMBOLS.items()}
    mood = {s: rng.choice((-1, 0, 1)) for s in names}
    mood_until = {s: rng.expovariate(1.0 / MOOD_HOLD_S) for s in names}
    out: list[tuple[datetime, str, float | None, int | None]] = []
    t = 0.0
    while len(out) < rows:
        busy = 1.0 + 2.0 * math.exp(-t / 120.0)   # the open is busier and wilder
        sym = rng.choices(names, weights)[0]
        if t >= mood_until[sym]:
            mood[sym] = rng.choice([m for m in (-1, 0, 1) if m != mood[sym]])
            mood_until[sym] = t + rng.expovariate(1.0 / MOOD_HOLD_S)
        stamp = OPEN + timedelta(milliseconds=round(t * 1000))
        if rng.random() < NEWS_SHARE:
            value = MOOD_SENTIMENT[mood[sym]] + rng.gauss(0.0, 9.0)
            out.append((stamp, sym, None, max(0, min(100, round(value)))))
        else:
            _, vol, _ = SYMBOLS[sym]
            step = vol * (MOOD_DRIFT * mood[sym] + math.sqrt(busy) * rng.gauss(0.0, 1.0))
            prices[sym] = max(0.01, prices[sym] * math.exp(step))
            out.append((stamp, sym, round(prices[sym], 2), None))
        # Whole milliseconds, so the written timestamps keep the gap exactly.
        t += MIN_GAP_S + round(rng.expovariate(busy / MEAN_EXTRA_S), 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "sample_prices.csv")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    events = generate(args.rows)
    with open(args.out, "w", encoding="utf-8", newline="") as fh:
        fh.write("timestamp,symbol,price,sentiment\n")
        for stamp, sym, price, sentiment in events:
            value = f"{price:.2f}," if price is not None else f",{sentiment}"
            fh.write(f"{stamp.isoformat(timespec='milliseconds').replace('+00:00', 'Z')},"
                     f"{sym},{value}\n")
    span = (events[-1][0] - events[0][0]).total_seconds()
    print(f"wrote {args.rows} rows over {span:.3f}s to {args.out}")


if __name__ == "__main__":
    main()
