"""The latency cost model: XGBoost per device kind over operator-slice features, plus links.

Like a scikit-learn estimator: `CostModel().fit(rows)` then `predict(features, kinds)`, saved
and loaded as one JSON file. Per device kind, a roofline line (seconds per call, per FLOP, per
byte moved, per weight byte; non-negative, fitted on relative error) gives each slice a baseline,
and XGBoost learns the log ratio of the measured latency to it: trees alone predict steps in the
FLOP count and miss held-out shapes between two profiled ones, the line carries the scaling. Rows come from `mnova profile` (see profile.py); the features of
a slice are computed here, from the OpGraph and the slice's regions, by the same function for
profiling rows and for the planner, so the two cannot drift apart.

`plan_latency` predicts a Plan's end-to-end latency under the runtime's rules: segments one after
another; within a segment every active device receives its input regions, runs its function and
returns its output regions, and the segment ends with the slowest device and the coordinator
joining their outputs.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from .errors import MnovaError
from .graph import Node, OpGraph
from .partition import Plan, Segment, region_bytes, region_shape, segments, sliced_weight_bytes

FORMAT_VERSION = 11
# How link rows were timed (profile.profile_links): each device alone, then all devices at once, as
# the runtime moves data; each row says how many devices were active ("active").
LINK_PROTOCOL = "by-active-devices"
OPS = ("relax.nn.conv2d", "relax.nn.max_pool2d", "relax.nn.avg_pool2d", "relax.matmul", "relax.mean",
       "relax.nn.batch_norm", "relax.add", "relax.multiply", "relax.nn.relu", "relax.concat", "relax.nn.softmax",
       "relax.sigmoid", "relax.clip", "relax.nn.silu", "relax.reshape", "relax.permute_dims", "relax.nn.adaptive_avg_pool2d")
# The last three describe the inputs: how many activation inputs the slice reads (a concat's
# parts), the most output elements one element of an input feeds (a bias: the map; a scalar: all;
# a squeeze-excite scale: the map), and the elements of the smallest input. Shapes held out, 11 zoo
# models and 5 sweeps: 81.4 -> 83.7 % of slices within ±10 % with them (concat 60 -> 76 %,
# multiply 78 -> 87 %, add 83 -> 89 %).
FEATURES = ("op_code", "flops_log", "in_bytes_log", "out_bytes_log", "weight_bytes_log", "out_c", "out_h", "out_w",
            "in_c", "in_h", "kernel", "stride", "depthwise", "dim_code", "inputs", "broadcast_log", "smallest_input_log")
DIM_CODE = {"none": 0, "height": 1, "channel": 2}
# Vector widths (float32 lanes) whose kernels the derived columns describe: NEON and SSE, AVX2, AVX-512.
SCHEDULE_LANES = (4, 8, 16)
# Columns derived from FEATURES, not stored in datasets: the kernel the default schedules give the
# slice under each vector width (kernels.conv_tiling for a convolution, kernels.matmul_tiling for a
# matmul; whether the flat loop of an elementwise slice, over all its elements or over each
# channel's map, takes whole unrolled vector steps). Shapes held out, 11 zoo models and a sweep:
# 66.9 % -> 75.0 % of slices within ±10 % with them. A matmul's tile came later: its vector spans
# up to four vectors of its outputs when they are a multiple of them, else their largest divisor up
# to one vector, so a classifier's 0.36 MB of weights streamed at 10 GB/s 2 lanes wide and another's
# 0.35 MB at 89 GB/s 32 wide (held-out matmuls, same splits: 38.9 -> 58.3 % within ±10 % on the
# references dataset, 43.0 -> 78.9 % on the unthrottled one with its first pool sweep).
# Then two columns of the slice's input, whatever the vector width: its elements per row of the first
# input (the row length of a conv's or pool's input, which a height slice's features lack; more for
# an operator with a second input, less for a broadcast one), and whether a conv or pool reads
# padding (its kernel first copies the input into a padded buffer): 83.2 % -> 84.8 % with them.
# Then, per vector width, the partial sums a mean over each channel's map is added up in
# (kernels._partial_sums; 0: no vector partial sums, a register tile instead).
# Last, the lengths the vector loops run over and what is left of them after whole vectors: the
# flat run (the elements of each channel's map when a per-channel operand broadcasts over it, as
# a batch norm's or a squeeze-excite scale's; else all the slice's), the map, and per vector width
# the remainders of the run, the map and an output row. A batch norm over 4x7 maps ran at 0.87 ns
# per element against 0.16 over 7x7 (16 lanes: one vector and 12 scalar steps per channel), and a
# relu over 448x6x8 at 1.2 against 0.1 over 448x8x8; trees cannot multiply two columns to see it.
# Shapes held out, 11 zoo models and 11 sweeps: 76.8 -> 78.7 % of slices within ±10 % with them.
DERIVED = tuple(f"{name}_{lanes}" for lanes in SCHEDULE_LANES for name in
                ("channel_vectors", "vector_tile", "register_rows", "lane_fill", "flat_vectors", "map_vectors")) \
    + ("in_row_elements", "padded") + tuple(f"partial_sums_{lanes}" for lanes in SCHEDULE_LANES) \
    + ("flat_run", "map_elements") \
    + tuple(f"{name}_{lanes}" for lanes in SCHEDULE_LANES for name in ("flat_run_rest", "map_rest", "row_rest"))
# The host's state while a slice was timed: two reference kernels read right before each of its
# readings (profile.REFERENCES), an in-cache matmul and a streaming relu; a shared machine's slow
# spells slow kernels unevenly, small in-cache ones like the first, large ones like the second.
# The model takes each as log2 of the reading over its median in the training rows (missing in
# rows timed without them) and predicts at that median unless told the host's state. Held-out
# shapes of 5,743 slices timed with them: 83.4 % within ±10 % given the readings, 73.2 % at the
# median state (benchmarks/costmodel-epyc-references.md).
HOST_COLUMNS = ("host_compute_s", "host_memory_s")
WINDOWED_CODES = [OPS.index(op) for op in ("relax.nn.conv2d", "relax.nn.max_pool2d", "relax.nn.avg_pool2d")]
MAP_REDUCTION_CODES = [OPS.index(op) for op in ("relax.mean", "relax.nn.adaptive_avg_pool2d")]


def _op_code(op: str) -> int:
    return OPS.index(op) if op in OPS else len(OPS)


def _log(value: float) -> float:
    return math.log2(1.0 + value)


def _unlog(values: np.ndarray) -> np.ndarray:
    """The values a column of _log-ged features was made from."""
    return np.exp2(values) - 1.0


def slice_features(graph: OpGraph, node: Node, dim: str, out_region, in_regions: Mapping[str, tuple]) -> list[float]:
    """Feature vector of one operator slice (the FEATURES columns)."""
    out_t = graph.tensors[node.outputs[0]]
    out_shape = region_shape(out_t.shape, out_region)
    out_full = math.prod(out_t.shape) or 1
    out_count = math.prod(out_shape)
    acts = [t for t in node.inputs if graph.tensors[graph.base_of(t)].kind != "weight"]
    in_bytes = sum(region_bytes(graph, t, in_regions.get(t, (-1, 0, 0))) for t in acts)
    read = [n for n in (math.prod(region_shape(graph.tensors[t].shape, in_regions.get(t, (-1, 0, 0)))) for t in acts) if n]
    first_in = region_shape(graph.tensors[acts[0]].shape, in_regions.get(acts[0], (-1, 0, 0))) if acts else ()
    axis, lo, hi = out_region
    weights = sliced_weight_bytes(graph, node, dim if axis >= 0 else "none", lo, hi)
    padded = tuple(out_shape) + (1,) * (4 - len(out_shape))
    in_padded = tuple(first_in) + (1,) * (4 - len(first_in))
    groups = node.attrs.get("groups", 1)
    return [
        _op_code(node.op), _log(node.flops * out_count / out_full), _log(in_bytes),
        _log(out_count * out_t.nbytes / out_full), _log(weights),
        padded[1], padded[2], padded[3], in_padded[1], in_padded[2],
        node.attrs.get("kernel", (1, 1))[0], node.attrs.get("strides", (1, 1))[0],
        int(groups > 1 and groups == out_t.shape[1]), DIM_CODE[dim],  # a depthwise conv's channel slice is depthwise
        len(read), math.log2(_broadcast(graph, node, out_shape)), _log(min(read, default=0)),
    ]


def _broadcast(graph: OpGraph, node: Node, out_shape) -> int:
    """The most output elements of the slice that one element of an input feeds, over the inputs
    that broadcast to the output (a bias, a scalar, a squeeze-excite scale): 1 if none does."""
    full = graph.tensors[node.outputs[0]].shape
    reuse = 1
    for t in node.inputs:
        shape = graph.tensors[t].shape
        if len(shape) > len(full) or any(i not in (1, o) for i, o in zip(shape[::-1], full[::-1])):
            continue
        shape = (1,) * (len(full) - len(shape)) + tuple(shape)
        reuse = max(reuse, math.prod(o for i, o in zip(shape, out_shape) if i == 1))
    return reuse


def model_inputs(features: np.ndarray) -> np.ndarray:
    """FEATURES columns followed by the DERIVED ones."""
    from .kernels import conv_tiling, matmul_tiling

    features = np.asarray(features, dtype=float).reshape(-1, len(FEATURES))
    col = {name: features[:, i] for i, name in enumerate(FEATURES)}
    maps = col["out_h"] * col["out_w"]
    conv = col["op_code"] == OPS.index("relax.nn.conv2d")
    shapes = features[conv][:, [FEATURES.index(name) for name in
                                ("out_c", "out_h", "out_w", "in_c", "in_h", "kernel", "stride", "depthwise")]]
    distinct, which = np.unique(shapes, axis=0, return_inverse=True)  # a GA asks for the same slices again and again
    distinct = distinct.astype(int).tolist()  # Python ints: each numpy scalar converted apart costs more than the tile
    matmul = col["op_code"] == OPS.index("relax.matmul")
    # a matmul's rows: its FLOPs over 2 x columns (out_c) x reduction (in_c)
    matmul_shapes = np.column_stack([np.round(_unlog(col["flops_log"]) / np.maximum(2 * col["out_c"] * col["in_c"], 1)),
                                     col["out_c"]])[matmul]
    distinct_matmuls, which_matmul = np.unique(matmul_shapes, axis=0, return_inverse=True)
    derived = []
    for lanes in SCHEDULE_LANES:
        tiles = np.zeros((len(features), 4))
        if len(distinct):
            tiles[conv] = np.array([conv_tiling(*shape[:7], bool(shape[7]), lanes) for shape in distinct])[which.ravel()]
        if len(distinct_matmuls):
            tiles[matmul] = np.array([matmul_tiling(max(1, int(rows)), int(cols), lanes)
                                      for rows, cols in distinct_matmuls])[which_matmul.ravel()]
        derived += [tiles, ((col["out_c"] * maps) % (4 * lanes) == 0)[:, None], (maps % (4 * lanes) == 0)[:, None]]
    inputs = _input_columns(col)
    return np.hstack([features, *derived, inputs, _partial_sums_columns(col, inputs[:, 0]), _remainder_columns(col)])


def _input_columns(col: dict) -> np.ndarray:
    """in_row_elements and padded (see DERIVED), from the byte counts: input bytes over output bytes
    times output elements gives input elements without knowing the dtype."""
    in_elements = (_unlog(col["in_bytes_log"]) / np.maximum(_unlog(col["out_bytes_log"]), 1.0)
                   * col["out_c"] * col["out_h"] * col["out_w"])
    in_row_elements = np.round(in_elements / np.maximum(col["in_c"] * col["in_h"], 1.0))
    reach = (col["kernel"] - col["stride"])[:, None] + col["stride"][:, None] * np.column_stack([col["out_h"], col["out_w"]])
    padded = np.isin(col["op_code"], WINDOWED_CODES) & np.any(reach > np.column_stack([col["in_h"], in_row_elements]), axis=1)
    return np.column_stack([in_row_elements, padded])


def _partial_sums_columns(col: dict, in_row_elements: np.ndarray) -> np.ndarray:
    """partial_sums_{lanes} (see DERIVED): a mean's map is its input rows times their length."""
    from .kernels import _partial_sums

    reduced = np.isin(col["op_code"], MAP_REDUCTION_CODES)
    runs, run_of = np.unique((col["in_h"] * in_row_elements)[reduced].astype(int), return_inverse=True)
    sums = np.zeros((len(reduced), len(SCHEDULE_LANES)))
    sums[reduced] = np.array([[_partial_sums(run, lanes) or 0 for lanes in SCHEDULE_LANES] for run in runs]
                             ).reshape(-1, len(SCHEDULE_LANES))[run_of.ravel()]
    return sums


def _remainder_columns(col: dict) -> np.ndarray:
    """flat_run, map_elements and their remainders after whole vectors (see DERIVED). An input
    feeding each element to a whole map (broadcast_log) splits the flat loop into per-channel runs;
    one feeding every element (a scalar) does not."""
    maps = col["out_h"] * col["out_w"]
    elements = col["out_c"] * maps
    reuse = np.round(np.exp2(col["broadcast_log"]))
    run = np.where((reuse > 1) & (reuse < elements), reuse, elements)
    rests = [np.column_stack([run % lanes, maps % lanes, col["out_w"] % lanes]) for lanes in SCHEDULE_LANES]
    return np.hstack([np.column_stack([run, maps]), *rests])


def _roofline_terms(features: np.ndarray) -> np.ndarray:
    """The columns a slice's baseline seconds are linear in: one call, FLOPs, activation bytes
    moved (in and out), weight bytes."""
    def raw(name):
        return _unlog(features[:, FEATURES.index(name)])

    return np.column_stack([np.ones(len(features)), raw("flops_log"), raw("in_bytes_log") + raw("out_bytes_log"),
                            raw("weight_bytes_log")])


def fit_roofline(features: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Non-negative coefficients of _roofline_terms minimising the relative error, so that the
    many small operators weigh as much as the few large ones."""
    from scipy.optimize import nnls

    terms = _roofline_terms(features)
    coefficients, _ = nnls(terms / seconds[:, None], np.ones(len(seconds)))
    return coefficients


def _log_baseline(features: np.ndarray, coefficients) -> np.ndarray:
    return np.log2(np.maximum(_roofline_terms(features) @ np.asarray(coefficients), 1e-7))


@dataclass(frozen=True)
class LinkFit:
    """Seconds to move n bytes one way, interpolated between the median measured transfer times
    at each profiled size (a straight line on from the largest two), plus the RPC overhead of one
    function call. Not a line through all of them: a token-bucket shaper (tc tbf, like many Wi-Fi
    and cellular links) lets a burst through at line rate, so pair2's 200 Mbit/s link moved 16 KiB
    at 205 Mbit/s and 4 MiB at 111; a least-squares line made every 60 KiB halo of a height split
    cost about twice its time (randwire_ws's 173-segment plan predicted 46 % over its measurement)."""

    send_points: tuple[tuple[float, float], ...]  # (bytes, seconds), by bytes
    receive_points: tuple[tuple[float, float], ...]
    call_s: float
    # the coordinator's time per segment beyond its slowest device, by the bytes each device
    # returns (threads, joining outputs: profile_links)
    segment_points: tuple[tuple[float, float], ...]
    # how many devices moved data at once when these were timed, and the same link timed alone:
    # a segment with fewer active devices contends less (for_active)
    active: int = 1
    alone: "LinkFit | None" = None

    def send(self, nbytes: int) -> float:
        return _interpolate(self.send_points, nbytes)

    def receive(self, nbytes: int) -> float:
        return _interpolate(self.receive_points, nbytes)

    def segment(self, nbytes: int) -> float:
        return _interpolate(self.segment_points, nbytes)

    def for_active(self, active: int) -> "LinkFit":
        """The link in a segment where `active` devices move data at once: between its timing
        alone and with all `self.active` devices, in proportion to the other active devices (a
        pipeline stage of one device does not wait on the others' transfers and threads)."""
        if self.alone is None or active >= self.active:
            return self
        share = (max(active, 1) - 1) / (self.active - 1)
        if share == 0:
            return self.alone

        def blend(mine, theirs):
            return tuple((n, (1 - share) * _interpolate(theirs, n) + share * t) for n, t in mine)

        return LinkFit(blend(self.send_points, self.alone.send_points), blend(self.receive_points, self.alone.receive_points),
                       (1 - share) * self.alone.call_s + share * self.call_s,
                       blend(self.segment_points, self.alone.segment_points), active)

    def to_json(self) -> dict:
        return {**vars(self), "alone": self.alone.to_json() if self.alone else None}

    @classmethod
    def from_json(cls, data: dict) -> "LinkFit":
        return cls(*(tuple(map(tuple, data[key])) for key in ("send_points", "receive_points")), float(data["call_s"]),
                   tuple(map(tuple, data["segment_points"])), int(data["active"]),
                   cls.from_json(data["alone"]) if data["alone"] else None)

    def mbit_per_s(self, kind: str) -> float:
        """Bandwidth of the largest transfers (the slope of the last two points)."""
        (x0, y0), (x1, y1) = (self.send_points if kind == "send" else self.receive_points)[-2:]
        return 8e-6 * (x1 - x0) / max(y1 - y0, 1e-15)


def _interpolate(points, nbytes: float) -> float:
    sizes, seconds = zip(*points)
    if nbytes <= sizes[-1]:
        return float(np.interp(nbytes, sizes, seconds))
    slope = max((seconds[-1] - seconds[-2]) / (sizes[-1] - sizes[-2]), 0.0)
    return seconds[-1] + (nbytes - sizes[-1]) * slope


def fit_link(rows: Sequence[Mapping]) -> LinkFit:
    """One device's link from its rows (kind 'send' / 'receive' / 'call' / 'segment'): the median
    time at each measured size, made non-decreasing in size (more bytes never take less time);
    fitted as timed with the most devices active at once, its rows timed alone kept beside."""
    by_active: dict[int, list] = {}
    for row in rows:
        by_active.setdefault(int(row.get("active", 1)), []).append(row)
    most = max(by_active, default=1)
    fit = _fit_link_rows(by_active.get(most, []), most)
    if most > 1 and 1 in by_active:
        fit = dataclasses.replace(fit, alone=_fit_link_rows(by_active[1], 1))
    return fit


def _fit_link_rows(rows: Sequence[Mapping], active: int) -> LinkFit:
    def points(kind):
        by_size: dict[float, list[float]] = {}
        for r in rows:
            if r["kind"] == kind:
                by_size.setdefault(float(r["bytes"]), []).append(float(r["seconds"]))
        if len(by_size) < 2:
            raise MnovaError(f"link data has fewer than 2 sizes of '{kind}' measurements: profile the links again")
        sizes = sorted(by_size)
        seconds = np.maximum.accumulate([float(np.median(by_size[b])) for b in sizes])
        return tuple(zip(sizes, (float(t) for t in seconds)))

    calls = [float(r["seconds"]) for r in rows if r["kind"] == "call"]
    if not calls:
        raise MnovaError("link data has no 'call' measurements: profile the links again")
    return LinkFit(points("send"), points("receive"), float(np.median(calls)), points("segment"), active)


@dataclass
class CostModel:
    """Per device kind, a roofline baseline and an XGBoost regressor of log2(seconds / baseline)."""

    # Trees 9 deep, each on a seeded 80 % of the slices: held-out shapes 81.0 -> 83.2 % within ±10 %
    # against 7 deep on all of them (seeds 0-2: 83.0-83.2 %); 11 deep gained no more and predicted
    # 2.8x slower than 9.
    n_estimators: int = 300
    max_depth: int = 9
    learning_rate: float = 0.08
    subsample: float = 0.8
    seed: int = 0
    boosters: dict = field(default_factory=dict)  # kind -> xgboost.Booster
    roofline: dict = field(default_factory=dict)  # kind -> coefficients of _roofline_terms
    links: dict = field(default_factory=dict)  # device name -> LinkFit
    # kind -> factor: a whole-model run on the device over the sum of its operators' predictions
    # (operators timed alone miss fusion, cache reuse and call overheads of the real segments)
    calibration: dict = field(default_factory=dict)
    host_nominal: dict = field(default_factory=dict)  # kind -> median seconds of each HOST_COLUMNS reference
    metadata: dict = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        return sorted(self.boosters)

    def hyperparameters(self) -> dict:
        """What the boosters are fitted with (kept in the metadata: a cached model fitted with
        others is refitted, profile.cost_model_for)."""
        return {"n_estimators": self.n_estimators, "max_depth": self.max_depth,
                "learning_rate": self.learning_rate, "subsample": self.subsample, "seed": self.seed}

    def fit(self, rows: Sequence[Mapping]) -> "CostModel":
        import xgboost as xgb

        by_kind: dict[str, list] = {}
        for row in rows:
            by_kind.setdefault(row["device_kind"], []).append(row)
        if not by_kind:
            raise MnovaError("the dataset has no operator rows: run mnova profile first")
        for kind, kind_rows in sorted(by_kind.items()):
            x = np.array([[float(r[f]) for f in FEATURES] for r in kind_rows])
            seconds = np.array([max(float(r["latency_s"]), 1e-7) for r in kind_rows])
            self.roofline[kind] = [float(c) for c in fit_roofline(x, seconds)]
            host = host_seconds(kind_rows)
            self.host_nominal[kind] = [float(np.nanmedian(c)) if np.isfinite(c).any() else None for c in host.T]
            params = {"max_depth": self.max_depth, "eta": self.learning_rate, "seed": self.seed,
                      "objective": "reg:squarederror", "nthread": 2, "subsample": self.subsample}
            data = xgb.DMatrix(self._inputs(x, kind, host), label=np.log2(seconds),
                               base_margin=_log_baseline(x, self.roofline[kind]))
            self.boosters[kind] = _for_prediction(xgb.train(params, data, num_boost_round=self.n_estimators))
        self.metadata["hyperparameters"] = self.hyperparameters()
        return self

    def _inputs(self, features: np.ndarray, kind: str, host: np.ndarray | None) -> np.ndarray:
        """model_inputs, then the host's state relative to its median in training (0 if not given)."""
        nominal = np.array([np.nan if v is None else v for v in self.host_nominal.get(kind, [None] * len(HOST_COLUMNS))])
        state = np.zeros((len(features), len(HOST_COLUMNS))) if host is None else np.log2(host / nominal)
        return np.hstack([model_inputs(features), np.where(np.isnan(nominal), np.nan, state)])

    def predict(self, features: np.ndarray, kinds: Sequence[str], host: np.ndarray | None = None) -> np.ndarray:
        """Seconds for each row of `features` (N, len(FEATURES)) on device kind `kinds[i]`, with
        the host as fast as it mostly was in training or, given `host` (N, len(HOST_COLUMNS)
        seconds, NaN where not read), as its reference kernels read it."""
        features = np.asarray(features, dtype=float).reshape(-1, len(FEATURES))
        host = None if host is None else np.asarray(host, dtype=float).reshape(-1, len(HOST_COLUMNS))
        kinds = np.asarray(kinds)
        out = np.empty(len(features))
        for kind in np.unique(kinds):
            if kind not in self.boosters:
                raise MnovaError(f"the cost model knows device kinds {', '.join(self.kinds) or 'none'}, "
                                 f"not {kind}: profile that kind and retrain (mnova profile, mnova train-cost-model)")
            mask = kinds == kind
            log_seconds = self.boosters[kind].inplace_predict(
                self._inputs(features[mask], kind, None if host is None else host[mask]),
                base_margin=_log_baseline(features[mask], self.roofline[kind]))
            out[mask] = np.exp2(log_seconds) * self.calibration.get(kind, 1.0)
        return out

    def save(self, path) -> None:
        from .commands._io import write_json

        write_json(path, {
            "format": "mnova-cost-model", "version": FORMAT_VERSION, "features": [*FEATURES, *DERIVED, *HOST_COLUMNS],
            "ops": list(OPS), "host_nominal": self.host_nominal,
            "metadata": self.metadata,
            "boosters": {k: base64.b64encode(bytes(b.save_raw("ubj"))).decode() for k, b in self.boosters.items()},
            "roofline": self.roofline,
            "links": {name: link.to_json() for name, link in self.links.items()},
            "calibration": self.calibration,
        })

    @classmethod
    def load(cls, path) -> "CostModel":
        import xgboost as xgb

        try:
            data = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise MnovaError(f"cost model {path} does not exist: train one with mnova train-cost-model") from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise MnovaError(f"{path} is not a cost model file (not JSON)") from None
        if not isinstance(data, dict) or data.get("format") != "mnova-cost-model":
            raise MnovaError(f"{path} is not an mnova cost model")
        if data.get("version") != FORMAT_VERSION or data.get("features") != [*FEATURES, *DERIVED, *HOST_COLUMNS] or data.get("ops") != list(OPS):
            raise MnovaError(f"cost model {path} was saved by another version of mnova-tvm "
                             f"(format {data.get('version')}); retrain it with mnova train-cost-model")
        metadata = data.get("metadata", {})
        model = cls(**metadata.get("hyperparameters", {}), metadata=metadata)
        for kind, raw in data["boosters"].items():
            booster = xgb.Booster()
            booster.load_model(bytearray(base64.b64decode(raw)))
            model.boosters[kind] = _for_prediction(booster)
        model.roofline = {kind: [float(c) for c in coefficients] for kind, coefficients in data["roofline"].items()}
        model.links = {name: LinkFit.from_json(fit) for name, fit in data.get("links", {}).items()}
        model.calibration = {k: float(v) for k, v in data.get("calibration", {}).items()}
        model.host_nominal = data.get("host_nominal", {})
        return model


# --- evaluation ---


def accuracy(pred: np.ndarray, truth: np.ndarray) -> dict:
    """MAPE, share within ±10%, Spearman rank correlation and median signed error (a bias, or a
    shift of the device's speed) of `pred` against `truth`."""
    from scipy.stats import spearmanr

    signed = pred / truth - 1
    error = np.abs(signed)
    return {"rows": len(truth), "mape_percent": 100 * float(error.mean()),
            "within_10_percent": float((error <= 0.10).mean()), "spearman": float(spearmanr(pred, truth).statistic),
            "median_error_percent": 100 * float(np.median(signed))}


def host_seconds(rows: Sequence[Mapping]) -> np.ndarray:
    """(N, len(HOST_COLUMNS)) reference seconds of `rows`, NaN where a row was timed without them."""
    return np.array([[float(r.get(name, np.nan)) for name in HOST_COLUMNS] for r in rows]).reshape(-1, len(HOST_COLUMNS))


def evaluate(model: CostModel, rows: Sequence[Mapping], group: Callable[[Mapping], str] | None = None,
             host: bool = True) -> dict:
    """MAPE, share within ±10% and Spearman rank correlation of predictions on `rows` (for the
    host's state their reference readings give, or with `host` False at the model's nominal one),
    and the same for the model's roofline line alone (under "roofline": what the trees add to it);
    per operator (of OPS, or "other"), how many rows and how many of them within ±10%; the same per
    `group(row)` under "by_group" if `group` is given."""
    x = np.array([[float(r[f]) for f in FEATURES] for r in rows])
    truth = np.array([float(r["latency_s"]) for r in rows])
    kinds = [r["device_kind"] for r in rows]
    # first: a kind the model lacks is its one-line error
    predicted = model.predict(x, kinds, host_seconds(rows) if host else None)
    line = np.empty(len(rows))
    for kind in set(kinds):
        mask = np.array(kinds) == kind
        line[mask] = np.exp2(_log_baseline(x[mask], model.roofline[kind]))
    by_operator: dict[str, list[int]] = {}
    for code, within in zip(x[:, FEATURES.index("op_code")].astype(int), np.abs(predicted / truth - 1) <= 0.10):
        counts = by_operator.setdefault(OPS[code] if code < len(OPS) else "other", [0, 0])
        counts[0] += 1
        counts[1] += int(within)
    result = {**accuracy(predicted, truth), "roofline": accuracy(line, truth), "by_operator": by_operator}
    if group is not None:
        result["by_group"] = {}
        for row, within in zip(rows, np.abs(predicted / truth - 1) <= 0.10):
            counts = result["by_group"].setdefault(group(row), [0, 0])
            counts[0] += 1
            counts[1] += int(within)
    return result


def shape_keys(rows: Sequence[Mapping]) -> list[tuple]:
    """Each row's operator shape: the features of its operator whole (its 'none' row), so that
    operators of one shape in several models or layers are held out together, all their slices
    with them. An operator profiled only in slices is a shape of its own."""
    whole = {(r["model"], r["node"]): tuple(float(r[f]) for f in FEATURES) for r in rows if r["dim_code"] == DIM_CODE["none"]}
    return [whole.get((r["model"], r["node"]), (r["model"], r["node"])) for r in rows]


def split_by_shape(rows: Sequence[Mapping], test_fraction: float = 0.2, seed: int = 0):
    """(train, test) rows with `test_fraction` of the operator shapes (shape_keys) in test only."""
    keys = shape_keys(rows)
    distinct = sorted(set(keys), key=repr)
    rng = np.random.default_rng(seed)
    test = {distinct[i] for i in rng.permutation(len(distinct))[: max(1, int(len(distinct) * test_fraction))]}
    return [r for r, k in zip(rows, keys) if k not in test], [r for r, k in zip(rows, keys) if k in test]


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
        if row.get("protocol") == LINK_PROTOCOL:
            by_device[row["device"]].append(row)
    stale = sorted({row["device"] for row in links} - set(by_device))
    if stale:
        log(f"links of {', '.join(stale)} were timed by an older mnova profile (not alone and with all devices at "
            f"once) and are not used: profile the cluster's links again")
    model.links = {device: fit_link(device_rows) for device, device_rows in by_device.items()}
    for device, fit in sorted(model.links.items()):
        log(f"link {device}: send 64 KiB {1e3 * fit.send(2**16):.2f} ms, then {fit.mbit_per_s('send'):.0f} Mbit/s; "
            f"receive 64 KiB {1e3 * fit.receive(2**16):.2f} ms, then {fit.mbit_per_s('receive'):.0f} Mbit/s; "
            f"call {1e3 * fit.call_s:.2f} ms; coordinator per segment {1e3 * fit.segment(2**16):.2f} ms at 64 KiB"
            + (f"; {fit.active} devices at once (alone: send 64 KiB {1e3 * fit.alone.send(2**16):.2f} ms, "
               f"coordinator {1e3 * fit.alone.segment(2**16):.2f} ms)" if fit.alone else ""))
    return model


# --- plan-level estimate ---


def segment_features(graph: OpGraph, seg: Segment, device: int) -> list[list[float]]:
    rows = []
    for name in seg.nodes:
        node = graph.node_by_name[name]
        out_region = seg.node_regions[device][name]
        if seg.dim == "none":
            in_regions = {}
        elif name == seg.nodes[0]:
            in_regions = seg.input_regions[device]
        else:
            in_regions = {t: out_region for t in node.inputs}
        rows.append(slice_features(graph, node, seg.dim, out_region, in_regions))
    return rows


@dataclass(frozen=True)
class PlanEstimate:
    seconds: float
    segment_seconds: tuple[float, ...]
    device_compute_s: tuple[float, ...]
    device_wire_s: tuple[float, ...]


def plan_latency(model: CostModel, graph: OpGraph, plan: Plan, kinds: Sequence[str],
                 coordinator_latency_s: Sequence[float], segs: list[Segment] | None = None,
                 cache: dict | None = None) -> PlanEstimate:
    """Predicted end-to-end latency of `plan` (same rules as runtime.execute): segments one after
    another, each as long as its slowest device's transfers and compute, plus the coordinator's
    own time per segment."""
    segs = segments(graph, plan) if segs is None else segs
    compute, wire = segment_seconds(model, graph, segs, plan.devices, kinds, coordinator_latency_s, cache)
    per_segment = (compute + wire).max(axis=1)
    return PlanEstimate(float(per_segment.sum()), tuple(per_segment), tuple(compute.sum(axis=0)), tuple(wire.sum(axis=0)))


def segment_seconds(model: CostModel, graph: OpGraph, segs: Sequence[Segment], devices: Sequence[str],
                    kinds: Sequence[str], coordinator_latency_s: Sequence[float],
                    cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted (compute, wire) seconds of each segment on each device, shape (len(segs), devices);
    wire holds the transfers, the RPC call and the coordinator's own time around the segment."""
    n = len(devices)
    for name in devices:
        if name not in model.links:
            raise MnovaError(f"the cost model has no link data for device {name}: profile the cluster's links")
    compute_rows, owners = [], []
    for s, seg in enumerate(segs):
        for d in range(n):
            if seg.active(d):
                for feats in segment_features(graph, seg, d):
                    compute_rows.append(feats)
                    owners.append((s, d))
    seconds = _predict_cached(model, compute_rows, [kinds[d] for _, d in owners], cache)
    compute = np.zeros((len(segs), n))
    for (s, d), t in zip(owners, seconds):
        compute[s, d] += t
    wire = np.zeros((len(segs), n))
    links: dict[tuple[str, int], LinkFit] = {}
    for s, seg in enumerate(segs):
        active = sum(seg.active(d) for d in range(n))
        for d in range(n):
            if not seg.active(d):
                continue
            if (devices[d], active) not in links:
                links[devices[d], active] = model.links[devices[d]].for_active(active)
            link = links[devices[d], active]
            returned = [region_bytes(graph, t, r) for t, r in seg.output_regions[d].items()]
            wire[s, d] = (2 * coordinator_latency_s[d] + link.call_s + link.segment(sum(returned))
                          + sum(link.send(region_bytes(graph, t, r)) for t, r in seg.input_regions[d].items())
                          + sum(map(link.receive, returned)))
    return compute, wire


def _for_prediction(booster):
    """One thread: the planner predicts a few hundred rows at a time, where XGBoost's thread pool
    costs 15x the work (15 ms against 1 ms per call here); a 5000-row batch still takes 20 ms."""
    booster.set_param({"nthread": 1})
    return booster


def _predict_cached(model: CostModel, rows: list, kinds: list, cache: dict | None) -> np.ndarray:
    if cache is None:
        return model.predict(np.array(rows), kinds) if rows else np.zeros(0)
    keys = [(k, *r) for k, r in zip(kinds, rows)]
    missing = list(dict.fromkeys(k for k in keys if k not in cache))
    if missing:
        values = model.predict(np.array([k[1:] for k in missing]), [k[0] for k in missing])
        cache.update(zip(missing, values))
    return np.array([cache[k] for k in keys])
