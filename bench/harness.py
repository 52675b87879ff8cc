"""The small harness every benchmark uses: warm-up, N timed runs, median and spread, a reference
measured in the same run, peak memory of the whole process tree, figures printed as JSON."""
from __future__ import annotations

import json
import platform
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import psutil


@dataclass(frozen=True)
class Timing:
    name: str
    runs: list[float]
    # CPU seconds of the process tree per run: unlike wall time, they do not grow when other
    # work shares the machine, so they compare arms measured under different load.
    cpu_runs: tuple[float, ...] = ()

    @property
    def median(self) -> float:
        return statistics.median(self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "runs": len(self.runs),
            "median_s": round(self.median, 4),
            "min_s": round(min(self.runs), 4),
            "max_s": round(max(self.runs), 4),
            "spread_pct": round(100 * (max(self.runs) - min(self.runs)) / self.median, 1)
            if self.median else 0.0,
            **({"median_cpu_s": round(statistics.median(self.cpu_runs), 2)} if self.cpu_runs else {}),
        }


def measure(name: str, fn: Callable[[], Any], warmup: int = 1, runs: int = 3) -> Timing:
    """Runs `fn` `warmup` times untimed, then `runs` times timed (wall clock)."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(runs):
        cpu_before = tree_cpu_seconds()
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
        cpu.append(tree_cpu_seconds() - cpu_before)
    return Timing(name, times, tuple(cpu))


def compare(subject: Timing, reference: Timing) -> dict[str, Any]:
    """Both timings and the ratio subject/reference (> 1 means the subject is slower)."""
    return {
        "subject": subject.as_dict(),
        "reference": reference.as_dict(),
        "time_ratio": round(subject.median / reference.median, 3),
    }


def _process_tree(root: psutil.Process | None = None) -> list[psutil.Process]:
    root = root or psutil.Process()
    return [root, *root.children(recursive=True)]


def tree_cpu_seconds(root: psutil.Process | None = None) -> float:
    """User + system CPU seconds of a process and its live children (the JVM, Python workers),
    plus those of children that ended and were waited for (a reference engine run in a child
    process), which the kernel adds to their parent's children_user/children_system."""
    total = 0.0
    for proc in _process_tree(root):
        try:
            t = proc.cpu_times()
            total += t.user + t.system + t.children_user + t.children_system
        except psutil.Error:
            pass
    return total


def process_tree_rss_mb(root: psutil.Process | None = None) -> float:
    """Resident memory of a process and all its children (the JVM, Python workers, ranks).

    A child with its parent's exact virtual size is a clone that has not exec'd yet and shares
    its parent's pages: the JVM spawns `chmod`, `readlink` and the like for Hadoop's local file
    system thousands of times in a long run, and counting such a child would count the JVM
    twice (a 6 GB tree sampled as 12 GB).
    """
    memory: dict[int, tuple[int, int, int]] = {}
    for proc in _process_tree(root):
        try:
            info = proc.memory_info()
            memory[proc.pid] = (info.rss, info.vms, proc.ppid())
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    total = 0
    for pid, (rss, vms, ppid) in memory.items():
        parent = memory.get(ppid)
        if parent is not None and parent[1] == vms:
            continue
        total += rss
    return total / 2**20


class PeakMemory:
    """Samples the process tree's RSS in a thread; `peak_mb` is the maximum seen."""

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak_mb = max(self.peak_mb, process_tree_rss_mb())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, process_tree_rss_mb())


def machine() -> dict[str, Any]:
    return {
        "cpus": psutil.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def emit(benchmark: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Prints one JSON document with the figures and the machine, and returns it."""
    doc = {"benchmark": benchmark, "machine": machine(),
           "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **figures}
    print(json.dumps(doc, indent=2, sort_keys=True, default=str), flush=True)
    return doc
