"""run-all's skip logic on real Delta tables: rerun skips, config or table changes rerun."""
from __future__ import annotations

import pytest

from demandcast.config import load_config
from demandcast.pipeline import run_pipeline
from demandcast.tables import TableSpec, write_table

EVENTS = TableSpec(name="events", comment="test events")


@pytest.fixture
def cfg(project_root, tmp_path):
    return load_config(project_root / "conf" / "local.yaml",
                       [f"warehouse={tmp_path / 'wh'}", f"runs_dir={tmp_path / 'runs'}"])


def _stages(spark, calls):
    def run_stage(stage, cfg):
        calls.append(stage)
        if stage == "ingest":
            write_table(spark.range(3).toDF("event_id"), cfg.warehouse, EVENTS, "overwrite")
        if stage == "features" and "fail" in calls:
            raise RuntimeError("stage failed")
        return {"rows": 3}
    return run_stage


def test_second_run_skips_and_changes_rerun(spark, cfg):
    calls: list[str] = []
    run = _stages(spark, calls)
    first = run_pipeline(cfg, ["ingest", "features"], run, spark, force=False)
    assert [o.status for o in first] == ["ran", "ran"]

    second = run_pipeline(cfg, ["ingest", "features"], run, spark, force=False)
    assert [o.status for o in second] == ["skipped", "skipped"]
    assert calls == ["ingest", "features"]

    # Someone rewrote the events table outside run-all: ingest reruns, and everything after it.
    write_table(spark.range(5).toDF("event_id"), cfg.warehouse, EVENTS, "overwrite")
    third = run_pipeline(cfg, ["ingest", "features"], run, spark, force=False)
    assert [o.status for o in third] == ["ran", "ran"]

    changed = cfg.model_copy(update={"label_window_days": 7})
    fourth = run_pipeline(changed, ["ingest", "features"], run, spark, force=False)
    assert [o.status for o in fourth] == ["ran", "ran"]

    forced = run_pipeline(changed, ["ingest", "features"], run, spark, force=True)
    assert [o.status for o in forced] == ["ran", "ran"]


def test_failed_stage_reruns_next_time(spark, cfg):
    calls: list[str] = ["fail"]
    run = _stages(spark, calls)
    with pytest.raises(RuntimeError):
        run_pipeline(cfg, ["ingest", "features"], run, spark, force=False)
    calls.remove("fail")
    outcomes = run_pipeline(cfg, ["ingest", "features"], run, spark, force=False)
    assert [o.status for o in outcomes] == ["skipped", "ran"]
    assert calls == ["ingest", "features", "features"]


def test_score_run_by_the_ledger_rescores_instead_of_taking_its_no_op(spark, cfg):
    """Once run-all decides score must run (never ran, its settings or upstream changed), score's
    own "already scored" shortcut must not keep the old predictions."""
    forced: list[bool] = []

    def run_stage(stage, stage_cfg):
        if stage == "score":
            forced.append(stage_cfg.score.force)
        return {}

    run_pipeline(cfg, ["features", "score"], run_stage, spark, force=False)
    skipped = run_pipeline(cfg, ["features", "score"], run_stage, spark, force=False)
    assert [o.status for o in skipped] == ["skipped", "skipped"]
    changed = cfg.model_copy(update={"score": cfg.score.model_copy(update={"top_categories": 5})})
    run_pipeline(changed, ["features", "score"], run_stage, spark, force=False)
    assert forced == [True, True]
