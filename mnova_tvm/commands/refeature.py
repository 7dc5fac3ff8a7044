"""`mnova refeature DATASET`: compute a dataset's feature columns again with this version of mnova-tvm."""

from __future__ import annotations

from pathlib import Path

from ..errors import MnovaError
from ..frontend import load_model
from ..profile import dataset_models, refeature_dataset
from ..zoo import MODELS, sweep_named


def register(sub) -> None:
    parser = sub.add_parser(
        "refeature", help="compute a profiling dataset's feature columns again (after an upgrade of mnova-tvm)",
        description="Rewrite the feature columns of every operator row of DATASET as this version of mnova-tvm "
                    "computes them, from the models the rows name (zoo models and sweeps by name, ONNX files given "
                    "with --models); latencies and links are kept. A slice the partitioner no longer makes is "
                    "dropped. The file is replaced only when every row has been computed.")
    parser.add_argument("dataset", help="JSON Lines dataset written by mnova profile")
    parser.add_argument("--models", nargs="+", default=[], metavar="ONNX",
                        help="ONNX files of profiled models that are not zoo models (matched by file name)")
    parser.set_defaults(func=run)


def run(args) -> int:
    path = Path(args.dataset)
    if not path.exists():
        raise MnovaError(f"dataset {path} does not exist")
    files = {Path(f).stem: f for f in args.models}
    modules = {}
    for name in dataset_models(path):
        model = files.get(name) or (name if name in MODELS else sweep_named(name))
        if model is None:
            raise MnovaError(f"dataset {path} has rows of model {name}, which is neither a zoo model nor a sweep: "
                             f"give its ONNX file with --models")
        print(f"{name}: importing", flush=True)
        modules[name] = load_model(model)
    rewritten, dropped = refeature_dataset(path, modules)
    print(f"{path}: features of {rewritten} operator rows computed again"
          + (f", {dropped} rows of slices the partitioner no longer makes dropped" if dropped else ""))
    return 0
