"""Champion and challenger on real Delta tables: the first model becomes champion, a challenger
is promoted only when it beats the champion by promote.min_gain on the newest labelled snapshot
neither trained on, score follows the champion, and `demandcast promote --rollback` restores the
previous one. Models are scoring_fixtures' linear stand-ins with chosen weights (good, weak and
reversed on the planted signal of training_fixtures); the scoring UDF and Spark do the rest."""
from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from demandcast.cli import main
from demandcast.config import load_config
from demandcast.errors import StageFailed
from demandcast.tables import current_version, read_table, table_path
from scoring_fixtures import load_linear_model, save_linear_model
from training.evaluation.champion import choose_model
from training.evaluation.promotion import beats, decide, out_of_time_snapshot, rollback
from training.lineage import SCHEMA, record_model
from training.model_status import first_model_status
from training_fixtures import simulate, write_contract_tables

S0, S1, S2 = dt.date(2026, 1, 1), dt.date(2026, 2, 1), dt.date(2026, 3, 1)
INPUTS = {"days_since_last_purchase": "numeric", "purchases_last_30d": "numeric",
          "sessions_last_7d": "numeric", "region": "categorical", "device": "categorical"}
# p_purchase weights on (days, purchases, sessions): the planted logit has -, +, +.
WEIGHTS = {"weak": (0.0, 0.0, 0.4), "good": (-0.8, 0.5, 0.8), "reversed": (0.8, -0.5, -0.8)}


def linear_model(folder, data, kind: str) -> str:
    model_dir = save_linear_model(folder / kind, data, seed=1, inputs=INPUTS)
    state = json.loads((model_dir / "model.json").read_text())
    weights = np.zeros((len(state["weights"]), len(state["weights"][0])))
    weights[:3, 0] = WEIGHTS[kind]
    state["weights"], state["bias"] = weights.tolist(), [0.0] * weights.shape[1]
    (model_dir / "model.json").write_text(json.dumps(state))
    return str(model_dir)


def model_row(version: str, model_dir: str, snapshots: list[dt.date], minute: int) -> dict:
    names = [c.strip().split(" ")[0] for c in SCHEMA.split(",") if " " in c.strip()]
    row = dict.fromkeys(names)
    row.update(model_version=version, model_dir=model_dir, snapshot_dates=snapshots,
               protocol="holdout", created_at=dt.datetime(2026, 3, 2, 0, minute),
               status="challenger", decisions=[])
    return row


def statuses(spark, warehouse) -> dict[str, str]:
    return {r.model_version: r.status for r in read_table(spark, warehouse, "models").collect()}


@pytest.mark.slow  # three decisions, four models scored in the UDF, a dozen Delta commits
def test_first_model_champion_challengers_decided_on_out_of_time_rows_and_rollback(
        spark, warehouse, tmp_path, project_root):
    data = simulate(600, [S0, S1, S2], seed=5)
    write_contract_tables(spark, warehouse, data)
    runs = tmp_path / "runs"
    dirs = {k: linear_model(runs / "models", data, k) for k in WEIGHTS}
    cfg = load_config(project_root / "conf" / "local.yaml",
                      [f"warehouse={warehouse}", f"runs_dir={runs}", "promote.min_gain=0.002"])

    # The first model has nothing to beat; score uses it.
    first = first_model_status(spark, warehouse, model_row("weak", dirs["weak"], [S0], 1))
    record_model(spark, warehouse, first)
    assert statuses(spark, warehouse) == {"weak": "champion"}
    assert choose_model(spark, cfg).model_version == "weak"

    # A challenger trained on S0, S1: the out-of-time rows are S2's, both models scored on them.
    record_model(spark, warehouse, first_model_status(
        spark, warehouse, model_row("good", dirs["good"], [S0, S1], 2)))
    assert statuses(spark, warehouse)["good"] == "challenger"
    outcome = decide(spark, cfg, loader=load_linear_model)
    assert outcome["status"] == "champion" and outcome["compared_to"] == "weak"
    assert outcome["evaluation_snapshot"] == str(S2)
    s2 = data[data.snapshot_date == S2]
    y = s2.label_purchased.to_numpy()
    for kind, value in (("good", outcome["value"]), ("weak", outcome["compared_value"])):
        p = load_linear_model(dirs[kind]).predict(s2)["p_purchase"]
        assert value == pytest.approx(roc_auc_score(y, p), abs=1e-4)
    assert outcome["value"] > outcome["compared_value"] + 0.002
    rows = {r.model_version: r for r in read_table(spark, warehouse, "models").collect()}
    assert rows["good"].status == "champion" and rows["good"].promoted_over == "weak"
    assert rows["good"].decision_metric == "roc_auc" and rows["good"].decision_snapshot == S2
    assert rows["weak"].status == "retired" and rows["weak"].compared_to == "good"
    assert [d.status for d in rows["weak"].decisions] == ["champion", "retired"]
    assert choose_model(spark, cfg).model_version == "good"

    # Rerunning the decision changes nothing.
    before = current_version(spark, table_path(warehouse, "models"))
    assert decide(spark, cfg, "good", loader=load_linear_model)["outcome"] == "already decided"
    assert current_version(spark, table_path(warehouse, "models")) == before

    # A worse challenger is rejected with its reason; the PR-AUC metric is the histogram's too.
    record_model(spark, warehouse, first_model_status(
        spark, warehouse, model_row("reversed", dirs["reversed"], [S0], 3)))
    pr = cfg.model_copy(update={"promote": cfg.promote.model_copy(update={"metric": "pr_auc"})})
    outcome = decide(spark, pr, loader=load_linear_model)
    assert outcome["status"] == "challenger_rejected" and "rejected: pr_auc" in outcome["reason"]
    p = load_linear_model(dirs["reversed"]).predict(s2)["p_purchase"]
    assert outcome["value"] == pytest.approx(average_precision_score(y, p), abs=1e-3)
    assert statuses(spark, warehouse) == {"weak": "retired", "good": "champion",
                                          "reversed": "challenger_rejected"}

    # A challenger trained on every labelled snapshot cannot be compared yet: it waits.
    record_model(spark, warehouse, first_model_status(
        spark, warehouse, model_row("late", dirs["good"], [S0, S1, S2], 4)))
    waiting = decide(spark, cfg, loader=load_linear_model)
    assert waiting["outcome"] == "undecided" and statuses(spark, warehouse)["late"] == "challenger"

    # One command rolls back; the decision is recorded on both rows.
    assert main(["promote", "--conf", str(project_root / "conf" / "local.yaml"), "--rollback",
                 "--set", f"warehouse={warehouse}", "--set", f"runs_dir={runs}"]) == 0
    rows = {r.model_version: r for r in read_table(spark, warehouse, "models").collect()}
    assert rows["weak"].status == "champion" and rows["good"].status == "rolled_back"
    assert rows["weak"].decisions[-1].reason == "champion again: rollback of good"
    assert choose_model(spark, cfg).model_version == "weak"
    pinned = cfg.model_copy(update={"score": cfg.score.model_copy(update={"model_version": "good"})})
    assert choose_model(spark, pinned).model_version == "good"
    with pytest.raises(StageFailed, match="weak was the first champion"):
        rollback(spark, cfg)


def test_margin_direction_and_out_of_time_snapshot():
    assert beats(0.783, 0.780, "roc_auc", 0.002) and not beats(0.781, 0.780, "roc_auc", 0.002)
    assert beats(0.40, 0.45, "log_loss", 0.01) and not beats(0.45, 0.40, "log_loss", 0.0)
    holdout = {"snapshot_dates": [S0, S1], "protocol": "holdout"}
    out_of_time = {"snapshot_dates": [S0, S1, S2], "protocol": "out_of_time"}  # S2 held out
    assert out_of_time_snapshot([S0, S1, S2], holdout, out_of_time) == S2
    assert out_of_time_snapshot([S0, S1], holdout) is None


def test_a_models_table_from_before_the_decisions_gets_their_columns(spark, warehouse, tmp_path):
    """A models table written before the decision columns existed: the next record adds them
    (ALTER TABLE ADD COLUMNS), its old rows have no status, and the new model is champion."""
    legacy_schema = SCHEMA.split(", status string")[0]
    legacy = model_row("old", str(tmp_path / "old"), [S0], 0)
    names = [c.strip().split(" ")[0] for c in legacy_schema.split(",") if " " in c.strip()]
    spark.createDataFrame([[legacy[n] for n in names]], legacy_schema) \
        .write.format("delta").save(table_path(warehouse, "models"))
    record_model(spark, warehouse, first_model_status(
        spark, warehouse, model_row("new", str(tmp_path / "new"), [S0], 1)))
    assert statuses(spark, warehouse) == {"old": None, "new": "champion"}
    assert "decisions" in read_table(spark, warehouse, "models").columns
