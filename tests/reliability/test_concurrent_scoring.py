"""Two scoring jobs for different snapshots at the same time both commit (issue 8, point 3)."""
from __future__ import annotations

import shutil

import pytest
from pyspark.sql import functions as F

from .conftest import SNAPSHOTS, table_rows

pytestmark = pytest.mark.slow


def test_two_snapshots_scored_at_the_same_time_both_commit(spark, pipeline, tmp_path):
    copy = pipeline.copy_to(tmp_path / "copy")
    # Both jobs also race to create the output tables: the hardest case for optimistic commits.
    for table in ("predictions", "category_demand"):
        shutil.rmtree(copy.warehouse / table)

    jobs = {snapshot: copy.start("score", f"score.snapshot_date={snapshot}") for snapshot in SNAPSHOTS}
    outcomes = {snapshot: (job.wait(timeout=900), job.log_path.read_text()) for snapshot, job in jobs.items()}
    for snapshot, (code, stderr) in outcomes.items():
        assert code == 0, f"scoring {snapshot} exited {code}:\n{stderr[-4000:]}"

    predictions = spark.read.format("delta").load(str(copy.warehouse / "predictions"))
    features = spark.read.format("delta").load(str(copy.warehouse / "user_features"))
    for snapshot in SNAPSHOTS:
        scored = predictions.where(F.col("snapshot_date") == snapshot)
        expected = features.where(F.col("snapshot_date") == snapshot).count()
        assert scored.count() == scored.select("user_key").distinct().count() == expected > 0
    # The snapshot the clean pipeline scored alone is scored identically under contention.
    latest = f"snapshot_date = '{SNAPSHOTS[-1]}'"
    assert table_rows(spark, copy.warehouse / "predictions", ("scored_at",), latest) \
        == table_rows(spark, pipeline.warehouse / "predictions", ("scored_at",), latest)
    demand = spark.read.format("delta").load(str(copy.warehouse / "category_demand"))
    assert {str(r[0]) for r in demand.select("snapshot_date").distinct().collect()} == set(SNAPSHOTS)
