"""Relax passes: ApplyOrder / BTSearchOrder keep outputs bit-identical; the arena planner
allocates the liveness peak where TVM's planner allocates more."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import tvm
from tvm import relax

from mnova_tvm import frontend
from mnova_tvm.btsearch import btsearch
from mnova_tvm.errors import MnovaError
from mnova_tvm.graph import from_relax
from mnova_tvm.memory import activation_peak, storage_allocations, tvm_planned_bytes
from mnova_tvm.orders import random_topological_orders
from mnova_tvm.transform import ApplyOrder, BTSearchOrder, lowering_pipeline, planned_bytes
from onnx_models import branchy_cnn


@pytest.fixture(scope="module")
def branchy():
    mod = frontend.load_model(branchy_cnn())
    return mod, frontend.random_inputs(mod, seed=3)


def test_apply_order_keeps_outputs_bit_identical(branchy):
    mod, x = branchy
    graph = from_relax(mod)
    reference = frontend.run(mod, x)[0]
    for order in random_topological_orders(graph, 4, seed=2):
        reordered = ApplyOrder(order)(mod)
        assert relax.analysis.check_well_formed(reordered)
        assert from_relax(reordered).import_order == tuple(order)
        np.testing.assert_array_equal(frontend.run(reordered, x)[0], reference)


def test_btsearch_order_in_sequential_with_and_without_fusion(branchy):
    mod, x = branchy
    reference = frontend.run(mod, x)[0]
    searched = tvm.transform.Sequential([relax.transform.Normalize(), BTSearchOrder()])(mod)
    assert from_relax(searched).import_order == btsearch(from_relax(mod)).order
    np.testing.assert_array_equal(frontend.run(searched, x)[0], reference)
    fused_plain = tvm.compile(mod, "llvm", relax_pipeline=lowering_pipeline(fuse=True, plan_memory="tvm"))
    fused_ordered = tvm.compile(mod, "llvm", relax_pipeline=lowering_pipeline(order="btsearch", fuse=True))
    np.testing.assert_array_equal(frontend.run(fused_ordered, x)[0], frontend.run(fused_plain, x)[0])


def test_lift_weights_makes_large_constants_parameters(branchy):
    """LiftWeights: every constant of at least min_bytes becomes a trailing parameter (its value
    handed out in order), smaller ones stay; given those values the library computes the same."""
    mod, x = branchy
    weights: dict = {}
    lifted = tvm.compile(mod, "llvm", relax_pipeline=lowering_pipeline(fuse=True, weights=weights))
    embedded = tvm.compile(mod, "llvm", relax_pipeline=lowering_pipeline(fuse=True))
    constants = [c.value.numpy() for c in _constants(relax.transform.FoldConstant()(mod)["main"])]
    large = [c for c in constants if c.nbytes >= 4096]
    assert large and len(large) < len(constants)  # the model has both kinds
    assert list(weights) == ["main"]
    assert sorted(w.nbytes for w in weights["main"]) == sorted(c.nbytes for c in large)
    vm = relax.VirtualMachine(lifted, tvm.cpu())
    out = vm["main"](*[tvm.runtime.tensor(a) for a in x + weights["main"]])
    np.testing.assert_array_equal(out.numpy(), frontend.run(embedded, x)[0])
    with pytest.raises(Exception):
        vm["main"](*[tvm.runtime.tensor(a) for a in x])  # the weights are not in the library


def _constants(func) -> list:
    found = []
    relax.analysis.post_order_visit(func, lambda e: found.append(e) if type(e).__name__ == "GenericConst" else None)
    return found


def test_arena_plans_the_liveness_peak_where_tvm_plans_more(branchy):
    mod, x = branchy
    graph = from_relax(mod)
    ordered = BTSearchOrder()(mod)
    peak = activation_peak(graph, btsearch(graph).order)
    ours, theirs = planned_bytes(ordered), tvm_planned_bytes(ordered)
    assert theirs > 1.5 * peak  # TVM's reuse-or-grow planner on this graph
    assert ours <= 1.05 * peak
    arena = tvm.compile(ordered, "llvm", relax_pipeline=lowering_pipeline(plan_memory="arena"))
    plain = tvm.compile(ordered, "llvm", relax_pipeline=lowering_pipeline(plan_memory="tvm"))
    np.testing.assert_array_equal(frontend.run(arena, x)[0], frontend.run(plain, x)[0])


def test_arena_on_a_zoo_model():
    mod = frontend.load_model("squeezenet1_1", input_size=64)
    graph = from_relax(mod)
    ordered = BTSearchOrder()(mod)
    assert planned_bytes(ordered) <= 1.05 * activation_peak(graph, btsearch(graph).order)
    x = frontend.random_inputs(mod)
    arena = tvm.compile(ordered, "llvm", relax_pipeline=lowering_pipeline())
    np.testing.assert_array_equal(frontend.run(arena, x)[0], frontend.run(frontend.compile_module(mod, "llvm"), x)[0])


def test_bad_orders_and_options(branchy):
    mod, _ = branchy
    order = list(from_relax(mod).import_order)
    with pytest.raises(MnovaError, match="permutation"):
        ApplyOrder(order[:-1])(mod)
    with pytest.raises(MnovaError, match="before its producer"):
        ApplyOrder([order[2], *order[:2], *order[3:]])(mod)
    with pytest.raises(MnovaError, match="positive"):
        BTSearchOrder(time_budget=-1)
    with pytest.raises(MnovaError, match="plan_memory"):
        lowering_pipeline(plan_memory="best")


def _storage_sizes(lowered) -> dict:
    """Function name -> sizes of its relax.memory.alloc_storage calls, in order."""
    return {gv.name_hint: storage_allocations(func) for gv, func in lowered.functions.items()
            if isinstance(func, relax.Function)}


def test_device_arena_gives_every_segment_one_arena_size_and_one_output_block(branchy):
    """A device library's functions take storage of two sizes only (the arena, a returned
    tensor's block), so the VM's pooled allocator, which reuses a block only for a request of the
    same size, keeps one arena and a block per returned tensor whatever the number of segments."""
    from mnova_tvm.memory import lower_until_memory_plan
    from mnova_tvm.partition import segments, uniform_plan
    from mnova_tvm.runtime import build_device_modules, prepare, run_locally
    from mnova_tvm.transform import ArenaPlanMemory, DeviceArenaPlanMemory

    mod, x = branchy
    mod = prepare(mod)
    graph = from_relax(mod)
    plan = uniform_plan(graph, ["a", "b"], "height", [2, 1])
    segs = segments(graph, plan)
    device_mod = build_device_modules(mod, graph, plan, segs)[0]
    own = _storage_sizes(lower_until_memory_plan(device_mod, "llvm", ArenaPlanMemory))
    shared = _storage_sizes(lower_until_memory_plan(device_mod, "llvm", DeviceArenaPlanMemory))
    own_arenas = {s for sizes in own.values() for s in sizes}  # returned tensors are allocated apart there
    assert len(shared) >= 5 and len(own_arenas) >= 2
    assert all(sizes for sizes in shared.values())  # every function returns from a planned block
    assert len({s for sizes in shared.values() for s in sizes}) == 2  # the largest arena, the returned blocks
    assert max(own_arenas) in {s for sizes in shared.values() for s in sizes}
    result = run_locally(mod, plan, x, Path(tempfile.mkdtemp()))
    np.testing.assert_allclose(result.outputs[0], frontend.run(mod, x)[0], rtol=1e-5, atol=1e-6)


def test_an_interrupt_during_a_compile_reaches_the_caller(branchy, monkeypatch):
    """Ctrl-C or `kill` (cli.py) while a Python pass runs inside tvm.compile surfaces as
    KeyboardInterrupt, not as a RuntimeError the schedule rules would take for a misfit."""
    from mnova_tvm import kernels

    def interrupted(*_args):
        raise KeyboardInterrupt

    mod, _ = branchy
    monkeypatch.setattr(kernels, "schedule_prim_func", interrupted)
    with pytest.raises(KeyboardInterrupt):
        tvm.compile(mod, "llvm", relax_pipeline=lowering_pipeline(schedule_target=tvm.target.Target("llvm")))


def test_an_interrupt_a_cpp_caller_drops_still_stops_the_build(branchy, monkeypatch):
    """A signal whose KeyboardInterrupt is raised in a callback and dropped by its C++ caller (it
    happened inside tvm.compile: `kill` during profiling did nothing) still ends the build."""
    from mnova_tvm import errors, kernels
    from mnova_tvm.compile import build
    from mnova_tvm.targets import load_board

    schedule = kernels.schedule_prim_func

    def interrupted_and_dropped(*args):
        try:
            errors.request_interrupt()  # what cli.py's signal handler does
        except KeyboardInterrupt:
            pass
        return schedule(*args)

    mod, _ = branchy
    monkeypatch.setattr(kernels, "schedule_prim_func", interrupted_and_dropped)
    try:
        with pytest.raises(KeyboardInterrupt):
            build(mod, load_board("host"))
    finally:
        errors.clear_interrupt()
