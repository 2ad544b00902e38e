"""What the benchmark scripts share: a figure measured beside its baseline, the table
that prints them, and the few readings of this machine they take (CPU, /proc status).

Imported as `figures` by the scripts in this folder (run as `python benchmarks/X.py`,
which puts the folder first on sys.path).
"""

from __future__ import annotations

import gc
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

MiB = 1 << 20


@dataclass
class Figure:
    name: str
    unit: str
    base: list[float] = field(default_factory=list)  # the baseline's samples
    subj: list[float] = field(default_factory=list)  # the subject's
    # target: ("<=" | ">=" | "<", bound, what the bound applies to: "ratio" or the subject)
    target: tuple[str, float, str] | None = None

    @property
    def base_med(self) -> float | None:
        return statistics.median(self.base) if self.base else None

    @property
    def subj_med(self) -> float:
        return statistics.median(self.subj)

    @property
    def ratio(self) -> float | None:
        base = self.base_med
        if base is None or base <= 0 or (self.unit == "MiB" and base < 1):
            return None  # a ratio to (almost) nothing means nothing
        return self.subj_med / base


def measure(
    fig: Figure,
    rounds: int,
    base: Callable[[], float],
    subj: Callable[[], float],
    warmup: bool = True,
) -> Figure:
    if warmup:
        # One untimed run of each: the first run in a process pays for growing the heap
        # (150k page faults for a 512 MiB drain) and for warming caches and imports.
        base()
        subj()
    for r in range(rounds):
        order = [(fig.base, base), (fig.subj, subj)]
        if r % 2:
            order.reverse()  # ABBA: drift within a pair of rounds falls on both alike
        for samples, fn in order:
            gc.collect()
            samples.append(fn())
    return fig


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "MiB/s":
        return f"{value:.0f} MiB/s"
    if unit in ("s", "ms"):
        return f"{value:.3f} {unit}"
    return f"{value:.1f} {unit}"


def _verdict(fig: Figure) -> tuple[str, str]:
    if fig.target is None:
        return "-", "(info)"
    op, bound, what = fig.target
    value = fig.ratio if what == "ratio" else fig.subj_med
    text = f"{op} {bound:g}" + ("" if what == "ratio" else f" {fig.unit}")
    if value is None:
        return text, "?"
    met = {"<=": value <= bound, ">=": value >= bound, "<": value < bound}[op]
    return text, "TARGET MET" if met else "TARGET MISSED"


ROW = "  {:<40} {:>13} {:>13} {:>7}  {:<11} {}"


def print_table(figures: list[Figure], base: str, subj: str, title: str = "figure") -> None:
    """The medians, their ratio and the verdict on the target; then every sample."""
    print()
    print(ROW.format(title, base, subj, "ratio", "target", "result"))
    for fig in figures:
        target, result = _verdict(fig)
        ratio = "-" if fig.ratio is None else f"{fig.ratio:.2f}"
        print(
            ROW.format(
                fig.name,
                _fmt(fig.base_med, fig.unit),
                _fmt(fig.subj_med, fig.unit),
                ratio,
                target,
                result,
            )
        )
    print()
    print(f"  samples ({base} | {subj}), in measurement order:")
    for fig in figures:
        b = " ".join(f"{x:.4g}" for x in fig.base) or "-"
        s = " ".join(f"{x:.4g}" for x in fig.subj)
        print(f"    {fig.name:<40} {b} | {s}")


def cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads), not of its children."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def writer(nbytes: int) -> list[str]:
    """A command writing `nbytes` of zeros to stdout as fast as it can."""
    if shutil.which("head"):
        return ["head", "-c", str(nbytes), "/dev/zero"]
    blocks = nbytes // MiB
    code = f"import sys\nb=bytes({MiB})\nfor _ in range({blocks}): sys.stdout.buffer.write(b)"
    return [sys.executable, "-c", code]


def status_kib(name: str, pid: int | str = "self") -> int:
    """A field of /proc/PID/status in KiB (VmRSS, VmHWM), 0 when it has none."""
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(name.encode() + b":"):
                return int(line.split()[1])
    return 0


def reset_hwm(pid: int | str = "self") -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0), so it holds the run's peak only."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_header(dists: tuple[str, ...], mode: str) -> None:
    """What a run was measured with: python, the versions of `dists` (and where
    oneshot_nb was imported from), nproc, the load average and the kernel, then `mode`."""
    import oneshot_nb

    versions = {}
    for dist in dists:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "?"
    nproc = subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip() or "?"
    print(f"python {platform.python_version()} ({sys.executable})")
    print(
        "  ".join(f"{dist} {version}" for dist, version in versions.items())
        + f" ({os.path.dirname(oneshot_nb.__file__)})"
    )
    print(f"nproc {nproc}  loadavg {loadavg()}  {platform.system()} {platform.release()}")
    print(mode, flush=True)
