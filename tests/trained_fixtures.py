"""Two small Wide & Deep models trained on the same pinned training set with the same seed, one
in float32 and one under the mixed_float16 policy, through the real rank entry point
(`python -m training.distributed`, as horovodrun starts it) on petastorm shards of the Delta
files. The float32 one is recorded in the models table, ready for `evaluate`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from training_fixtures import SNAPSHOTS, simulate, write_contract_tables, write_ground_truth

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SMALL_MODEL = ["train.files_per_split=2", "train.batch_size=64", "train.hidden_units=[32,16]",
               "train.top_k_categories=3", "train.epochs=2", "train.patience=2",
               "train.launcher=inprocess", "train.num_proc=1", "spark.shuffle_partitions=2",
               "evaluate.lightgbm_rounds=60", "evaluate.importance_rows=300"]
USERS = 1500
TRAIN_TIMEOUT_S = 600

_SHARED: dict[str, dict] = {}


@pytest.fixture(scope="session")
def trained_models(spark, tmp_path_factory) -> dict:
    if "models" not in _SHARED:
        _SHARED["models"] = _train_both(spark, tmp_path_factory.mktemp("trained"))
    return _SHARED["models"]


def config(root: Path, runs: str, *extra: str):
    from demandcast.config import load_config

    snapshots = ",".join(d.isoformat() for d in SNAPSHOTS)
    return load_config(PROJECT_ROOT / "conf" / "local.yaml", [
        f"warehouse={root}/warehouse", f"runs_dir={root}/{runs}", f"raw_dir={root}/raw",
        f"snapshot_dates=[{snapshots}]", *SMALL_MODEL, *extra])


def _train_both(spark, root: Path) -> dict:
    from training.launch import worker_env, write_spec
    from training.lineage import model_row, record_model
    from training.run import prepare_run

    data = simulate(USERS, SNAPSHOTS, seed=5)
    cfg32 = config(root, "runs_float32")
    write_contract_tables(spark, cfg32.warehouse, data)
    write_ground_truth(spark, cfg32.raw_dir, data)
    spec32 = prepare_run(spark, cfg32)
    pinned = spec32["model_info"]["training_set"]["version"]
    cfg16 = config(root, "runs_mixed", "train.mixed_precision=true",
                   f"train.training_set_version={pinned}")
    spec16 = prepare_run(spark, cfg16)
    # Both ranks at once (one core each): each is a one-rank Horovod job of its own.
    jobs = [subprocess.Popen([sys.executable, "-m", "training.distributed", str(write_spec(spec))],
                             cwd=PROJECT_ROOT, env=worker_env(False), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
            for spec in (spec32, spec16)]
    for job in jobs:
        _, stderr = job.communicate(timeout=TRAIN_TIMEOUT_S)
        assert job.returncode == 0, stderr[-4000:]
    results = [json.loads((Path(spec["run_dir"]) / "result.json").read_text())
               for spec in (spec32, spec16)]
    record_model(spark, cfg32.warehouse, model_row(results[0], spec32["model_info"]))
    return {"data": data, "cfg": cfg32, "training_set_version": pinned,
            "float32": {"spec": spec32, "result": results[0]},
            "mixed": {"spec": spec16, "result": results[1]}}
