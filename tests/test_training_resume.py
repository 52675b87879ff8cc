"""--resume continues an unfinished run only when the training set files it pinned are still
there; when the failed run's rollback removed them, it says so instead of failing in petastorm."""
from __future__ import annotations

import json

import pytest

from demandcast.errors import StageFailed
from training.launch import SPEC_FILE
from training.run import resumed_spec, unfinished_run


def write_run(runs_dir, files: list[str]) -> None:
    run_dir = runs_dir / "train_runs" / "20261204T000000Z-ts1"
    run_dir.mkdir(parents=True)
    (run_dir / SPEC_FILE).write_text(json.dumps({
        "train_files": files[:1], "validation_files": files[1:], "resume": False,
        "model_info": {"training_set": {"version": 1}}}))


def test_resume_needs_the_training_set_files_of_the_run(spark, tmp_path):
    data = tmp_path / "training_set" / "split=train"
    data.mkdir(parents=True)
    present = data / "part-0.parquet"
    present.write_bytes(b"rows")
    write_run(tmp_path / "runs", [present.as_uri(), (data / "part-1.parquet").as_uri()])
    run_dir = unfinished_run(tmp_path / "runs")
    with pytest.raises(StageFailed, match=r"training_set version 1, whose files are gone \(1 missing, "
                                          r"e\.g\. .*part-1\.parquet\).*without --resume"):
        resumed_spec(spark, run_dir)

    (data / "part-1.parquet").write_bytes(b"rows")
    assert resumed_spec(spark, run_dir)["resume"] is True
