"""kill -9 of a feature or scoring job in the middle of its Delta write (issue 8, point 1), and
two scoring jobs for different snapshots at the same time (issue 8, point 3): the rerun after the
killed scoring job is that concurrent pair, so one copy of the pipeline and one fewer scoring
job serve both."""
from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from pyspark.sql import functions as F

from demandcast.tables import current_version, files_of_version

from .conftest import SNAPSHOTS, Pipeline, data_files, kill_during_write, table_rows

pytestmark = pytest.mark.slow

# The predictions column that legitimately differs between two runs of score (a wall-clock stamp).
SCORED_AT = ("scored_at",)


def kill_mid_write(spark, copy: Pipeline, stage: str, table: str, sets: tuple[str, ...]) -> tuple[int, set[Path]]:
    """SIGKILLs `stage` after it wrote data files into `table` and before its commit; the
    table's version before the kill and the files the killed attempt left."""
    path = copy.warehouse / table
    version = current_version(spark, str(path))
    # The kill must land after data files are written and before the commit: a stage that
    # committed first is not the case under test, so try again (the commit is not lost work).
    for _ in range(3):
        on_disk = data_files(path)
        if kill_during_write(copy.start(stage, *sets), path):
            break
        version = current_version(spark, str(path))
    else:
        pytest.fail(f"{stage} committed {table} every time before it could be killed")
    written_by_killed_run = data_files(path) - on_disk
    assert written_by_killed_run, "the kill did not land during the write"
    return version, written_by_killed_run


def test_kill_9_of_features_mid_write_keeps_the_last_version_and_a_rerun_equals_a_clean_run(
        spark, pipeline, tmp_path):
    copy = pipeline.copy_to(tmp_path / "copy")
    path = copy.warehouse / "user_features"
    clean = table_rows(spark, pipeline.warehouse / "user_features")
    # The copy's snapshots are up to date, so a plain rerun would not write them at all.
    rewrite = ("features.rewrite_up_to_date=true",)
    version, written_by_killed_run = kill_mid_write(spark, copy, "features", "user_features", rewrite)

    # Readable at its previous version, with the previous content.
    assert current_version(spark, str(path)) == version
    assert table_rows(spark, path) == clean

    copy.cli("features", *rewrite)
    assert current_version(spark, str(path)) == version + 1
    # No lost or duplicated rows: every column equal to the clean run's table.
    assert table_rows(spark, path) == clean
    # The killed attempt's files stay on disk (VACUUM removes them) but no version refers to them.
    assert not written_by_killed_run & files_of(spark, path, version + 1)


def test_kill_9_of_score_mid_write_then_two_snapshots_scored_at_the_same_time(spark, pipeline, tmp_path):
    copy = pipeline.copy_to(tmp_path / "copy")
    path = copy.warehouse / "predictions"
    clean = table_rows(spark, pipeline.warehouse / "predictions", SCORED_AT)
    latest = f"snapshot_date = '{SNAPSHOTS[-1]}'"
    clean_latest = table_rows(spark, pipeline.warehouse / "predictions", SCORED_AT, latest)
    # The concurrent rerun below also races to create category_demand: the hardest case for
    # optimistic commits. A killed job dies in predictions' write, before category_demand's.
    shutil.rmtree(copy.warehouse / "category_demand")
    version, written_by_killed_run = kill_mid_write(spark, copy, "score", "predictions",
                                                    ("score.force=true",))

    # Readable at its previous version, with the previous content.
    assert current_version(spark, str(path)) == version
    assert table_rows(spark, path, SCORED_AT) == clean
    assert not (copy.warehouse / "category_demand" / "_delta_log").exists()

    # The rerun: the killed snapshot (forced, it is scored already) and the other one, at once.
    jobs = {snapshot: copy.start("score", f"score.snapshot_date={snapshot}", "score.force=true")
            for snapshot in SNAPSHOTS}
    outcomes = {snapshot: (job.wait(timeout=900), job.log_path.read_text()) for snapshot, job in jobs.items()}
    for snapshot, (code, stderr) in outcomes.items():
        assert code == 0, f"scoring {snapshot} exited {code}:\n{stderr[-4000:]}"

    assert current_version(spark, str(path)) == version + len(SNAPSHOTS)  # both committed
    predictions = spark.read.format("delta").load(str(path))
    features = spark.read.format("delta").load(str(copy.warehouse / "user_features"))
    for snapshot in SNAPSHOTS:
        scored = predictions.where(F.col("snapshot_date") == snapshot)
        expected = features.where(F.col("snapshot_date") == snapshot).count()
        assert scored.count() == scored.select("user_key").distinct().count() == expected > 0
    # No lost or duplicated rows: the snapshot the clean pipeline scored alone is scored
    # identically after the kill and under contention.
    assert table_rows(spark, path, SCORED_AT, latest) == clean_latest
    demand = spark.read.format("delta").load(str(copy.warehouse / "category_demand"))
    assert {str(r[0]) for r in demand.select("snapshot_date").distinct().collect()} == set(SNAPSHOTS)
    # The killed attempt's files stay on disk (VACUUM removes them) but no version refers to them.
    assert not written_by_killed_run & files_of(spark, path, version + len(SNAPSHOTS))


def files_of(spark, path: Path, version: int) -> set[Path]:
    return {Path(unquote(urlparse(uri).path)) for uri in files_of_version(spark, str(path), version)}
