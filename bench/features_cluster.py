"""The features stage (user_daily from scratch + one snapshot of user_features and labels) on a
local Spark standalone cluster: the shape of a cluster run (executors in their own JVMs, the
driver small), at sizes one process could not hold. Reports wall time, time per event, and the
peak RSS of every process: master, workers, executors, their Python workers, the driver.

    .venv/bin/python bench/features_cluster.py --events 200000000 --replicate-from /tmp/demandcast-bench-features/10000000

Inputs are built by bench/features.py's replicate_inputs (copies of a simulated world) when
missing; generate the source first with bench/features.py --events 10000000.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.features import SNAPSHOT, replicate_inputs  # noqa: E402
from bench.harness import emit  # noqa: E402
from deploy.cluster_local import StandaloneCluster  # noqa: E402

ROLES = (("executor", "CoarseGrainedExecutorBackend"), ("worker", "deploy.worker.Worker"),
         ("master", "deploy.master.Master"), ("python_worker", "pyspark"),
         ("driver_jvm", "SparkSubmit"))


def role_of(proc: psutil.Process) -> str | None:
    try:
        command = " ".join(proc.cmdline())
    except psutil.Error:
        return None
    return next((role for role, marker in ROLES if marker in command), None)


class ProcessPeaks:
    """Samples every process of the cluster and of this driver in a thread: the peak RSS of each
    process, grouped by role, and of this Python driver itself."""

    def __init__(self, interval_s: float = 0.5) -> None:
        self.interval_s = interval_s
        self.peaks: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        me = psutil.Process()
        for proc in psutil.process_iter():
            role = "driver_python" if proc.pid == me.pid else role_of(proc)
            if role is None:
                continue
            try:
                rss = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            previous = self.peaks.get(proc.pid, (role, 0.0))[1]
            self.peaks[proc.pid] = (role, max(previous, rss))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> "ProcessPeaks":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def by_role(self) -> dict[str, list[int]]:
        """Per role, the peak RSS (MB) of each process that had it, largest first."""
        roles: dict[str, list[int]] = {}
        for role, peak in self.peaks.values():
            roles.setdefault(role, []).append(round(peak))
        return {role: sorted(peaks, reverse=True) for role, peaks in sorted(roles.items())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000_000)
    parser.add_argument("--replicate-from", default="/tmp/demandcast-bench-features/10000000")
    parser.add_argument("--workdir", default="/tmp/demandcast-bench-features")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--executor-memory", default="3g")
    parser.add_argument("--driver-memory", default="1g")
    parser.add_argument("--shuffle-partitions", type=int, default=64)
    args = parser.parse_args()

    from demandcast.config import load_config
    from demandcast.logs import configure_logging
    from demandcast.session import build_spark_session
    from demandcast.tables import read_table
    from features.feature_spec import FeatureSpec
    from features.feature_tables import update_user_daily, write_snapshots

    configure_logging("WARNING")
    warehouse = f"{args.workdir}/{args.events}"
    with StandaloneCluster(workers=args.workers, cores_per_worker=1,
                           memory_per_worker=args.executor_memory) as cluster:
        cfg = load_config(ROOT / "conf" / "local.yaml", [
            f"spark.master={cluster.master_url}", f"spark.driver_memory={args.driver_memory}",
            f"spark.shuffle_partitions={args.shuffle_partitions}", "spark.log_level=ERROR",
            f"spark.conf.spark.executor.memory={args.executor_memory}",
            "spark.conf.spark.executor.cores=1"])
        spark = build_spark_session("bench-features-cluster", cfg.spark)
        n_events = replicate_inputs(spark, args.replicate_from, warehouse, args.events)
        spec = FeatureSpec.from_config(cfg)
        for name in ("user_daily", "user_features", "labels"):
            shutil.rmtree(Path(warehouse) / name, ignore_errors=True)
        with ProcessPeaks() as peaks:
            start = time.perf_counter()
            daily = update_user_daily(spark, warehouse, spec)
            daily_s = time.perf_counter() - start
            write_snapshots(spark, warehouse, [SNAPSHOT], spec, daily.last_event_date)
            wall = time.perf_counter() - start
        rows = read_table(spark, warehouse, "user_features").count()
        spark.stop()
    emit("features_cluster", {
        "events": n_events, "snapshot": str(SNAPSHOT), "workers": args.workers,
        "executor_memory": args.executor_memory, "driver_memory": args.driver_memory,
        "wall_s": round(wall, 1), "user_daily_s": round(daily_s, 1),
        "snapshot_s": round(wall - daily_s, 1), "us_per_event": round(1e6 * wall / n_events, 3),
        "feature_rows": rows, "peak_rss_mb_by_role": peaks.by_role(),
    })


if __name__ == "__main__":
    main()
