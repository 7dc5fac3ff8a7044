"""Boards, clusters and per-board compilation (ELF architecture of what is written)."""

import json

import numpy as np
import pytest
import tvm

from mnova_tvm import frontend
from mnova_tvm.cli import main
from mnova_tvm.compile import build_for_board, elf_architecture
from mnova_tvm.errors import MnovaError
from mnova_tvm.targets import list_boards, load_board, load_cluster
from onnx_models import branchy_cnn


def test_boards_and_clusters_load():
    assert set(list_boards()) == {"rpi4b", "rpi3b", "jetson_nano_cpu", "rk3399", "host"}
    for name in list_boards():
        board = load_board(name)
        assert board.tvm_target().kind.name == "llvm"
    home = load_cluster("home4")
    assert [d.board.name for d in home.devices] == ["rpi4b", "rpi3b", "jetson_nano_cpu", "rk3399"]
    assert len(load_cluster("local4").devices) == 4
    link = home.devices[0].link
    assert link.seconds(10**6) == pytest.approx(link.latency_ms / 1e3 + 8e6 / (link.bandwidth_mbps * 1e6))


@pytest.mark.parametrize("board, machine, bits", [("rpi4b", "aarch64", 64), ("rpi3b", "arm", 32),
                                                  ("jetson_nano_cpu", "aarch64", 64), ("host", "x86_64", 64)])
def test_compiled_library_has_the_boards_architecture(tmp_path, board, machine, bits):
    mod = frontend.load_model(branchy_cnn())
    out = build_for_board(mod, load_board(board), tmp_path / f"m-{board}.so")
    assert elf_architecture(out) == (machine, bits)
    if board == "host":
        x = frontend.random_inputs(mod)
        loaded = tvm.runtime.load_module(str(out))
        np.testing.assert_allclose(frontend.run(loaded, x)[0], frontend.run(mod, x)[0], rtol=1e-5, atol=1e-6)


def test_compile_cli(tmp_path, capsys):
    out = tmp_path / "sq.so"
    assert main(["compile", "--board", "rpi4b", "squeezenet1_1", "--input-size", "48", "-o", str(out)]) == 0
    assert elf_architecture(out) == ("aarch64", 64)
    assert main(["compile", "--board", "nope", "squeezenet1_1", "-o", str(tmp_path / "x.so")]) == 2
    assert "unknown board 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "x.so").exists()


def test_compile_one_device_part_of_a_plan(tmp_path, capsys):
    plan = tmp_path / "plan.json"
    assert main(["plan", "squeezenet1_1", "--input-size", "48", "--cluster", "home4", "--strategy", "channel",
                 "-o", str(plan)]) == 0
    device = json.loads(plan.read_text())["devices"][2]
    out = tmp_path / "part.so"
    assert main(["compile", "--board", "rpi3b", "squeezenet1_1", "--input-size", "48", "--plan", str(plan),
                 "--device", device, "-o", str(out)]) == 0
    assert elf_architecture(out) == ("arm", 32)
    assert main(["compile", "--board", "rpi3b", "squeezenet1_1", "--input-size", "48", "--plan", str(plan),
                 "--device", "nope", "-o", str(tmp_path / "y.so")]) == 2
    assert "--device must name one of" in capsys.readouterr().err


def write(tmp_path, data):
    path = tmp_path / "c.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def good_cluster():
    return json.loads(open(load_cluster("local2").path).read())


@pytest.mark.parametrize("mutate, message", [
    (lambda c: "{not json", "not valid JSON"),
    (lambda c: c.pop("devices") and c, "missing field 'devices'"),
    (lambda c: c["devices"][0].update(board="rpi5") or c, "unknown board 'rpi5'"),
    (lambda c: c["devices"][0].update(memory_budget_bytes=-1) or c, "memory_budget_bytes must be positive"),
    (lambda c: c["devices"][1].update(key=c["devices"][0]["key"]) or c, "duplicate device keys"),
    (lambda c: c["devices"][0]["link"].update(bandwidth_mbps=0) or c, "bandwidth must be positive"),
])
def test_bad_cluster_files(tmp_path, mutate, message):
    with pytest.raises(MnovaError, match=message):
        load_cluster(write(tmp_path, mutate(good_cluster())))
    with pytest.raises(MnovaError, match="does not exist"):
        load_cluster(str(tmp_path / "missing.json"))
