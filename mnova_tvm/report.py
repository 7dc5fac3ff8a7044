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
    return f"{platform.system()} {platform.machine()}, {cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


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
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
