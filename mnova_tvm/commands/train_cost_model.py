"""`mnova train-cost-model DATASET -o MODEL`: fit XGBoost per device kind and the links; report held-out error."""

from __future__ import annotations

from collections import defaultdict

from ..costmodel import CostModel, evaluate, fit_link, split_by_shape
from ..errors import MnovaError
from ..profile import read_dataset


def register(sub) -> None:
    parser = sub.add_parser("train-cost-model", help="fit the XGBoost latency model on a profiling dataset")
    parser.add_argument("dataset", help="JSON Lines dataset written by mnova profile")
    parser.add_argument("-o", "--output", required=True, help="cost model file to write")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="operator shapes held out for the report")
    parser.set_defaults(func=run)


def train(rows, links, test_fraction: float = 0.2, log=print) -> CostModel:
    """Report on held-out operator shapes, then fit on everything."""
    if not rows:
        raise MnovaError("the dataset has no operator rows: run mnova profile first")
    train_rows, test_rows = split_by_shape(rows, test_fraction)
    kinds = sorted({r["device_kind"] for r in rows})
    report = {}
    if test_rows and train_rows:
        held = CostModel().fit(train_rows)
        for kind in kinds:
            kind_test = [r for r in test_rows if r["device_kind"] == kind]
            if kind_test and kind in held.boosters:
                report[kind] = evaluate(held, kind_test)
    log(f"{'device kind':18s} {'train rows':>10s} {'held-out':>8s} {'MAPE %':>7s} {'±10 %':>6s} {'Spearman':>8s}")
    for kind in kinds:
        m = report.get(kind)
        n_train = sum(r["device_kind"] == kind for r in train_rows)
        if m:
            log(f"{kind:18s} {n_train:10d} {m['rows']:8d} {m['mape_percent']:7.1f} {100 * m['within_10_percent']:5.1f}% {m['spearman']:8.3f}")
        else:
            log(f"{kind:18s} {n_train:10d} {'-':>8s}")
    model = CostModel(metadata={"held_out": report, "rows": len(rows)}).fit(rows)
    by_device = defaultdict(list)
    for row in links:
        by_device[row["device"]].append(row)
    model.links = {device: fit_link(device_rows) for device, device_rows in by_device.items()}
    for device, fit in sorted(model.links.items()):
        log(f"link {device}: send {1e3 * fit.send_s:.2f} ms + {8e-6 / max(fit.send_per_byte_s, 1e-15):.0f} Mbit/s, "
            f"receive {1e3 * fit.receive_s:.2f} ms + {8e-6 / max(fit.receive_per_byte_s, 1e-15):.0f} Mbit/s, call {1e3 * fit.call_s:.2f} ms")
    return model


def run(args) -> int:
    rows, links = read_dataset(args.dataset)
    if not rows and not links:
        raise MnovaError(f"dataset {args.dataset} is empty or missing: run mnova profile first")
    model = train(rows, links, args.test_fraction)
    model.save(args.output)
    print(f"cost model written to {args.output}")
    return 0
