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


def run_on_spark(spec: dict, num_proc: int, timeout_s: int, use_gpu: bool) -> dict:
    """horovod.spark.run: one task per rank on the active session's executors (Gloo)."""
    import horovod.spark

    write_spec(spec)
    env = {k: v for k, v in worker_env(use_gpu).items()
           if k in ("PYTHONPATH", "TF_CPP_MIN_LOG_LEVEL", "HOROVOD_HIERARCHICAL_ALLREDUCE",
                    "DEMANDCAST_CODE_VERSION", "PATH")}
    results = horovod.spark.run(train_worker, args=(spec,), num_proc=num_proc, use_gloo=True,
                                start_timeout=min(timeout_s, 600), env=env)
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
