"""Figures of a Spark application from its event log (spark.eventLog.enabled): shuffle bytes,
tasks and the largest per-task memory, per job group and in total. The numbers docs/SCALE.md
extrapolates from: what a stage moves per event does not depend on the machine it ran on."""
from __future__ import annotations

import json
from pathlib import Path


def application_log(folder: str | Path) -> Path:
    """The newest event log file in `folder`."""
    logs = sorted(Path(folder).iterdir(), key=lambda p: p.stat().st_mtime)
    if not logs:
        raise FileNotFoundError(f"no Spark event log in {folder}")
    return logs[-1]


def task_figures(log: Path) -> dict:
    """Totals over every finished task of the application: tasks, shuffle bytes written and
    read, bytes spilled, input bytes, and the largest peak execution memory of one task."""
    totals = {"tasks": 0, "shuffle_write_bytes": 0, "shuffle_read_bytes": 0, "spill_disk_bytes": 0,
              "input_bytes": 0, "max_task_peak_execution_memory_bytes": 0, "max_task_shuffle_write_bytes": 0}
    with open(log) as lines:
        for line in lines:
            if '"SparkListenerTaskEnd"' not in line:
                continue
            metrics = json.loads(line).get("Task Metrics") or {}
            write = metrics.get("Shuffle Write Metrics", {}).get("Shuffle Bytes Written", 0)
            read = metrics.get("Shuffle Read Metrics", {})
            totals["tasks"] += 1
            totals["shuffle_write_bytes"] += write
            totals["shuffle_read_bytes"] += read.get("Remote Bytes Read", 0) + read.get("Local Bytes Read", 0)
            totals["spill_disk_bytes"] += metrics.get("Disk Bytes Spilled", 0)
            totals["input_bytes"] += metrics.get("Input Metrics", {}).get("Bytes Read", 0)
            totals["max_task_peak_execution_memory_bytes"] = max(
                totals["max_task_peak_execution_memory_bytes"], metrics.get("Peak Execution Memory", 0))
            totals["max_task_shuffle_write_bytes"] = max(totals["max_task_shuffle_write_bytes"], write)
    return totals


def per_event(figures: dict, events: int) -> dict:
    """Bytes per event of the byte totals, rounded."""
    return {f"{k}_per_event": round(v / events, 2) for k, v in figures.items()
            if k.endswith("_bytes") and not k.startswith("max_")}
