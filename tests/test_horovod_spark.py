"""The train function under horovod.spark.run: two Horovod ranks as tasks of a local Spark session.

The same `training.distributed.train_worker` that `horovodrun -np K` starts (tested in
test_training_distributed.py) runs here as two barrier-free Spark tasks that talk Gloo.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from demandcast.tables import read_table
from training_fixtures import SNAPSHOTS, simulate, write_contract_tables

pytestmark = pytest.mark.slow


def test_two_ranks_train_through_horovod_spark_run(spark, tmp_path):
    from test_training_distributed import config
    from training.launch import RANKS_FILE
    from training.run import train

    cfg = config(tmp_path, "train.launcher=spark", "train.num_proc=2", "train.epochs=2",
                 "train.patience=2", "train.timeout_s=300")
    write_contract_tables(spark, cfg.warehouse, simulate(300, SNAPSHOTS, seed=13))

    summary = train(spark, cfg)

    run_dir = Path(cfg.runs_dir) / "train_runs" / summary["model_version"]
    ranks = json.loads((run_dir / RANKS_FILE).read_text())
    # Two distinct processes, started as Spark tasks, formed one Horovod job of size 2.
    assert sorted(r["rank"] for r in ranks) == [0, 1] and {r["size"] for r in ranks} == {2}
    assert len({r["pid"] for r in ranks}) == 2
    assert summary["ranks"] == 2 and summary["epochs_run"] == 2
    # Data-parallel training kept the replicas identical (each rank wrote its own checksum).
    sums = {r["rank"]: r["weights_sha256"] for r in ranks}
    assert sums[0] == sums[1] == (run_dir / "weights_rank1.sha256").read_text()
    # Each epoch every row of the pinned train split was seen once across the two ranks.
    history = next(r for r in ranks if r["rank"] == 0)["history"]
    assert [h["rows"] for h in history] == [json.loads(
        (run_dir / "spec.json").read_text())["train_rows"]] * 2
    # Only rank 0 wrote the model, checkpoints and TensorBoard logs: one events file, rank 0's pid.
    rank0 = next(r for r in ranks if r["rank"] == 0)
    assert [r.get("model_dir") for r in ranks if r["rank"] == 1] == [None]
    model_dir = Path(summary["model_dir"])
    for part in ("saved_model", "preprocessing.json", "model.json", "metrics.json"):
        assert (model_dir / part).exists(), part
    assert [p.name for p in (Path(cfg.runs_dir) / "models").iterdir()] == [model_dir.name]
    events = list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1 and f".{rank0['pid']}." in events[0].name
    assert sorted(p.name for p in (run_dir / "checkpoints").glob("*.index")) == \
        ["ckpt-1.index", "ckpt-2.index"]
    assert [r.model_version for r in read_table(spark, cfg.warehouse, "models").collect()] == \
        [summary["model_version"]]


def test_more_ranks_than_local_task_slots_is_refused_at_once(spark):
    from demandcast.errors import StageFailed
    from training.launch import run_on_spark

    slots = spark.sparkContext.defaultParallelism
    with pytest.raises(StageFailed, match=f"num_proc={slots + 1} ranks need as many concurrent"):
        run_on_spark({}, slots + 1, timeout_s=600, use_gpu=False)
