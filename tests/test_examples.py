"""The README's own-data example, run as a new user would: a plain `customer_id,date,quantity,amount`
CSV export through conf/examples/transactions.yaml, every stage from ingest to score, with no
users or items files and no hand-written exclusions."""
from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from demandcast.tables import read_table


def write_transactions(path: Path, customers: int, start: dt.date, days: int, seed: int = 1) -> int:
    """A CSV of purchases: each customer buys on a day with their own daily rate."""
    rng = random.Random(seed)
    lines = 0
    with open(path, "w") as out:
        out.write("customer_id,date,quantity,amount\n")
        for c in range(customers):
            rate = rng.random() * 0.06
            for d in range(days):
                if rng.random() < rate:
                    quantity = rng.randint(1, 3)
                    out.write(f"C{c:04d},{start + dt.timedelta(days=d)},{quantity},"
                              f"{quantity * rng.uniform(5, 80):.2f}\n")
                    lines += 1
    return lines


@pytest.mark.slow
def test_a_plain_transaction_export_runs_every_stage(spark, project_root, tmp_path):
    landing = tmp_path / "raw" / "transactions"
    landing.mkdir(parents=True)
    lines = write_transactions(landing / "orders.csv", 500, dt.date(2024, 1, 1), 547)
    warehouse, runs = tmp_path / "warehouse", tmp_path / "runs"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "demandcast"), "run-all",
         "--conf", str(project_root / "conf" / "examples" / "transactions.yaml"),
         "--set", f"warehouse={warehouse}", "--set", f"raw_dir={tmp_path / 'raw'}",
         "--set", f"runs_dir={runs}", "--set", f"ingest.paths=[{landing}]",
         "--set", "spark.shuffle_partitions=2", "--set", "spark.driver_memory=2g",
         # The export's path through every stage is under test, not the model's fit: one rank,
         # in this process, for two epochs of one deep tower keeps the run short.
         "--set", "train.launcher=inprocess", "--set", "train.num_proc=1",
         "--set", "train.epochs=2", "--set", "train.ensemble_members=1"],
        cwd=project_root, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]

    assert read_table(spark, str(warehouse), "events").count() == lines
    predictions = read_table(spark, str(warehouse), "predictions").toPandas()
    buyers_before = (read_table(spark, str(warehouse), "user_features")
                     .where("snapshot_date = DATE'2025-07-01'").count())
    assert len(predictions) == buyers_before > 100
    assert predictions.p_purchase.between(0, 1).all()
    # The view, cart and user-attribute features are null for every customer of such an export:
    # the model was trained without them and its metadata says why.
    model_json = next(runs.glob("models/*/model.json"))
    ignored = json.loads(model_json.read_text())["training_set"]["ignored"]
    assert ignored["days_since_last_view"] == "null in every training row"
    assert "days_since_last_purchase" not in ignored
