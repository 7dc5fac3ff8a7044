"""Plans for a cluster: the simple baselines every partitioner is compared with.

All return a `Plan` over the cluster's devices in the given execution order; GenEFlow's planner
(with the cost model) lives in `geneflow_planner`.
"""

from __future__ import annotations

from typing import Sequence

from .errors import MnovaError
from .graph import OpGraph
from .partition import Plan, single_device_plan, uniform_plan
from .targets import Cluster


def device_speeds(cluster: Cluster) -> list[float]:
    """Relative compute speed of each device: its board's speed times its CPU quota."""
    return [d.board.relative_speed * (d.cpu_quota or 1.0) for d in cluster.devices]


def single_device(graph: OpGraph, cluster: Cluster, device: str, order: Sequence[str] | None = None) -> Plan:
    names = [d.name for d in cluster.devices]
    if device not in names:
        raise MnovaError(f"cluster {cluster.name} has no device {device!r}; devices: {', '.join(names)}")
    return single_device_plan(graph, names, names.index(device), order)


def proportional(graph: OpGraph, cluster: Cluster, dim: str, order: Sequence[str] | None = None,
                 proportions: Sequence[float] | None = None) -> Plan:
    """Every operator that allows `dim` split in proportion to device speed (DeepThings/CoEdge
    style for height); the others run on the fastest device."""
    speeds = list(proportions) if proportions is not None else device_speeds(cluster)
    if len(speeds) != len(cluster.devices) or min(speeds) < 0 or sum(speeds) <= 0:
        raise MnovaError(f"proportions must be {len(cluster.devices)} non-negative numbers, not all zero")
    fastest = max(range(len(speeds)), key=speeds.__getitem__)
    return uniform_plan(graph, [d.name for d in cluster.devices], dim, speeds, order, fastest)
