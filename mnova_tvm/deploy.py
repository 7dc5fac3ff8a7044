"""Deploy a plan on a cluster over TVM RPC, run it, check it against one device, and measure.

This is the edge of the executor that touches real servers: compile every device's part for its
board, upload it through the tracker, run `repeat` inferences through the coordinator (after one
warm-up), and read back what each device did: compute and wire time, bytes moved, and the peak
memory its server reached (cgroup, on the emulated testbed).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import tvm

from . import cluster as testbed
from . import frontend
from .errors import MnovaError, last_line
from .graph import OpGraph
from .partition import Plan, device_memory
from .runtime import Event, RemoteRunner, compile_plan, execute
from .targets import Cluster

# Outputs equal up to float32 rounding: |out - ref| <= RTOL |ref| + ATOL + SCALED_ATOL max |ref|. The
# device build folds batch norm into the convolutions and fuses multiply-adds, TVM's default build
# does neither: they round apart by ~5e-7 of the output's largest magnitude (resnet18, mobilenet_v2),
# which an element-wise tolerance alone fails on the elements near zero.
RTOL, ATOL, SCALED_ATOL = 1e-5, 1e-6, 1e-5


@dataclass
class DeviceReport:
    name: str
    board: str
    segments: int
    compute_ms: float  # median per inference (RPC call included)
    wire_ms: float  # median per inference: sending inputs + receiving outputs
    sent_bytes: int
    received_bytes: int
    planned_bytes: int  # weights of its slices + activation footprint (partition.device_memory)
    budget_bytes: int
    idle_bytes: int | None  # server memory before the plan was loaded
    peak_bytes: int | None  # highest server memory during the runs


@dataclass
class RunReport:
    model: str
    cluster: str
    emulated: bool
    latencies_ms: list[float]
    max_abs_diff: float
    matches: bool
    reference_ms: float  # single-device TVM on this machine (the reference run)
    devices: list[DeviceReport] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)  # of the median run
    outputs: list[np.ndarray] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    def to_json(self) -> dict:
        return {
            "model": self.model, "cluster": self.cluster, "emulated": self.emulated,
            "median_ms": self.median_ms, "latencies_ms": self.latencies_ms,
            "output_check": {"matches": self.matches, "max_abs_diff": self.max_abs_diff, "rtol": RTOL, "atol": ATOL,
                             "atol_of_max": SCALED_ATOL},
            "reference_single_device_ms": self.reference_ms,
            "devices": [vars(d) for d in self.devices],
            "timeline": [vars(e) for e in self.events],
        }


def reference_outputs(mod: tvm.IRModule, inputs: list[np.ndarray], repeat: int = 1) -> tuple[list[np.ndarray], float]:
    """Single-device TVM outputs and median latency (ms) on this machine."""
    import time

    executable = frontend.compile_module(mod)
    outputs, seconds = None, []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        outputs = frontend.run(executable, inputs)
        seconds.append(time.perf_counter() - t0)
    return outputs, 1e3 * statistics.median(seconds)


def compare(outputs: list[np.ndarray], reference: list[np.ndarray]) -> tuple[bool, float]:
    """(equal up to float32 rounding, max |difference|); outputs of another shape are not equal."""
    if len(outputs) != len(reference) or any(a.shape != b.shape for a, b in zip(outputs, reference)):
        return False, float("inf")
    diff = max(float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0 for a, b in zip(outputs, reference))
    ok = all(np.allclose(a, b, rtol=RTOL, atol=ATOL + SCALED_ATOL * float(np.abs(b).max(initial=0)))
             for a, b in zip(outputs, reference))
    return ok, diff


def coordinator_latencies(cluster: Cluster, state: testbed.ClusterState | None) -> list[float]:
    """Seconds the coordinator adds per transfer to each device: the link latency on an emulated
    device whose kernel cannot delay packets (no netem), else 0."""
    if state is None:
        return [d.link.latency_ms / 1e3 if cluster.emulate else 0.0 for d in cluster.devices]
    out = []
    for device in cluster.devices:
        running = state.device(device.name)
        out.append(0.0 if running.kernel_latency or not state.emulated else device.link.latency_ms / 1e3)
    return out


def run_plan(mod: tvm.IRModule, graph: OpGraph, plan: Plan, cluster: Cluster, state: testbed.ClusterState,
             inputs: list[np.ndarray], workdir: Path, model: str, repeat: int = 5, timeout_s: float = 300.0,
             log=print, gap_s: float = 0.0) -> RunReport:
    """Compile, deploy and run `plan` on the running `cluster`; `mod` is the prepared module.
    `gap_s` seconds apart, the timed runs sample a shared machine's slow and fast spells alike
    (profile.Timing) instead of all falling in one."""
    if repeat < 1:
        raise MnovaError(f"--repeat must be at least 1, got {repeat}")
    devices = [cluster.device(name) for name in plan.devices]
    graph, segs, paths = compile_plan(mod, plan, [d.board for d in devices], workdir, graph, log)
    runners: list = []
    idle: dict[str, int | None] = {}
    latencies = dict(zip((d.name for d in cluster.devices), coordinator_latencies(cluster, state)))
    for device, path in zip(devices, paths):
        if path is None:
            runners.append(None)
            continue
        runner = RemoteRunner(device.name, testbed.connect(state, device.name), latencies[device.name])
        testbed.reset_peak_memory(state, device.name)
        idle[device.name] = testbed.device_memory_usage(state, device.name)
        try:
            runner.load(path)
        except Exception as err:
            raise MnovaError(f"device {device.name} could not load its library: {last_line(err)}") from None
        runners.append(runner)
    names = list(plan.devices)
    log(f"running {model} on {len(runners) - runners.count(None)} of {len(devices)} devices "
        f"({len(segs)} segments), 1 warm-up + {repeat} runs")
    execute(graph, plan, segs, runners, inputs, names, timeout_s)
    runs = []
    for _ in range(repeat):
        time.sleep(gap_s)
        runs.append(execute(graph, plan, segs, runners, inputs, names, timeout_s))
    reference, reference_ms = reference_outputs(mod, inputs, repeat=3)
    ok, diff = compare(runs[-1].outputs, reference)
    median_run = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    planned = device_memory(graph, plan, segs)
    reports = []
    for d, device in enumerate(devices):
        active = runners[d] is not None
        reports.append(DeviceReport(
            device.name, device.board.name, sum(seg.active(d) for seg in segs),
            1e3 * statistics.median(r.devices[d].compute_s for r in runs),
            1e3 * statistics.median(r.devices[d].send_s + r.devices[d].receive_s for r in runs),
            runs[-1].devices[d].sent_bytes, runs[-1].devices[d].received_bytes,
            planned[d], device.memory_budget_bytes,
            idle.get(device.name), testbed.device_peak_memory(state, device.name) if active else None))
    return RunReport(model, cluster.name, state.emulated, [1e3 * r.seconds for r in runs], diff, ok,
                     reference_ms, reports, median_run.events, runs[-1].outputs)
