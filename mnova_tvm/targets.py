"""Boards and clusters: the JSON files under targets/ read into frozen dataclasses, validated.

A board says how to compile for it (TVM target dict, cross compiler), a cluster which devices
take part (board, memory budget, link, RPC key) and where their TVM RPC tracker is.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from .errors import MnovaError

TARGETS_DIR = Path(__file__).resolve().parent.parent / "targets"


@dataclass(frozen=True)
class Board:
    name: str
    description: str
    target: Mapping[str, Any]
    cross_compiler: str | None
    cores: int
    memory_budget_bytes: int
    relative_speed: float

    def tvm_target(self):
        import tvm

        target = dict(self.target)
        if target.get("mcpu") == "native":  # the CPU of the machine that compiles (the host board)
            from tvm.target import codegen

            target["mcpu"] = codegen.llvm_get_system_cpu()
        try:
            return tvm.target.Target(target)
        except Exception as err:  # TVM rejects unknown keys/values with several error types
            raise MnovaError(f"board {self.name}: TVM rejects its target {dict(self.target)}: {str(err).splitlines()[0]}") from None


@dataclass(frozen=True)
class Link:
    bandwidth_mbps: float
    latency_ms: float

    def seconds(self, nbytes: int) -> float:
        """Time to move `nbytes` one way over this link (latency + size / bandwidth)."""
        return self.latency_ms / 1e3 + nbytes * 8 / (self.bandwidth_mbps * 1e6)


@dataclass(frozen=True)
class Device:
    name: str
    board: Board
    key: str
    memory_budget_bytes: int
    link: Link
    cpu_quota: float | None = None  # share of one core for the emulated testbed


@dataclass(frozen=True)
class Cluster:
    name: str
    description: str
    tracker_host: str
    tracker_port: int  # 0: pick a free port when starting a local cluster
    devices: tuple[Device, ...]
    emulate: bool = False
    path: str = ""

    def device(self, name: str) -> Device:
        for d in self.devices:
            if d.name == name:
                return d
        raise MnovaError(f"cluster {self.name} has no device {name!r}; devices: {', '.join(d.name for d in self.devices)}")


def _read_json(path: Path, what: str) -> dict:
    if not path.exists():
        raise MnovaError(f"{what} file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise MnovaError(f"{what} file {path} is not valid JSON ({err.msg if hasattr(err, 'msg') else err}): fix it") from None
    if not isinstance(data, dict):
        raise MnovaError(f"{what} file {path} must hold a JSON object")
    return data


def _field(data: dict, key: str, kind, where: str):
    if key not in data:
        raise MnovaError(f"{where}: missing field {key!r}")
    value = data[key]
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise MnovaError(f"{where}: field {key!r} must be {getattr(kind, '__name__', kind)}, got {value!r}")
    return value


def list_boards() -> list[str]:
    return sorted(p.stem for p in TARGETS_DIR.glob("*.json"))


def load_board(name_or_path: str) -> Board:
    """A board by name (targets/NAME.json) or by path to a board JSON file."""
    path = Path(name_or_path)
    if path.suffix != ".json":
        path = TARGETS_DIR / f"{name_or_path}.json"
        if not path.exists():
            raise MnovaError(f"unknown board {name_or_path!r}; boards: {', '.join(list_boards())}")
    data = _read_json(path, "board")
    where = f"board {path}"
    target = _field(data, "target", dict, where)
    if target.get("kind") != "llvm":
        raise MnovaError(f"{where}: only llvm (CPU) targets are supported, got kind {target.get('kind')!r}")
    cores = _field(data, "cores", int, where)
    budget = _field(data, "memory_budget_bytes", int, where)
    if cores < 1 or budget <= 0:
        raise MnovaError(f"{where}: cores and memory_budget_bytes must be positive")
    cross = data.get("cross_compiler")
    if cross is not None and not isinstance(cross, str):
        raise MnovaError(f"{where}: cross_compiler must be a string or null")
    return Board(
        name=_field(data, "name", str, where), description=data.get("description", ""),
        target=MappingProxyType(dict(target)), cross_compiler=cross, cores=cores,
        memory_budget_bytes=budget, relative_speed=float(data.get("relative_speed", 1.0)),
    )


def load_cluster(path: str) -> Cluster:
    """A cluster JSON file (see targets/clusters/), or a name of one of those files."""
    p = Path(path)
    if p.suffix != ".json" and not p.exists():
        p = TARGETS_DIR / "clusters" / f"{path}.json"
    data = _read_json(p, "cluster")
    where = f"cluster {p}"
    tracker = _field(data, "tracker", dict, where)
    devices_data = _field(data, "devices", list, where)
    if not devices_data:
        raise MnovaError(f"{where}: no devices")
    devices = []
    for i, d in enumerate(devices_data):
        dwhere = f"{where}, device {i}"
        if not isinstance(d, dict):
            raise MnovaError(f"{dwhere}: must be a JSON object")
        link = _field(d, "link", dict, dwhere)
        bandwidth = _field(link, "bandwidth_mbps", float, dwhere + " link")
        latency = _field(link, "latency_ms", float, dwhere + " link")
        budget = _field(d, "memory_budget_bytes", int, dwhere)
        if bandwidth <= 0 or latency < 0:
            raise MnovaError(f"{dwhere}: link bandwidth must be positive and latency not negative")
        if budget <= 0:
            raise MnovaError(f"{dwhere}: memory_budget_bytes must be positive, got {budget}")
        quota = d.get("cpu_quota")
        if quota is not None and not (isinstance(quota, (int, float)) and 0 < quota <= 64):
            raise MnovaError(f"{dwhere}: cpu_quota must be a positive number of cores")
        devices.append(Device(
            name=_field(d, "name", str, dwhere), board=load_board(_field(d, "board", str, dwhere)),
            key=_field(d, "key", str, dwhere), memory_budget_bytes=budget, link=Link(bandwidth, latency),
            cpu_quota=None if quota is None else float(quota),
        ))
    for attr in ("name", "key"):
        values = [getattr(d, attr) for d in devices]
        dup = sorted({v for v in values if values.count(v) > 1})
        if dup:
            raise MnovaError(f"{where}: duplicate device {attr}s: {', '.join(dup)}")
    port = _field(tracker, "port", int, where + " tracker")
    if not 0 <= port < 65536:
        raise MnovaError(f"{where}: tracker port {port} out of range")
    return Cluster(
        name=_field(data, "name", str, where), description=data.get("description", ""),
        tracker_host=_field(tracker, "host", str, where + " tracker"), tracker_port=port,
        devices=tuple(devices), emulate=bool(data.get("emulate", False)), path=str(p),
    )
