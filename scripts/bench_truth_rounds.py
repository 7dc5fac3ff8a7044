"""What a slice's rounds do to the truth the cost model is scored against, on held-out shapes.

    python3 scripts/bench_truth_rounds.py DATASET [--splits 3]

The same model (fitted per seeded split as `mnova bench costmodel` fits it) scored on the held-out
slices timed in two rounds or more, once against the median of their rounds with the median
readings and once against their first round with its own: what the second round's steadier truth
is worth. Then the slices timed in three rounds (`mnova profile --tiebreak`) against the median of
three and against the mean of their first two: whether the tiebreak round settles them.
"""

from __future__ import annotations

import argparse
import statistics
from collections import defaultdict

import numpy as np

from mnova_tvm.commands.bench import _source
from mnova_tvm.costmodel import FEATURES, CostModel, host_seconds, split_by_shape
from mnova_tvm.profile import merge_rounds, read_dataset, row_key


def _within(model: CostModel, rows: list[dict], seconds: list[float]) -> list[bool]:
    """Whether each row's prediction, for the host's state its readings give, is within ±10 % of `seconds`."""
    features = np.array([[float(r[f]) for f in FEATURES] for r in rows])
    predicted = model.predict(features, [r["device_kind"] for r in rows], host_seconds(rows))
    return list(np.abs(predicted / np.array(seconds) - 1) <= 0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--splits", type=int, default=3)
    args = parser.parse_args()
    timings = read_dataset(args.dataset)[0]
    rounds: dict[tuple, list[dict]] = defaultdict(list)
    for row in timings:
        rounds[(row["device_kind"], row_key(row))].append(row)
    rows = merge_rounds(timings)
    shares: dict[tuple[str, str], list[bool]] = defaultdict(list)
    for seed in range(args.splits):
        train, test = split_by_shape(rows, 0.2, seed)
        model = CostModel().fit(train)
        repeated = [r for r in test if r["rounds"] >= 2]
        firsts = [rounds[(r["device_kind"], row_key(r))][0] for r in repeated]
        against_median = _within(model, repeated, [r["latency_s"] for r in repeated])
        against_first = _within(model, firsts, [float(r["latency_s"]) for r in firsts])
        for row, median_ok, first_ok in zip(repeated, against_median, against_first):
            for source in ("all", _source(row["model"])):
                shares[(source, "the median of its rounds")].append(median_ok)
                shares[(source, "its first round")].append(first_ok)
        third = [r for r in test if r["rounds"] == 3]
        first_two = [statistics.mean(float(t["latency_s"]) for t in rounds[(r["device_kind"], row_key(r))][:2])
                     for r in third]
        shares[("timed in three rounds", "the median of three")] += _within(model, third, [r["latency_s"] for r in third])
        shares[("timed in three rounds", "the mean of the first two")] += _within(model, third, first_two)
    print(f"| held-out slices | scored against | slices ({args.splits} splits) | within ±10 % (%) |\n|---|---|---|---|")
    for (source, truth), within in sorted(shares.items()):
        print(f"| {source} | {truth} | {len(within)} | {100 * np.mean(within):.1f} |")


if __name__ == "__main__":
    main()
