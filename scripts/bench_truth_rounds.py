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

from mnova_tvm.commands.bench import _source
from mnova_tvm.costmodel import CostModel, evaluate, split_by_shape
from mnova_tvm.profile import merge_rounds, read_dataset, row_key


def _shares(model: CostModel, rows: list[dict]) -> dict[str, tuple[int, int]]:
    """Per source of the rows and over all of them: (slices, within ±10 %), the host's state as
    each row's readings give it (costmodel.evaluate)."""
    metrics = evaluate(model, rows, group=lambda row: _source(row["model"]))
    return {"all": (len(rows), round(metrics["within_10_percent"] * len(rows))), **metrics["by_group"]}


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
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])  # -> slices, within ±10 %

    def add(truth: str, shares: dict[str, tuple[int, int]]) -> None:
        for source, (slices, within) in shares.items():
            counts[(source, truth)][0] += slices
            counts[(source, truth)][1] += within

    for seed in range(args.splits):
        train, test = split_by_shape(rows, 0.2, seed)
        model = CostModel().fit(train)
        repeated = [r for r in test if r["rounds"] >= 2]
        add("the median of its rounds", _shares(model, repeated))
        add("its first round", _shares(model, [rounds[(r["device_kind"], row_key(r))][0] for r in repeated]))
        third = [r for r in test if r["rounds"] == 3]
        first_two = [dict(r, latency_s=statistics.mean(float(t["latency_s"])
                                                       for t in rounds[(r["device_kind"], row_key(r))][:2]))
                     for r in third]
        add("the median of three", {"timed in three rounds": _shares(model, third)["all"]})
        add("the mean of the first two", {"timed in three rounds": _shares(model, first_two)["all"]})
    print(f"| held-out slices | scored against | slices ({args.splits} splits) | within ±10 % (%) |\n|---|---|---|---|")
    for (source, truth), (slices, within) in sorted(counts.items()):
        print(f"| {source} | {truth} | {slices} | {100 * within / slices:.1f} |")


if __name__ == "__main__":
    main()
