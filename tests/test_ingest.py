"""ingest on real Spark and Delta: quarantine reasons, exactly-once, mapped CSV, the gate."""
from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import hmac
import json
import os
from collections import Counter
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from demandcast.config import load_config
from demandcast.errors import ConfigError, DataQualityError
from demandcast.tables import current_version, read_table, table_path
from features.ingest.batch import prepare_batch
from features.ingest.pseudonymise import resolve_hash_key
from jobs import ingest as ingest_job

TEST_KEY = os.environ["DEMANDCAST_USER_HASH_KEY"]  # set by conftest


def _cfg(project_root: Path, tmp_path: Path, *overrides: str):
    return load_config(project_root / "conf" / "local.yaml", [
        "spark.shuffle_partitions=2", "spark.driver_memory=3g",
        f"warehouse={tmp_path / 'warehouse'}", f"raw_dir={tmp_path / 'raw'}",
        "ingest.ingest_dimensions=false", *overrides])


def _event(n: int, **fields) -> dict:
    record = {"event_id": f"E{n:04d}", "user_id": f"U{n % 7:03d}", "session_id": f"S{n}",
              "event_time": f"2025-02-{1 + n % 3:02d}T10:{n % 60:02d}:00+02:00", "event_type": "view",
              "item_id": f"I{n}", "category_id": "books", "price": 12.5, "quantity": 1,
              "device": "desktop", "channel": "direct"}
    record.update(fields)
    return {k: v for k, v in record.items() if v is not None}


def _write_json_gz(path: Path, lines: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as out:
        out.write("\n".join(lines) + "\n")
    return str(path)


def _landing(tmp_path: Path, day: str, name: str) -> Path:
    return tmp_path / "raw" / "events" / "json" / f"event_date={day}" / name


def _events(spark, cfg):
    return sorted(tuple(r) for r in read_table(spark, cfg.warehouse, "events").drop("extra").collect())


BAD_RECORDS = {
    '{"event_id": "B1", "user_id": "U1", "event_time": "2025-02-01T10:00:00Z", "event_typ': "malformed_record",
    json.dumps(_event(101, user_id=None)): "missing_required",
    json.dumps(_event(102, event_type="purchase", price=None)): "missing_required",
    json.dumps(_event(103, price="abc")): "wrong_type",
    json.dumps(_event(104, event_time="yesterday-ish")): "wrong_type",
    json.dumps(_event(105, event_type="hover")): "unknown_event_type",
    json.dumps(_event(106, price=-3.0)): "price_out_of_range",
    json.dumps(_event(107, price=9e9)): "price_out_of_range",
    json.dumps(_event(108, quantity=0)): "quantity_out_of_range",
    json.dumps(_event(109, quantity=100000)): "quantity_out_of_range",
    json.dumps(_event(110, event_time="2999-01-01T00:00:00Z")): "time_in_future",
    json.dumps(_event(111, event_time="1990-01-01T00:00:00Z")): "time_before_floor",
    json.dumps(_event(112, device="x" * 300)): "string_too_long",
}


def test_every_bad_row_and_bad_file_is_quarantined_with_its_reason(spark, project_root, tmp_path):
    good = [json.dumps(_event(n)) for n in range(20)]
    _write_json_gz(_landing(tmp_path, "2025-02-01", "a.json.gz"), good + list(BAD_RECORDS))
    truncated = gzip.compress(("\n".join(good) + "\n").encode() * 50)
    _landing(tmp_path, "2025-02-02", "truncated.json.gz").parent.mkdir(parents=True)
    _landing(tmp_path, "2025-02-02", "truncated.json.gz").write_bytes(truncated[: len(truncated) // 2])
    _landing(tmp_path, "2025-02-02", "empty.json.gz").write_bytes(b"")
    _write_json_gz(_landing(tmp_path, "2025-02-02", "foreign.json.gz"),
                   [json.dumps({"order": n, "customer": "c", "total": 3}) for n in range(5)])
    _write_json_gz(_landing(tmp_path, "2025-02-02", "b.json.gz"), [json.dumps(_event(n)) for n in range(20, 30)])
    cfg = _cfg(project_root, tmp_path, "ingest.max_bad_fraction=0.5")

    summary = ingest_job.run(cfg)

    assert summary["good_rows"] == 30 and summary["bad_rows"] == len(BAD_RECORDS)
    expected_reasons = {}
    for reason in BAD_RECORDS.values():
        expected_reasons[reason] = expected_reasons.get(reason, 0) + 1
    assert summary["bad_by_reason"] == {**expected_reasons, "foreign_schema": 5}
    problems = {Path(p["path"]).name: p["reason"] for p in summary["file_problems"]}
    assert problems == {"truncated.json.gz": "unreadable_file", "empty.json.gz": "empty_file",
                        "foreign.json.gz": "foreign_schema"}

    quarantine = read_table(spark, cfg.warehouse, "quarantine").collect()
    by_record = {q.raw_record: q.reason for q in quarantine if q.raw_record and "order" not in q.raw_record}
    redacted = {raw: reason for raw, reason in BAD_RECORDS.items()}
    assert sorted(by_record.values()) == sorted(redacted.values())
    assert {(Path(q.source_file).name, q.reason) for q in quarantine if q.raw_record is None} == {
        ("truncated.json.gz", "unreadable_file"), ("empty.json.gz", "empty_file")}
    assert sum(q.reason == "foreign_schema" for q in quarantine) == 5
    assert all(q.batch_id == summary["batch_id"] for q in quarantine)
    # Raw user ids reach no table: events carry the keyed hash, quarantine records are redacted.
    assert not any('"U00' in (q.raw_record or "") for q in quarantine)
    events = read_table(spark, cfg.warehouse, "events")
    assert "user_id" not in events.columns
    keys = {r.user_key for r in events.select("user_key").distinct().collect()}
    assert keys == {hmac.new(TEST_KEY.encode(), f"U{n:03d}".encode(), hashlib.sha256).hexdigest()
                    for n in range(7)}
    # +02:00 in the source -> UTC in the table, partitioned by the UTC date.
    first = events.where("event_id = 'E0000'").first()
    assert str(first.event_time) == "2025-02-01 08:00:00" and str(first.event_date) == "2025-02-01"


def test_reruns_and_overlapping_batches_never_duplicate(spark, project_root, tmp_path):
    f1 = _write_json_gz(_landing(tmp_path, "2025-02-01", "1.json.gz"),
                        [json.dumps(_event(n)) for n in range(0, 30)] + [json.dumps(_event(5))]
                        + [json.dumps(_event(200, price=-1))])
    f2 = _write_json_gz(_landing(tmp_path, "2025-02-02", "2.json.gz"), [json.dumps(_event(n)) for n in range(20, 50)])
    f3 = _write_json_gz(_landing(tmp_path, "2025-02-03", "3.json.gz"), [json.dumps(_event(n)) for n in range(40, 60)])
    batch_a = _cfg(project_root, tmp_path, f"ingest.paths=[{f1}, {f2}]")

    first = ingest_job.run(batch_a)
    assert first["duplicates_in_batch"] == 11  # E0005 twice in file 1, E0020..E0029 in both files
    assert first["tables"]["events"]["inserted"] == 50
    events_once = _events(spark, batch_a)
    quarantine_once = sorted(tuple(r) for r in read_table(spark, batch_a.warehouse, "quarantine")
                             .drop("quarantined_at").collect())

    again = ingest_job.run(batch_a)
    assert again["batch_id"] == first["batch_id"]
    assert again["tables"]["events"]["inserted"] == 0
    assert _events(spark, batch_a) == events_once
    assert sorted(tuple(r) for r in read_table(spark, batch_a.warehouse, "quarantine")
                  .drop("quarantined_at").collect()) == quarantine_once

    overlapping = ingest_job.run(_cfg(project_root, tmp_path, f"ingest.paths=[{f2}, {f3}]"))
    assert overlapping["batch_id"] != first["batch_id"]
    assert overlapping["tables"]["events"]["inserted"] == 10
    ids = [r.event_id for r in read_table(spark, batch_a.warehouse, "events").select("event_id").collect()]
    assert len(ids) == len(set(ids)) == 60


def test_gate_failure_commits_nothing(spark, project_root, tmp_path):
    ok = _write_json_gz(_landing(tmp_path, "2025-02-01", "ok.json.gz"), [json.dumps(_event(n)) for n in range(10)])
    cfg = _cfg(project_root, tmp_path, f"ingest.paths=[{ok}]")
    ingest_job.run(cfg)
    versions = {t: current_version(spark, table_path(cfg.warehouse, t)) for t in ("events", "quarantine")}

    bad = _write_json_gz(_landing(tmp_path, "2025-02-02", "bad.json.gz"),
                         [json.dumps(_event(n)) for n in range(10, 20)]
                         + [json.dumps(_event(n, price=-1.0)) for n in range(20, 25)])
    with pytest.raises(DataQualityError, match="5 of 15 rows are bad"):
        ingest_job.run(_cfg(project_root, tmp_path, f"ingest.paths=[{bad}]", "ingest.max_bad_fraction=0.2"))
    assert {t: current_version(spark, table_path(cfg.warehouse, t)) for t in versions} == versions
    assert read_table(spark, cfg.warehouse, "events").count() == 10


def test_platform_transaction_csv_through_column_mapping(spark, project_root, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "orders.csv").write_text(
        "customer_id,order_date,qty,amount,store\n"
        "C1,01/03/2025,2,30.00,paris\n"
        "C2,01/03/2025,1,9.99,lyon\n"
        "C1,02/03/2025,3,4.50,paris\n"
        "C3,02/03/2025,1,5.00,lille,EXTRA\n"       # a shifted row: one field too many
        "C4,not-a-date,1,5.00,lille\n")
    (folder / "other_layout.csv").write_text("sku,stock\nA,1\n")  # a foreign export
    cfg = _cfg(project_root, tmp_path, "ingest.format=csv", f"ingest.paths=[{folder}]",
               "ingest.mapping.columns={user_id: customer_id, event_time: order_date, quantity: qty}",
               "ingest.mapping.constants={event_type: purchase}",
               "ingest.mapping.derive={price: \"try_divide(try_cast(src['amount'] AS DOUBLE), "
               "try_cast(src['qty'] AS DOUBLE))\"}",
               "ingest.mapping.defaults={device: unknown, category_id: all}",
               "ingest.mapping.event_id_from=[]",
               "ingest.mapping.timestamp_format=dd/MM/yyyy",
               "ingest.mapping.source_timezone=Europe/Paris",
               "ingest.max_bad_fraction=0.5")

    summary = ingest_job.run(cfg)

    assert summary["good_rows"] == 3
    assert summary["bad_by_reason"] == {"malformed_record": 1, "wrong_type": 1}
    assert [(Path(p["path"]).name, p["reason"]) for p in summary["file_problems"]] == [
        ("other_layout.csv", "foreign_schema")]
    rows = {(r.event_date.isoformat(), str(r.event_time), r.quantity, round(r.price, 2), r.device,
             r.category_id, r.event_type, r.extra.get("store"))
            for r in read_table(spark, cfg.warehouse, "events").collect()}
    # Midnight in Paris (UTC+1 in March) is 23:00 UTC the day before.
    assert rows == {("2025-02-28", "2025-02-28 23:00:00", 2, 15.0, "unknown", "all", "purchase", "paris"),
                    ("2025-02-28", "2025-02-28 23:00:00", 1, 9.99, "unknown", "all", "purchase", "lyon"),
                    ("2025-03-01", "2025-03-01 23:00:00", 3, 1.5, "unknown", "all", "purchase", "paris")}
    # Same file again: the derived ids are stable, nothing is inserted twice.
    assert ingest_job.run(cfg)["tables"]["events"]["inserted"] == 0


def test_a_repeated_csv_header_name_the_mapping_reads_is_a_config_error(spark, project_root, tmp_path):
    """Two 'price' columns (a net and a gross price, say): Spark reads them as price2 and price3,
    and mapping 'price' would silently give every row a null price."""
    export = tmp_path / "exports" / "orders.csv"
    export.parent.mkdir()
    export.write_text("event_id,user_id,price,price,quantity,event_time,event_type\n"
                      "e1,U1,10.00,12.00,1,2025-03-01T10:00:00Z,purchase\n")
    base = ("ingest.format=csv", f"ingest.paths=[{export.parent}]")
    with pytest.raises(ConfigError, match=r"ingest.mapping.columns.price: the CSV header repeats 'price' "
                                          r"\(read as price2, price3\)"):
        ingest_job.run(_cfg(project_root, tmp_path, *base))
    # Naming the copy to read resolves it; the other copy is kept in `extra`.
    cfg = _cfg(project_root, tmp_path, *base, "ingest.mapping.columns={price: price3}")
    assert ingest_job.run(cfg)["good_rows"] == 1
    row = read_table(spark, cfg.warehouse, "events").first()
    assert row.price == 12.0 and row.extra == {"price2": "10.00"}


def test_cluster_mode_refuses_to_run_without_the_secret(project_root, tmp_path, monkeypatch):
    monkeypatch.delenv("DEMANDCAST_USER_HASH_KEY")
    with pytest.raises(ConfigError, match="DEMANDCAST_USER_HASH_KEY"):
        ingest_job.run(_cfg(project_root, tmp_path, "env=cluster"))


# Public e-commerce exports as they come (header names and value formats of the REES46
# multi-category store, UCI Online Retail and Retailrocket dumps), read through config only.
def _prepared(spark, cfg):
    """Counts, events and quarantine of a batch as ingest computes them, without the Delta commit
    (exactly-once and the tables are covered above; this keeps each mapping case to seconds)."""
    batch = prepare_batch(spark, cfg, resolve_hash_key(cfg.user_hash_key_env, cfg.env),
                          dt.datetime.now(dt.timezone.utc))
    try:
        return (batch.counts, batch.events.collect(),
                batch.quarantine.select("reason", "detail", "source_file").collect())
    finally:
        batch.release()


REES46 = "event_time,event_type,product_id,category_id,category_code,brand,price,user_id,user_session"
REAL_EXPORTS = {
    # UTF-8 BOM and CRLF (a spreadsheet's "CSV UTF-8"), 'cart' recoded, padded upper-case types.
    "rees46_bom_crlf": (
        {"2019-Oct.csv": ("\ufeff" + "\r\n".join([
            REES46,
            "2019-10-01 00:00:00 UTC,view,44600062,2103807459595387724,,shiseido,35.79,541312140,72d76fde-8bb3",
            "2019-10-01 00:00:01 UTC,cart,1307067,2053013558920217191,computers.notebook,lenovo,251.74,550050854,7c90",
            "2019-10-01 00:00:05 UTC, PURCHASE ,1480613,2053013561092866779,computers.desktop,pulser,908.62,512742880,0d0d",
            "2019-10-01 00:00:18 UTC,click,1004258,2053013555631882655,electronics.smartphone,apple,732.07,529755884,0b82",
        ]) + "\r\n").encode()},
        ["ingest.mapping.columns={item_id: product_id, session_id: user_session}",
         "ingest.mapping.values={event_type: {cart: add_to_cart}}", "ingest.mapping.defaults={quantity: '1'}",
         "ingest.mapping.event_id_from=[event_time, event_type, item_id, user_id, session_id]"],
        {("view", "44600062", "2019-10-01 00:00:00", 35.79, 1, "2103807459595387724"),
         ("add_to_cart", "1307067", "2019-10-01 00:00:01", 251.74, 1, "2053013558920217191"),
         ("purchase", "1480613", "2019-10-01 00:00:05", 908.62, 1, "2053013561092866779")},
        {"unknown_event_type": 1}),
    # A repeated invoice line is two purchases; a cancellation and a line without customer are bad.
    "uci_online_retail": (
        {"Online_Retail.csv": (
            "InvoiceNo,StockCode,Description,Quantity,InvoiceDate,UnitPrice,CustomerID,Country\n"
            "536365,85123A,WHITE HANGING HEART T-LIGHT HOLDER,6,12/1/2010 8:26,2.55,17850,United Kingdom\n"
            '536381,22719,"GUMBALL MONOCHROME COAT RACK, BLACK",1,6/1/2011 9:41,1.25,15311,United Kingdom\n'
            '536381,22719,"GUMBALL MONOCHROME COAT RACK, BLACK",1,6/1/2011 9:41,1.25,15311,United Kingdom\n'
            "C536383,35004C,SET OF 3 COLOURED  FLYING DUCKS,-1,12/1/2010 9:49,4.65,15311,United Kingdom\n"
            "536414,22139,,56,12/1/2010 11:52,0,,United Kingdom\n").encode()},
        ["ingest.mapping.columns={user_id: CustomerID, item_id: StockCode, event_time: InvoiceDate, "
         "quantity: Quantity, price: UnitPrice, session_id: InvoiceNo}",
         "ingest.mapping.constants={event_type: purchase}", "ingest.mapping.event_id_from=[]",
         "ingest.mapping.repeats_are_events=true", "ingest.mapping.timestamp_format=M/d/yyyy H:mm",
         "ingest.mapping.source_timezone=Europe/London"],
        # London is UTC in December and UTC+1 in June.
        [("purchase", "85123A", "2010-12-01 08:26:00", 2.55, 6, None),
         ("purchase", "22719", "2011-06-01 08:41:00", 1.25, 1, None),
         ("purchase", "22719", "2011-06-01 08:41:00", 1.25, 1, None)],
        {"quantity_out_of_range": 1, "missing_required": 1}),
    # pandas' to_csv(sep=';', decimal=','): an unnamed index column first, decimal commas (and
    # digit grouping from a spreadsheet). Spark's header check refused the unnamed column.
    "pandas_semicolon_decimal_comma": (
        {"export.csv": (
            ";event_id;user_id;event_time;event_type;item_id;price;quantity\n"
            "0;s1;u100;2024-05-01T10:00:00+02:00;purchase;A1;12,50;2\n"
            '1;s2;u100;2024-05-01 10:00:00;view;A2;"1.081,98";1\n'
            "2;s3;u101;2024-05-01 10:00:00;view;A3;zwölf;1\n").encode()},
        ["ingest.csv_options={header: 'true', sep: ';'}", "ingest.mapping.decimal_separator=','"],
        {("purchase", "A1", "2024-05-01 08:00:00", 12.5, 2, None),
         ("view", "A2", "2024-05-01 10:00:00", 1081.98, 1, None)},
        {"wrong_type": 1}),
}


@pytest.mark.parametrize("name", sorted(REAL_EXPORTS))
def test_real_export_layouts_through_config(spark, project_root, tmp_path, name):
    files, mapping, expected, bad = REAL_EXPORTS[name]
    folder = tmp_path / "export"
    folder.mkdir()
    for file_name, content in files.items():
        (folder / file_name).write_bytes(content)
    cfg = _cfg(project_root, tmp_path, "ingest.format=csv", f"ingest.paths=[{folder}]",
               "ingest.max_bad_fraction=0.9", *mapping)

    counts, rows, quarantined = _prepared(spark, cfg)

    assert counts["bad_by_reason"] == bad and counts["duplicates_in_batch"] == 0
    assert counts["good_rows"] + counts["bad_rows"] == counts["records_read"] == sum(
        content.count(b"\n") - 1 for content in files.values())
    assert Counter((r.event_type, r.item_id, str(r.event_time), r.price, r.quantity, r.category_id)
                   for r in rows) == Counter(expected)
    assert len(quarantined) == counts["bad_rows"]
    assert len({r.event_id for r in rows}) == len(rows)  # a repeated invoice line is numbered, not a duplicate


def test_nested_json_user_id_never_reaches_events(spark, project_root, tmp_path):
    lines = [{"id": "j1", "ts": "2024-05-01T10:00:00+02:00", "type": " View ", "price": "19.90", "qty": "1",
              "user": {"id": "u-1001", "tier": "gold"}, "item": {"sku": "A1"}, "coupon": "SPRING"},
             {"id": "j2", "ts": 1714557600, "type": "Purchase", "price": 49.5, "qty": "2",
              "user": {"id": "u-1002"}, "item": {"sku": "B7"}, "coupon": "see u-1002", "order": "u-10021"},
             {"id": "j3", "ts": "2024-05-01T12:00:00", "type": "view", "user": {}, "item": {"sku": "B7"}}]
    path = _write_json_gz(tmp_path / "export" / "events.json.gz", [json.dumps(x) for x in lines])
    cfg = _cfg(project_root, tmp_path, f"ingest.paths=[{path}]", "ingest.max_bad_fraction=0.9",
               "ingest.mapping.columns={event_id: id, event_time: ts, event_type: type, quantity: qty}",
               "ingest.mapping.derive={user_id: \"get_json_object(src['user'], '$.id')\", "
               "item_id: \"get_json_object(src['item'], '$.sku')\"}")

    counts, events, _ = _prepared(spark, cfg)

    assert counts["good_rows"] == 2 and counts["bad_by_reason"] == {"missing_required": 1}
    rows = {r.event_id: r for r in events}
    assert {(k, r.event_type, r.item_id, str(r.event_time), r.price, r.quantity) for k, r in rows.items()} == {
        ("j1", "view", "A1", "2024-05-01 08:00:00", 19.9, 1),
        ("j2", "purchase", "B7", "2024-05-01 10:00:00", 49.5, 2)}
    # The fields derive reads are mapped, not extra; any other field holding the id is redacted.
    assert rows["j1"].extra == {"coupon": "SPRING"}
    assert rows["j2"].extra["coupon"].startswith("see hmac:") and "u-1002" not in rows["j2"].extra["coupon"]
    assert rows["j2"].extra["order"] == "u-10021"  # whole tokens only


@pytest.mark.parametrize("override, message", [
    ("ingest.mapping.timestamp_format=yyyy-MM-dd HH:mm:ss UTC",
     r"ingest.mapping.timestamp_format.*\['C', 'T', 'U'\].*quote literal text"),
    ("ingest.mapping.repeats_are_events=true", r"ingest.mapping.*repeats_are_events needs event_id_from"),
    ("ingest.mapping.decimal_separator=;", r"ingest.mapping.decimal_separator"),
    ("ingest.mapping.values={event_typ: {cart: add_to_cart}}", r"ingest.mapping.values.*event_typ"),
])
def test_bad_mapping_config_names_the_key(project_root, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        cfg = _cfg(project_root, tmp_path, override)
        from features.ingest.column_mapping import _check_keys
        _check_keys(cfg.ingest.mapping)


def test_bad_derive_expression_names_its_key(spark, project_root, tmp_path):
    path = _write_json_gz(_landing(tmp_path, "2025-02-01", "a.json.gz"), [json.dumps(_event(1))])
    for derive, error in (("CASE src['type'] WHEN 'cart' THEN", "PARSE_SYNTAX_ERROR"),
                          ("no_such_fn(src['type'])", "UNRESOLVED_ROUTINE")):
        cfg = _cfg(project_root, tmp_path, f"ingest.paths=[{path}]", f'ingest.mapping.derive={{channel: "{derive}"}}')
        with pytest.raises(ConfigError, match=rf"ingest.mapping.derive.channel: .* \[{error}\]"):
            ingest_job.run(cfg)


def test_typed_parquet_export_decimals_and_zoned_or_wall_clock_times(spark, project_root, tmp_path):
    # A warehouse export: decimal(10,2) prices, int quantities, event times as instants or as
    # wall-clock times without zone (TIMESTAMP_NTZ), which are read in the source time zone.
    folder = tmp_path / "export"
    rows = [("p1", "u-101", dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.timezone.utc), "Purchase", "A1", "12.50", 2),
            ("p2", "u-102", dt.datetime(2024, 5, 1, 23, 30, tzinfo=dt.timezone.utc), "view", "A2", "0.99", None)]
    spark.createDataFrame(rows, "event_id string, user_id string, event_time timestamp, event_type string, "
                                "item_id string, price string, quantity int") \
        .withColumn("price", F.col("price").cast("decimal(10,2)")).coalesce(1).write.parquet(str(folder / "zoned"))
    spark.createDataFrame([("p3", "u-103", dt.datetime(2024, 5, 1, 10, 0), "view", "A3", 1)],
                          "event_id string, user_id string, event_time timestamp_ntz, event_type string, "
                          "item_id string, quantity int").coalesce(1).write.parquet(str(folder / "wall_clock"))
    cfg = _cfg(project_root, tmp_path, "ingest.format=parquet", f"ingest.paths=[{folder}]",
               "ingest.mapping.source_timezone=Europe/Paris")

    counts, events, _ = _prepared(spark, cfg)

    assert counts["good_rows"] == 3 and counts["bad_rows"] == 0 and counts["file_problems"] == 0
    assert {(r.event_id, str(r.event_time), r.event_type, r.price, r.quantity) for r in events} == {
        ("p1", "2024-05-01 10:00:00", "purchase", 12.5, 2), ("p2", "2024-05-01 23:30:00", "view", 0.99, None),
        ("p3", "2024-05-01 08:00:00", "view", None, 1)}  # 10:00 in Paris (CEST) is 08:00 UTC


def test_timestamps_with_a_zone_name_are_not_shifted_by_the_source_zone(spark, project_root, tmp_path):
    from features.ingest.validation import parse_timestamp

    mapping = _cfg(project_root, tmp_path, "ingest.mapping.source_timezone=Europe/Paris").ingest.mapping
    cases = {"2019-10-01 00:00:00 UTC": "2019-10-01 00:00:00",  # REES46
             "2019-10-01 00:00:00 GMT+2": "2019-09-30 22:00:00",
             "2019-10-01 00:00:00 Europe/London": "2019-09-30 23:00:00",
             "2019-10-01T00:00:00+02:00": "2019-09-30 22:00:00",
             "2019-10-01 00:00:00": "2019-09-30 22:00:00",  # no zone: Paris (CEST)
             # Java's ZonedDateTime.toString(): the offset decides, not the bracketed region
             # (Paris is +01:00 in March); zero seconds are left out; no offset: the region.
             "2025-03-01T10:00:00+02:00[Europe/Paris]": "2025-03-01 08:00:00",
             "2025-03-01T10:00+01:00[Europe/Paris]": "2025-03-01 09:00:00",
             "2025-03-01T10:00:00.123456789+01:00[Europe/Paris]": "2025-03-01 09:00:00.123456",
             "2025-07-01T10:00Z[UTC]": "2025-07-01 10:00:00",
             "2025-03-01T10:00:00[Europe/London]": "2025-03-01 10:00:00"}
    got = spark.createDataFrame([(t,) for t in cases], "t string").select(
        "t", parse_timestamp(F.col("t"), mapping).alias("utc")).collect()
    assert {r.t: str(r.utc) for r in got} == cases


def test_json_document_exports_are_read_object_by_object(spark, project_root, tmp_path):
    folder = tmp_path / "export"
    folder.mkdir()
    records = [_event(n, event_type=" View ") for n in range(3)] + [_event(3, price=-1)]
    (folder / "pretty.json").write_text(json.dumps(records, indent=2))           # an API dump
    (folder / "one.json").write_text(json.dumps(_event(4)))                      # a single object
    (folder / "broken.json").write_text(json.dumps(records, indent=2)[:-40])     # cut off
    (folder / "none.json").write_text("[]")
    cfg = _cfg(project_root, tmp_path, "ingest.format=json_document", f"ingest.paths=[{folder}]",
               "ingest.max_bad_fraction=0.9")

    counts, events, quarantined = _prepared(spark, cfg)

    assert sorted(r.event_id for r in events) == ["E0000", "E0001", "E0002", "E0004"]
    assert {r.event_type for r in events} == {"view"}
    # The cut-off document is an unreadable file, like a truncated gzip; the rest is read.
    assert counts["bad_by_reason"] == {"price_out_of_range": 1}
    assert {(Path(q.source_file).name, q.reason, q.detail) for q in quarantined} == {
        ("pretty.json", "price_out_of_range", "price_out_of_range: -1.0"),
        ("broken.json", "unreadable_file", "not one complete JSON document (cut off, or not JSON)"),
        ("none.json", "empty_file", "no records")}
