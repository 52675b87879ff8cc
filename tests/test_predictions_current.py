"""predictions_current: the champion's newest scores, one row per user, one commit per change.

Runs on the scoring world shared with tests/test_scoring.py (m2 is the champion and scored
snapshot 2, then m1 was pinned and scored it beside); a test that changes the champion puts
it back."""
from __future__ import annotations

import pytest

from demandcast.tables import current_version, read_table, rolled_back_on_failure, table_path
from training.scoring.stage import run_score

from scoring_fixtures import (CREATED, N_USERS, SNAPSHOTS, load_linear_model,  # noqa: F401
                              scored_world, write_models_table)


def _current(spark, warehouse):
    return read_table(spark, warehouse, "predictions_current")


def _matches_partition(spark, warehouse, model_version: str) -> None:
    current = _current(spark, warehouse)
    assert current.count() == N_USERS
    assert current.select("user_key").distinct().count() == N_USERS
    assert {(r.snapshot_date, r.model_version) for r in
            current.select("snapshot_date", "model_version").distinct().collect()} == \
        {(SNAPSHOTS[1], model_version)}
    source = read_table(spark, warehouse, "predictions").where(f"model_version = '{model_version}'")
    columns = ["user_key", "p_purchase", "expected_spend", "decile", "scored_at"]
    assert sorted(current.select(columns).collect()) == sorted(source.select(columns).collect())


def test_holds_the_champions_scores_and_a_pinned_run_leaves_it(spark, scored_world):
    warehouse = scored_world["warehouse"]
    _matches_partition(spark, warehouse, "m2")
    first, pinned = scored_world["summary"], scored_world["summary_m1"]
    assert first["predictions_current"] == f"m2 {SNAPSHOTS[1]}"
    assert pinned["predictions_current"] == "unchanged"  # m1 scored beside, m2 still champion
    assert pinned["predictions_current_version"] == first["predictions_current_version"]
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{table_path(warehouse, 'predictions_current')}`").first()
    assert detail.partitionColumns == [] and "champion" in detail.description


@pytest.mark.slow
def test_follows_a_new_champion_without_rescoring_and_rolls_back(spark, scored_world):
    cfg, warehouse = scored_world["cfg"], scored_world["warehouse"]
    path = table_path(warehouse, "predictions_current")
    before = current_version(spark, path)
    predictions_before = current_version(spark, table_path(warehouse, "predictions"))
    m1, m2 = str(scored_world["m1"]), str(scored_world["m2"])

    def models(champion: str) -> None:
        def status(version: str) -> str:
            return "champion" if version == champion else "retired"

        write_models_table(spark, warehouse, [
            ("m1", 0.70, m1, SNAPSHOTS[0], CREATED, status("m1")),
            ("m2", 0.65, m2, SNAPSHOTS[0], CREATED, status("m2")),
            ("m3", None, str(scored_world["m2"].parent / "m3"), SNAPSHOTS[0], CREATED, "challenger")])

    try:
        models("m1")  # m1 becomes the champion; it has scored snapshot 2 already
        promoted = run_score(spark, cfg, loader=load_linear_model)
        assert promoted["skipped"] == "already scored"
        assert promoted["predictions_current_version"] == before + 1
        _matches_partition(spark, warehouse, "m1")
        assert current_version(spark, table_path(warehouse, "predictions")) == predictions_before

        again = run_score(spark, cfg, loader=load_linear_model)  # a rerun commits nothing
        assert again["predictions_current"] == "unchanged"
        assert current_version(spark, path) == before + 1

        # A stage failing after it republished leaves the table at its last good version.
        models("m2")
        with pytest.raises(RuntimeError, match="later step"):
            with rolled_back_on_failure("score"):
                assert run_score(spark, cfg, loader=load_linear_model)[
                    "predictions_current_version"] == before + 2
                raise RuntimeError("a later step of the stage failed")
        _matches_partition(spark, warehouse, "m1")
    finally:
        models("m2")
        run_score(spark, cfg, loader=load_linear_model)
    _matches_partition(spark, warehouse, "m2")
