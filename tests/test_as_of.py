"""`--as-of DATE` on real Spark and Delta: a small simulated world run day by day (ingest and
features through the CLI's stage runner), a rerun of a day that commits nothing, a skipped day
caught up; and the training window and schedule a scheduled run uses."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from demandcast.cli import parse, run_stage
from demandcast.config import load_config
from demandcast.tables import current_version, read_table, table_path
from jobs.run_all import not_scheduled
from jobs.score import with_as_of_snapshot
from training.window import retrain_due, rolling_window

PROJECT_ROOT = Path(__file__).resolve().parent.parent
START = dt.date(2025, 1, 1)
WINDOW = 3  # label_window_days: labels of a snapshot appear three days after it
TABLES = ("events", "quarantine", "ingested_files", "users", "items", "user_daily", "user_features", "labels")


def _day(n: int) -> dt.date:
    return START + dt.timedelta(days=n)


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    """500 simulated users over 10 days with late events and bad rows in the landing files, one
    file per landing folder (one generating task)."""
    from jobs import generate

    root = tmp_path_factory.mktemp("as_of")
    cfg = load_config(PROJECT_ROOT / "conf" / "local.yaml", [
        f"warehouse={root / 'warehouse'}", f"raw_dir={root / 'raw'}", f"runs_dir={root / 'runs'}",
        f"label_window_days={WINDOW}", f"snapshot_dates=[{_day(5)}]", "generate.n_users=500",
        "generate.n_items=200", f"generate.start_date={START}", "generate.n_days=10",
        "generate.mean_daily_activity=0.3", "generate.partitions=1",
        "generate.flaws.late_fraction=0.05", "generate.flaws.bad_row_fraction=0.01",
        "ingest.max_bad_fraction=0.2", "ingest.late_margin_days=2"])
    generate.run(cfg)
    return cfg


def _versions(spark, cfg) -> dict[str, int | None]:
    return {t: current_version(spark, table_path(cfg.warehouse, t)) for t in TABLES}


def _run_day(cfg, day: dt.date) -> dict:
    day_cfg = cfg.model_copy(update={"as_of": day})
    return {stage: run_stage(stage, day_cfg) for stage in ("ingest", "features")}


@pytest.mark.slow
def test_days_run_once_rerun_commits_nothing_and_a_skipped_day_catches_up(spark, world):
    cfg = world
    # The backlog before the schedule starts: an explicit ingest of the folders up to day 4.
    backlog = cfg.model_copy(update={"ingest": cfg.ingest.model_copy(update={"date_to": _day(4)})})
    run_stage("ingest", backlog)

    day5 = _run_day(cfg, _day(5))
    # The margin's folders (days 3, 4) were ingested by the backlog: only day 5's files are read.
    assert day5["ingest"]["files_already_ingested"] == 2 and day5["ingest"]["files"] == 1
    assert day5["features"]["snapshots"] == [str(_day(5))] and day5["features"]["labels_written"] == []

    before = _versions(spark, cfg)
    again = _run_day(cfg, _day(5))
    assert _versions(spark, cfg) == before  # the rerun of a day commits nothing
    assert again["ingest"]["files"] == 0 and again["features"]["snapshots_up_to_date"] == [str(_day(5))]

    # Day 6 is skipped; day 7's run writes the labels of day 5, whose window (days 5..7) has
    # closed, although day 7 - N is day 4: a snapshot's labels come whenever its window closes.
    day7 = _run_day(cfg, _day(7))
    assert day7["features"]["labels_written"] == [str(_day(5))]

    landed = read_table(spark, cfg.warehouse, "ingested_files")
    assert landed.count() == landed.select("path").distinct().count() == 8  # days 0..7, each read once
    quarantine = read_table(spark, cfg.warehouse, "quarantine")
    assert quarantine.count() > 0
    assert quarantine.count() == quarantine.select("source_file", "raw_record", "reason").distinct().count()

    # The labels of day 5 count the purchases of days 5..7 in the events as they are now (late
    # events of those days landed in later folders and were re-aggregated).
    labels = read_table(spark, cfg.warehouse, "labels").where(F.col("snapshot_date") == _day(5))
    population = (read_table(spark, cfg.warehouse, "user_features")
                  .where(F.col("snapshot_date") == _day(5)).select("user_key"))
    buyers = (read_table(spark, cfg.warehouse, "events")
              .where((F.col("event_type") == "purchase") & F.col("event_date").between(_day(5), _day(7)))
              .select("user_key").distinct().join(population, "user_key"))
    assert labels.count() == population.count() > 0
    assert labels.where("label_purchased = 1").count() == buyers.count() > 0


def test_as_of_flag_reaches_every_stage(project_root):
    stage, cfg = parse(["run-all", "--conf", str(project_root / "conf" / "local.yaml"), "--as-of", "2025-03-04"])
    assert stage == "run-all" and cfg.as_of == dt.date(2025, 3, 4)
    assert with_as_of_snapshot(cfg).score.snapshot_date == dt.date(2025, 3, 4)
    pinned = cfg.model_copy(update={"score": cfg.score.model_copy(update={"snapshot_date": dt.date(2025, 3, 1)})})
    assert with_as_of_snapshot(pinned).score.snapshot_date == dt.date(2025, 3, 1)


def test_run_all_retrains_on_the_configured_weekday_only(project_root):
    cfg = load_config(project_root / "conf" / "local.yaml", ["as_of=2025-03-04"])  # a Tuesday
    stages = ["ingest", "features", "train", "evaluate", "score"]
    skipped = not_scheduled(cfg, stages)
    assert set(skipped) == {"train", "evaluate"} and "monday" in skipped["train"]
    assert not_scheduled(cfg.model_copy(update={"as_of": dt.date(2025, 3, 3)}), stages) == {}
    assert retrain_due(cfg.train.model_copy(update={"schedule": "daily"}), cfg.as_of)
    assert not_scheduled(cfg.model_copy(update={"as_of": None}), stages) == {}


def test_rolling_window_takes_labelled_snapshots_a_step_apart():
    labelled = [_day(i) for i in range(60)]
    assert rolling_window(labelled, _day(40), 3, None, 7) == [_day(26), _day(33), _day(40)]
    assert rolling_window(labelled, _day(90), 2, None, 7) == [_day(52), _day(59)]
    assert rolling_window(labelled, _day(40), None, 10, 7) == [_day(33), _day(40)]
    assert rolling_window(labelled, _day(40), 8, 30, 1) == [_day(i) for i in range(33, 41)]
    assert rolling_window(labelled[10:], _day(5), 8, None, 7) == []
