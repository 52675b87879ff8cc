"""Kill one Horovod rank mid-training (issue 8, point 2): the whole job fails fast with a clear
message, and `--resume` continues from the last checkpoint: the suite's one kill/resume test of
the training worker."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from demandcast.tables import current_version

pytestmark = pytest.mark.slow

TWO_RANKS = ("train.launcher=horovodrun", "train.num_proc=2", "train.epochs=4", "train.patience=4")
FAIL_WITHIN_S = 60


def rank_process(stage_pid: int, rank: int) -> psutil.Process | None:
    """The training process of `rank` under the stage (horovodrun sets HOROVOD_RANK)."""
    try:
        descendants = psutil.Process(stage_pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    for proc in descendants:
        try:
            if "training.distributed" in " ".join(proc.cmdline()) \
                    and proc.environ().get("HOROVOD_RANK") == str(rank):
                return proc
        except psutil.Error:
            continue
    return None


def summary_of(stderr: str) -> dict:
    line = [s for s in stderr.splitlines() if "summary: " in s][-1]
    return json.loads(line.split("summary: ", 1)[1])


def test_killing_one_rank_fails_the_job_fast_and_resume_continues(spark, pipeline, tmp_path):
    copy = pipeline.copy_to(tmp_path / "copy")
    earlier_runs = set((copy.runs_dir / "train_runs").glob("*"))
    # The pipeline's own training set, pinned: building another one is not what is under test.
    pinned = current_version(spark, str(copy.warehouse / "training_set"))
    job = copy.start("train", *TWO_RANKS, f"train.training_set_version={pinned}")
    try:
        # Mid-training: the first epoch's checkpoint is written, later epochs are running.
        deadline = time.monotonic() + 600
        checkpoint = None
        while checkpoint is None and job.poll() is None and time.monotonic() < deadline:
            checkpoint = next((c for c in (copy.runs_dir / "train_runs").glob("*/checkpoints/checkpoint")
                               if c.parent.parent not in earlier_runs), None)
            time.sleep(0.02)
        victim = rank_process(job.pid, 1)
        survivors = [p for p in (rank_process(job.pid, 0),) if p is not None]
        assert job.poll() is None and victim is not None, "training ended before a rank could be killed"
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        job.wait(timeout=FAIL_WITHIN_S + 30)
        failed_after = time.monotonic() - killed_at
        stderr = job.log_path.read_text()
    finally:
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()

    assert job.returncode == 1, stderr[-3000:]
    assert failed_after < FAIL_WITHIN_S, f"the job took {failed_after:.0f} s to notice a dead rank"
    message = [s for s in stderr.splitlines() if s.startswith("demandcast:")]
    assert message and "--resume" in message[-1] and "horovodrun exited" in message[-1], stderr[-3000:]
    assert not [p for p in survivors if p.is_running() and p.status() != psutil.STATUS_ZOMBIE], \
        "a rank outlived the failed job"

    run_dir = checkpoint.parent.parent
    assert not (run_dir / "result.json").exists()
    import tensorflow as tf

    last_epoch = int(tf.train.latest_checkpoint(str(run_dir / "checkpoints")).rsplit("-", 1)[1])
    resumed = copy.cli("train", *TWO_RANKS, "train.resume=true")
    summary = summary_of(resumed.stderr)
    assert summary["resumed_from_epoch"] == last_epoch >= 1
    assert summary["ranks"] == 2 and summary["training_set_version"] == pinned
    result = json.loads((run_dir / "result.json").read_text())
    assert result["resumed_from_epoch"] == last_epoch == result["start_epoch"]
    assert [h["epoch"] for h in result["history"]] == list(range(last_epoch + 1, 5))
    assert (Path(summary["model_dir"]) / "saved_model").is_dir()
