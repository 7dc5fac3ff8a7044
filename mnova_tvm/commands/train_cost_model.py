"""`mnova train-cost-model DATASET -o MODEL`: fit XGBoost per device kind and the links; report held-out error."""

from __future__ import annotations

from ..costmodel import train
from ..errors import MnovaError
from ..profile import merge_rounds, read_dataset


def register(sub) -> None:
    parser = sub.add_parser("train-cost-model", help="fit the XGBoost latency model on a profiling dataset")
    parser.add_argument("dataset", help="JSON Lines dataset written by mnova profile")
    parser.add_argument("-o", "--output", required=True, help="cost model file to write")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="operator shapes held out for the report")
    parser.set_defaults(func=run)


def run(args) -> int:
    rows, links = read_dataset(args.dataset)
    if not rows and not links:
        raise MnovaError(f"dataset {args.dataset} is empty or missing: run mnova profile first")
    model = train(merge_rounds(rows), links, args.test_fraction)
    model.save(args.output)
    print(f"cost model written to {args.output}")
    return 0
