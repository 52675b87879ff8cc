"""predictions, category_demand and predictions_current as a warehouse contract: read with
Spark SQL (partitions, comments, time travel to the previous model's scores) and, slow-marked,
with no Spark at all from the consumer venv (deltalake + DuckDB, its own pins: scripts/consumer_venv.sh)."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from demandcast.tables import table_path

from scoring_fixtures import CATEGORIES, N_USERS, SNAPSHOTS, scored_world  # noqa: F401

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def two_models_scored(scored_world):
    """Snapshot 2 scored by m2 (table versions in `summary`), then by m1 (`summary_m1`)."""
    return scored_world["warehouse"], {"m2": scored_world["summary"],
                                       "m1": scored_world["summary_m1"]}


def test_spark_sql_reads_the_contract_and_time_travels(spark, two_models_scored):
    warehouse, runs = two_models_scored
    predictions = table_path(warehouse, "predictions")
    demand = table_path(warehouse, "category_demand")

    detail = spark.sql(f"DESCRIBE DETAIL delta.`{predictions}`").first()
    assert detail.partitionColumns == ["snapshot_date", "model_version"]
    assert "propensity" in detail.description
    comments = {r.col_name: r.comment for r in spark.sql(f"DESCRIBE TABLE delta.`{predictions}`").collect()}
    assert all(comments.get(c) for c in ("user_key", "p_purchase", "expected_spend",
                                         "top_categories", "decile", "drivers"))

    per_model = {r.model_version: (r.n, r.lo, r.hi) for r in spark.sql(f"""
        SELECT model_version, count(*) AS n, min(decile) AS lo, max(decile) AS hi
        FROM delta.`{predictions}` WHERE snapshot_date = DATE'{SNAPSHOTS[1]}'
        GROUP BY model_version""").collect()}
    assert per_model == {"m1": (N_USERS, 1, 10), "m2": (N_USERS, 1, 10)}

    # Time travel: the table as it was before m1 scored the snapshot holds m2's scores only,
    # the same as m2's rows now.
    v_m2 = runs["m2"]["predictions_version"]
    assert runs["m1"]["predictions_version"] > v_m2
    before = spark.sql(f"SELECT user_key, model_version, p_purchase "
                       f"FROM delta.`{predictions}` VERSION AS OF {v_m2}").collect()
    now_m2 = spark.sql(f"SELECT user_key, model_version, p_purchase FROM delta.`{predictions}` "
                       f"WHERE model_version = 'm2'").collect()
    assert {r.model_version for r in before} == {"m2"}
    assert sorted(before) == sorted(now_m2)

    top = spark.sql(f"""
        SELECT category_id, expected_buyers, expected_revenue FROM delta.`{demand}`
        WHERE snapshot_date = DATE'{SNAPSHOTS[1]}' AND model_version = 'm2'
        ORDER BY expected_revenue DESC""").collect()
    assert sorted(r.category_id for r in top) == sorted(CATEGORIES)
    assert all(0 < r.expected_buyers <= N_USERS and r.expected_revenue > 0 for r in top)


CONSUMER_SCRIPT = r"""
import json, sys
import duckdb
from deltalake import DeltaTable

predictions_path, demand_path, old_version, current_path = (
    sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
predictions = DeltaTable(predictions_path)
demand = DeltaTable(demand_path)
scores = predictions.to_pyarrow_dataset()
by_model = duckdb.sql(
    "SELECT model_version, count(*) AS n, sum(p_purchase) AS p, "
    "sum(len(top_categories)) AS tops FROM scores GROUP BY model_version ORDER BY 1").fetchall()
old = DeltaTable(predictions_path, version=old_version).to_pyarrow_table(
    columns=["model_version", "p_purchase"])
rollup = demand.to_pyarrow_table(
    filters=[("model_version", "=", "m2")]).to_pandas()
current = DeltaTable(current_path).to_pyarrow_dataset()
per_user = duckdb.sql("SELECT count(*), count(DISTINCT user_key), min(model_version), "
                      "max(model_version), sum(p_purchase) FROM current").fetchone()
print(json.dumps({
    "current": list(per_user),
    "partition_columns": predictions.metadata().partition_columns,
    "description": predictions.metadata().description,
    "by_model": [[m, n, p, t] for m, n, p, t in by_model],
    "old_models": sorted(set(old.column("model_version").to_pylist())),
    "old_p_sum": sum(old.column("p_purchase").to_pylist()),
    "m2_buyers": dict(zip(rollup["category_id"], rollup["expected_buyers"])),
}))
"""


@pytest.mark.slow
def test_consumer_without_spark_reads_the_tables(spark, two_models_scored):
    """Reads from .venv-consumer (PyPI only; `make test-envs` builds it before the suite, the
    script below is idempotent and builds it when a single test runs without that step)."""
    subprocess.run(["bash", str(PROJECT_ROOT / "scripts" / "consumer_venv.sh")], check=True,
                   timeout=900)
    warehouse, runs = two_models_scored
    consumer_python = PROJECT_ROOT / ".venv-consumer" / "bin" / "python"
    out = subprocess.run(
        [str(consumer_python), "-c", CONSUMER_SCRIPT, table_path(warehouse, "predictions"),
         table_path(warehouse, "category_demand"), str(runs["m2"]["predictions_version"]),
         table_path(warehouse, "predictions_current")],
        capture_output=True, text=True, timeout=300)
    # Its stderr in the message: one CI run saw this process die with SIGABRT (not reproduced
    # in 22 reruns, idle or loaded), and check=True would have hidden why.
    assert out.returncode == 0, f"consumer exited {out.returncode}:\n{out.stderr[-4000:]}"
    seen = json.loads(out.stdout)

    assert seen["partition_columns"] == ["snapshot_date", "model_version"]
    assert "propensity" in seen["description"]
    expected = {r.model_version: (r.n, r.p, r.tops) for r in spark.sql(f"""
        SELECT model_version, count(*) AS n, sum(p_purchase) AS p, sum(size(top_categories)) AS tops
        FROM delta.`{table_path(warehouse, 'predictions')}` GROUP BY model_version""").collect()}
    for model, n, p, tops in seen["by_model"]:
        assert (n, tops) == (expected[model][0], expected[model][2])
        assert p == pytest.approx(expected[model][1], rel=1e-12)
    assert seen["old_models"] == ["m2"]
    assert seen["old_p_sum"] == pytest.approx(expected["m2"][1], rel=1e-12)
    spark_buyers = {r.category_id: r.expected_buyers for r in spark.sql(
        f"SELECT category_id, expected_buyers FROM delta.`{table_path(warehouse, 'category_demand')}`"
        f" WHERE model_version = 'm2'").collect()}
    assert seen["m2_buyers"] == pytest.approx(spark_buyers, rel=1e-12)
    # predictions_current: one row per user, the champion m2's scores (m1 was a pinned run).
    n, users, low, high, p_current = seen["current"]
    assert (n, users, low, high) == (N_USERS, N_USERS, "m2", "m2")
    assert p_current == pytest.approx(expected["m2"][1], rel=1e-12)
