"""generate -> ingest from nothing: raw files, ground truth and tables; JSON and Parquet agree."""
from __future__ import annotations

import pytest
from pyspark.sql import functions as F

from demandcast.config import load_config
from demandcast.tables import read_table
from jobs import generate as generate_job
from jobs import ingest as ingest_job


@pytest.mark.slow
def test_generate_then_ingest_both_formats_exactly_once(spark, project_root, tmp_path):
    def cfg(*extra):
        return load_config(project_root / "conf" / "local.yaml", [
            "spark.shuffle_partitions=2", "spark.driver_memory=3g",
            f"warehouse={tmp_path / 'warehouse'}", f"raw_dir={tmp_path / 'raw'}",
            "generate.n_users=300", "generate.n_items=200", "generate.n_days=45", "generate.partitions=2",
            "generate.formats=[json, parquet]",
            "generate.flaws.bad_row_fraction=0.01", "generate.flaws.duplicate_fraction=0.05",
            "snapshot_dates=[2025-01-10]", "label_window_days=30", *extra])

    generated = generate_job.run(cfg())
    landed = generated["landed_records"]
    # Each generating task writes the folders of its days (no shuffle): one file per date and
    # format, two in the first days after the block boundary (late events of the first block).
    for fmt, suffix in (("json", ".json.gz"), ("parquet", ".parquet")):
        folders = sorted((tmp_path / "raw" / "events" / fmt).glob("event_date=*"))
        assert len(folders) >= 45
        files = [len(list(f.glob(f"*{suffix}"))) for f in folders]
        assert set(files) == {1, 2} and files.count(2) <= 3, (fmt, files)
    truth = spark.read.format("delta").load(generated["ground_truth"]["path"])
    assert truth.count() == generated["ground_truth"]["cutoffs"]["2025-01-10"]["users"] > 0
    assert truth.where("p_purchase < 0 or p_purchase > 1 or expected_spend < 0").count() == 0

    from_json = ingest_job.run(cfg())
    planted = {k: v for k, v in landed.items() if k != "valid"}
    # Every planted defect is quarantined under the reason of its kind, nothing else is.
    kind_to_reason = {"malformed_json": "malformed_record", "missing_user_id": "missing_required",
                      "unknown_event_type": "unknown_event_type", "negative_price": "price_out_of_range",
                      "absurd_quantity": "quantity_out_of_range", "future_timestamp": "time_in_future",
                      "oversized_string": "string_too_long", "non_numeric_price": "wrong_type"}
    expected = {}
    for kind, n in planted.items():
        expected[kind_to_reason[kind]] = expected.get(kind_to_reason[kind], 0) + n
    assert from_json["bad_by_reason"] == expected
    assert from_json["good_rows"] == landed["valid"]
    assert from_json["duplicates_in_batch"] > 0
    events = read_table(spark, str(tmp_path / "warehouse"), "events")
    n_events = events.count()
    assert n_events == from_json["good_rows"] - from_json["duplicates_in_batch"]
    assert {r.t for r in events.select(F.col("event_type").alias("t")).distinct().collect()} == {
        "view", "search", "add_to_cart", "remove_from_cart", "purchase"}
    # One version per user and item (attributes never change in the simulated world), valid
    # from the export's updated_at (conf/local.yaml): the signup date, the first simulated day.
    users = read_table(spark, str(tmp_path / "warehouse"), "users")
    assert users.count() == 300
    assert users.where("valid_from <=> signup_date AND valid_to IS NULL").count() == 300
    items = read_table(spark, str(tmp_path / "warehouse"), "items")
    assert items.count() == 200
    assert items.where("valid_from = DATE'2025-01-01' AND valid_to IS NULL").count() == 200

    # The same events landed as Parquet add nothing: exactly once across formats and batches.
    # A foreign Parquet file and a truncated one are reported and skipped; the rest is read.
    landing = tmp_path / "raw" / "events" / "parquet" / "event_date=2025-01-03"
    spark.createDataFrame([(1, "a")], "sku int, name string").coalesce(1).write.parquet(str(landing / "foreign"))
    healthy = sorted(landing.glob("*.parquet"))[0].read_bytes()
    (landing / "truncated.parquet").write_bytes(healthy[: len(healthy) // 2])
    from_parquet = ingest_job.run(cfg("ingest.format=parquet"))
    assert from_parquet["batch_id"] != from_json["batch_id"]
    assert {(p["reason"], "foreign" in p["path"] or "truncated" in p["path"])
            for p in from_parquet["file_problems"]} == {("foreign_schema", True), ("unreadable_file", True)}
    assert from_parquet["tables"]["events"]["inserted"] == 0
    assert read_table(spark, str(tmp_path / "warehouse"), "events").count() == n_events
