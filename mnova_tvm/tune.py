"""MetaSchedule tuning per board, starting from the default schedules (kernels.py).

A board's kernels are the PrimFuncs of its modules once fused and legalized, the same passes
compilation runs (transform.kernel_module), so records match at compile time. Each kernel is
first measured with its default schedule, then with the same rules under every other setting of
their knobs that schedules it differently (kernels.knob_space: vector width and axis, registers,
loop order); MetaSchedule's evolutionary search adds its own candidates with the trials left.
Compilation and profiling apply the best record of each kernel (lowering_pipeline's `database`),
so a tuned kernel is never one measured slower than its default. The database is a folder per
board (MetaSchedule's JSON files), so tuning is resumable: a kernel that already has its trials
is skipped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import tvm
import tvm_ffi

from .errors import MnovaError, last_line
from .targets import Board

_ACTIVE_ROOT: Path | None = None  # the tuning folder compilation reads (see `tuned`)


@contextlib.contextmanager
def tuned(root) -> Iterator[None]:
    """Compile and profile with the tuning databases under `root` (one folder per board)."""
    global _ACTIVE_ROOT
    if root is not None and not Path(root).is_dir():
        raise MnovaError(f"tuning folder {root} does not exist; create it with mnova tune --database {root}")
    previous, _ACTIVE_ROOT = _ACTIVE_ROOT, None if root is None else Path(root)
    try:
        yield
    finally:
        _ACTIVE_ROOT = previous


def database_dir(root, board: Board) -> Path:
    return Path(root) / board.name


def open_database(folder: Path):
    from tvm.s_tir import meta_schedule as ms

    folder.mkdir(parents=True, exist_ok=True)
    try:
        return ms.database.JSONDatabase(work_dir=str(folder))
    except Exception as err:  # a hand-edited or truncated file
        raise MnovaError(f"tuning database {folder} cannot be read ({str(err).splitlines()[0]}); "
                         f"move it away and tune again") from None


def database_for(board: Board):
    """The database in use for `board`, or None (no `tuned` folder, or nothing tuned for it)."""
    if _ACTIVE_ROOT is None:
        return None
    folder = database_dir(_ACTIVE_ROOT, board)
    if not (folder / "database_tuning_record.json").exists():
        return None
    return open_database(folder)


def apply_database_pass(database, target) -> tvm.transform.Pass:
    """MetaScheduleApplyDatabase with `database` and `target` in scope: every kernel with a record
    gets its best schedule (and is marked scheduled, so the default rules leave it alone)."""
    from tvm import relax

    target = tvm.target.Target(target) if not isinstance(target, tvm.target.Target) else target

    @tvm.transform.module_pass(opt_level=0, name="mnova.ApplyTuningDatabase")
    def _pass(mod, _ctx):
        with database, target:  # the pass reads both from the context when it is made
            return relax.transform.MetaScheduleApplyDatabase()(mod)

    return _pass


def kernel_tasks(mods: Sequence[tvm.IRModule], board: Board):
    """MetaSchedule tasks for the kernels of `mods` on `board`, identical kernels merged (weights added)."""
    from tvm.s_tir import meta_schedule as ms

    from .transform import kernel_module

    target = board.tvm_target()
    tasks: list = []
    for mod in mods:
        for task in ms.relax_integration.extract_tasks(kernel_module(mod, target), target):
            same = next((t for t in tasks if tvm_ffi.structural_equal(t.dispatched[0], task.dispatched[0])), None)
            if same is None:
                tasks.append(task)
            else:
                same.weight += task.weight
    return tasks


def _flops(task) -> float:
    from tvm.s_tir import analysis

    try:
        return float(analysis.estimate_tir_flops(task.dispatched[0]))
    except Exception:  # some kernels (e.g. with opaque calls) cannot be estimated: tune them last
        return 0.0


def _build_without_tensor_intrinsics(mod, target, _params):
    """MetaSchedule's default builder minus its `import tvm.s_tir.tensor_intrin` (38 s per worker
    here; CPU float kernels use no tensor intrinsics), so builds do not time out."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    from .kernels import narrow_partitioned_kernels

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(narrow_partitioned_kernels(mod), target=target)


def _export_for(board: Board):
    """A MetaSchedule export function: a .so linked for `board` (its cross compiler if it has one)."""
    cross = board.cross_compiler

    def export(rt_mod) -> str:
        import os
        import tempfile

        from tvm.support import cc

        path = os.path.join(tempfile.mkdtemp(), "tuning_candidate.so")
        rt_mod.export_library(path, fcompile=cc.cross_compiler(cross) if cross else None)
        return path

    return export


@dataclass(frozen=True)
class TuneSummary:
    board: str
    kernels: int
    trials: int
    seconds: float
    database: Path


def _record_count(database, task) -> int:
    mod = task.dispatched[0]
    if not database.has_workload(mod):
        return 0
    return len(database.get_top_k(database.commit_workload(mod), 1 << 20))


def tune(mods: Sequence[tvm.IRModule], board: Board, root, trials_per_kernel: int = 64, max_kernels: int | None = None,
         rpc: tuple[str, int, str] | None = None, seed: int = 0, log=print) -> TuneSummary:
    """Tune the kernels of `mods` for `board` into `root`/<board>/.

    `trials_per_kernel` counts the default schedule and its knob settings; `max_kernels` keeps the
    heaviest kernels (FLOPs x uses). `rpc` = (tracker host, port, key) measures on a device over
    TVM RPC, otherwise on this machine (right for the host board and for emulated devices, whose
    quota scales every candidate alike).
    """
    from tvm.s_tir import meta_schedule as ms

    from .kernels import default_schedule, distinct_knobs

    if trials_per_kernel < 1:
        raise MnovaError("--trials must be at least 1 (the default schedule's measurement)")
    if rpc is None and board.cross_compiler is not None:
        raise MnovaError(f"board {board.name} cannot run here: measure on it over RPC (mnova tune --cluster FILE --rpc)")
    started = time.perf_counter()
    logging.getLogger("tvm.s_tir.meta_schedule").setLevel(logging.WARNING)  # per-kernel logs go to files
    folder = database_dir(root, board)
    database = open_database(folder)
    target = board.tvm_target()
    weighted = [(_flops(t) * t.weight, t) for t in kernel_tasks(mods, board)]
    tasks = [t for work, t in sorted(weighted, key=lambda wt: -wt[0]) if work > 0][:max_kernels]
    counts = [_record_count(database, t) for t in tasks]
    log(f"[{board.name}] {len(tasks)} kernels to tune, {sum(c >= trials_per_kernel for c in counts)} already done "
        f"({folder})")

    builder = ms.builder.LocalBuilder(f_build=_build_without_tensor_intrinsics, f_export=_export_for(board),
                                      timeout_sec=120)
    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=3, min_repeat_ms=50, enable_cpu_cache_flush=False)
    if rpc is None:
        runner = ms.runner.LocalRunner(evaluator_config=evaluator, timeout_sec=120)
    else:
        host, port, key = rpc
        runner = ms.runner.RPCRunner(ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key,
                                                         session_timeout_sec=120),
                                     evaluator_config=evaluator, max_workers=1)

    def stage(selected, space, strategy, trials_each: int, what: str) -> None:
        if not selected or trials_each < 1:
            return
        log(f"[{board.name}] {what}: {len(selected)} kernels, up to {trials_each} trials each")
        logs = str(folder / "logs")  # MetaSchedule's per-kernel logs, beside the database
        with tvm.transform.PassContext():
            contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                selected, logs, space=space, strategy=strategy, num_threads=1, seed=seed)
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=logs,
                          max_trials_global=trials_each * len(selected), max_trials_per_task=trials_each,
                          num_trials_per_iter=min(16, trials_each), builder=builder, runner=runner,
                          database=database, cost_model="xgb", task_scheduler="round-robin")

    variants_of: dict[int, list] = {}  # a kernel's structural hash -> the knobs giving distinct schedules

    def knobs_of(mod) -> list:
        key = tvm_ffi.structural_hash(mod)
        if key not in variants_of:
            variants_of[key] = distinct_knobs(mod, target)
        return variants_of[key]

    def variant_space(index: int):
        def space(sch):
            scheduled = default_schedule(sch, target, knobs_of(sch.mod)[index])
            return [scheduled if scheduled is not None else sch]
        # Our schedules are complete, as compilation applies them: no postprocessing (MetaSchedule's
        # RewriteLayout would pack the weights they pack a second time).
        return ms.space_generator.ScheduleFn(space, postprocs=[])

    try:
        # Our schedule under each distinct knob setting, the defaults first, one trial each.
        settings = [len(knobs_of(t.dispatched[0])) for t in tasks]
        for index in range(min(trials_per_kernel, max(settings, default=0))):
            todo = [t for t, n in zip(tasks, settings) if index < n and _record_count(database, t) == index]
            stage(todo, variant_space(index), "replay-func", 1,
                  "measuring the default schedules" if index == 0 else f"measuring knob setting {index + 1}")
        remaining: dict[int, list] = {}  # trials left -> the kernels with that many left
        for t in tasks:
            remaining.setdefault(trials_per_kernel - _record_count(database, t), []).append(t)
        population = min(128, max(16, 4 * trials_per_kernel))  # no use breeding 512 to measure a few
        for left, todo in sorted(remaining.items(), reverse=True):
            # Not seeded with the measured records: ours pack their weights already, and
            # MetaSchedule's RewriteLayout fails on a schedule that packed them.
            stage(todo, "post-order-apply", ms.search_strategy.EvolutionarySearch(
                population_size=population, init_measured_ratio=0.0, init_min_unmeasured=population // 4), left,
                "searching")
    except Exception as err:
        raise MnovaError(f"tuning for {board.name} failed: {last_line(err)}; what was "
                         f"measured is kept in {folder}, rerun to resume") from None
    trials = sum(_record_count(database, t) for t in tasks) - sum(counts)
    seconds = time.perf_counter() - started
    log(f"[{board.name}] {trials} trials in {seconds:.0f} s; database {folder}")
    return TuneSummary(board.name, len(tasks), trials, seconds, folder)

