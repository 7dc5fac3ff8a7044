"""The local edge cluster: a real TVM RPC tracker and servers, run remotely, cleaned up exactly."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tvm
from tvm import relax

from mnova_tvm import cluster as testbed
from mnova_tvm import frontend
from mnova_tvm.cli import main
from mnova_tvm.compile import build_for_board
from mnova_tvm.errors import MnovaError
from mnova_tvm.targets import load_board, load_cluster
from onnx_models import branchy_cnn


def cluster_file(tmp_path, name, emulate):
    data = json.loads(open(load_cluster("local2").path).read())
    data["name"] = name
    data["emulate"] = emulate
    for d in data["devices"]:
        d["key"] = f"{name}-{d['name']}"
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return load_cluster(str(path))


def gone(state):
    pids = [state.tracker_pid, *(d.pid for d in state.devices)]
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return (not any(testbed._alive(p) for p in pids)
            and not any(d.namespace and d.namespace in namespaces for d in state.devices)
            and not any(d.cgroup and os.path.exists(f"/sys/fs/cgroup/cpu/{d.cgroup}") for d in state.devices))


def run_remote(session, lib_path, x):
    session.upload(str(lib_path))
    lib = session.load_module(lib_path.name)
    dev = session.cpu()
    vm = relax.VirtualMachine(lib, dev)
    return vm["main"](tvm.runtime.tensor(x, device=dev)).numpy()


@pytest.mark.parametrize("emulate", [False, True])
def test_remote_run_and_clean_down(tmp_path, emulate):
    if emulate and not testbed.emulation_support()[0]:
        pytest.skip(f"emulation not available: {testbed.emulation_support()[1]}")
    cluster = cluster_file(tmp_path, f"t{os.getpid() % 10000}{int(emulate)}", emulate)
    mod = frontend.load_model(branchy_cnn())
    lib = build_for_board(mod, load_board("host"), tmp_path / "m.so")
    x = frontend.random_inputs(mod)[0]
    with testbed.LocalCluster(cluster, state_dir=tmp_path / "state", log=lambda *_: None) as state:
        assert state.emulated == emulate
        for device in cluster.devices:
            out = run_remote(testbed.connect(state, device.name), lib, x)
            np.testing.assert_allclose(out, frontend.run(mod, [x])[0], rtol=1e-5, atol=1e-6)
        if emulate:
            assert testbed.device_peak_memory(state, cluster.devices[0].name) > 0
            # a quota as large as the board's cores would only throttle (testbed.CPU_PERIOD_US): none
            quotas = {d.name: int(open(f"/sys/fs/cgroup/cpu/{d.cgroup}/cpu.cfs_quota_us").read()) for d in state.devices}
            assert quotas == {"a": -1, "b": testbed.CPU_PERIOD_US // 2}, quotas
        # a device that dies is named in a clear error, quickly
        victim = state.devices[1]
        testbed._kill_group(victim.pid)
        with pytest.raises(MnovaError, match=f"device {victim.name} .*not answering"):
            testbed.connect(state, victim.name, timeout=3)
    assert gone(state)
    assert not (tmp_path / "state" / f"{cluster.name}.json").exists()


def test_cli_up_status_down(tmp_path, capsys):
    cluster = cluster_file(tmp_path, f"c{os.getpid() % 10000}", False)
    state_dir = str(tmp_path / "state")
    try:
        assert main(["cluster", "up", "--cluster", cluster.path, "--state", state_dir]) == 0
        assert main(["cluster", "up", "--cluster", cluster.path, "--state", state_dir]) == 2
        assert "already up" in capsys.readouterr().err
        assert main(["cluster", "status", "--cluster", cluster.path, "--state", state_dir]) == 0
        status = capsys.readouterr().out
        assert all(d.key in status for d in cluster.devices)
        state = testbed.load_state(cluster, tmp_path / "state")
    finally:
        assert main(["cluster", "down", "--cluster", cluster.path, "--state", state_dir]) == 0
    assert gone(state)
    assert main(["cluster", "status", "--cluster", cluster.path, "--state", state_dir]) == 2


def test_interrupted_client_leaves_nothing(tmp_path):
    """A script using LocalCluster that is killed by Ctrl-C (SIGINT) stops the cluster it started."""
    cluster = cluster_file(tmp_path, f"i{os.getpid() % 10000}", False)
    script = f"""
import signal, sys, time
from pathlib import Path
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, even if started with SIGINT ignored
from mnova_tvm import cluster as testbed
from mnova_tvm.targets import load_cluster
with testbed.LocalCluster(load_cluster({cluster.path!r}), state_dir=Path({str(tmp_path / 'state')!r}), log=lambda *a: None) as state:
    print(state.tracker_pid, *[d.pid for d in state.devices], flush=True)
    time.sleep(60)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 3 and all(testbed._alive(p) for p in pids)
    proc.send_signal(2)
    proc.wait(timeout=60)
    assert not any(testbed._alive(p) for p in pids)
