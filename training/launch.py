"""Starts `training.distributed.train_worker` on K ranks: horovodrun (local Gloo), horovod.spark.run
(the Spark cluster) or in this process (one rank), as `train.launcher` says."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from demandcast.errors import StageFailed
from demandcast.logs import get_logger
from training.distributed import RESULT_FILE, train_worker

log = get_logger("training.launch")
PROJECT_ROOT = Path(__file__).resolve().parent.parent
SPEC_FILE = "spec.json"
RANKS_FILE = "ranks.json"


def write_spec(spec: dict) -> Path:
    path = Path(spec["run_dir"]) / SPEC_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1, sort_keys=True, default=str))
    return path


def worker_env(use_gpu: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if use_gpu:
        # NCCL for GPU allreduce needs a Horovod built with HOROVOD_GPU_OPERATIONS=NCCL; the
        # runtime knob below only picks the hierarchical variant where the build offers it.
        env.setdefault("HOROVOD_HIERARCHICAL_ALLREDUCE", "0")
    return env


def horovodrun_command(spec_path: Path, num_proc: int) -> list[str]:
    horovodrun = Path(sys.executable).with_name("horovodrun")
    return [str(horovodrun), "-np", str(num_proc), "-H", f"localhost:{num_proc}", "--gloo",
            sys.executable, "-m", "training.distributed", str(spec_path)]


def run_horovodrun(spec: dict, num_proc: int, timeout_s: int, use_gpu: bool) -> dict:
    spec_path = write_spec(spec)
    command = horovodrun_command(spec_path, num_proc)
    log.info("launching %d ranks: %s", num_proc, " ".join(command))
    try:
        completed = subprocess.run(command, cwd=PROJECT_ROOT, env=worker_env(use_gpu), timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise StageFailed(f"training did not finish within train.timeout_s={timeout_s} s; "
                          "rerun with --resume to continue from the last checkpoint") from None
    if completed.returncode != 0:
        raise StageFailed(f"horovodrun exited with {completed.returncode} (see the rank logs above); "
                          f"rerun with --resume to continue from the last checkpoint of {spec['run_dir']}")
    return json.loads((Path(spec["run_dir"]) / RESULT_FILE).read_text())


def rank_summary(result: dict) -> dict:
    """What ranks.json keeps of one rank's result: who ran it, where, and what it ended with."""
    keys = ("rank", "size", "pid", "host", "device", "weights_sha256", "start_epoch", "epochs_run",
            "history", "model_dir")
    return {k: result[k] for k in keys if k in result}


def run_on_spark(spec: dict, num_proc: int, timeout_s: int, use_gpu: bool) -> dict:
    """horovod.spark.run: one Spark task per rank on the active session's executors (Gloo).

    Every task starts `train_worker` in a process of its own; the results of all ranks come back
    to the driver and are kept in the run folder (ranks.json)."""
    import horovod.spark
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is None:
        raise StageFailed("train.launcher=spark needs an active Spark session")
    master, slots = active.sparkContext.master, active.sparkContext.defaultParallelism
    if slots < num_proc:
        # horovod.spark.run needs every rank running at once. In local mode no executor will ever
        # join, so it would only time out with a vague "timed out waiting for tasks"; a cluster
        # may still add executors (dynamic allocation) within the start timeout.
        message = (f"train.num_proc={num_proc} ranks need as many concurrent Spark tasks; "
                   f"{master} offers {slots} now")
        if master.startswith("local"):
            raise StageFailed(message)
        log.warning("%s; waiting up to %d s for more executors", message, min(timeout_s, 600))
    write_spec(spec)
    env = {k: v for k, v in worker_env(use_gpu).items()
           if k in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "HOROVOD_HIERARCHICAL_ALLREDUCE",
                    "DEMANDCAST_CODE_VERSION", "PATH")}
    log.info("launching %d ranks with horovod.spark.run on %s", num_proc, master)
    try:
        results = horovod.spark.run(train_worker, args=(spec,), num_proc=num_proc, use_gloo=True,
                                    start_timeout=min(timeout_s, 600), env=env, verbose=1)
    except Exception as exc:  # noqa: BLE001 - any rank's failure surfaces here as a Spark error
        raise StageFailed(f"horovod.spark.run failed: {type(exc).__name__}: {str(exc)[:2000]}; "
                          f"rerun with --resume to continue from the last checkpoint of "
                          f"{spec['run_dir']}") from exc
    ranks = sorted((rank_summary(r) for r in results), key=lambda r: r["rank"])
    (Path(spec["run_dir"]) / RANKS_FILE).write_text(json.dumps(ranks, indent=1, default=str))
    return next(r for r in results if r["rank"] == 0)


def launch(spec: dict, launcher: str, num_proc: int, timeout_s: int, use_gpu: bool) -> dict:
    """Runs training and returns rank 0's result (history, metrics, model_dir)."""
    if launcher == "horovodrun":
        return run_horovodrun(spec, num_proc, timeout_s, use_gpu)
    if launcher == "spark":
        return run_on_spark(spec, num_proc, timeout_s, use_gpu)
    if launcher == "inprocess":
        write_spec(spec)
        return train_worker(spec)
    raise StageFailed(f"unknown train.launcher {launcher!r}")
