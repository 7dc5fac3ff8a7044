"""`mnova score-cost-model MODEL DATASET`: how well a saved cost model predicts slices timed since.

A board's speed drifts (firmware, thermals, neighbours on a shared host) and new models bring
operator shapes the model never saw; a fresh `mnova profile` run scored here says whether the model
still holds or is to be retrained. Operator slices are predicted as profiled, without the
whole-model calibration factor.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np

from ..costmodel import OPS, CostModel, evaluate
from ..errors import MnovaError
from ..profile import merge_rounds, read_dataset
from ..report import markdown_table, results_header
from ._io import atomic_path


def register(sub) -> None:
    parser = sub.add_parser(
        "score-cost-model", help="score a saved cost model on a profiling dataset (slices timed since, new shapes)",
        description="Predict every operator slice of DATASET (each slice's median over its rounds) with the cost "
                    "model MODEL and report, per device kind and per operator, the MAPE, the share within ±10 %%, "
                    "the Spearman rank correlation and the median signed error (a shift of the board's speed since "
                    "the model's dataset was timed). Slices are predicted as profiled, without the model's "
                    "whole-model calibration, and for the host's state their reference readings give if they "
                    "have them (mnova profile).")
    parser.add_argument("model", help="cost model file written by mnova train-cost-model")
    parser.add_argument("dataset", help="JSON Lines dataset written by mnova profile")
    parser.add_argument("--out", default=None, help="also write the tables to this Markdown results file")
    parser.set_defaults(func=run)


def score(model: CostModel, rows: list[dict]) -> tuple[list[list], list[list]]:
    """(per device kind, per device kind and operator) table rows of `model` on `rows`."""
    uncalibrated = dataclasses.replace(model, calibration={})
    order = {op: i for i, op in enumerate([*OPS, "other"])}
    by_kind, by_operator = [], []
    for kind in sorted({r["device_kind"] for r in rows}):
        kind_rows = [r for r in rows if r["device_kind"] == kind]
        result = evaluate(uncalibrated, kind_rows)
        shift = 1 + result["median_error_percent"] / 100
        shifted = evaluate(dataclasses.replace(model, calibration={kind: 1 / shift}), kind_rows)
        timed_again = [r["spread"] <= 1.1 for r in kind_rows if r["rounds"] > 1]
        by_kind.append([kind, result["rows"], f"{result['mape_percent']:.1f}", f"{100 * result['within_10_percent']:.1f}",
                        f"{result['spearman']:.3f}", f"{result['median_error_percent']:+.1f}",
                        f"{100 * shifted['within_10_percent']:.1f}",
                        f"{100 * np.mean(timed_again):.1f} ({len(timed_again)} slices)" if timed_again else "-"])
        for op, (count, within) in sorted(result["by_operator"].items(), key=lambda kv: (-kv[1][0], order[kv[0]])):
            by_operator.append([kind, op, count, f"{100 * within / count:.1f}"])
    return by_kind, by_operator


def run(args) -> int:
    model = CostModel.load(args.model)
    rows, _ = read_dataset(args.dataset)
    if not rows:
        raise MnovaError(f"dataset {args.dataset} has no operator rows (missing or empty): run mnova profile first")
    by_kind, by_operator = score(model, merge_rounds(rows))
    kind_header = ["device kind", "slices", "MAPE %", "within ±10 % (%)", "Spearman", "median error %",
                   "within ±10 % once shifted (%)", "rounds within ±10 % (%)"]
    operator_header = ["device kind", "operator", "slices", "within ±10 % (%)"]
    text = (f"Cost model `{args.model}` ({model.metadata.get('rows', '?')} training slices) on the slices of "
            f"`{args.dataset}`, each the median of its rounds, predicted without the whole-model calibration. "
            f"Error: predicted / measured - 1. The median error is the shift of the device's speed since the "
            f"model's dataset was timed, or a bias on these shapes; once shifted: the predictions divided by it "
            f"(what recalibrating would recover, the rest is the model's error on these shapes). Rounds: of the "
            f"slices timed in more than one mnova profile run, those whose timings agree within ±10 % (how "
            f"steadily the device times them).\n\n"
            + markdown_table(kind_header, by_kind) + "\n### By operator\n\n" + markdown_table(operator_header, by_operator))
    print(text, end="")
    if args.out:
        with atomic_path(args.out) as tmp:
            tmp.write_text(results_header("Cost model scored on a profiling dataset") + "\n" + text)
        print(f"results written to {args.out}", file=sys.stderr)
    return 0
