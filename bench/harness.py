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
    """Runs `fn` `warmup` times untimed, then `runs` times timed (wall clock and tree CPU)."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(runs):
        with TreeUsage() as usage:
            started = time.perf_counter()
            fn()
            times.append(time.perf_counter() - started)
        cpu.append(usage.cpu_s)
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


class TreeUsage:
    """While in its `with` block, samples the process tree (this process, the JVM, Python
    workers, a reference engine's child) in a thread: `peak_mb` is the largest RSS seen
    (process_tree_rss_mb) and `cpu_s` the CPU seconds the tree used in the block.

    CPU is counted per process, its own user + system time as last sampled, not through the
    kernel's children times: those add a process to its parent only when the parent reaps it,
    at a moment of the parent's choosing (Spark ends its idle Python workers a minute after
    their work), so a sum of the tree at two instants would move Spark's CPU into the next arm's
    figure. What a process uses in its last sampling interval is not counted.
    """

    def __init__(self, interval_s: float = 0.2) -> None:
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self._start: dict[tuple[int, float], float] = {}
        self._last: dict[tuple[int, float], float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample_until_stopped, daemon=True)

    @property
    def cpu_s(self) -> float:
        return sum(cpu - self._start.get(key, 0.0) for key, cpu in self._last.items())

    def _sample(self) -> None:
        self.peak_mb = max(self.peak_mb, process_tree_rss_mb())
        for proc in _process_tree():
            try:
                t = proc.cpu_times()
                self._last[(proc.pid, proc.create_time())] = t.user + t.system
            except psutil.Error:
                pass

    def _sample_until_stopped(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "TreeUsage":
        self._sample()
        self._start = dict(self._last)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


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
