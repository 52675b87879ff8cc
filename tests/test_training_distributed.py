"""Horovod training end to end on real Spark, Delta, petastorm and Horovod (Gloo) processes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from demandcast.config import load_config
from demandcast.tables import current_version, read_table
from training import metrics as M
from training_fixtures import SNAPSHOTS, simulate, write_contract_tables, write_ground_truth

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CLI = str(Path(sys.executable).with_name("demandcast"))
FAST_MODEL = ["train.files_per_split=2", "train.batch_size=64", "train.deep_learning_rate=0.01",
              "train.hidden_units=[32,16]", "train.top_k_categories=3", "spark.shuffle_partitions=2",
              "evaluate.lightgbm_rounds=60", "evaluate.importance_rows=300"]
# Patience as long as the run: every epoch after the resumed one runs, so the resumed history
# is known epoch by epoch (the best epoch's weights make the model either way).
EPOCHS = 8
TWO_RANKS = ("train.launcher=horovodrun", "train.num_proc=2", f"train.epochs={EPOCHS}",
             f"train.patience={EPOCHS}", "train.validation_percent=20", "train.test_percent=25",
             "train.wide_learning_rate=0.3")
FAIL_WITHIN_S = 60


def overrides(tmp_path: Path, *extra: str) -> list[str]:
    snapshots = ",".join(d.isoformat() for d in SNAPSHOTS)  # the fixture's, whatever conf/ says
    return [f"warehouse={tmp_path}/warehouse", f"runs_dir={tmp_path}/runs", f"raw_dir={tmp_path}/raw",
            f"snapshot_dates=[{snapshots}]", *FAST_MODEL, *extra]


def config(tmp_path: Path, *extra: str):
    return load_config("conf/local.yaml", overrides(tmp_path, *extra))


def start_stage(stage: str, sets: list[str], log_path: Path) -> subprocess.Popen:
    """`demandcast STAGE` of this checkout in its own process group (os.killpg reaches its JVM and
    ranks); stderr to a file, as a pipe nobody reads would fill up and block it."""
    env = {**os.environ,
           "PYTHONPATH": os.pathsep.join(p for p in (str(PROJECT_ROOT), os.environ.get("PYTHONPATH")) if p)}
    command = [CLI, stage, "--conf", str(PROJECT_ROOT / "conf" / "local.yaml"),
               *[a for s in sets for a in ("--set", s)]]
    with open(log_path, "w") as log:
        return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=log)


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


def test_two_ranks_fail_fast_when_one_dies_resume_identical_and_beat_the_recency_rule(spark, tmp_path):
    """One two-rank run: a rank SIGKILLed mid-training fails the whole `train`
    stage fast with a clear message; `--resume` continues from the last checkpoint on two ranks
    that stay identical, and the model beats the recency rule. The suite's one kill/resume test
    of the training worker: the resumed run is also the two-rank run everything else checks."""
    from training.dataset import build_training_set
    from training.evaluation.stage import evaluate
    from training.run import train

    cfg = config(tmp_path, *TWO_RANKS)
    data = simulate(1500, SNAPSHOTS, seed=11)
    write_contract_tables(spark, cfg.warehouse, data)
    write_ground_truth(spark, cfg.raw_dir, data)
    # Built here and pinned: a failed train stage removes a training_set table it created itself
    # (tables.rolled_back_on_failure), and the resumed run reads the pinned version's files.
    pinned = build_training_set(spark, cfg.warehouse, cfg.train, list(SNAPSHOTS)).version

    # The stage through the CLI, as an operator or the scheduler runs it.
    log_path = tmp_path / "killed-train.log"
    job = start_stage("train", overrides(tmp_path, *TWO_RANKS, f"train.training_set_version={pinned}"),
                      log_path)
    try:
        # Mid-training: the first epoch's checkpoint is written, later epochs are running.
        deadline = time.monotonic() + 600
        checkpoint = None
        while checkpoint is None and job.poll() is None and time.monotonic() < deadline:
            checkpoint = next((Path(cfg.runs_dir) / "train_runs").glob("*/checkpoints/checkpoint"), None)
            time.sleep(0.02)
        victim = rank_process(job.pid, 1)
        survivors = [p for p in (rank_process(job.pid, 0),) if p is not None]
        assert job.poll() is None and victim is not None, "training ended before a rank could be killed"
        victim.send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        job.wait(timeout=FAIL_WITHIN_S + 30)
        failed_after = time.monotonic() - killed_at
        stderr = log_path.read_text()
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

    summary = train(spark, config(tmp_path, *TWO_RANKS, "train.resume=true"))
    assert summary["model_version"] == run_dir.name  # the killed run, continued
    assert summary["resumed_from_epoch"] == last_epoch >= 1
    assert summary["ranks"] == 2 and summary["training_set_version"] == pinned
    assert current_version(spark, f"{cfg.warehouse}/training_set") == pinned  # no other one built
    trained = json.loads((run_dir / "result.json").read_text())
    assert trained["resumed_from_epoch"] == last_epoch == trained["start_epoch"]
    assert [h["epoch"] for h in trained["history"]] == list(range(last_epoch + 1, EPOCHS + 1))
    sums = [(run_dir / f"weights_rank{r}.sha256").read_text() for r in (0, 1)]
    assert sums[0] == sums[1]
    # Short last batches and zero-weight dummy batches reuse the train step's one graph.
    assert trained["train_step_traces"] == 1
    model_dir = Path(summary["model_dir"])
    assert (model_dir / "saved_model").is_dir()
    for part in ("saved_model", "preprocessing.json", "model.json", "metrics.json", "tensorboard"):
        assert (model_dir / part).exists(), part
    info = json.loads((model_dir / "model.json").read_text())
    assert info["training_set"]["version"] == summary["training_set_version"]
    assert info["training_set"]["source_versions"] == {"user_features": 1, "labels": 1}
    assert info["calibration"]["method"] == "platt"
    row = read_table(spark, cfg.warehouse, "models").collect()
    assert [r.model_version for r in row] == [summary["model_version"]]

    result = evaluate(spark, cfg)
    report = json.loads((Path(result["report"]).parent / "metrics.json").read_text())
    scorers = report["scorers"]
    # The BTYD scorers join where this world's features allow them (evaluate says why not).
    assert {"wide_and_deep", "recency_rule", "logistic_regression_wide", "lightgbm",
            "oracle"} <= set(scorers) <= {"wide_and_deep", "recency_rule", "logistic_regression_wide",
                                          "lightgbm", "oracle", "bgnbd", "pareto_nbd",
                                          "logistic_regression_rfm_btyd"}
    assert scorers["wide_and_deep"]["roc_auc"] > scorers["recency_rule"]["roc_auc"] + 0.01
    # The oracle is the simulator's own probability, joined on the HMAC of the raw user id.
    test_keys = set(spark.read.format("delta").load(f"{cfg.warehouse}/training_set")
                    .where("split = 'test'").toPandas().apply(
                        lambda r: (r.user_key, r.snapshot_date), axis=1))
    truth = data[[(k, d) in test_keys for k, d in zip(data.user_key, data.snapshot_date)]]
    assert report["oracle"]["coverage"] == 1.0
    assert scorers["oracle"]["roc_auc"] == pytest.approx(M.auc(truth.label_purchased, truth.p_true))
    html = Path(result["report"]).read_text()
    assert html.count("<img") >= 5 and "lightgbm" in html
    evaluated = read_table(spark, cfg.warehouse, "models").first()
    assert evaluated.test_roc_auc == pytest.approx(scorers["wide_and_deep"]["roc_auc"])
    # The first model has no champion to beat: train made it champion, evaluate leaves it so.
    assert evaluated.status == "champion" and result["status"] == "champion"
    assert evaluated.decisions[0].reason == "first model: there is no champion to compare with"
