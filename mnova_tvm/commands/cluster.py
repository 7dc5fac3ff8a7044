"""`mnova cluster up|down|status --cluster FILE`: the local (emulated) edge cluster."""

from __future__ import annotations

from pathlib import Path

from .. import cluster as testbed
from ..errors import MnovaError
from ..targets import load_cluster


def register(sub) -> None:
    parser = sub.add_parser("cluster", help="start, stop or show the local edge cluster (TVM RPC tracker + servers)")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--cluster", required=True, help="cluster JSON (or a name under targets/clusters/)")
    parser.add_argument("--state", default=None, help=f"state directory (default {testbed.STATE_DIR})")
    parser.add_argument("--plain", action="store_true", help="do not emulate (no namespaces, shaping or cgroups)")
    parser.set_defaults(func=run)


def run(args) -> int:
    cluster = load_cluster(args.cluster)
    state_dir = Path(args.state) if args.state else None
    if args.action == "up":
        state = testbed.start(cluster, state_dir, emulate=False if args.plain else None)
        print(f"tracker at {state.tracker_host}:{state.tracker_port}; {len(state.devices)} devices registered")
        print(f"a real board joins with: python -m tvm.exec.rpc_server --tracker HOST:{state.tracker_port} --key KEY")
        return 0
    state = testbed.load_state(cluster, state_dir)
    if args.action == "down":
        path = testbed.state_path(cluster, state_dir)
        if state is None and not path.exists():
            print(f"cluster {cluster.name} is not up")
            return 0
        if state is None:  # tracker gone: still clean up whatever the state file names
            import json

            state = testbed.ClusterState.from_json(json.loads(path.read_text()))
        testbed.stop(state, path)
        print(f"cluster {cluster.name} stopped")
        return 0
    if state is None:
        raise MnovaError(f"cluster {cluster.name} is not up: run `mnova cluster up --cluster {args.cluster}`")
    free = testbed.registered_keys(state)
    print(f"cluster {cluster.name}: tracker {state.tracker_host}:{state.tracker_port} (pid {state.tracker_pid}); {state.emulation_note}")
    print(f"{'device':8s} {'key':16s} {'pid':>7s} {'address':12s} {'free':>4s} {'cpu':>5s} {'mem limit':>10s} {'link':>16s}")
    for d in state.devices:
        limit = f"{d.memory_limit_bytes / 2**20:.0f} MiB" if d.memory_limit_bytes else "-"
        cpu = f"{d.cpu_quota:.2f}" if d.cpu_quota else "-"
        link = f"{d.bandwidth_mbps:g} Mbit {d.latency_ms:g} ms" if state.emulated else "loopback"
        print(f"{d.name:8s} {d.key:16s} {d.pid:7d} {d.address:12s} {free.get(d.key, 0):4d} {cpu:>5s} {limit:>10s} {link:>16s}")
    return 0
