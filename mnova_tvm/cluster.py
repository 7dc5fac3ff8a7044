"""The edge testbed: a TVM RPC tracker and one rpc_server per device, on this machine.

As root with iproute2 and cgroup v1 (cpu, memory), each device is emulated: its own network
namespace joined by a veth pair whose both ends are shaped to the device's link (netem rate and
delay where the kernel has netem; otherwise tbf shapes the bandwidth and the coordinator adds the
latency per transfer), a CPU quota (devices differ in speed like real boards) and a
kernel-enforced memory limit. Otherwise the servers run plain on loopback and the cluster says so.

Everything started is written to a state file, and `stop` ends exactly that: process groups by
id, namespaces and cgroups by the names this module gave them. Real boards join the same
tracker with `python -m tvm.exec.rpc_server --tracker HOST:PORT --key KEY`.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import MnovaError
from .targets import Cluster, Device

CGROUP_ROOT = Path("/sys/fs/cgroup")
STATE_DIR = Path(os.environ.get("MNOVA_STATE_DIR", Path.home() / ".cache" / "mnova" / "clusters"))
# An idle TVM rpc_server (Python + TVM runtime) needs this much on top of the model's budget.
RUNTIME_ALLOWANCE_BYTES = 400 * 2**20
# The CPU quota's period. A short one makes a quota act like a slower CPU: with the default 100 ms
# a 15 ms inference under 0.35 CPU ran at full speed and then waited out the rest of the period
# (measured 70 ms where 15 / 0.35 = 43 ms), and the operators profiled one by one never waited.
# A device whose quota is as many cores as its board's kernels use gets none: the quota could not
# slow it, yet CFS throttles it (runtime is handed to each core in slices; a thread that moves finds
# none on the other). Five kernels timed over RPC on an emulated host device, its one-CPU quota
# switched on and off in turn for 4 minutes: throttled in 33 % of the periods, medians 1-5 % slower,
# two successive 10 ms readings within 5 % of each other in 49-89 % of cases against 53-91 % without.
CPU_PERIOD_US = 10_000
START_TIMEOUT_S = 60.0


@dataclass
class DeviceState:
    name: str
    key: str
    pid: int
    address: str
    namespace: str | None = None
    cgroup: str | None = None
    veth_host: str | None = None
    cpu_quota: float | None = None
    memory_limit_bytes: int | None = None
    bandwidth_mbps: float | None = None
    latency_ms: float | None = None
    kernel_latency: bool = False  # netem adds the link latency; else the coordinator adds it


@dataclass
class ClusterState:
    cluster: str
    cluster_path: str
    tracker_host: str
    tracker_port: int
    tracker_pid: int
    emulated: bool
    emulation_note: str
    devices: list[DeviceState] = field(default_factory=list)

    def device(self, name: str) -> DeviceState:
        for d in self.devices:
            if d.name == name:
                return d
        raise MnovaError(f"cluster {self.cluster} has no running device {name!r}")

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> "ClusterState":
        devices = [DeviceState(**d) for d in data.pop("devices")]
        return cls(**data, devices=devices)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def emulation_support() -> tuple[bool, str]:
    """(available, why not) for namespaces + netem + cgroup v1 cpu/memory."""
    if os.geteuid() != 0:
        return False, "not root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return False, f"{tool} (iproute2) is not installed"
    for controller in ("cpu", "memory"):
        if not (CGROUP_ROOT / controller / "tasks").exists():
            return False, f"cgroup v1 {controller} controller is not mounted"
    return True, ""


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise MnovaError(f"{' '.join(cmd)} failed: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode}")


def _short(cluster: str) -> str:
    return hashlib.sha1(cluster.encode()).hexdigest()[:5]


# glibc raises its mmap threshold each time a large block is freed, after which freed weights and
# buffers stay in the heap: a server loading one library after another grew ~15 MiB per library
# until its memory limit killed it. A fixed threshold returns every large block to the system.
SERVER_ENV = {"MALLOC_MMAP_THRESHOLD_": str(64 * 2**10), "MALLOC_TRIM_THRESHOLD_": str(64 * 2**10)}


def _spawn(cmd: list[str], log: Path) -> subprocess.Popen:
    """Start a detached process group (so Ctrl-C of a client does not reach it; stop kills it)."""
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, **SERVER_ENV})


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:  # reap if it is our child
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is not alive
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _shape(device_cmd: list[str], dev: str, device: Device) -> bool:
    """Shape egress of `dev`: netem (rate + delay) if the kernel has it, else tbf (rate only).

    Returns True if the kernel adds the link latency, False if the coordinator must add it.
    """
    netem = ["tc", "qdisc", "add", "dev", dev, "root", "netem", "delay", f"{device.link.latency_ms}ms",
             "rate", f"{device.link.bandwidth_mbps}mbit"]
    if subprocess.run(device_cmd + netem, capture_output=True).returncode == 0:
        return True
    burst = max(1600, int(device.link.bandwidth_mbps * 1e6 / 8 / 250))  # 4 ms worth of data
    _run(device_cmd + ["tc", "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{device.link.bandwidth_mbps}mbit",
                       "burst", str(burst), "latency", "200ms"])
    return False


def _free_subnet(start: int) -> str:
    """The first 10.77.N (from N = start, wrapping) that no route on this machine uses yet, so
    two clusters up at once never share a device subnet."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    used = {int(part.split(".")[2]) for part in routes.split() if part.startswith("10.77.")}
    for step in range(250):
        octet = (start + step) % 250
        if octet not in used:
            return f"10.77.{octet}"
    raise MnovaError("no free 10.77.N.0/30 subnet left for an emulated device; stop other clusters first")


def _setup_emulated_device(cluster: Cluster, index: int, device: Device) -> dict:
    tag = f"mnova-{_short(cluster.name)}-{index}"
    veth_host, veth_dev = f"mnv{_short(cluster.name)}{index}h", f"mnv{_short(cluster.name)}{index}d"
    subnet = _free_subnet(int(_short(cluster.name), 16) % 250 + index)
    host_ip, dev_ip = f"{subnet}.1", f"{subnet}.2"
    created = DeviceState(device.name, device.key, 0, dev_ip, namespace=tag, cgroup=tag, veth_host=veth_host)
    try:
        _run(["ip", "netns", "add", tag])
        _run(["ip", "link", "add", veth_host, "type", "veth", "peer", "name", veth_dev])
        _run(["ip", "link", "set", veth_dev, "netns", tag])
        _run(["ip", "addr", "add", f"{host_ip}/30", "dev", veth_host])
        _run(["ip", "link", "set", veth_host, "up"])
        inside = ["ip", "netns", "exec", tag]
        _run(inside + ["ip", "addr", "add", f"{dev_ip}/30", "dev", veth_dev])
        _run(inside + ["ip", "link", "set", veth_dev, "up"])
        _run(inside + ["ip", "link", "set", "lo", "up"])
        kernel_latency = _shape([], veth_host, device) & _shape(inside, veth_dev, device)
        quota = device.cpu_quota or 1.0
        (CGROUP_ROOT / "cpu" / tag).mkdir(exist_ok=True)
        if quota < device.board.cores:  # else the kernels' threads cannot use more: no quota (CPU_PERIOD_US)
            (CGROUP_ROOT / "cpu" / tag / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (CGROUP_ROOT / "cpu" / tag / "cpu.cfs_quota_us").write_text(str(int(quota * CPU_PERIOD_US)))
        limit = device.memory_budget_bytes + RUNTIME_ALLOWANCE_BYTES
        (CGROUP_ROOT / "memory" / tag).mkdir(exist_ok=True)
        (CGROUP_ROOT / "memory" / tag / "memory.limit_in_bytes").write_text(str(limit))
    except BaseException:
        _teardown_emulated_device(created)
        raise
    return dict(namespace=tag, cgroup=tag, veth_host=veth_host, host_ip=host_ip, address=dev_ip,
                cpu_quota=quota, memory_limit_bytes=limit, kernel_latency=kernel_latency)


def _teardown_emulated_device(state: DeviceState) -> None:
    if state.namespace:
        subprocess.run(["ip", "netns", "del", state.namespace], capture_output=True)
    if state.veth_host:  # deleting the namespace removes the pair; be sure on the host side
        subprocess.run(["ip", "link", "del", state.veth_host], capture_output=True)
    if state.cgroup:
        for controller in ("cpu", "memory"):
            path = CGROUP_ROOT / controller / state.cgroup
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:  # tasks still leaving
                    time.sleep(0.1)


def state_path(cluster: Cluster, state_dir: Path | None = None) -> Path:
    return Path(state_dir or STATE_DIR) / f"{cluster.name}.json"


def start(cluster: Cluster, state_dir: Path | None = None, emulate: bool | None = None,
          log=print) -> ClusterState:
    """Start the tracker and the servers; returns the state (also written to the state file)."""
    path = state_path(cluster, state_dir)
    if path.exists():
        old = ClusterState.from_json(json.loads(path.read_text()))
        if _alive(old.tracker_pid):
            raise MnovaError(f"cluster {cluster.name} is already up (tracker pid {old.tracker_pid}); "
                             f"run `mnova cluster down --cluster {cluster.path}` first")
        stop(old, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    wanted = cluster.emulate if emulate is None else emulate
    supported, why = emulation_support()
    emulated = wanted and supported
    note = "emulated (netns + tc shaping + cgroup cpu/memory)" if emulated else (
        f"plain loopback: emulation off ({why})" if wanted else "plain loopback (emulation not requested)")
    log(f"cluster {cluster.name}: {note}")
    port = cluster.tracker_port or free_port()
    bind = "0.0.0.0" if emulated else "127.0.0.1"
    logs = path.parent / f"{cluster.name}.logs"
    logs.mkdir(exist_ok=True)
    tracker = _spawn([sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", bind, "--port", str(port),
                      "--port-end", str(port + 1), "--silent"], logs / "tracker.log")
    state = ClusterState(cluster.name, cluster.path, "127.0.0.1", port, tracker.pid, emulated, note)
    try:
        _wait_for_port("127.0.0.1", port, tracker)
        for index, device in enumerate(cluster.devices):
            state.devices.append(_start_server(cluster, index, device, state, logs, emulated))
            _write_state(state, path)
        wait_registered(state, [d.key for d in cluster.devices])
    except BaseException:
        stop(state, path)
        raise
    _write_state(state, path)
    return state


def _write_state(state: ClusterState, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.to_json(), indent=2))
    os.replace(tmp, path)


def _start_server(cluster, index, device, state, logs, emulated) -> DeviceState:
    server = [sys.executable, "-m", "tvm.exec.rpc_server", "--key", device.key]
    if not emulated:
        port = free_port()
        proc = _spawn(server + ["--tracker", f"127.0.0.1:{state.tracker_port}", "--host", "127.0.0.1",
                                "--port", str(port), "--port-end", str(port + 1)], logs / f"{device.name}.log")
        return DeviceState(device.name, device.key, proc.pid, "127.0.0.1",
                           bandwidth_mbps=device.link.bandwidth_mbps, latency_ms=device.link.latency_ms)
    setup = _setup_emulated_device(cluster, index, device)
    tag = setup["namespace"]
    inner = " ".join(server + ["--tracker", f"{setup['host_ip']}:{state.tracker_port}", "--host",
                               setup["address"], "--port", "9090", "--port-end", "9091"])
    script = (f"echo $$ > {CGROUP_ROOT}/cpu/{tag}/cgroup.procs && echo $$ > {CGROUP_ROOT}/memory/{tag}/cgroup.procs"
              f" && exec ip netns exec {tag} {inner}")
    proc = _spawn(["sh", "-c", script], logs / f"{device.name}.log")
    return DeviceState(device.name, device.key, proc.pid, setup["address"], tag, tag, setup["veth_host"],
                       setup["cpu_quota"], setup["memory_limit_bytes"], device.link.bandwidth_mbps,
                       device.link.latency_ms, setup["kernel_latency"])


def _wait_for_port(host: str, port: int, proc: subprocess.Popen, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise MnovaError(f"the RPC tracker exited at start (code {proc.returncode}); is port {port} free?")
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise MnovaError(f"the RPC tracker did not listen on {host}:{port} within {timeout:.0f} s")


def tracker_summary(state: ClusterState) -> dict:
    from tvm import rpc

    try:
        return rpc.connect_tracker(state.tracker_host, state.tracker_port).summary()
    except Exception:
        raise MnovaError(f"cannot reach the RPC tracker of {state.cluster} at {state.tracker_host}:{state.tracker_port}: "
                         f"is the cluster up?") from None


def registered_keys(state: ClusterState) -> dict[str, int]:
    """Key -> number of free servers registered with the tracker."""
    queue = tracker_summary(state).get("queue_info", {})
    return {key: int(info.get("free", 0)) for key, info in queue.items()}


def wait_registered(state: ClusterState, keys: list[str], timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while True:
        missing = [k for k in keys if registered_keys(state).get(k, 0) < 1]
        if not missing:
            return
        for d in state.devices:
            if d.key in missing and not _alive(d.pid):
                raise MnovaError(f"the RPC server of device {d.name} exited at start; see its log in {STATE_DIR}")
        if time.monotonic() > deadline:
            raise MnovaError(f"devices with keys {', '.join(missing)} did not register with the tracker within {timeout:.0f} s")
        time.sleep(0.2)


def connect(state: ClusterState, device: str, timeout: float = 60.0):
    """An RPC session to `device` through the tracker; a dead device is a clear error at once, a busy
    one after `timeout` (a server re-registers only once the forked process of its last session has
    exited, which under a small CPU quota and memory limit has taken over 10 s)."""
    from tvm import rpc

    dev = state.device(device)
    deadline = time.monotonic() + timeout
    while registered_keys(state).get(dev.key, 0) < 1:
        if not _alive(dev.pid) or time.monotonic() > deadline:
            raise MnovaError(f"device {device} (key {dev.key}) is not answering: its RPC server "
                             f"{'died' if not _alive(dev.pid) else f'has been busy or unregistered for {timeout:.0f} s'}; restart the cluster")
        time.sleep(0.1)
    tracker = rpc.connect_tracker(state.tracker_host, state.tracker_port)
    try:
        return tracker.request(dev.key, priority=1, session_timeout=0, max_retry=2)
    except Exception:
        raise MnovaError(f"device {device} (key {dev.key}) did not accept an RPC session; restart the cluster") from None


def _memory_file(state: ClusterState, device: str, name: str) -> Path | None:
    """A file of the device's memory cgroup (emulated devices only), if it exists."""
    dev = state.device(device)
    path = CGROUP_ROOT / "memory" / dev.cgroup / name if dev.cgroup else None
    return path if path is not None and path.exists() else None


def device_peak_memory(state: ClusterState, device: str) -> int | None:
    """Peak memory of the device's server (cgroup max usage when emulated), in bytes."""
    path = _memory_file(state, device, "memory.max_usage_in_bytes")
    return int(path.read_text()) if path else None


def device_memory_usage(state: ClusterState, device: str) -> int | None:
    """Memory the device's server uses now (cgroup usage when emulated), in bytes."""
    path = _memory_file(state, device, "memory.usage_in_bytes")
    return int(path.read_text()) if path else None


def reset_peak_memory(state: ClusterState, device: str) -> None:
    path = _memory_file(state, device, "memory.max_usage_in_bytes")
    if path:
        path.write_text("0")


def stop(state: ClusterState, path: Path | None = None) -> None:
    """Stop exactly what `start` started: server and tracker process groups, namespaces, cgroups."""
    for dev in state.devices:
        _kill_group(dev.pid)
    _kill_group(state.tracker_pid)
    for dev in state.devices:
        _teardown_emulated_device(dev)
    if path is not None and path.exists():
        path.unlink()


def load_state(cluster: Cluster, state_dir: Path | None = None) -> ClusterState | None:
    path = state_path(cluster, state_dir)
    if not path.exists():
        return None
    state = ClusterState.from_json(json.loads(path.read_text()))
    return state if _alive(state.tracker_pid) else None


class LocalCluster:
    """Context manager: the cluster up for the block, down after it (also on error or Ctrl-C).

    If the cluster is already up (by `mnova cluster up`), it is used and left running.
    """

    def __init__(self, cluster: Cluster, state_dir: Path | None = None, emulate: bool | None = None, log=print):
        self.cluster, self.state_dir, self.emulate, self.log = cluster, state_dir, emulate, log
        self.state: ClusterState | None = None
        self.owned = False

    def __enter__(self) -> ClusterState:
        existing = load_state(self.cluster, self.state_dir)
        if existing is not None:
            self.state = existing
            return existing
        self.state = start(self.cluster, self.state_dir, self.emulate, self.log)
        self.owned = True
        return self.state

    def __exit__(self, *exc) -> None:
        if self.owned and self.state is not None:
            stop(self.state, state_path(self.cluster, self.state_dir))
