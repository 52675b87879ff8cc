"""The run report: built from small real Delta tables and run folders, through `run-all` with every
stage skipped; a missing input gives a note, not a crash; a real browser renders it."""
from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from browser import non_white_share, screenshot
from demandcast.cli import main as cli_main
from demandcast.config import load_config
from demandcast.pipeline import STAGE_ORDER, STAGE_OUTPUT_TABLES, _stage_config
from demandcast.stage_ledger import StageLedger, StageRecord, fingerprint
from demandcast.tables import NO_DELETION_VECTORS, TableSpec, current_version, table_path, write_table
from scoring_fixtures import FEATURES_SPEC, feature_frame
from training import metrics as M
from training.reporting.inputs import RunInputs, gather_inputs
from training.reporting.sections import build_report, curves_from_lift, key_figures

PROJECT_ROOT = Path(__file__).resolve().parent.parent
VERSION = "20260402T120000Z-ts1"
SNAPSHOT, REFERENCE = dt.date(2026, 4, 1), dt.date(2026, 3, 1)
SECTIONS = ["Run overview", "Data: events, funnel and quarantine", "Feature distributions and drift",
            "Training curves", "Model against baselines and oracle", "Category demand", "Top drivers"]
SCORERS = ["wide_and_deep", "recency_rule", "logistic_regression_wide", "lightgbm", "oracle"]


def _spec(name: str) -> TableSpec:
    return TableSpec(name, f"run report test {name}", properties=NO_DELETION_VECTORS)


def _write_tables(spark, warehouse: str) -> dict[str, int]:
    rng = np.random.default_rng(7)
    days = [dt.date(2026, 3, 25) + dt.timedelta(days=i) for i in range(6)]
    types = ["view"] * 60 + ["add_to_cart"] * 25 + ["purchase"] * 10 + ["search"] * 5
    events = pd.DataFrame({"event_id": [f"e{i}" for i in range(300)],
                           "user_key": [f"key{int(u):05d}" for u in rng.integers(0, 40, 300)],
                           "event_date": rng.choice(days, 300),
                           "event_type": rng.choice(types, 300)})
    write_table(spark.createDataFrame(events), warehouse, _spec("events"), "overwrite")
    quarantine = pd.DataFrame({"reason": ["wrong_type"] * 3 + ["missing_required"] * 2,
                               "raw_record": [f"r{i}" for i in range(5)]})
    write_table(spark.createDataFrame(quarantine), warehouse, _spec("quarantine"), "overwrite")
    features = pd.concat([feature_frame(200, REFERENCE, 1), feature_frame(200, SNAPSHOT, 2, shift=2.0)])
    write_table(spark.createDataFrame(features), warehouse, FEATURES_SPEC, "overwrite")
    p = rng.random(200)
    drivers = [[{"feature_group": "recency", "contribution": float(0.05 * x)},
                {"feature_group": "sessions", "contribution": -0.01}] if i % 4 == 0 else None
               for i, x in enumerate(p)]
    predictions = spark.createDataFrame(
        [(f"key{i:05d}", SNAPSHOT, VERSION, float(p[i]), int(10 - min(9, p[i] * 10)), drivers[i])
         for i in range(200)],
        "user_key string, snapshot_date date, model_version string, p_purchase double, decile int, "
        "drivers array<struct<feature_group:string,contribution:double>>")
    write_table(predictions, warehouse, _spec("predictions"), "overwrite")
    demand = spark.createDataFrame(
        [(c, SNAPSHOT, VERSION, b, b * 40.0, 200) for c, b in
         [("books", 31.5), ("garden", 12.25), ("toys", 20.0), ("tech", 7.5)]],
        "category_id string, snapshot_date date, model_version string, expected_buyers double, "
        "expected_revenue double, n_users int")
    write_table(demand, warehouse, _spec("category_demand"), "overwrite")
    return {"events": len(events), "quarantine": len(quarantine)}


def _write_run_folders(runs: Path) -> None:
    """Model directory, evaluation and scoring report with the shapes the stages write, the
    metrics computed by training.metrics itself."""
    history = [{"epoch": e, "loss": 0.9 / e, "purchase_loss": 0.6 / e, "val_auc": 0.6 + 0.03 * e,
                "steps": 13, "rows": 1000, "seconds": 1.5} for e in range(1, 5)]
    (runs / "models" / VERSION).mkdir(parents=True)
    (runs / "models" / VERSION / "metrics.json").write_text(json.dumps({"history": history}))
    rng = np.random.default_rng(3)
    truth = rng.random(2000) * 0.6
    y = (rng.random(2000) < truth).astype(float)
    noise = {"wide_and_deep": 0.15, "recency_rule": 0.4, "logistic_regression_wide": 0.25,
             "lightgbm": 0.2, "oracle": 0.0}
    scores = {n: np.clip(truth + rng.normal(0, s, 2000), 0.001, 0.999) for n, s in noise.items()}
    evaluation = {"model_version": VERSION, "protocol": "holdout", "threshold": 0.5, "top_k_percent": 10,
                  "skipped": {}, "oracle": None,
                  "scorers": {n: M.classification_metrics(y, s, 0.5, 10.0, 10) for n, s in scores.items()},
                  "feature_importance": {"wide_and_deep (AUC drop when shuffled)": {
                      "spend_last_30d": 0.05, "days_since_last_purchase": 0.03, "sessions_last_7d": 0.01}}}
    folder = runs / "evaluations" / VERSION
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(evaluation))
    (folder / "curves.json").write_text(json.dumps({n: M.curves(y, s) for n, s in scores.items()}))
    drift = [{"feature": "sessions_last_7d", "kind": "numeric", "psi": 0.35, "bins": 10},
             {"feature": "spend_last_30d", "kind": "numeric", "psi": 0.01, "bins": 10},
             {"feature": "region", "kind": "categorical", "psi": 0.002, "bins": 5}]
    score_report = {"snapshot_date": str(SNAPSHOT), "model_version": VERSION, "users_scored": 200,
                    "reference_snapshot_date": str(REFERENCE), "psi_warn_threshold": 0.2, "drift": drift,
                    "global_importance": [{"feature_group": "recency", "mean_abs_contribution": 0.02,
                                           "mean_contribution": 0.01}]}
    folder = runs / "reports" / "score" / str(SNAPSHOT)
    folder.mkdir(parents=True)
    (folder / f"{VERSION}.json").write_text(json.dumps(score_report))


def _overrides(tmp: Path, warehouse: str) -> list[str]:
    return [f"warehouse={warehouse}", f"runs_dir={tmp / 'runs'}", f"raw_dir={tmp / 'raw'}",
            "spark.shuffle_partitions=2", "report.sample_rows=150"]


def _record_every_stage_as_done(spark, cfg) -> None:
    """Ledger entries as run-all leaves them, so a run-all skips every stage."""
    ledger, upstream = StageLedger(Path(cfg.runs_dir) / "ledger"), "root"
    summaries = {"ingest": {"good_rows": 300, "bad_rows": 5},
                 "score": {"model_version": VERSION, "snapshot_date": str(SNAPSHOT), "users_scored": 200}}
    for stage in STAGE_ORDER:
        upstream = fingerprint(_stage_config(cfg, stage), upstream)
        versions = {t: current_version(spark, table_path(cfg.warehouse, t)) for t in STAGE_OUTPUT_TABLES[stage]}
        ledger.save(StageRecord(stage, upstream, versions, [], summaries.get(stage, {})))


@pytest.fixture(scope="module")
def run_all_report(spark, tmp_path_factory):
    """`demandcast run-all` on a finished tiny run: every stage skipped, then the report.
    Returns the run's folder, the table row counts and the lines run-all printed."""
    tmp = tmp_path_factory.mktemp("run_report")
    warehouse = str(tmp / "warehouse")
    counts = _write_tables(spark, warehouse)
    _write_run_folders(tmp / "runs")
    overrides = _overrides(tmp, warehouse)
    _record_every_stage_as_done(spark, load_config(PROJECT_ROOT / "conf" / "local.yaml", overrides))
    argv = ["run-all", "--conf", str(PROJECT_ROOT / "conf" / "local.yaml")]
    for item in overrides:
        argv += ["--set", item]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli_main(argv) == 0
    return tmp, counts, printed.getvalue().strip().splitlines()


def test_run_all_skips_every_stage_and_writes_the_report(run_all_report):
    tmp, counts, out = run_all_report
    report = Path(out[-1])  # the last line printed is the report
    assert report.parent == tmp / "runs" / "reports" and re.fullmatch(r"run-\d{8}T\d{6}Z\.html", report.name)
    assert (report.parent / "latest.html").read_bytes() == report.read_bytes()
    summary = "\n".join(out)
    for stage in STAGE_ORDER:
        assert re.search(rf"^{stage} +\| skipped", summary, re.M), stage
    assert re.search(rf"rows in \(events\) +{counts['events']}$", summary, re.M)
    assert re.search(rf"rows quarantined +{counts['quarantine']}$", summary, re.M)
    assert re.search(r"users scored +200$", summary, re.M)
    for name in SCORERS:
        assert re.search(rf"AUC {name} +0\.\d{{4}}$", summary, re.M), name
    assert f"run report: {report}" in summary
    assert f"table predictions: {tmp / 'warehouse' / 'predictions'}" in summary

    text = report.read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in text
    assert "Not available" not in text and 'class="note"' not in text
    refs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert all(r.startswith(("data:image/png;base64,", "#")) for r in refs)
    assert not re.search(r"https?://", text)
    # events/day, funnel, histograms, PSI, training curves, ROC, PR, calibration, lift, demand, importance
    assert len(re.findall(r"<img ", text)) == 11
    assert "feature(s) above the PSI threshold 0.2: sessions_last_7d" in text
    assert "<td>sessions_last_7d</td><td>numeric</td><td class=\"num\">0.3500</td>" in text
    assert "<td>books</td>" in text and "recency +0.0" in text and "sessions -0.0100" in text


def test_missing_inputs_are_explained_not_fatal(spark, tmp_path):
    """A run that has ingested but never trained, evaluated or scored, and one with nothing."""
    warehouse = str(tmp_path / "warehouse")
    write_table(spark.createDataFrame(pd.DataFrame({"reason": ["wrong_type"], "raw_record": ["x"]})),
                warehouse, _spec("quarantine"), "overwrite")
    cfg = load_config(PROJECT_ROOT / "conf" / "local.yaml", _overrides(tmp_path, warehouse))
    inputs = gather_inputs(spark, cfg, {}, [])
    text = build_report(inputs).render()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in text
    assert f"Not available: events: table events does not exist at {warehouse}/events." in text
    assert "Not available: evaluation: no evaluation of model (none)" in text
    assert "Not available: training history: no model is known to this run" in text
    assert "Not available: category demand: nothing is scored yet (run `demandcast score`)." in text
    assert "<td>wrong_type</td>" in text  # what exists is still shown
    assert key_figures(inputs) == {"rows quarantined": 1}


def test_report_on_a_warehouse_without_any_table_is_a_usage_error(spark, tmp_path, capsys):
    """A mistyped warehouse is exit 2 naming it, not an all-missing report and exit 0."""
    mistyped = tmp_path / "warehuose"
    argv = ["report", "--conf", str(PROJECT_ROOT / "conf" / "local.yaml")]
    for item in _overrides(tmp_path, str(mistyped)):
        argv += ["--set", item]
    assert cli_main(argv) == 2
    assert f"warehouse {mistyped} holds none of the pipeline's tables" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "reports").exists()


def test_evaluation_without_curves_file_draws_roc_from_deciles():
    """An evaluation without curves.json: ROC and PR from the decile table, with a note."""
    rng = np.random.default_rng(5)
    y = (rng.random(1000) < 0.3).astype(float)
    good, random = y * 0.5 + rng.random(1000), rng.random(1000)
    scorers = {"wide_and_deep": M.classification_metrics(y, np.clip(good / 1.5, 0, 1)),
               "recency_rule": M.classification_metrics(y, random)}
    curves = curves_from_lift(scorers)
    roc = curves["wide_and_deep"]["roc"]
    assert roc["fpr"][0] == 0 and roc["tpr"][-1] == pytest.approx(1) and roc["fpr"][-1] == pytest.approx(1)
    area = np.trapz(roc["tpr"], roc["fpr"])  # coarse, but it ranks the scorers as their AUCs do
    assert area > np.trapz(curves["recency_rule"]["roc"]["tpr"], curves["recency_rule"]["roc"]["fpr"])
    assert abs(area - scorers["wide_and_deep"]["roc_auc"]) < 0.03
    inputs = RunInputs(title="t", evaluation={"model_version": "v", "protocol": "holdout", "scorers": scorers})
    text = build_report(inputs).render()
    assert "ROC and PR are drawn from the decile table" in text


def test_run_report_renders_in_headless_chromium(run_all_report, tmp_path):
    tmp, _, _ = run_all_report
    latest = tmp / "runs" / "reports" / "latest.html"
    pixels = screenshot(latest, tmp_path / "shot.png", height=2400)
    assert pixels.shape[:2] == (2400, 1200)
    share = non_white_share(pixels)
    assert share > 0.05, f"screenshot is nearly blank ({share:.4f} non-white)"
    # The events-per-day and funnel figures were decoded and painted: matplotlib's blue is on screen.
    blue = (np.abs(pixels - np.array((31, 119, 180))).max(axis=2) < 30).sum()
    assert blue > 5000, f"only {blue} pixels of the figures' blue"
