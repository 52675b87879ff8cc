"""Where the features stage spends its time: user_daily and the snapshot timed apart, and every
Spark stage's executor time, CPU, GC, shuffle and spill from Spark's event log.

    .venv/bin/python bench/features_profile.py --warehouse /tmp/dcb/50000000
    .venv/bin/python bench/features_profile.py --warehouse /tmp/dcb/10000000 --part snapshot \
        --java-options "-XX:TieredStopAtLevel=1"

The warehouse is an input folder made by bench/features.py (events, users, items); its
user_daily, user_features and labels are rebuilt. "outside tasks" is the process tree's CPU
minus the CPU of Spark's task threads: the JIT compiling generated code, the garbage
collector, the driver planning and committing. --java-options replaces the session's JIT flags
(an A/B of JIT or GC flags); the session's own flags are printed with the figures.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.features import SNAPSHOT  # noqa: E402
from bench.harness import TreeUsage, emit  # noqa: E402
from demandcast.config import load_config  # noqa: E402
from demandcast.logs import configure_logging  # noqa: E402
from demandcast.session import JIT_OPTIONS, build_spark_session, spark_conf  # noqa: E402


def stage_figures(event_log_dir: str) -> list[dict]:
    """Per stage of the event log: tasks, run/CPU/GC seconds, shuffle and spill MB."""
    stages: dict[int, dict] = defaultdict(lambda: {"tasks": 0, "run_s": 0.0, "cpu_s": 0.0, "gc_s": 0.0,
                                                   "shuffle_write_mb": 0.0, "shuffle_read_mb": 0.0,
                                                   "spill_mb": 0.0, "name": ""})
    for path in Path(event_log_dir).rglob("events_*"):
        for line in path.open():
            event = json.loads(line)
            if event["Event"] == "SparkListenerStageCompleted":
                stages[event["Stage Info"]["Stage ID"]]["name"] = event["Stage Info"]["Stage Name"][:60]
            elif event["Event"] == "SparkListenerTaskEnd" and "Task Metrics" in event:
                m, s = event["Task Metrics"], stages[event["Stage ID"]]
                read = m["Shuffle Read Metrics"]
                s["tasks"] += 1
                s["run_s"] += m["Executor Run Time"] / 1e3
                s["cpu_s"] += m["Executor CPU Time"] / 1e9
                s["gc_s"] += m["JVM GC Time"] / 1e3
                s["shuffle_write_mb"] += m["Shuffle Write Metrics"]["Shuffle Bytes Written"] / 1e6
                s["shuffle_read_mb"] += (read["Remote Bytes Read"] + read["Local Bytes Read"]) / 1e6
                s["spill_mb"] += m["Disk Bytes Spilled"] / 1e6
    return [{"stage": k, **{f: round(v, 1) if isinstance(v, float) else v for f, v in s.items()}}
            for k, s in sorted(stages.items())]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--warehouse", required=True, help="an input folder of bench/features.py")
    parser.add_argument("--part", choices=("user_daily", "snapshot", "both"), default="both")
    parser.add_argument("--shuffle-partitions", type=int, default=16)
    parser.add_argument("--driver-memory", default="5g")
    parser.add_argument("--java-options", default=None, help="JIT/GC flags instead of the session's JIT_OPTIONS")
    parser.add_argument("--min-run-s", type=float, default=1.0, help="list stages with at least this")
    args = parser.parse_args()
    configure_logging("WARNING")
    if args.part == "snapshot" and not (Path(args.warehouse) / "user_daily").exists():
        sys.exit(f"no user_daily in {args.warehouse}: run --part user_daily (or both) first")

    from features.feature_spec import FeatureSpec
    from features.feature_tables import update_user_daily, write_snapshots

    event_log = tempfile.mkdtemp(prefix="dc-eventlog-")
    cfg = load_config(ROOT / "conf" / "local.yaml", [
        f"spark.shuffle_partitions={args.shuffle_partitions}", f"spark.driver_memory={args.driver_memory}",
        "spark.log_level=ERROR"])
    cfg.spark.conf.update({"spark.eventLog.enabled": "true", "spark.eventLog.dir": event_log,
                           "spark.eventLog.compress": "false", "spark.ui.showConsoleProgress": "false"})
    java_options = args.java_options if args.java_options is not None else JIT_OPTIONS
    if args.java_options is not None:
        # The session's own driver options with only its JIT flags swapped.
        session_options = spark_conf("bench-features-profile", cfg.spark)["spark.driver.extraJavaOptions"]
        cfg.spark.conf["spark.driver.extraJavaOptions"] = session_options.replace(JIT_OPTIONS, java_options)
    spark = build_spark_session("bench-features-profile", cfg.spark)
    spec = FeatureSpec.from_config(cfg)
    parts: dict[str, dict] = {}

    def timed(name: str, fn):
        with TreeUsage() as usage:
            start = time.perf_counter()
            result = fn()
            wall = time.perf_counter() - start
        parts[name] = {"wall_s": round(wall, 1), "cpu_s": round(usage.cpu_s, 1)}
        return result

    # Rebuilt from scratch: the snapshot tables always, user_daily when it is profiled.
    rebuilt = ["user_features", "labels"] + (["user_daily"] if args.part != "snapshot" else [])
    for name in rebuilt:
        shutil.rmtree(Path(args.warehouse) / name, ignore_errors=True)
    last_event_date = None
    if args.part != "snapshot":
        daily = timed("user_daily", lambda: update_user_daily(spark, args.warehouse, spec))
        last_event_date = daily.last_event_date
    if args.part != "user_daily":
        timed("snapshot", lambda: write_snapshots(spark, args.warehouse, [SNAPSHOT], spec,
                                                  last_event_date, require_complete_labels=False))
    spark.stop()

    stages = stage_figures(event_log)
    shutil.rmtree(event_log, ignore_errors=True)
    task_cpu = sum(s["cpu_s"] for s in stages)
    tree_cpu = sum(p["cpu_s"] for p in parts.values())
    emit("features_profile", {
        "command": " ".join(sys.argv), "warehouse": args.warehouse, "java_options": java_options,
        "parts": parts, "task_cpu_s": round(task_cpu, 1),
        "cpu_outside_tasks_s": round(tree_cpu - task_cpu, 1),
        "stages": [s for s in stages if s["run_s"] >= args.min_run_s],
    })


if __name__ == "__main__":
    main()
