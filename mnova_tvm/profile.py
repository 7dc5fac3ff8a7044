"""Profiling runs: operator slices and links timed on each device kind over TVM RPC.

What is timed is what the partitioner produces: every operator of the given models whole and
sliced along height and channel at several proportions, each built by the runtime's own segment
builder (halos, border padding, sliced weights) and compiled for the device's board; and each
device's link (arrays sent and received at several sizes, and one empty call). Rows append to a
JSON Lines dataset; a rerun skips what is already there, so an interrupted profile resumes, and a
slice whose shape the dataset already holds for the device kind (the same operator and features,
from any model) is not timed again: three in four of the zoo's slices repeat a shape.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import tvm
from tvm import relax

from . import cluster as testbed
from .costmodel import FEATURES, HOST_COLUMNS, LINK_PROTOCOL, slice_features
from .errors import MnovaError, ProfilingInterrupted, StaleDataset, last_line
from .graph import OpGraph, binding_names, dataflow_bindings, from_relax
from .partition import allowed_dims, op_segment, partition_op, split_size
from .runtime import _SegmentBuilder, _tensor_names
from .targets import Cluster, Device

FRACTIONS = (0.25, 0.5, 0.75)
# Sizes a link is timed at: dense where shaped links bend (a token bucket's burst, ~100 KiB).
LINK_SIZES = (256, 16 * 2**10, 64 * 2**10, 128 * 2**10, 256 * 2**10, 2**20, 4 * 2**20)
OP_COLUMNS = ("row", "date", "device_kind", "model", "node", "op", "dim", "units", "total_units", *FEATURES,
              "latency_s", "repeats")  # and "min_repeat_ms", "passes", "statistic", HOST_COLUMNS (absent in older rows)
LINK_COLUMNS = ("row", "date", "device", "device_kind", "kind", "bytes", "seconds")


def device_kind(device: Device) -> str:
    """Devices of one kind run code at the same speed: same board, same CPU quota."""
    return device.board.name if device.cpu_quota is None else f"{device.board.name}@{device.cpu_quota:g}cpu"


@dataclasses.dataclass(frozen=True)
class Timing:
    """How a slice is timed: in each of `passes` passes over a chunk of slices, the median of
    `repeats` runs of at least `min_repeat_ms` each; the slice's latency is the `statistic`
    ("median" or "min") of its passes.

    A shared machine's speed changes for seconds at a time: on this 2-core EPYC VM an AVX2 loop
    timed every 15 ms read 8.7 to 24.6 ms (median 14.1), in runs of dozens of readings, while a
    scalar loop stayed within 3 %: the vector units are shared with other tenants. Readings
    taken within one such spell agree with each other and not with the next spell, so repeats
    back to back add little; passes seconds apart sample different spells. Their median is what
    a second profile reproduces (120 squeezenet1_1 slices, passes ~2.5 s apart: a second
    measurement within ±10 % of the first in 79 % of slices with one pass, 96 % with the median
    of 5, 98 % of 7), their minimum is not (55 % with 5: a fast spell is rare and brief). On an
    Intel Xeon (rocketlake) VM, 300 squeezenet1_1 slices timed again agreed within ±10 % in 91.7 and
    95.7 % (two runs) with the median of 7, where the fastest of 3 had agreed in 43 %
    (benchmarks/costmodel-one-calibration-model.md, costmodel.md, costmodel-timing-3passes.md)."""

    repeats: int
    min_repeat_ms: int
    passes: int = 1
    statistic: str = "median"

    def combine(self, readings: Sequence[float]) -> float:
        return min(readings) if self.statistic == "min" else statistics.median(readings)


FULL_TIMING = Timing(1, 10, passes=7)
# Quick: a few seconds per model; small kernels timed warm over many calls (single cold calls of
# microsecond kernels read ~2x their in-model time).
QUICK_TIMING = Timing(1, 2, passes=3)


def timing_of(row) -> Timing:
    """The timing protocol a dataset row was measured with, to time it again the same way. Rows
    written before the statistic was recorded kept the fastest pass: 3 repeats of 20 ms (in one
    pass, or in the passes given), or quick, 2 repeats of 2 ms."""
    if "statistic" in row:
        return Timing(int(row["repeats"]), int(row["min_repeat_ms"]), int(row["passes"]), row["statistic"])
    if int(row["repeats"]) == 2:
        return Timing(2, 2, statistic="min")
    return Timing(3, 20, passes=int(row.get("passes", 1)), statistic="min")


@dataclasses.dataclass(frozen=True)
class Job:
    node: str
    dim: str
    units: int
    total_units: int


def jobs_for(graph: OpGraph, fractions: Sequence[float] = FRACTIONS) -> list[Job]:
    """Every operator whole, and sliced at `fractions` of its rows / channels where it allows it."""
    jobs = []
    for node in graph.nodes:
        jobs.append(Job(node.name, "none", 1, 1))
        for dim in allowed_dims(graph, node)[1:]:
            total = split_size(graph, node.name, dim)
            shares = {partition_op(graph, node.name, dim, [f, 1 - f]).shares[0] for f in fractions}
            for units in sorted(shares - {0, total}):
                jobs.append(Job(node.name, dim, units, total))
    return jobs


def _part(graph, job: Job):
    if job.dim == "none":
        return partition_op(graph, job.node, "none", [1, 0])
    return partition_op(graph, job.node, job.dim, [job.units, job.total_units - job.units])


# Reference kernels timed right before every reading of a slice, to read the host's speed at that
# moment: a shared machine's slow spells (Timing) last seconds to hours and slow kernels unevenly.
# On this 2-core EPYC VM, 12 kernels read in turn for 10 minutes, each run of 7 passes 3 s apart
# compared with every run 2 minutes or more later: within ±10 % in 71.8 % raw; over the small
# in-cache matmul's reading 84.5 % (the small kernels 88-100 %), over the streaming relu's 92.1 %
# (the large ones 99-100 %). Profiled slices gain less: 1,854 slices timed in two runs 35 minutes
# apart agreed in 66.3 % raw and 71.4 % over the matmul's readings, and 69.8 and 78.1 % once the
# device ran without the CFS quota that throttled it (cluster.CPU_PERIOD_US; not side by side).
# Not the buffers' addresses: 8 allocations of one kernel's buffers timed in turn ran within 2 %
# of each other. Their medians over a slice's passes are kept in its row (HOST_COLUMNS), and the
# cost model takes them as the host's state (costmodel.HOST_COLUMNS).
REFERENCES = dict(zip(HOST_COLUMNS, (((64, 64), lambda x: relax.op.matmul(x, x)), ((64, 112, 112), relax.op.nn.relu))))
REFERENCE_SHARE = 3  # a reference runs for a third of a slice's min_repeat_ms


def _add_references(bb: relax.BlockBuilder) -> None:
    for name, (shape, op) in REFERENCES.items():
        x = relax.Var("x", relax.TensorType(shape, "float32"))
        with bb.function(name, [x]):
            bb.emit_func_output(bb.emit(op(x)))


def build_profile_module(mod: tvm.IRModule, graph: OpGraph, jobs: Sequence[Job]) -> tvm.IRModule:
    """Function `p{i}` runs job i's slice (its first output only: tuples do not time over RPC);
    the REFERENCES read the host's speed."""
    func = mod["main"]
    calls = {name: b.value for name, b in zip(binding_names(func), dataflow_bindings(func))}
    builder = _SegmentBuilder(graph, calls, _tensor_names(func))
    bb = relax.BlockBuilder(tvm.IRModule({gv: f for gv, f in mod.functions.items() if gv.name_hint != "main"}))
    for i, job in enumerate(jobs):
        seg = op_segment(graph, job.node, _part(graph, job), ("p", "rest"))
        seg = dataclasses.replace(seg, outputs=seg.outputs[:1],
                                  output_regions=tuple({k: v for k, v in r.items() if k == seg.outputs[0]}
                                                       for r in seg.output_regions))
        builder.build(bb, seg, 0, f"p{i}")
    _add_references(bb)
    return relax.transform.Normalize()(bb.get())


def job_features(graph: OpGraph, job: Job) -> list[float]:
    seg = op_segment(graph, job.node, _part(graph, job), ("p", "rest"))
    node = graph.node_by_name[job.node]
    in_regions = seg.input_regions[0] if job.dim != "none" else {}
    return slice_features(graph, node, job.dim, seg.node_regions[0][job.node], in_regions)


def slice_key(op: str, features: Sequence[float]) -> tuple:
    """What makes two slices the same to the cost model: the operator and its feature values."""
    return (op, *(float(v) for v in features))


def row_key(row) -> tuple:
    return slice_key(row["op"], [row[f] for f in FEATURES])


def job_key(graph: OpGraph, job: Job) -> tuple:
    return slice_key(graph.node_by_name[job.node].op, job_features(graph, job))


def _dataset_lines(path: Path):
    """(line number, row) of each row of a dataset file, checked to be JSON with a row type."""
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise MnovaError(f"dataset {path} line {number} is not JSON: is this a profiling dataset?") from None
        if not isinstance(row, dict) or row.get("row") not in ("op", "link"):
            raise MnovaError(f"dataset {path} line {number} has no row type ('op' or 'link')")
        yield number, row


def read_dataset(path) -> tuple[list[dict], list[dict]]:
    """(operator rows, link rows) of a dataset file; a missing file is empty."""
    path = Path(path)
    if not path.exists():
        return [], []
    ops, links = [], []
    for number, row in _dataset_lines(path):
        columns = OP_COLUMNS if row["row"] == "op" else LINK_COLUMNS
        missing = [c for c in columns if c not in row]
        if missing and set(missing) <= set(FEATURES):
            raise StaleDataset(f"dataset {path} was profiled by an older mnova-tvm: its rows lack the feature columns "
                               f"{', '.join(missing)}; compute them with mnova refeature {path}")
        if missing:
            raise MnovaError(f"dataset {path} line {number} lacks columns {', '.join(missing)}")
        (ops if row["row"] == "op" else links).append(row)
    return ops, links


def dataset_models(path) -> list[str]:
    """The models a dataset file's operator rows were profiled from, whatever its version."""
    return sorted({row["model"] for _, row in _dataset_lines(Path(path)) if row["row"] == "op"})


# Columns of an operator row the features are made from, whatever their version: recomputed
# features must give them back, or the graph is not the one profiled.
_SHAPE_COLUMNS = ("out_c", "out_h", "out_w")


def refeature_row(row: dict, graph: OpGraph) -> dict | None:
    """Operator row `row` with the FEATURES of this version of mnova-tvm, computed again from the
    graph of its model; None if the partitioner no longer makes its slice (a dimension it no
    longer cuts the operator along)."""
    node = graph.node_by_name.get(row["node"])
    if node is None or node.op != row["op"]:
        raise MnovaError(f"dataset rows of model {row['model']} do not match its graph (node {row['node']} is not "
                         f"a {row['op']} there): was it profiled with another --input-size or ONNX file?")
    if row["dim"] != "none" and row["dim"] not in allowed_dims(graph, node):
        return None
    features = dict(zip(FEATURES, job_features(graph, Job(row["node"], row["dim"], row["units"], row["total_units"]))))
    if any(column in row and float(row[column]) != features[column] for column in _SHAPE_COLUMNS):
        raise MnovaError(f"dataset rows of model {row['model']} do not match its graph (node {row['node']} has "
                         f"another shape there): was it profiled with another --input-size or ONNX file?")
    return {**row, **features}


def profiled_graph(mod: tvm.IRModule, name: str) -> OpGraph:
    """The graph whose slices profile_cluster times and describes (the prepared module's)."""
    from .runtime import prepare

    return from_relax(prepare(mod), name)


def refeature_dataset(path, modules: dict[str, tvm.IRModule]) -> tuple[int, int]:
    """Rewrite a dataset file with its operator rows' features computed again (refeature_row)
    from the graphs profile_cluster makes of `modules` (by model name), rows in their order,
    links unchanged. Returns (rows rewritten, rows dropped). Nothing is written unless every
    row's model is in `modules` and matches it."""
    from .commands._io import atomic_path

    path = Path(path)
    lines = [row for _, row in _dataset_lines(path)]
    names = {row["model"] for row in lines if row["row"] == "op"}
    if names - set(modules):
        raise MnovaError(f"dataset {path} has rows of models {', '.join(sorted(names - set(modules)))} as well: compute "
                         f"its features again with mnova refeature {path} (--models for ONNX files)")
    graphs = {name: profiled_graph(modules[name], name) for name in names}
    rows = [row if row["row"] == "link" else refeature_row(row, graphs[row["model"]]) for row in lines]
    with atomic_path(path) as tmp:
        tmp.write_text("".join(json.dumps(row) + "\n" for row in rows if row is not None))
    return sum(row is not None and row["row"] == "op" for row in rows), sum(row is None for row in rows)


# Rounds of a slice agree when their extremes are within ±10 % of each other (the cost model's own
# yardstick); `--tiebreak` times a slice whose rounds do not once more, and the median settles it.
ROUNDS_AGREE = 0.1


def _wants_round(latencies: Sequence[float], rounds: int, tiebreak: bool) -> bool:
    if len(latencies) < rounds:
        return True
    return tiebreak and len(latencies) == rounds >= 2 and max(latencies) > (1 + ROUNDS_AGREE) * min(latencies)


def _settled(latencies: Sequence[float]) -> bool:
    """Whether a majority of a slice's rounds (two or more) agree within ±10 %: then its median lies
    among them (two that agree, or a tiebreak round that sides with one), a latency the host reproduced."""
    ordered = sorted(latencies)
    majority = len(ordered) // 2 + 1
    return len(ordered) >= 2 and any(ordered[i + majority - 1] <= (1 + ROUNDS_AGREE) * ordered[i]
                                     for i in range(len(ordered) - majority + 1))


def merge_rounds(rows: Sequence[dict]) -> list[dict]:
    """One row per slice and device kind, the median latency of its rounds ("rounds": how many;
    "spread": the slowest over the fastest; "settled": _settled), and the median of their reference readings
    (HOST_COLUMNS) if every round has them.

    A round is one `mnova profile` run; `--rounds 2` hours later times every slice again. Within
    a run the passes of a slice are seconds apart (Timing); the host's speed also drifts over
    hours and days, which they cannot sample."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault((row["device_kind"], row_key(row)), []).append(row)
    merged = []
    for group in groups.values():
        latencies = [float(r["latency_s"]) for r in group]
        host = {name: statistics.median([float(r[name]) for r in group]) for name in HOST_COLUMNS
                if all(name in r for r in group)}
        first = {k: v for k, v in group[0].items() if k not in HOST_COLUMNS}
        merged.append({**first, "latency_s": statistics.median(latencies), "rounds": len(group),
                       "spread": max(latencies) / min(latencies), "settled": _settled(latencies), **host})
    return merged


def _append(path: Path, rows: Iterable[dict]) -> None:
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def _empty_pool(session) -> None:
    """Return the device's VM memory pool to the system. The pooled allocator is one per server
    process and keeps every buffer it ever freed: without this, a long profile grows until the
    device's memory limit kills it."""
    session.get_function("vm.builtin.memory_manager.clear")()


def _median_seconds(vm, dev, fname: str, args, repeat: int, min_repeat_ms: int) -> float:
    timer = vm.time_evaluator(fname, dev, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
    return float(statistics.median(timer(*args).results))


def profile_devices(state: testbed.ClusterState, devices: Sequence[Device], mod: tvm.IRModule, graph: OpGraph,
                    model: str, dataset: Path, workdir: Path, timing: Timing = FULL_TIMING, deadline: float | None = None,
                    jobs: Sequence[Job] | None = None, rounds: int = 1, tiebreak: bool = False, log=print) -> int:
    """Time every job of `model` (or of `jobs`) whose slice the dataset holds fewer than `rounds`
    timings of on each of `devices` (with `tiebreak`, also those whose rounds disagree: one more),
    once per run, one device per device kind, all of one board; returns rows written.

    Compiling the slices takes far longer than timing them, and devices of one board run the same
    code, so each chunk of slices is compiled once and timed on every device that lacks it."""
    from .compile import build_for_board, relax_pipeline

    boards = {d.board.name for d in devices}
    if len(boards) != 1:
        raise ValueError(f"profile_devices needs devices of one board, got {sorted(boards)}")
    board = devices[0].board
    jobs = list(jobs_for(graph) if jobs is None else jobs)
    profiled = read_dataset(dataset)[0]
    limits = {d.name: d.memory_limit_bytes for d in state.devices}
    keys = {job: job_key(graph, job) for job in jobs}
    pending: dict[str, set[Job]] = {}
    for device in devices:
        kind = device_kind(device)
        timings: dict[tuple, list[float]] = {}
        for r in profiled:
            if r["device_kind"] == kind:
                timings.setdefault(row_key(r), []).append(float(r["latency_s"]))
        pending[kind], seen = set(), set()
        for job in jobs:  # the first job of each shape the dataset lacks a round of
            if keys[job] not in seen and _wants_round(timings.get(keys[job], []), rounds, tiebreak):
                pending[kind].add(job)
            seen.add(keys[job])  # a round is a run: one timing per run
        repeated = len(jobs) - len(pending[kind])
        if repeated and pending[kind]:
            held = "already" if rounds == 1 and not tiebreak else \
                f"{rounds} timings of{' that agree' if tiebreak else ''}"
            log(f"[{kind}] {model}: {repeated} of {len(jobs)} slices have a shape the dataset holds {held}")
        too_large = {j for j in pending[kind] if not _loads_within(graph, j, limits.get(device.name))}
        if too_large:  # the device could not hold these slices in any plan either
            log(f"[{kind}] {model}: {len(too_large)} slices skipped, their weights do not load within "
                f"{device.name}'s memory limit ({limits[device.name] / 2**20:.0f} MiB)")
            pending[kind] -= too_large
        elif not pending[kind]:
            log(f"[{kind}] {model}: already profiled")
    todo = [j for j in jobs if any(j in p for p in pending.values())]
    sessions: dict[str, object] = {}  # one per device: a server serves one session at a time
    timed = {kind: 0 for kind in pending}
    written, started = 0, time.monotonic()
    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    for number, chunk in enumerate(_chunks(graph, todo)):
        module = build_profile_module(mod, graph, chunk)
        lib = workdir / f"profile-{model}-{board.name}-{number}.so"
        weights: dict = {}  # lifted out of the library: each job's are uploaded only while it is timed
        build_for_board(module, board, lib, relax_pipeline(order=None, plan_memory="tvm", board=board, weights=weights))
        try:
            for device in devices:
                kind = device_kind(device)
                indexed = [(i, job) for i, job in enumerate(chunk) if job in pending[kind]]
                if not indexed:
                    continue
                if kind not in sessions:
                    sessions[kind] = testbed.connect(state, device.name)
                rows = _time_slices(sessions[kind], device, module, lib, indexed, weights, graph, model, date, timing,
                                    deadline, dataset)
                written += len(rows)
                timed[kind] += len(rows)
                log(f"[{kind}] {model}: {timed[kind]}/{len(pending[kind])} slices ({time.monotonic() - started:.0f} s)")
                if len(rows) < len(indexed):
                    log(f"[{kind}] {model}: time budget reached after {timed[kind]} of {len(pending[kind])} slices "
                        f"(rerun to resume)")
                    return written
        finally:
            lib.unlink(missing_ok=True)
    return written


def _loads_within(graph: OpGraph, job: Job, limit_bytes: int | None) -> bool:
    """Whether a device with this memory limit can be sent `job`'s weights (uploaded tensor by
    tensor, each held about twice while in flight) and hold its input and output."""
    from .partition import sliced_weight_bytes

    if limit_bytes is None:
        return True
    node = graph.node_by_name[job.node]
    weights = sliced_weight_bytes(graph, node, job.dim, 0, job.units)
    data = sum(graph.tensors[t].nbytes for t in (*node.inputs, *node.outputs) if graph.tensors[t].kind != "weight")
    return _IN_FLIGHT_COPIES * weights + data * job.units // job.total_units + _IDLE_SERVER_BYTES <= limit_bytes


def _time_slices(session, device: Device, module: tvm.IRModule, lib: Path, indexed, weights: dict, graph: OpGraph,
                 model: str, date: str, timing: Timing, deadline: float | None, dataset: Path) -> list[dict]:
    """Time functions `p{i}` of `lib` (compiled from `module`) on `device` for the (i, job) pairs
    in `indexed`, until the deadline; the rows are appended to `dataset` and returned.

    The jobs are taken in windows of about WINDOW_S seconds, each window timed in all of
    `timing.passes` passes before the next, so a job's passes are seconds apart (in different
    spells of the machine's speed) and the deadline stops between windows. Each job's arguments
    and weights are uploaded anew in each pass, so the device holds one job's at a time. Right
    before each reading the REFERENCES are read; a row keeps their medians over its passes."""
    kind = device_kind(device)
    dev = session.cpu()
    readings: dict[int, list[tuple[float, ...]]] = {}  # per pass: the slice's, then each reference's
    timed: list[dict] = []
    reference_ms = max(1, timing.min_repeat_ms // REFERENCE_SHARE)
    reference_args = {name: [tvm.runtime.tensor(np.random.default_rng(0).standard_normal(shape).astype("float32"), dev)]
                      for name, (shape, _) in REFERENCES.items()}

    def reading(i: int) -> tuple[float, ...]:
        rng = np.random.default_rng(i)
        args = [tvm.runtime.tensor(rng.standard_normal([int(v) for v in p.ty.shape.values]).astype(str(p.ty.dtype)), dev)
                for p in module[f"p{i}"].params]
        args += [tvm.runtime.tensor(w, dev) for w in weights.get(f"p{i}", ())]
        host = [_median_seconds(vm, dev, name, reference_args[name], 1, reference_ms) for name in REFERENCES]
        return (_median_seconds(vm, dev, f"p{i}", args, timing.repeats, timing.min_repeat_ms), *host)

    def record(window) -> None:
        rows = [{"row": "op", "date": date, "device_kind": kind, "model": model, "node": job.node,
                 "op": graph.node_by_name[job.node].op, "dim": job.dim, "units": job.units,
                 "total_units": job.total_units, **dict(zip(FEATURES, job_features(graph, job))),
                 "latency_s": timing.combine([r[0] for r in readings[i]]), "repeats": timing.repeats,
                 "min_repeat_ms": timing.min_repeat_ms, "passes": timing.passes, "statistic": timing.statistic,
                 **{name: statistics.median([r[k] for r in readings[i]]) for k, name in enumerate(REFERENCES, 1)}}
                for i, job in window if len(readings.get(i, ())) == timing.passes]
        _append(dataset, rows)  # window by window: an interrupted profile resumes after the last
        timed.extend(rows)

    vm = None
    pending = list(indexed)
    try:
        session.upload(str(lib))
        vm = relax.VirtualMachine(session.load_module(lib.name), dev)
        while pending and (deadline is None or time.monotonic() < deadline):
            window, started = [], time.monotonic()
            while pending and (not window or time.monotonic() - started < WINDOW_S):
                i, job = pending.pop(0)
                readings[i] = [reading(i)]
                window.append((i, job))
            for _ in range(timing.passes - 1):
                for i, _job in window:
                    readings[i].append(reading(i))
            record(window)
    except MnovaError:
        raise
    except Exception as err:
        raise ProfilingInterrupted(f"device {device.name} stopped answering while profiling {model} "
                                   f"({last_line(err)}); its memory limit or a crash? see its log, "
                                   f"restart the cluster and rerun to resume") from None
    finally:
        vm = None  # releases the library on the device before the next one is loaded
    _empty_pool(session)
    return timed


# Seconds of a window's first pass (see _time_slices): passes this far apart fall in different
# spells of a shared machine's speed (Timing).
WINDOW_S = 3.0


# Bytes one profiling library may hold on a device: its constants plus the outputs of its jobs
# (the VM's pooled allocator keeps every job's buffers until the pool is emptied), so a device
# with a tight memory limit is not OOM-killed while profiling a large model.
CHUNK_BYTES = 48 * 2**20


def _chunks(graph: OpGraph, jobs: Sequence[Job]) -> list[list[Job]]:
    from .partition import sliced_weight_bytes

    chunks, current, size = [], [], 0
    for job in jobs:
        node = graph.node_by_name[job.node]
        outputs = sum(graph.tensors[t].nbytes for t in node.outputs) * job.units // max(1, job.total_units)
        weight = sliced_weight_bytes(graph, node, job.dim, 0, job.units) + outputs
        if current and (size + weight > CHUNK_BYTES or len(current) >= 400):
            chunks.append(current)
            current, size = [], 0
        current.append(job)
        size += weight
    if current:
        chunks.append(current)
    return chunks


def _ping_vm(state: testbed.ClusterState, device: Device, workdir: Path):
    """A library with one tiny function, loaded on `device`: its call is the RPC overhead alone."""
    from .compile import build_for_board, relax_pipeline

    session = testbed.connect(state, device.name)
    x = relax.Var("x", relax.TensorType((1,), "float32"))
    bb = relax.BlockBuilder()
    with bb.function("ping", [x]):
        bb.emit_func_output(bb.emit(relax.op.add(x, x)))
    lib = Path(workdir) / f"ping-{device.name}.so"
    build_for_board(bb.get(), device.board, lib, relax_pipeline(order=None, plan_memory="tvm", fuse=False, board=device.board))
    session.upload(str(lib))
    dev = session.cpu()
    return relax.VirtualMachine(session.load_module(lib.name), dev), dev


def profile_links(state: testbed.ClusterState, devices: Sequence[Device], dataset: Path, repeat: int = 5) -> int:
    """Time every device's link as runtime.execute uses them in a segment: a thread per active
    device sending an array, making an empty call and receiving the array, then the coordinator
    joining the threads and the arrays. Each device alone, then (with more than one) all devices
    at once: a segment's devices contend for the coordinator. Rows per device and count of active
    devices ("active"): 'send', 'call', 'receive', and 'segment' (the coordinator's time beyond the
    slowest device: threads, assembling outputs).

    On pair2 a 64 KiB send took 1.35 ms alone and 1.81 ms beside the other device's, and a height
    plan's coordinator spent ~0.46 ms between segments; with demo4's links timed only with all four
    devices at once, `mnova demo`'s pipeline of one-device segments was predicted at 66.6 ms against
    53.5 measured (54.5 against 53.9 with the alone timings)."""
    import tempfile

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        vms = [_ping_vm(state, device, Path(tmp)) for device in devices]
    ones = [tvm.runtime.tensor(np.zeros(1, "float32"), dev) for _, dev in vms]
    for (vm, _), one in zip(vms, ones):
        vm["ping"](one)

    def one_device(d: int, array: np.ndarray, out: dict):
        try:
            (vm, dev), t0 = vms[d], time.perf_counter()
            remote = tvm.runtime.tensor(array, dev)
            t1 = time.perf_counter()
            vm["ping"](ones[d])
            t2 = time.perf_counter()
            out[d] = (remote.numpy(), (t0, t1, t2, time.perf_counter()))
        except BaseException as err:  # raised by the coordinator, naming the device
            out[d] = err

    groups = [[d] for d in range(len(devices))] + ([list(range(len(devices)))] if len(devices) > 1 else [])
    for group in groups:
        for size in LINK_SIZES:
            array = np.zeros(size // 4, "float32")
            for _ in range(repeat):
                out: dict = {}
                started = time.perf_counter()
                threads = [threading.Thread(target=one_device, args=(d, array, out)) for d in group]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
                for d in group:
                    if isinstance(out[d], BaseException):
                        raise MnovaError(f"{devices[d].name} failed while its link was timed: {last_line(out[d])}; "
                                         f"check that it is up (mnova cluster status)")
                np.concatenate([out[d][0] for d in group])
                segment_s = time.perf_counter() - started - max(t3 - t0 for _, (t0, _, _, t3) in out.values())
                for d in group:
                    t0, t1, t2, t3 = out[d][1]
                    rows += [dict(device=devices[d].name, device_kind=device_kind(devices[d]), active=len(group), **r)
                             for r in ({"kind": "send", "bytes": size, "seconds": t1 - t0},
                                       {"kind": "call", "bytes": 0, "seconds": t2 - t1},
                                       {"kind": "receive", "bytes": size, "seconds": t3 - t2},
                                       {"kind": "segment", "bytes": size, "seconds": segment_s})]
    _append(dataset, [{"row": "link", "date": date, "protocol": LINK_PROTOCOL, **r} for r in rows])
    return len(rows)


def profile_cluster(cluster: Cluster, state: testbed.ClusterState, models: Sequence[tuple[str, tvm.IRModule]],
                    dataset: Path, workdir: Path, budget_s: float | None = None, links: bool = True,
                    quick: bool = False, rounds: int = 1, tiebreak: bool = False, log=print) -> int:
    """Profile each device kind of `cluster` once (on its first device) on `models`, then every link.

    `quick` times each slice in 3 passes of at least 2 ms (QUICK_TIMING: several times faster, noisier);
    `rounds`: time again the slices the dataset holds fewer timings of (merge_rounds); `tiebreak`:
    and once more those whose `rounds` timings disagree."""
    from .runtime import prepare

    dataset = Path(dataset)
    dataset.parent.mkdir(parents=True, exist_ok=True)
    deadline = None if budget_s is None else time.monotonic() + budget_s
    kinds: dict[str, Device] = {}
    for device in cluster.devices:
        kinds.setdefault(device_kind(device), device)
    boards: dict[str, list[Device]] = {}  # one device of each kind, by board: a board's code is compiled once
    for device in kinds.values():
        boards.setdefault(device.board.name, []).append(device)
    written = 0
    if links:
        written += profile_links(state, cluster.devices, dataset)
        log(f"links: {len(cluster.devices)} devices measured")
    for name, mod in models:
        mod = prepare(mod)
        graph = profiled_graph(mod, name)
        for devices in boards.values():
            written += profile_devices(state, devices, mod, graph, name, dataset, workdir,
                                       QUICK_TIMING if quick else FULL_TIMING, deadline=deadline, rounds=rounds,
                                       tiebreak=tiebreak,
                                       log=log)
    return written


def cost_model_for(cluster: Cluster, state: testbed.ClusterState, models: Sequence[tuple[str, tvm.IRModule]],
                   path: Path, workdir: Path, given: bool = False, log=print):
    """The cost model for planning `models` on `cluster`.

    A `given` model file is used as it is if it knows every device kind and link of the cluster.
    Otherwise the dataset beside `path` is completed by a quick profile of whatever of `models`
    and of the links it lacks (resumable: nothing is timed twice) and the model refitted."""
    from .costmodel import CostModel, train

    path = Path(path)
    kinds = {device_kind(d) for d in cluster.devices}
    if given and path.exists():
        model = CostModel.load(path)
        if kinds <= set(model.kinds) and {d.name for d in cluster.devices} <= set(model.links):
            return model
        log(f"cost model {path} lacks some device kinds or links of {cluster.name}: profiling")
    dataset = path.with_suffix(".jsonl")
    try:
        _, links = read_dataset(dataset)
    except StaleDataset:
        rewritten, _ = refeature_dataset(dataset, dict(models))
        log(f"{dataset}: features of {rewritten} rows computed again by this version of mnova-tvm")
        _, links = read_dataset(dataset)
    need_links = not {d.name for d in cluster.devices} <= {r["device"] for r in links if r.get("protocol") == LINK_PROTOCOL}
    profile_cluster(cluster, state, models, dataset, workdir, links=need_links, quick=True, log=log)
    rows, links = read_dataset(dataset)
    rows = merge_rounds(rows)
    try:
        model = CostModel.load(path) if path.exists() else None
    except MnovaError as err:  # a cached model of another version: the dataset is still good
        log(f"{err}: refitting")
        model = None
    if model is None or refit_needed(model, len(rows)):
        model = train(rows, links, log=log)
    name, mod = models[0]
    calibrate(model, cluster, state, mod, name, workdir, log)
    model.save(path)
    log(f"cost model written to {path}")
    return model


def refit_needed(model, rows: int) -> bool:
    """Whether a cached cost model is to be fitted again: fitted on another number of rows than
    the dataset's, or with other hyperparameters than this version of mnova-tvm fits with."""
    from .costmodel import CostModel

    return model.metadata.get("rows") != rows or model.metadata.get("hyperparameters") != CostModel().hyperparameters()


# Loading a plan's weights (uploaded tensor by tensor, runtime.RemoteRunner) holds the largest one
# about twice more while it is in flight, on top of a server with its library loaded: measured on
# local4's mid, 166 MiB idle and 39 MiB more once a session has loaded a library (vgg16's fc6 half
# slice, 196 MiB, was OOM-killed under a 592 MiB limit the old 160 MiB allowance said it fitted).
_IN_FLIGHT_COPIES = 2
_IDLE_SERVER_BYTES = 208 * 2**20


# Calibration: whole-model runs spread over a few seconds (see _spread_median_seconds).
CALIBRATION_RUNS = 15
CALIBRATION_GAP_S = 0.3


def _spread_median_seconds(vm, dev, fname: str, args, samples: int, gap_s: float) -> float:
    """Median of `samples` single runs `gap_s` apart: on a machine whose speed changes for seconds
    at a time, the typical speed rather than that of the moment (squeezenet1_1's calibration run
    read 16.6 ms in one bench run and 13.2 ms in the next, scaling every prediction by 0.79)."""
    timer = vm.time_evaluator(fname, dev, number=1, repeat=1)
    timer(*args)  # warm-up
    readings = []
    for _ in range(samples):
        readings.append(float(timer(*args).results[0]))
        time.sleep(gap_s)
    return statistics.median(readings)


def calibrate(model, cluster: Cluster, state: testbed.ClusterState, mod: tvm.IRModule, name: str, workdir: Path,
              log=print, samples: int = CALIBRATION_RUNS, gap_s: float = CALIBRATION_GAP_S) -> None:
    """Set each device kind's calibration factor from whole-model runs of `mod` (calibration_factors)."""
    model.calibration.update(calibration_factors(model, cluster, state, mod, name, workdir, log, samples, gap_s))


def calibration_factors(model, cluster: Cluster, state: testbed.ClusterState, mod: tvm.IRModule, name: str,
                        workdir: Path, log=print, samples: int = CALIBRATION_RUNS,
                        gap_s: float = CALIBRATION_GAP_S) -> dict[str, float]:
    """Per device kind, whole-model runs of `mod` on one device of that kind, spread over a few
    seconds: their median over the sum of the operators' uncalibrated predictions. A kind whose
    device cannot load the whole model has no factor."""
    from .costmodel import plan_latency
    from .partition import device_memory, single_device_plan
    from .runtime import RemoteRunner, compile_plan, prepare

    mod = prepare(mod)
    graph = from_relax(mod, name)
    uncalibrated = dataclasses.replace(model, calibration={})
    kinds: dict[str, int] = {}
    for index, device in enumerate(cluster.devices):
        kinds.setdefault(device_kind(device), index)
    names = [d.name for d in cluster.devices]
    all_kinds = [device_kind(d) for d in cluster.devices]
    limits = {d.name: d.memory_limit_bytes for d in state.devices}
    factors = {}
    for kind, index in kinds.items():
        device = cluster.devices[index]
        plan = single_device_plan(graph, names, index)
        limit = limits.get(device.name)
        largest = max((t.nbytes for t in graph.tensors.values() if t.kind == "weight"), default=0)
        if limit is not None and _IN_FLIGHT_COPIES * largest + device_memory(graph, plan)[index] + _IDLE_SERVER_BYTES > limit:
            log(f"calibration {kind}: skipped, the whole {name} does not load within {device.name}'s memory limit "
                f"({limit / 2**20:.0f} MiB)")
            continue
        _, segs, paths = compile_plan(mod, plan, [d.board for d in cluster.devices], workdir / f"calibrate-{index}", graph)
        try:
            session = testbed.connect(state, device.name)
            runner = RemoteRunner(device.name, session)
            runner.load(paths[index])
            args = [runner.upload(np.random.default_rng(0).standard_normal(graph.tensors[t].shape).astype(graph.tensors[t].dtype))
                    for t in segs[0].inputs]
            measured = _spread_median_seconds(runner.vm, runner.device, "seg0", args + runner.weights.get("seg0", []),
                                              samples, gap_s)
            runner = args = None
            _empty_pool(session)  # the plans run next start from an empty pool
        except MnovaError:
            raise
        except Exception as err:
            raise MnovaError(f"device {device.name} stopped answering while running the whole {name} to calibrate "
                             f"({last_line(err)}); its memory limit? restart the cluster, or give the device more memory") from None
        predicted = plan_latency(uncalibrated, graph, plan, all_kinds, [0.0] * len(names), segs).device_compute_s[index]
        factors[kind] = measured / predicted
        log(f"calibration {kind}: whole {name} {1e3 * measured:.1f} ms, operators predicted {1e3 * predicted:.1f} ms "
            f"(factor {measured / predicted:.2f})")
    return factors
