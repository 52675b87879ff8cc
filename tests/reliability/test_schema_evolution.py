"""Raw logs change shape (issue 8, point 5): a new optional field is carried, a missing required
field stops ingest with exit 3 naming it."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from .conftest import NEW_OPTIONAL_FIELD, land_events_with_new_field, make_pipeline

pytestmark = pytest.mark.slow


def test_a_new_optional_field_is_carried_without_breaking_features(spark, pipeline):
    # The session pipeline ingested a landing file whose records carry NEW_OPTIONAL_FIELD.
    events = spark.read.format("delta").load(str(pipeline.warehouse / "events"))
    carried = {r.event_id: r.value for r in events.where(F.col("event_id").startswith("schema-evolution-"))
               .select("event_id", F.col("extra")[NEW_OPTIONAL_FIELD].alias("value")).collect()}
    assert carried == {f"schema-evolution-{n:03d}": f"SPRING{n}" for n in range(20)}

    keys = [r.user_key for r in events.where(F.col("event_id").startswith("schema-evolution-"))
            .select("user_key").distinct().collect()]
    features = spark.read.format("delta").load(str(pipeline.warehouse / "user_features"))
    assert NEW_OPTIONAL_FIELD not in features.columns
    # Those users have features at every snapshot, like every other user.
    assert features.where(F.col("user_key").isin(keys)).count() == 2 * len(keys) > 0
    predictions = spark.read.format("delta").load(str(pipeline.warehouse / "predictions"))
    assert predictions.where(F.col("user_key").isin(keys)).count() == len(keys)


def test_a_missing_required_field_stops_ingest_with_exit_3_naming_it(tmp_path):
    landing = tmp_path / "landing"
    land_events_with_new_field(tmp_path / "raw", dest=landing / "event_date=2025-01-20" / "a.json.gz",
                               drop=("event_type",))
    job = make_pipeline(tmp_path, tmp_path / "raw")

    done = job.cli("ingest", f"ingest.paths=[{landing}]", check=False)

    assert done.returncode == 3, done.stderr[-3000:]
    message = [line for line in done.stderr.splitlines() if line.startswith("demandcast:")]
    assert message and "event_type" in message[-1] and "nothing was committed" in message[-1], \
        done.stderr[-3000:]
    assert not (job.warehouse / "events").exists()
