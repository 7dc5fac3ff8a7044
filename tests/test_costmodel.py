"""Cost model and planners on synthetic latencies (no devices), and profiling over RPC."""

import dataclasses
import json
import os

import numpy as np
import pytest

from mnova_tvm import cluster as testbed
from mnova_tvm import frontend
from mnova_tvm.costmodel import FEATURES, HOST_COLUMNS, OPS, CostModel, LinkFit, evaluate, fit_link, plan_latency, split_by_shape, train
from mnova_tvm.errors import MnovaError
from mnova_tvm.geneflow import GAConfig
from mnova_tvm.graph import from_relax
from mnova_tvm.partition import Plan, device_memory, partition_op, single_device_plan
from mnova_tvm.planners import PlanEvaluator, compare_planners, infeasible_error, plan_with
from mnova_tvm.profile import (FULL_TIMING, QUICK_TIMING, Timing, calibrate, device_kind, job_features, job_key, jobs_for, profile_cluster,
                               _settled, _wants_round, merge_rounds, profile_devices, read_dataset, refit_needed, timing_of)
from mnova_tvm.runtime import prepare
from mnova_tvm.targets import load_cluster
from onnx_models import edge_cnn

SPEED = {"host@1cpu": 1.0, "host@0.6cpu": 0.6, "host@0.35cpu": 0.35, "host@0.25cpu": 0.25}


def synthetic_latency(features, kind):
    flops = 2 ** features[FEATURES.index("flops_log")] - 1
    moved = 2 ** features[FEATURES.index("in_bytes_log")] + 2 ** features[FEATURES.index("out_bytes_log")]
    return (2e-5 + flops / 2e9 + moved / 4e9) / SPEED[kind]


@pytest.fixture(scope="module")
def graph():
    return from_relax(prepare(frontend.load_model(edge_cnn(size=35))), "edge")


@pytest.fixture(scope="module")
def rows(graph):
    out = []
    for kind in SPEED:
        for job in jobs_for(graph, fractions=(0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9)):
            feats = job_features(graph, job)
            out.append({"device_kind": kind, "model": "edge", "node": job.node, "latency_s": synthetic_latency(feats, kind),
                        **dict(zip(FEATURES, feats))})
    return out


def line_link(latency_s, per_byte_s, call_s):
    points = ((0.0, latency_s), (float(2**20), latency_s + 2**20 * per_byte_s))
    return LinkFit(points, points, call_s, ((0.0, 3e-4), (float(2**20), 8e-4)))


@pytest.fixture(scope="module")
def model(rows):
    cluster = load_cluster("local4")
    fitted = CostModel(n_estimators=200).fit(rows)
    fitted.links = {d.name: line_link(1e-4, 8 / (d.link.bandwidth_mbps * 1e6), 2e-4) for d in cluster.devices}
    return fitted


def test_fit_learns_held_out_shapes(rows):
    train_rows, test_rows = split_by_shape(rows, 0.25, seed=1)
    assert {(r["model"], r["node"]) for r in train_rows}.isdisjoint({(r["model"], r["node"]) for r in test_rows})

    def whole_shapes(some):
        return {tuple(r[f] for f in FEATURES) for r in some if r["dim_code"] == 0}

    # the edge CNN repeats operator shapes: one shape is never on both sides
    assert len(whole_shapes(rows)) < len({(r["model"], r["node"]) for r in rows})
    for seed in range(5):
        train_seed, test_seed = split_by_shape(rows, 0.25, seed)
        assert whole_shapes(test_seed) and whole_shapes(train_seed).isdisjoint(whole_shapes(test_seed))
    metrics = evaluate(CostModel().fit(train_rows), test_rows)
    assert metrics["spearman"] > 0.9
    assert metrics["mape_percent"] < 50


def test_save_load_round_trip_and_bad_files(model, rows, tmp_path):
    path = tmp_path / "cm.json"
    model.save(path)
    loaded = CostModel.load(path)
    x = np.array([[r[f] for f in FEATURES] for r in rows[:50]])
    kinds = [r["device_kind"] for r in rows[:50]]
    np.testing.assert_allclose(loaded.predict(x, kinds), model.predict(x, kinds), rtol=1e-6)
    assert loaded.links == model.links
    # the hyperparameters travel with the file; a cached model fitted with others than this
    # version's, or on another number of rows, is refitted
    assert loaded.n_estimators == 200 and loaded.hyperparameters() == model.hyperparameters()
    assert refit_needed(loaded, len(rows))
    CostModel(metadata={"rows": len(rows)}).fit(rows).save(tmp_path / "default.json")
    default = CostModel.load(tmp_path / "default.json")
    assert not refit_needed(default, len(rows)) and refit_needed(default, len(rows) + 1)
    data = json.loads(path.read_text())
    data["version"] = 0
    (tmp_path / "old.json").write_text(json.dumps(data))
    with pytest.raises(MnovaError, match="another version"):
        CostModel.load(tmp_path / "old.json")
    (tmp_path / "junk.json").write_text("junk")
    with pytest.raises(MnovaError, match="not a cost model"):
        CostModel.load(tmp_path / "junk.json")
    with pytest.raises(MnovaError, match="not host@9cpu"):
        model.predict(x[:1], ["host@9cpu"])


def test_fit_link_follows_a_shaped_link_and_extends_its_line():
    def seconds(n):  # a token bucket: the first 100 KiB at 400 Mbit/s, the rest at 100, plus 2 ms
        burst = min(n, 100 * 2**10)
        return 0.002 + burst * 8 / 400e6 + (n - burst) * 8 / 100e6
    sizes = (256, 16 * 2**10, 64 * 2**10, 128 * 2**10, 256 * 2**10, 2**20, 4 * 2**20)
    rows = [{"kind": k, "bytes": b, "seconds": seconds(b) * noise} for k in ("send", "receive") for b in sizes
            for noise in (0.9, 1.0, 5.0)]  # the median of each size's repeats
    rows += [{"kind": "call", "bytes": 0, "seconds": 0.0003}, {"kind": "segment", "bytes": 256, "seconds": 0.0004},
             {"kind": "segment", "bytes": 2**20, "seconds": 0.0005}, {"kind": "segment", "bytes": 2**20, "seconds": 0.0009},
             {"kind": "segment", "bytes": 2**20, "seconds": 0.009}]
    fit = fit_link(rows)
    for n in (256, 2**16, 2**20):
        assert fit.send(n) == pytest.approx(seconds(n), rel=1e-9) and fit.receive(n) == pytest.approx(seconds(n), rel=1e-9)
    assert fit.send(40 * 2**10) == pytest.approx(seconds(40 * 2**10), rel=0.02)  # between points, in the burst
    assert fit.send(16 * 2**20) == pytest.approx(seconds(16 * 2**20), rel=1e-9)  # past the largest: its line
    assert fit.mbit_per_s("send") == pytest.approx(100, rel=1e-6) and fit.call_s == 0.0003
    assert fit.segment(2**20) == 0.0009 and fit.segment(256) == 0.0004  # medians: a 9 ms outlier does not count
    slower = [dict(r, seconds=r["seconds"] / 10) if r["bytes"] == 2**20 else r for r in rows]
    assert fit_link(slower).send(2**20) == fit_link(slower).send(256 * 2**10)  # never faster for more bytes
    with pytest.raises(MnovaError, match="no 'call'"):
        fit_link([r for r in rows if r["kind"] != "call"])
    with pytest.raises(MnovaError, match="'segment'"):
        fit_link([r for r in rows if r["kind"] != "segment"])
    with pytest.raises(MnovaError, match="fewer than 2 sizes"):
        fit_link([r for r in rows if r["bytes"] in (0, 256)])
    # timed alone and with four devices at once (twice as slow, and a 1 ms longer call): fitted as timed with
    # four, a segment of fewer active devices in proportion, one alone as timed alone
    both = fit_link([dict(r, active=1) for r in rows] + [dict(r, active=4, seconds=2 * r["seconds"] + (r["kind"] == "call") * 1e-3)
                                                          for r in rows])
    assert both.active == 4 and both.alone == dataclasses.replace(fit, active=1)
    assert both.for_active(4) is both and both.for_active(9) is both and both.for_active(1) == both.alone
    for n in (256, 2**20, 16 * 2**20):
        assert both.send(n) == pytest.approx(2 * fit.send(n)) and both.segment(n) == pytest.approx(2 * fit.segment(n))
        assert both.for_active(2).send(n) == pytest.approx(4 / 3 * fit.send(n))
        assert both.for_active(3).receive(n) == pytest.approx(5 / 3 * fit.receive(n))
    assert both.for_active(2).call_s == pytest.approx(4 / 3 * 0.0003 + 1e-3 / 3)
    assert LinkFit.from_json(json.loads(json.dumps(both.to_json()))) == both and fit_link(rows).alone is None


def test_plan_latency_of_one_device_is_its_ops_plus_transfers(graph, model):
    cluster = load_cluster("local4")
    plan = single_device_plan(graph, [d.name for d in cluster.devices], 2)
    kinds = [device_kind(d) for d in cluster.devices]
    estimate = plan_latency(model, graph, plan, kinds, [0.005] * 4)
    ops = model.predict(np.array([job_features(graph, j) for j in jobs_for(graph) if j.dim == "none"]), [kinds[2]] * len(graph.nodes))
    link = model.links["slow"]
    expected = ops.sum() + 2 * 0.005 + link.call_s + link.segment(40) + link.send(graph.tensors["input"].nbytes) + link.receive(40)
    assert estimate.seconds == pytest.approx(expected, rel=1e-9)
    assert estimate.device_compute_s[0] == 0
    # links timed with all four devices at once: the one device of this plan moves data as timed alone
    alone = line_link(5e-5, 8 / 40e6, 1e-4)
    timed = dict(model.links, slow=dataclasses.replace(link, active=4, alone=alone))
    estimate = plan_latency(dataclasses.replace(model, links=timed), graph, plan, kinds, [0.005] * 4)
    assert estimate.seconds == pytest.approx(ops.sum() + 2 * 0.005 + alone.call_s + alone.segment(40)
                                             + alone.send(graph.tensors["input"].nbytes) + alone.receive(40), rel=1e-9)


def test_evaluator_scores_equal_the_plan_level_estimate_and_memory(graph, model):
    """The evaluator caches per segment; its scores must equal plan_latency and device_memory."""
    from mnova_tvm.geneflow import PartitionProblem, random_population

    cluster = load_cluster("local4")
    evaluator = PlanEvaluator(graph, cluster, graph.import_order, model, [0.002] * 4)
    problem = PartitionProblem(evaluator.allowed, 4, evaluator.evaluate_population)
    dims, shares = random_population(problem, 40, np.random.default_rng(5))
    for _ in range(2):  # the second pass is answered from the cache
        for d, s in zip(dims, shares):
            plan = evaluator.plan_from(d, s)
            score = evaluator.score(plan)
            expected = plan_latency(model, graph, plan, evaluator.kinds, [0.002] * 4).seconds
            assert score.latency_s == pytest.approx(expected, rel=1e-9)
            assert score.memory_bytes == device_memory(graph, plan)
    assert len(evaluator.segment_cache) > 40


def test_bench_planners_writes_results_and_geneflow_is_never_worse_than_its_seeds(model, tmp_path, capsys):
    """GenEFlow starts from the baselines, so it can only improve on the best one within budget."""
    import onnx

    from mnova_tvm.cli import main

    onnx.save(edge_cnn(size=35), tmp_path / "edge.onnx")
    model.save(tmp_path / "cost.json")
    out = tmp_path / "planners.md"
    assert main(["bench", "planners", str(tmp_path / "edge.onnx"), "--cost-model", str(tmp_path / "cost.json"),
                 "--seeds", "0", "--generations", "3", "--out", str(out)]) == 0
    row = [line for line in out.read_text().splitlines() if line.startswith("| edge")]
    assert len(row) == 1
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    geneflow_ms, random_ms, ratio = float(cells[3].split()[0]), float(cells[4].split()[0]), float(cells[5])
    assert ratio == pytest.approx(geneflow_ms / random_ms, abs=0.01)  # ms rounded to 0.1
    if cells[6] != "none fits":
        assert geneflow_ms <= float(cells[6].split()[0]) + 0.05
    assert main(["bench", "planners", str(tmp_path / "edge.onnx"), "--cost-model", str(tmp_path / "missing.json"),
                 "--out", str(tmp_path / "other.md")]) != 0
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "other.md").exists()


def test_timing_of_a_row_is_how_it_was_timed():
    for timing in (FULL_TIMING, QUICK_TIMING, Timing(2, 5, passes=4, statistic="min")):
        row = {"repeats": timing.repeats, "min_repeat_ms": timing.min_repeat_ms, "passes": timing.passes,
               "statistic": timing.statistic}
        assert timing_of(row) == timing
    # rows written before the statistic was recorded kept the fastest pass
    assert timing_of({"repeats": 3, "passes": 3}) == Timing(3, 20, passes=3, statistic="min")
    assert timing_of({"repeats": 3}) == Timing(3, 20, passes=1, statistic="min")  # before passes existed
    assert timing_of({"repeats": 2, "passes": 1}) == Timing(2, 2, statistic="min")  # the old quick timing
    assert Timing(1, 1, passes=3).combine([3.0, 1.0, 2.0]) == 2.0
    assert Timing(1, 1, passes=3, statistic="min").combine([3.0, 1.0, 2.0]) == 1.0


def test_rounds_of_a_slice_merge_to_their_median(rows):
    one = {**rows[0], "op": "relax.nn.relu", "latency_s": 1.0}
    other_kind = {**one, "device_kind": "host@0.25cpu" if one["device_kind"] != "host@0.25cpu" else "host@1cpu"}
    other_slice = {**one, "flops_log": one["flops_log"] + 1}
    merged = merge_rounds([one, other_kind, {**one, "latency_s": 5.0}, other_slice, {**one, "latency_s": 2.0}])
    assert [(r["latency_s"], r["rounds"]) for r in merged] == [(2.0, 3), (1.0, 1), (1.0, 1)]
    assert merged[1]["device_kind"] == other_kind["device_kind"] and merged[2]["flops_log"] == other_slice["flops_log"]
    # the host's reference readings: their median over the rounds, or none if a round lacks them
    host = dict.fromkeys(HOST_COLUMNS, 1.0)
    merged = merge_rounds([{**one, **host}, {**one, **dict.fromkeys(HOST_COLUMNS, 4.0)}, {**one, **host, HOST_COLUMNS[0]: 3.0},
                           {**other_slice, **host}, other_slice])
    assert [[r.get(name) for name in HOST_COLUMNS] for r in merged] == [[3.0, 1.0], [None, None]]


@pytest.mark.parametrize("latencies, settled", [
    ([1.0], False), ([1.0, 1.09], True), ([1.0, 1.2], False), ([1.0, 1.5, 1.02], True), ([1.5, 1.0, 1.4], True),
    ([1.0, 1.3, 1.6], False), ([1.0, 1.05, 1.5, 1.6], False), ([1.0, 1.05, 1.08, 1.6], True)])
def test_a_slice_is_settled_when_a_majority_of_its_rounds_agree(latencies, settled):
    one = {"row": "op", "device_kind": "host@1cpu", "op": "relax.nn.relu", **dict.fromkeys(FEATURES, 1.0)}
    assert _settled(latencies) is settled
    assert [r["settled"] for r in merge_rounds([dict(one, latency_s=s) for s in latencies])] == [settled]


@pytest.mark.parametrize("latencies, rounds, tiebreak, wanted", [
    ([], 1, False, True), ([1.0], 1, True, False), ([1.0], 2, False, True),
    ([1.0, 1.09], 2, True, False), ([1.0, 1.2], 2, False, False), ([1.0, 1.2], 2, True, True),
    ([1.2, 1.0, 1.1], 2, True, False), ([1.0, 1.2], 3, True, True)])
def test_a_slice_wants_a_round_while_short_of_rounds_or_its_rounds_disagree(latencies, rounds, tiebreak, wanted):
    assert _wants_round(latencies, rounds, tiebreak) is wanted


def test_dataset_errors(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"row": "op", "device_kind": "x"}) + "\n")
    with pytest.raises(MnovaError, match="lacks columns"):
        read_dataset(path)
    path.write_text("not json\n")
    with pytest.raises(MnovaError, match="not JSON"):
        read_dataset(path)
    with pytest.raises(MnovaError, match="no operator rows"):
        train([], [])


def tight_cluster(tmp_path, budgets_mib):
    data = json.loads(open(load_cluster("local4").path).read())
    for device, budget in zip(data["devices"], budgets_mib):
        device["memory_budget_bytes"] = int(budget * 2**20)
    path = tmp_path / "tight.json"
    path.write_text(json.dumps(data))
    return load_cluster(str(path))


def test_geneflow_meets_budgets_beats_baselines_and_is_deterministic(graph, model, tmp_path):
    single = device_memory(graph, single_device_plan(graph, ["a"], 0))[0]
    order = graph.import_order
    halves = Plan(("a", "b"), order, {n: partition_op(graph, n, "none", [1, 0] if i < len(order) // 2 else [0, 1])
                                      for i, n in enumerate(order)})
    budget = (single + max(device_memory(graph, halves))) / 2  # a two-device pipeline fits, the whole model does not
    cluster = tight_cluster(tmp_path, [budget / 2**20] * 4)
    config = GAConfig(population=24, generations=40, seed=3)
    evaluator = PlanEvaluator(graph, cluster, graph.import_order, model, [0.002] * 4)
    results = compare_planners(evaluator, config)
    ga = results[0]
    assert ga.score.feasible and all(m <= budget for m in device_memory(graph, ga.plan))
    assert all(ga.score.latency_s <= r.score.latency_s + 1e-12 for r in results if r.score.feasible), \
        [(r.name, r.score.latency_s) for r in results]
    assert not next(r for r in results if r.name.startswith("single")).score.feasible
    # the two-device pipeline it is seeded with: the best over both orders of the two fastest
    # devices and every cut, found by scoring each of those plans one by one
    from mnova_tvm.planners import best_pipeline

    names = [d.name for d in cluster.devices]
    pipelines = [Plan(tuple(names), order, {n: partition_op(graph, n, "none", np.eye(4)[a if i < cut else b])
                                            for i, n in enumerate(order)})
                 for a, b in ((0, 1), (1, 0)) for cut in range(1, len(order))]
    scores = [evaluator.score(p) for p in pipelines]
    fastest = min(s.latency_s for s in scores if s.feasible)
    assert evaluator.score(evaluator.plan_from(*best_pipeline(evaluator))).latency_s == pytest.approx(fastest, rel=1e-9)
    assert ga.score.latency_s <= fastest + 1e-12
    again = plan_with("geneflow", PlanEvaluator(graph, cluster, graph.import_order, model, [0.002] * 4), config)
    assert again.plan == ga.plan
    assert len(ga.history) == 40 and ga.history[-1].best_latency >= ga.score.latency_s - 1e-12  # polish may only improve


def test_infeasible_budgets_name_what_each_device_needs(graph, model, tmp_path):
    cluster = tight_cluster(tmp_path, [0.01] * 4)
    evaluator = PlanEvaluator(graph, cluster, graph.import_order, model, [0.002] * 4)
    result = plan_with("geneflow", evaluator, GAConfig(population=8, generations=3))
    assert not result.score.feasible
    message = str(infeasible_error(evaluator, result.plan, result.score))
    assert "no plan meets the memory budgets" in message and all(d.name in message for d in cluster.devices)


def plain_local2(tmp_path, prefix):
    """local2 without emulation, under names of this test process (c.json in tmp_path)."""
    data = json.loads(open(load_cluster("local2").path).read())
    data.update(name=f"{prefix}{os.getpid() % 10000}", emulate=False)
    for d in data["devices"]:
        d["key"] = f"{data['name']}-{d['name']}"
    (tmp_path / "c.json").write_text(json.dumps(data))
    return load_cluster(str(tmp_path / "c.json"))


def test_profile_over_rpc_then_train(tmp_path, monkeypatch):
    from mnova_tvm import compile as compile_module
    from mnova_tvm.partition import sliced_weight_bytes
    from mnova_tvm.profile import _IDLE_SERVER_BYTES, _chunks, _loads_within

    monkeypatch.setattr("mnova_tvm.profile.CHUNK_BYTES", 4096)  # several libraries, one session
    libraries = []
    build_for_board = compile_module.build_for_board
    monkeypatch.setattr(compile_module, "build_for_board", lambda *a, **k: libraries.append(a[2]) or build_for_board(*a, **k))
    cluster = plain_local2(tmp_path, "pf")
    dataset = tmp_path / "d.jsonl"
    mod = frontend.load_model(edge_cnn())
    graph = from_relax(prepare(mod))
    with testbed.LocalCluster(cluster, state_dir=tmp_path / "state", log=lambda *_: None) as state:
        small = state.devices[1]  # a memory limit that cannot take the largest weight slices
        largest = max(sliced_weight_bytes(graph, graph.node_by_name[j.node], j.dim, 0, j.units) for j in jobs_for(graph))
        small.memory_limit_bytes = _IDLE_SERVER_BYTES + 2 * largest
        # one job of each shape is timed: the edge CNN repeats some
        distinct = list({job_key(graph, j): j for j in reversed(jobs_for(graph))}.values())[::-1]
        assert len(distinct) < len(jobs_for(graph))
        skipped = {(j.node, j.dim, j.units) for j in distinct if not _loads_within(graph, j, small.memory_limit_bytes)}
        profile_cluster(cluster, state, [("edge", mod)], dataset, tmp_path, quick=True, log=lambda *_: None)
        small.memory_limit_bytes = None
        timed_small = {(r["node"], r["dim"], r["units"]) for r in read_dataset(dataset)[0]
                       if r["device_kind"] == device_kind(cluster.devices[1])}
        assert skipped and timed_small == {(j.node, j.dim, j.units) for j in distinct} - skipped
        profile_cluster(cluster, state, [("edge", mod)], dataset, tmp_path, quick=True, links=False, log=lambda *_: None)
        first = dataset.read_text()
        # one board: each chunk of slices compiled once for both device kinds, and again for the skipped
        # slices once the limit is lifted (the link probe is one more library)
        assert len([p for p in libraries if "profile-" in str(p)]) == \
            len(_chunks(graph, distinct)) + len(_chunks(graph, [j for j in distinct if (j.node, j.dim, j.units) in skipped]))
        compiled = len(libraries)
        profile_cluster(cluster, state, [("edge", mod)], dataset, tmp_path, quick=True, links=False, log=lambda *_: None)
        assert dataset.read_text() == first and len(libraries) == compiled  # resumed: nothing compiled or timed twice
        # another model of the same operators: every shape is in the dataset, nothing is timed
        profile_cluster(cluster, state, [("edge-again", mod)], dataset, tmp_path, quick=True, links=False, log=lambda *_: None)
        assert dataset.read_text() == first and len(libraries) == compiled
        # passes: a window of slices (one here: the readings are instant) timed in every pass before
        # the next window, the median kept; a window per slice when the first pass has no time to spare
        two = jobs_for(graph)[:2]
        # each reading right after one of each reference kernel, whose medians the row keeps
        for window_s, latencies, hosts in ((60.0, [4.0, 2.0], [(40.0, 400.0), (20.0, 200.0)]),
                                           (0.0, [3.0, 4.0], [(30.0, 300.0), (40.0, 400.0)])):
            readings = iter([3.0, 2.0, 5.0, 1.0, 4.0, 6.0])
            references = {name: iter([scale * v for v in (3.0, 2.0, 5.0, 1.0, 4.0, 6.0)])
                          for name, scale in zip(HOST_COLUMNS, (10.0, 100.0))}
            called = []
            dataset_passes = tmp_path / f"passes-{window_s:g}.jsonl"
            with monkeypatch.context() as patched:
                patched.setattr("mnova_tvm.profile.CHUNK_BYTES", 2**40)  # both in one library
                patched.setattr("mnova_tvm.profile.WINDOW_S", window_s)
                patched.setattr("mnova_tvm.profile._median_seconds",
                                lambda vm, dev, fname, args, repeat, ms: called.append((fname, repeat, ms))
                                or next(references[fname] if fname in references else readings))
                profile_devices(state, cluster.devices[:1], prepare(mod), graph, "edge", dataset_passes,
                                tmp_path, Timing(4, 6, passes=3), jobs=two, log=lambda *_: None)
            timed = {(r["node"], r["dim"], r["units"]): r for r in read_dataset(dataset_passes)[0]}
            assert [timed[(j.node, j.dim, j.units)]["latency_s"] for j in two] == latencies
            assert [tuple(timed[(j.node, j.dim, j.units)][name] for name in HOST_COLUMNS) for j in two] == hosts
            order = ["p0", "p1"] * 3 if window_s else ["p0"] * 3 + ["p1"] * 3
            assert [f for f, _, _ in called] == [f for p in order for f in (*HOST_COLUMNS, p)]
            assert {(r["passes"], r["statistic"]) for r in timed.values()} == {(3, "median")}
            assert {(repeat, ms) for f, repeat, ms in called if f.startswith("p")} == {(4, 6)}
            assert {(repeat, ms) for f, repeat, ms in called if f in HOST_COLUMNS} == {(1, 2)}
        # rounds: a run asked for two times each slice once more; the next finds two of each
        with monkeypatch.context() as patched:
            patched.setattr("mnova_tvm.profile.CHUNK_BYTES", 2**40)
            patched.setattr("mnova_tvm.profile._median_seconds", lambda *_: 8.0)
            written = [profile_devices(state, cluster.devices[:1], prepare(mod), graph, "edge", dataset_passes,
                                       tmp_path, Timing(1, 1), jobs=two, rounds=2, log=lambda *_: None) for _ in range(2)]
            settled = [profile_devices(state, cluster.devices[:1], prepare(mod), graph, "edge", dataset_passes,
                                       tmp_path, Timing(1, 1), jobs=two, rounds=2, tiebreak=True, log=lambda *_: None)
                       for _ in range(2)]
        assert written == [2, 0]
        assert sorted((r["latency_s"], r["rounds"]) for r in merge_rounds(read_dataset(dataset_passes)[0])) == \
            [(8.0, 3), (8.0, 3)]  # two rounds 3 and 8, 4 and 8 s: a third settles each, a fourth is not needed
        assert settled == [2, 0]
        ops, links = read_dataset(dataset)
        model = train(ops, links, log=lambda *_: None)
        calibrate(model, cluster, state, mod, "edge", tmp_path, log=lambda *_: None)
    assert set(model.calibration) == {device_kind(d) for d in cluster.devices}
    assert all(0.05 < f < 20 for f in model.calibration.values())
    model.save(tmp_path / "cm.json")
    assert CostModel.load(tmp_path / "cm.json").calibration == model.calibration
    kinds = {device_kind(d) for d in cluster.devices}
    assert len(ops) == len(kinds) * len(distinct)
    assert all(r["latency_s"] > 0 for r in ops) and all(r["seconds"] > 0 for r in links)
    assert {(r["device"], r["kind"], r["protocol"], r["active"]) for r in links} == \
        {(d.name, kind, "by-active-devices", active) for d in cluster.devices for kind in ("send", "call", "receive", "segment")
         for active in (1, 2)}
    a, b = ([r["seconds"] for r in links if r["kind"] == "segment" and r["device"] == d.name and r["active"] == 2]
            for d in cluster.devices)
    assert a == b  # the coordinator's time of each round with both devices, written for every device
    assert all(fit.active == 2 and fit.alone.active == 1 for fit in model.links.values())
    logged = []
    older = train(ops, [dict(r, protocol="concurrent") if r["device"] == "a" else r for r in links], log=logged.append)
    assert set(older.links) == {"b"} and any("older mnova profile" in line for line in logged)
    model = train(ops, links, log=lambda *_: None)
    plan = single_device_plan(graph, [d.name for d in cluster.devices], 0)
    assert plan_latency(model, graph, plan, [device_kind(d) for d in cluster.devices], [0, 0]).seconds > 0


def test_roofline_line_recovers_a_linear_latency(rows):
    """Latency exactly linear in calls, FLOPs and bytes moved: the non-negative fit finds its
    coefficients, and the weight-byte term it does not have stays near zero."""
    from mnova_tvm.costmodel import fit_roofline

    kind_rows = [r for r in rows if r["device_kind"] == "host@1cpu"]
    x = np.array([[r[f] for f in FEATURES] for r in kind_rows])
    coefficients = fit_roofline(x, np.array([r["latency_s"] for r in kind_rows]))
    np.testing.assert_allclose(coefficients[:3], [2e-5, 1 / 2e9, 1 / 4e9], rtol=1e-3)
    assert coefficients[3] < 1e-3 / 4e9


def test_derived_columns_give_input_row_length_and_padding(graph):
    """For every conv and pool slice the profiler times: in_row_elements is its input's width, and
    padded says whether the windows its output rows and columns read reach outside the input
    (counted here from the attributes, dilation and ceil mode included)."""
    from mnova_tvm.costmodel import DERIVED, model_inputs

    checked = []
    for job in jobs_for(graph):
        node = graph.node_by_name[job.node]
        if node.op not in ("relax.nn.conv2d", "relax.nn.max_pool2d", "relax.nn.avg_pool2d"):
            continue
        _, _, in_h, in_w = graph.tensors[node.inputs[0]].shape
        _, _, out_h, out_w = graph.tensors[node.outputs[0]].shape
        rows = (0, job.units) if job.dim == "height" else (0, out_h)  # profiled height slices are the first rows
        top, left, _, _ = node.attrs["padding"]
        reach = [(rows[0] * s - pad, (end - 1) * s - pad + d * (k - 1) + 1, size)
                 for s, pad, d, k, end, size in zip(node.attrs["strides"], (top, left), node.attrs.get("dilation", (1, 1)),
                                                    node.attrs["kernel"], (rows[1], out_w), (in_h, in_w))]
        padded = any(first < 0 or last > size for first, last, size in reach)
        columns = dict(zip(DERIVED, model_inputs(job_features(graph, job))[0, len(FEATURES):]))
        assert columns["in_row_elements"] == in_w, job
        assert columns["padded"] == padded, job
        checked.append(padded)
    assert len(checked) >= 20 and set(checked) == {False, True}


@pytest.mark.parametrize("size", [35, 63])  # the global pool's map: 9x9 (no partial sums), 16x16
def test_partial_sums_column_follows_the_mean_kernel_rule(size):
    """A mean over each channel's map is described by the partial sums its kernel adds the map up
    in (kernels._partial_sums), at each vector width; every other operator has none."""
    from mnova_tvm.costmodel import DERIVED, SCHEDULE_LANES, model_inputs
    from mnova_tvm.kernels import _partial_sums

    graph = from_relax(prepare(frontend.load_model(edge_cnn(size=size))), "edge")
    means, sums = 0, set()
    for job in jobs_for(graph):
        node = graph.node_by_name[job.node]
        columns = dict(zip(DERIVED, model_inputs(job_features(graph, job))[0, len(FEATURES):]))
        for lanes in SCHEDULE_LANES:
            if node.op == "relax.mean":
                _, _, height, width = graph.tensors[node.inputs[0]].shape
                assert columns[f"partial_sums_{lanes}"] == (_partial_sums(height * width, lanes) or 0), (job, lanes)
                sums.add(columns[f"partial_sums_{lanes}"])
            else:
                assert columns[f"partial_sums_{lanes}"] == 0, job
        means += node.op == "relax.mean"
    assert means > 0 and (sums == {0} if size == 35 else 0 not in sums)


def test_matmul_tile_columns_follow_the_matmul_rule(graph):
    """Each matmul slice the profiler times is described by the tile kernels.matmul_tiling gives
    its rows and its columns (the slice's share of the outputs), at each vector width; convs keep
    conv_tiling's."""
    from mnova_tvm.costmodel import DERIVED, SCHEDULE_LANES, model_inputs
    from mnova_tvm.kernels import matmul_tiling

    widths = set()
    for job in jobs_for(graph, fractions=(0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9)):
        node = graph.node_by_name[job.node]
        if node.op != "relax.matmul":
            continue
        rows, cols = graph.tensors[node.outputs[0]].shape
        cols = job.units if job.dim == "channel" else cols
        rows = job.units if job.dim == "height" else rows
        columns = dict(zip(DERIVED, model_inputs(job_features(graph, job))[0, len(FEATURES):]))
        for lanes in SCHEDULE_LANES:
            tile = [columns[f"{name}_{lanes}"] for name in ("channel_vectors", "vector_tile", "register_rows", "lane_fill")]
            assert tile == pytest.approx(matmul_tiling(rows, cols, lanes)), (job, lanes)
            widths.add(tile[1])
    assert len(widths) >= 3  # slices of several widths, not one default


def test_remainder_columns_follow_the_flat_loop(graph):
    """For every add and relu slice the profiler times, flat_run is the elements of each channel's
    map when a per-channel bias is added, else all the slice's elements, and the rest columns are
    what whole vectors leave of the run, the map and an output row (shapes read off the graph)."""
    from mnova_tvm.costmodel import DERIVED, SCHEDULE_LANES, model_inputs

    runs = set()
    for job in jobs_for(graph):
        node = graph.node_by_name[job.node]
        if node.op not in ("relax.add", "relax.nn.relu"):
            continue
        _, channels, height, width = (*graph.tensors[node.outputs[0]].shape, 1, 1)[:4]
        per_channel = any(graph.tensors[t].shape == (1, channels, 1, 1) for t in node.inputs)
        channels = job.units if job.dim == "channel" else channels
        height = job.units if job.dim == "height" else height
        run = height * width if per_channel else channels * height * width
        columns = dict(zip(DERIVED, model_inputs(job_features(graph, job))[0, len(FEATURES):]))
        assert (columns["flat_run"], columns["map_elements"]) == (run, height * width), job
        for lanes in SCHEDULE_LANES:
            assert [columns[f"{name}_{lanes}"] for name in ("flat_run_rest", "map_rest", "row_rest")] == \
                [run % lanes, height * width % lanes, width % lanes], (job, lanes)
        runs.add((per_channel, run % 16 != 0))
    assert {per_channel for per_channel, _ in runs} == {False, True} and {rest for _, rest in runs} == {False, True}


def _dataset(rows, path):
    with open(path, "w") as f:
        for i, r in enumerate(rows):
            f.write(json.dumps({"row": "op", "date": "2026-12-02", "op": "relax.nn.conv2d", "dim": "none", "units": 1,
                                "total_units": 1, "repeats": 3, **r}) + "\n")


def test_round_agreement_estimates_what_knowing_each_slices_mean_would_score(rows):
    """Second rounds 1.0, 1.2 and 1.6 times the first: only the first pair agrees within ±10 %. A
    predictor of the mean misses one round of the 1.2x pair (its error 1.2^(1/√2) = 1.14x) but not
    their median (1.2^(1/2) = 1.095x), and the 1.6x pair either way."""
    from mnova_tvm.commands.bench import _round_agreement

    three = [dict(r, op="relax.nn.conv2d", device_kind="host@1cpu") for r in rows[:3]]
    second = [dict(r, latency_s=r["latency_s"] * ratio) for r, ratio in zip(three, (1.0, 1.2, 1.6))]
    text = _round_agreement(three + second)
    assert text.startswith("a second round within ±10 % of the first in 33.3 % of 3 slices"), text
    assert "within ±10 % of one round in about 33.3 % and of the median of two in about 66.7 %" in text, text


def test_bench_costmodel_trains_also_on_another_dataset_but_its_held_out_shapes(rows, tmp_path, capsys):
    """--train-also: each split also trains on another dataset's slices, except those of the shapes
    it holds out. Given only the held-out shapes' slices (three times slower), the table is the one
    without it: none leaks into training. Given the training shapes' slices three times slower,
    the held-out shapes are predicted slower."""
    from mnova_tvm.cli import main
    from mnova_tvm.costmodel import shape_keys

    def table(*extra):
        out = tmp_path / "c.md"
        assert main(["bench", "costmodel", "--dataset", str(tmp_path / "d.jsonl"), "--splits", "1", "--remeasure", "0",
                     "--out", str(out), *extra]) == 0
        text = out.read_text()
        return text, [line for line in text.splitlines() if line.startswith("| host@") and line.count("|") == 9]

    _dataset(rows, tmp_path / "d.jsonl")
    held = set(shape_keys(split_by_shape(merge_rounds(read_dataset(tmp_path / "d.jsonl")[0]), 0.2, 0)[1]))
    keys = shape_keys(rows)
    _, alone = table()
    _dataset([dict(r, latency_s=3 * r["latency_s"]) for r, k in zip(rows, keys) if k in held], tmp_path / "held.jsonl")
    text, with_held = table("--train-also", str(tmp_path / "held.jsonl"))
    assert with_held == alone and "also trains on the" in text
    _dataset([dict(r, latency_s=3 * r["latency_s"]) for r, k in zip(rows, keys) if k not in held], tmp_path / "slow.jsonl")
    _, with_slow = table("--train-also", str(tmp_path / "slow.jsonl"))
    for before, after in zip(alone, with_slow):
        before, after = [c.strip() for c in before.strip("|").split("|")], [c.strip() for c in after.strip("|").split("|")]
        if before[4] == "XGBoost over the roofline line":
            assert float(after[5]) > float(before[5]) + 20 and float(after[6]) < float(before[6])  # MAPE up, share down
    assert main(["bench", "costmodel", "--dataset", str(tmp_path / "d.jsonl"), "--train-also", str(tmp_path / "no.jsonl"),
                 "--out", str(tmp_path / "x.md")]) == 2
    assert "no.jsonl: no such dataset file" in capsys.readouterr().err and not (tmp_path / "x.md").exists()


def test_bench_costmodel_reports_held_out_shapes_per_kind(rows, tmp_path, capsys):
    from mnova_tvm.cli import main
    from mnova_tvm.commands.bench import _SETTLED, PREDICT_BATCH, _remeasured_rows, _source

    _dataset(rows, tmp_path / "d.jsonl")
    out = tmp_path / "costmodel.md"
    assert main(["bench", "costmodel", "--dataset", str(tmp_path / "d.jsonl"), "--splits", "2", "--out", str(out)]) == 0
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in out.read_text().splitlines()
             if line.startswith("| host@")]
    rate = [c for c in cells if len(c) == 4 and c[2] == str(PREDICT_BATCH)]
    table, curve = [c for c in cells if len(c) == 8], [c for c in cells if len(c) == 4 and c[1].isdigit() and c not in rate]
    per_source = [c for c in cells if len(c) == 4 and c[1] == "other models"]  # "edge" is not the zoo's nor a sweep
    per_op = [c for c in cells if len(c) == 4 and not c[1].isdigit() and c not in per_source]
    per_latency = [c for c in cells if len(c) == 5]
    # per operator (by op_code): the held-out rows of each kind, split among its operators
    assert per_op and {c[1] for c in per_op} <= {OPS[int(r["op_code"])] for r in rows}
    for kind in SPEED:
        ops = [(int(c[2]), float(c[3])) for c in per_op if c[0] == kind]
        held, within = next((int(row[3]), float(row[6])) for row in table if row[0] == kind)
        assert held - len(ops) < sum(n for n, _ in ops) <= held
        assert sum(n * share for n, share in ops) / sum(n for n, _ in ops) == pytest.approx(within, abs=1.0)
        assert [(int(c[2]), float(c[3])) for c in per_source if c[0] == kind] == [(held, pytest.approx(within, abs=0.1))]
        # by latency: the held-out rows again (a band with under one slice per split left out); the rounds are the
        # edge CNN's repeated shapes, timed alike
        bands = [c for c in per_latency if c[0] == kind]
        assert bands and held - 2 * len(bands) <= sum(int(c[2]) for c in bands) <= held
        assert {c[4] for c in bands} <= {"-", "100.0"}
    assert sorted({r[0] for r in table}) == sorted(SPEED) and len(table) == 2 * len(SPEED)
    # batched predict: every slice of each kind (rounds merged), predicted at some positive rate
    slices = merge_rounds(read_dataset(tmp_path / "d.jsonl")[0])
    assert sorted((c[0], int(c[1])) for c in rate) == sorted((k, sum(r["device_kind"] == k for r in slices)) for k in SPEED)
    assert all(float(c[3].replace(",", "")) > 0 for c in rate)
    for row in table:  # a latency linear in the roofline terms: the line alone is exact, the trees keep it so
        assert float(row[6]) >= 95 and float(row[7]) > 0.95, row
    # the learning curve: a quarter, half, three quarters and all of each split's training shapes, the last
    # point the table's own held-out share
    assert len(curve) == 4 * len(SPEED) and (tmp_path / "costmodel-curve.png").stat().st_size > 0
    for kind in SPEED:
        points = [(float(c[1]), c[2]) for c in curve if c[0] == kind]
        ours = next(row[6] for row in table if row[0] == kind and row[4] == "XGBoost over the roofline line")
        assert [n for n, _ in points] == sorted({n for n, _ in points}) and points[-1][1] == ours
        assert points[0][0] == pytest.approx(points[-1][0] / 4, abs=1)
    # a second round, within 2 % of the first for every other slice and 1.5x for the rest: the table adds both apart
    _dataset(rows + [dict(r, latency_s=r["latency_s"] * (1.02 if i % 2 else 1.5)) for i, r in enumerate(rows)],
             tmp_path / "d2.jsonl")
    assert main(["bench", "costmodel", "--dataset", str(tmp_path / "d2.jsonl"), "--splits", "2", "--out", str(out)]) == 0
    table = [[c.strip() for c in line.strip("|").split("|")] for line in out.read_text().splitlines()
             if line.startswith("| host@") and line.count("|") == 9]
    assert len(table) == 4 * len(SPEED)
    for kind in SPEED:
        held = {cells[4]: int(cells[3]) for cells in table if cells[0] == kind}
        assert set(held) == {"XGBoost over the roofline line", "roofline line alone",
                             "XGBoost, slices whose rounds agree within ±10 %", "XGBoost, slices whose rounds disagree"}
        agree, disagree = held["XGBoost, slices whose rounds agree within ±10 %"], held["XGBoost, slices whose rounds disagree"]
        assert abs(agree + disagree - held["XGBoost over the roofline line"]) <= 2 and abs(agree - disagree) < agree / 2
    bands = [[c.strip() for c in line.strip("|").split("|")] for line in out.read_text().splitlines()
             if line.startswith("| host@") and line.count("|") == 6]
    assert {c[0] for c in bands} == set(SPEED)
    agreeing = [float(c[4]) for c in bands]  # every other slice's second round within 2 %, the rest 1.5x apart
    assert all(0 <= a <= 100 for a in agreeing) and 35 < sum(agreeing) / len(agreeing) < 65, bands
    # a third round (--tiebreak) of the slices whose two disagree: every other one near the first (a majority
    # settles it), the rest 1.3x (three apart): the settled row holds the agreeing slices and half the others
    third = [dict(r, latency_s=r["latency_s"] * (1.01 if i % 4 == 0 else 1.3)) for i, r in enumerate(rows) if i % 2 == 0]
    _dataset(rows + [dict(r, latency_s=r["latency_s"] * (1.02 if i % 2 else 1.5)) for i, r in enumerate(rows)] + third,
             tmp_path / "d4.jsonl")
    assert main(["bench", "costmodel", "--dataset", str(tmp_path / "d4.jsonl"), "--splits", "2", "--out", str(out)]) == 0
    table = [[c.strip() for c in line.strip("|").split("|")] for line in out.read_text().splitlines()
             if line.startswith("| host@") and line.count("|") == 9]
    for kind in SPEED:
        held = {cells[4]: int(cells[3]) for cells in table if cells[0] == kind}
        everything, settled = held["XGBoost over the roofline line"], held[_SETTLED]
        assert abs(settled - 0.75 * everything) < 0.1 * everything, held
    # every other slice timed in a spell 1.4x slower, which the in-cache reference read: the slices timed
    # with the references, predicted for the state they read and at the median state, side by side
    _dataset([dict(r, latency_s=r["latency_s"] * (1.4 if i % 2 else 1.0), host_compute_s=1.4e-4 if i % 2 else 1e-4,
                   host_memory_s=1e-3) for i, r in enumerate(rows)], tmp_path / "d3.jsonl")
    assert main(["bench", "costmodel", "--dataset", str(tmp_path / "d3.jsonl"), "--splits", "2", "--out", str(out)]) == 0
    table = [[c.strip() for c in line.strip("|").split("|")] for line in out.read_text().splitlines()
             if line.startswith("| host@") and line.count("|") == 9]
    for kind in SPEED:
        rows_of = {cells[4]: cells for cells in table if cells[0] == kind}
        told = rows_of["XGBoost, slices timed with the reference kernels"]
        untold = rows_of["the same slices, the host at its median state"]
        assert told[3] == untold[3] == rows_of["XGBoost over the roofline line"][3]  # every slice has the readings
        assert float(told[6]) > float(untold[6]) + 20
    assert main(["bench", "costmodel", "--dataset", str(tmp_path / "d.jsonl"), "--remeasure", "-1",
                 "--out", str(tmp_path / "x.md")]) == 2
    assert "--remeasure at least 0" in capsys.readouterr().err and not (tmp_path / "x.md").exists()
    assert _remeasured_rows(None, None, rows, {}, tmp_path, 0) == []  # --remeasure 0: nothing timed again
    assert [_source(m) for m in ("resnet18", "sweep40-seed3", "branches40-seed1", "pools40-seed2", "edge")] == [
        "zoo models", "block sweeps (--sweep)", "branch sweeps (--sweep-kind branches)",
        "pool sweeps (--sweep-kind pools)", "other models"]
    (tmp_path / "empty.jsonl").write_text("")
    assert main(["bench", "costmodel", "--dataset", str(tmp_path / "empty.jsonl"), "--out", str(tmp_path / "x.md")]) == 2
    assert "no operator rows" in capsys.readouterr().err and not (tmp_path / "x.md").exists()


def test_bench_costmodel_measures_plans_and_the_noise_floor_on_a_cluster(tmp_path):
    import onnx

    from mnova_tvm.cli import main

    cluster = plain_local2(tmp_path, "bc")
    onnx.save(edge_cnn(), tmp_path / "edge.onnx")
    dataset = tmp_path / "d.jsonl"
    with testbed.LocalCluster(cluster, state_dir=tmp_path / "state", log=lambda *_: None) as state:
        profile_cluster(cluster, state, [("edge", frontend.load_model(str(tmp_path / "edge.onnx")))], dataset, tmp_path,
                        quick=True, log=lambda *_: None)
    out = tmp_path / "costmodel.md"
    assert main(["bench", "costmodel", str(tmp_path / "edge.onnx"), "--dataset", str(dataset), "--cluster",
                 str(tmp_path / "c.json"), "--plans", "single,height", "--splits", "1", "--remeasure", "12",
                 "--repeat", "2", "--out", str(out)]) == 0
    text = out.read_text()
    plans = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines() if line.startswith("| edge |")]
    assert [p[2].split(":")[0] for p in plans] == ["single", "height"] and {p[1] for p in plans} == {"100"}
    for cells in plans:
        predicted, measured, error = float(cells[4]), float(cells[5]), float(cells[6])
        assert cells[7] == "ok" and predicted > 0 and measured > 0
        rounding = 0.005 * (1 + predicted / measured) / measured  # both printed to 0.01 ms
        assert error == pytest.approx(100 * (predicted / measured - 1), abs=100 * rounding + 0.05)
        (compute, compute_run), (wire, wire_run) = ([float(v) for v in cells[c].split(" / ")] for c in (8, 9))
        assert compute_run > 0 and wire > 0 and compute_run + wire_run <= 1.01 * measured * len(cluster.devices)
    # one device in one segment: its compute and wire are the whole prediction, and within the run
    (compute, compute_run), (wire, wire_run) = ([float(v) for v in plans[0][c].split(" / ")] for c in (8, 9))
    assert compute + wire == pytest.approx(float(plans[0][4]), abs=0.02)
    assert compute_run + wire_run <= float(plans[0][5]) * 1.01
    assert int(plans[1][3]) > 1  # the height plan crosses the network
    noise = [line for line in text.splitlines() if line.startswith("| host@") and "| edge |" in line]
    assert {line.split("|")[1].strip() for line in noise} == {device_kind(d) for d in cluster.devices}
    assert all(int(line.split("|")[3]) == 12 for line in noise)
    assert (tmp_path / "d.json").exists()  # the cost model fitted for the plans, beside the dataset


def test_plans_are_calibrated_by_the_other_models():
    from mnova_tvm.commands.bench import _calibration_without

    factors = {"a": {"k1": 0.8, "k2": 1.0}, "b": {"k1": 1.2}, "c": {"k1": 1.0, "k2": 2.0}}
    assert _calibration_without(factors, "a") == pytest.approx({"k1": 1.1, "k2": 2.0})
    assert _calibration_without(factors, "b") == pytest.approx({"k1": 0.9, "k2": 1.5})
    assert _calibration_without({"a": {"k": 0.9}}, "a") == {"k": 0.9}  # the only model: its own factor


def test_input_columns_count_inputs_broadcasts_and_bias_bytes(graph):
    """inputs: the activation inputs a slice reads (a concat's, all of them: it is cut by rows
    only); broadcast_log: log2 of the output elements one element of a broadcast input feeds (a
    bias: the slice's map), 0 for same-shaped inputs and for weights; a bias counts in weight_bytes,
    also when it is a view of a constant (a conv's bias reshaped to 1xCx1x1, before prepare folds it)."""
    seen = set()
    for g in (graph, from_relax(frontend.load_model(edge_cnn(size=35)), "edge")):
        for job in jobs_for(g):
            node = g.node_by_name[job.node]
            columns = dict(zip(FEATURES, job_features(g, job)))
            out = list(g.tensors[node.outputs[0]].shape)
            if job.dim != "none":
                out[1 if job.dim == "channel" else 2] = job.units  # profiled slices are the first rows or channels
            if node.op == "relax.concat":
                assert columns["inputs"] == len(node.inputs) == 2, job
                seen.add("concat")
            elif node.op == "relax.add" and len(out) == 4:
                bias = [t for t in node.inputs if g.tensors[t].shape[2:] == (1, 1)]
                if bias:
                    assert columns["inputs"] == 1 and columns["broadcast_log"] == np.log2(out[2] * out[3]), job
                    assert round(2 ** columns["weight_bytes_log"] - 1) == 4 * out[1], job
                    seen.add("view bias" if g.tensors[bias[0]].view_of else "bias")
                else:
                    assert columns["inputs"] == 2 and columns["broadcast_log"] == 0, job
                    seen.add("residual")
                assert columns["smallest_input_log"] == np.log2(1 + np.prod(out)), job
            elif node.op == "relax.nn.conv2d":
                assert columns["inputs"] == 1 and columns["broadcast_log"] == 0, job
    assert seen == {"concat", "bias", "view bias", "residual"}


def test_refeature_computes_features_again_and_keeps_only_slices_still_made(graph, tmp_path, capsys):
    """A dataset of an older version (feature columns missing or computed otherwise) is refused
    with the command that fixes it; refeature_dataset rewrites its features as job_features
    computes them, keeps latencies, links and order, and drops slices the partitioner no longer
    makes. A row that does not match its model's graph stops it with the file untouched."""
    from mnova_tvm.cli import main
    from mnova_tvm.profile import refeature_dataset

    module = frontend.load_model(edge_cnn(size=35))  # the fixture's graph is of this module, prepared as profiling does
    jobs = jobs_for(graph)[:12]
    stale = [{"row": "op", "date": "2026-12-01", "device_kind": "host@1cpu", "model": "edge", "node": job.node,
              "op": graph.node_by_name[job.node].op, "dim": job.dim, "units": job.units, "total_units": job.total_units,
              **dict(zip(FEATURES, job_features(graph, job))), "weight_bytes_log": 99.0, "latency_s": 1e-4 * (i + 1),
              "repeats": 3} for i, job in enumerate(jobs)]
    for row in stale:
        del row["inputs"]
    concat = next(n for n in graph.nodes if n.op == "relax.concat")
    stale.insert(3, {**stale[0], "node": concat.name, "op": concat.op, "dim": "channel", "units": 1, "total_units": 2})
    link = {"row": "link", "date": "2026-12-01", "device": "a", "device_kind": "host@1cpu", "kind": "send", "bytes": 256,
            "seconds": 1e-3}
    path = tmp_path / "old.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in [*stale, link]))
    with pytest.raises(MnovaError, match=f"lack the feature columns inputs; compute them with mnova refeature {path}"):
        read_dataset(path)

    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(path.read_text().replace(f'"node": "{jobs[5].node}"', '"node": "nowhere"'))
    before = wrong.read_text()
    with pytest.raises(MnovaError, match="do not match its graph"):
        refeature_dataset(wrong, {"edge": module})
    assert wrong.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["old.jsonl", "wrong.jsonl"]

    with pytest.raises(MnovaError, match="has rows of models edge as well"):
        refeature_dataset(path, {"other": module})
    assert refeature_dataset(path, {"edge": module}) == (len(jobs), 1)
    ops, links = read_dataset(path)
    assert links == [link]
    assert [r["latency_s"] for r in ops] == [r["latency_s"] for i, r in enumerate(stale) if i != 3]
    for row, job in zip(ops, jobs):
        assert [row[f] for f in FEATURES] == job_features(graph, job)

    assert main(["refeature", str(wrong)]) == 2  # "edge" is neither a zoo model nor a sweep
    assert "give its ONNX file with --models" in capsys.readouterr().err


def test_refeature_describes_slices_as_profiling_does_on_the_prepared_module(tmp_path):
    """A clip's bounds are activations before prepare folds them into constants: refeature_dataset
    describes each slice from the prepared module, as profile_cluster timed it."""
    from onnx import TensorProto, helper, numpy_helper

    from onnx_models import make_model
    from mnova_tvm.profile import refeature_dataset

    weight = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "W")
    bounds = [numpy_helper.from_array(np.float32(v), n) for v, n in ((0.0, "lo"), (6.0, "hi"))]
    model = make_model([helper.make_node("Conv", ["input", "W"], ["c"], pads=[1, 1, 1, 1]),
                        helper.make_node("Clip", ["c", "lo", "hi"], ["output"])],
                       [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                       [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 8, 8])], [weight, *bounds])
    module = frontend.load_model(model)
    prepared, plain = from_relax(prepare(module), "clip"), from_relax(module, "clip")
    jobs = jobs_for(prepared)
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps({"row": "op", "date": "2026-12-01", "device_kind": "host@1cpu", "model": "clip",
                                        "node": job.node, "op": prepared.node_by_name[job.node].op, "dim": job.dim,
                                        "units": job.units, "total_units": job.total_units,
                                        **dict(zip(FEATURES, job_features(prepared, job))), "inputs": -1,
                                        "latency_s": 1e-5, "repeats": 3}) + "\n" for job in jobs))
    assert refeature_dataset(path, {"clip": module}) == (len(jobs), 0)
    ops, _ = read_dataset(path)
    assert [[row[f] for f in FEATURES] for row in ops] == [job_features(prepared, job) for job in jobs]
    assert any(job.node in plain.node_by_name and job_features(plain, job) != job_features(prepared, job) for job in jobs)


def test_score_cost_model_reports_drift_and_rounds_and_ignores_calibration(model, rows, tmp_path, capsys):
    from mnova_tvm.cli import main

    kinds = ("host@1cpu", "host@0.35cpu")
    path = tmp_path / "cm.json"
    dataclasses.replace(model, calibration={kind: 2.0 for kind in SPEED}).save(path)
    # host@0.35cpu runs 25 % slower than when the model's data was timed; host@1cpu's slices are
    # timed twice, every other one a second time within 2 % and the rest 1.5x slower
    fresh = [dict(r, latency_s=r["latency_s"] * 1.25) for r in rows if r["device_kind"] == kinds[1]]
    steady = [r for r in rows if r["device_kind"] == kinds[0]]
    again = [dict(r, latency_s=r["latency_s"] * (1.02 if i % 2 else 1.5)) for i, r in enumerate(steady)]
    _dataset(steady + again + fresh, tmp_path / "fresh.jsonl")
    out = tmp_path / "score.md"
    assert main(["score-cost-model", str(path), str(tmp_path / "fresh.jsonl"), "--out", str(out)]) == 0
    assert out.read_text().startswith("# Cost model scored") and "- machine: " in out.read_text()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in capsys.readouterr().out.splitlines()
             if line.startswith("| host@")]
    table = {c[0]: c for c in cells if len(c) == 8}
    assert sorted(table) == sorted(kinds)
    merged = merge_rounds(read_dataset(tmp_path / "fresh.jsonl")[0])
    for kind in kinds:
        kind_rows = [r for r in merged if r["device_kind"] == kind]
        x = np.array([[r[f] for f in FEATURES] for r in kind_rows])
        error = model.predict(x, [kind] * len(x)) / np.array([r["latency_s"] for r in kind_rows]) - 1  # no calibration
        shifted = (1 + error) / (1 + np.median(error)) - 1
        _, slices, mape, within, spearman, median, within_shifted, rounds = table[kind]
        assert int(slices) == len(kind_rows)
        assert float(mape) == pytest.approx(100 * np.abs(error).mean(), abs=0.05)
        assert float(within) == pytest.approx(100 * np.mean(np.abs(error) <= 0.1), abs=0.05)
        assert float(median) == pytest.approx(100 * np.median(error), abs=0.05)
        assert float(within_shifted) == pytest.approx(100 * np.mean(np.abs(shifted) <= 0.1), abs=0.05)
        per_op = [c for c in cells if len(c) == 4 and c[0] == kind]
        assert sum(int(c[2]) for c in per_op) == len(kind_rows)
    # the slower device shows as a median error near -20 %, which the shift takes back
    before = [r for r in rows if r["device_kind"] == kinds[1]]
    x = np.array([[r[f] for f in FEATURES] for r in before])
    error_before = np.median(model.predict(x, [kinds[1]] * len(x)) / np.array([r["latency_s"] for r in before]) - 1)
    assert float(table[kinds[1]][5]) == pytest.approx(100 * ((1 + error_before) / 1.25 - 1), abs=0.05)
    assert float(table[kinds[1]][5]) < -15
    assert float(table[kinds[1]][6]) > float(table[kinds[1]][3]) + 30
    for kind in kinds:  # slices timed more than once (the edge CNN's repeated shapes too): how often they agree
        agree = [r["spread"] <= 1.1 for r in merged if r["device_kind"] == kind and r["rounds"] > 1]
        assert table[kind][7] == f"{100 * np.mean(agree):.1f} ({len(agree)} slices)"
    assert 40 < float(table[kinds[0]][7].split()[0]) < 60 and float(table[kinds[1]][7].split()[0]) == 100
    # bad input: one line, exit 2, no results file
    (tmp_path / "empty.jsonl").write_text("")
    _dataset([dict(rows[0], device_kind="host@9cpu")], tmp_path / "other.jsonl")
    for argv, message in [([str(tmp_path / "missing.json"), str(tmp_path / "fresh.jsonl")], "does not exist"),
                          ([str(path), str(tmp_path / "empty.jsonl")], "no operator rows"),
                          ([str(path), str(tmp_path / "other.jsonl")], "not host@9cpu")]:
        assert main(["score-cost-model", *argv, "--out", str(tmp_path / "bad.md")]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "bad.md").exists()


def test_the_host_state_read_by_reference_kernels_explains_its_slow_spells(rows):
    """Slices timed in spells of a shared host that slow small slices as the in-cache reference
    and large ones as the streaming one: given those readings the model predicts the spells, and
    without them it predicts the slices at the host's median state."""
    rng = np.random.default_rng(0)
    base = [r for r in rows if r["device_kind"] == "host@1cpu"]
    small = np.median([r["out_bytes_log"] for r in base])
    spelled = []
    for r in base:
        for _ in range(3):  # each slice timed in three spells
            compute, memory = np.exp2(rng.uniform(-0.5, 0.5, 2))
            spelled.append({**r, "latency_s": r["latency_s"] * (compute if r["out_bytes_log"] < small else memory),
                            "host_compute_s": 1e-4 * compute, "host_memory_s": 1e-3 * memory, "base_s": r["latency_s"]})
    train_rows, test_rows = split_by_shape(spelled, 0.25, seed=1)
    model = CostModel().fit(train_rows)
    np.testing.assert_allclose(model.host_nominal["host@1cpu"], [1e-4, 1e-3], rtol=0.05)
    told, untold = evaluate(model, test_rows), evaluate(model, test_rows, host=False)
    assert told["within_10_percent"] > 0.8 and told["within_10_percent"] > untold["within_10_percent"] + 0.3
    x = np.array([[r[f] for f in FEATURES] for r in test_rows])
    at_median = model.predict(x, ["host@1cpu"] * len(x)) / np.array([r["base_s"] for r in test_rows])
    assert np.mean(np.abs(at_median - 1) <= 0.1) > 0.8
    # a model fitted on rows timed without references has no host state and ignores one given
    plain = CostModel(n_estimators=50).fit(base)
    assert plain.host_nominal["host@1cpu"] == [None, None]
    xb = np.array([[r[f] for f in FEATURES] for r in base])
    np.testing.assert_array_equal(plain.predict(xb, ["host@1cpu"] * len(xb), np.full((len(xb), 2), 5.0)),
                                  plain.predict(xb, ["host@1cpu"] * len(xb)))
