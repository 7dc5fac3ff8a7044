"""Tables, machine descriptions and plots shared by the commands and benchmarks."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

from .commands._io import atomic_path


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from tvm.target import codegen

    # "AMD EPYC" names Zen 3 and Zen 5 machines alike (AVX2 against AVX-512): LLVM's name tells them apart
    return (f"{platform.system()} {platform.machine()}, {cpu} ({codegen.llvm_get_system_cpu()}), {os.cpu_count()} cores, "
            f"Python {platform.python_version()}")


def results_header(title: str) -> str:
    command = " ".join(shlex.quote(a) for a in ["mnova", *sys.argv[1:]]) if sys.argv else "mnova"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"# {title}\n\n- date: {now}\n- machine: {machine_description()}\n- command: `{command}`\n"


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.2f}"


def _label_axes(ax, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _save_png(fig, path) -> None:
    """Lay the figure out, write it atomically as a PNG and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def plot_memory_profiles(profiles: dict[str, list[int]], path, title: str) -> None:
    """Memory over execution steps, one line per order (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for label, profile in profiles.items():
        ax.step(range(len(profile)), [b / 2**20 for b in profile], where="post",
                label=f"{label} (peak {max(profile) / 2**20:.2f} MiB)")
    ax.set_xlabel("execution step (operator)")
    ax.set_ylabel("activation memory (MiB)")
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    _save_png(fig, path)


def plot_run(report, path, budgets_title: str = "") -> None:
    """Two panels: per-device timeline of one inference (send / compute / receive) and each
    device's memory (planned and measured peak) against its budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"send": "#f28e2b", "compute": "#4e79a7", "receive": "#59a14f"}
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(13, 0.6 * len(report.devices) + 2.5),
                                     gridspec_kw={"width_ratios": [3, 1.3]})
    for event in report.events:
        ax_t.barh(event.device, 1e3 * (event.end_s - event.start_s), left=1e3 * event.start_s,
                  color=colors[event.kind], height=0.6)
    ax_t.set_yticks(range(len(report.devices)), [d.name for d in report.devices])
    ax_t.invert_yaxis()
    ax_t.set_xlabel("time in the median inference (ms)")
    ax_t.set_title(f"{report.model}: {report.median_ms:.1f} ms end to end")
    ax_t.legend(handles=[matplotlib.patches.Patch(color=c, label=k) for k, c in colors.items()], loc="lower right")
    names = [d.name for d in report.devices]
    ys = range(len(names))
    ax_m.barh([y - 0.2 for y in ys], [d.planned_bytes / 2**20 for d in report.devices], height=0.4, label="planned")
    measured = [((d.peak_bytes or 0) - (d.idle_bytes or 0)) / 2**20 for d in report.devices]
    ax_m.barh([y + 0.2 for y in ys], measured, height=0.4, label="measured (peak - idle)")
    for y, d in zip(ys, report.devices):
        ax_m.plot([d.budget_bytes / 2**20] * 2, [y - 0.45, y + 0.45], color="red")
    ax_m.set_yticks(list(ys), names)
    ax_m.invert_yaxis()
    ax_m.set_xlabel("MiB (red: budget)")
    ax_m.set_title("memory per device")
    ax_m.legend(loc="lower right", fontsize=8)
    _save_png(fig, path)


def plot_convergence(history, baselines: dict[str, float], path, title: str) -> None:
    """GenEFlow's best predicted latency per generation, with the baselines as lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    gens = [h.generation for h in history]
    best = [1e3 * h.best_latency if h.best_latency != float("inf") else float("nan") for h in history]
    ax.plot(gens, best, label="GenEFlow best (feasible)", color="black", linewidth=2)
    for i, (label, seconds) in enumerate(sorted(baselines.items(), key=lambda kv: kv[1])):
        ax.axhline(1e3 * seconds, linestyle="--", color=f"C{i}", label=f"{label} {1e3 * seconds:.0f} ms")
    ax.set_yscale("log")
    _label_axes(ax, "generation", "predicted latency (ms)", title)
    _save_png(fig, path)


def plot_learning_curve(curves: dict[str, list[tuple[float, float]]], path, title: str) -> None:
    """Held-out share within ±10 % against the operator shapes trained on, one line per device
    kind, the 90 % target dashed (PNG, written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, points in curves.items():
        shapes, shares = zip(*points)
        ax.plot(shapes, [100 * s for s in shares], marker="o", label=kind)
    ax.axhline(90, linestyle="--", color="grey", label="target 90 %")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    _label_axes(ax, "operator shapes trained on (log scale)", "held-out slices within ±10 % (%)", title)
    _save_png(fig, path)
