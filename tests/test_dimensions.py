"""users and items keep their history (type-2) on real Spark and Delta: versions from export
folders and from a valid-from field, idempotent re-ingest, late exports, missing exports, a
table from before the history columns, and the point-in-time join consumers use."""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import os
from pathlib import Path

import pandas as pd
import pytest

from demandcast.config import load_config
from demandcast.errors import ConfigError, StageFailed
from demandcast.tables import TableSpec, current_version, is_delta_table, read_table, table_path, write_table
from features.dimensions import attributes_on, snapshot_day_of
from features.ingest.dimensions import ingest_dimensions
from features.ingest.pseudonymise import resolve_hash_key

D = dt.date


def user_key(user_id: str) -> str:
    secret = os.environ["DEMANDCAST_USER_HASH_KEY"].encode()  # set by conftest
    return hmac.new(secret, user_id.encode(), hashlib.sha256).hexdigest()


def _cfg(tmp_path: Path, *overrides: str):
    return load_config("conf/local.yaml", [
        f"warehouse={tmp_path / 'warehouse'}", f"raw_dir={tmp_path / 'raw'}",
        "ingest.users_valid_from_column=null", "ingest.items_valid_from_column=null",
        "ingest.dimensions_export_date=2030-01-01", *overrides])


def _export(folder: Path, rows: list[dict], name: str = "part-0.parquet") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(folder / name, index=False)


def _user(user_id: str, region: str, **extra) -> dict:
    return {"user_id": user_id, "signup_date": "2024-06-01", "region": region, "age_band": "25-34",
            "gender": "f", **extra}


def _users(spark, cfg) -> list[tuple]:
    names = {user_key(u): u for u in ("U1", "U2", "U3")}
    return sorted((names[r.user_key], r.region, r.valid_from, r.valid_to)
                  for r in read_table(spark, cfg.warehouse, "users").collect())


def _ingest(spark, cfg) -> dict:
    return ingest_dimensions(spark, cfg, resolve_hash_key(cfg.user_hash_key_env, cfg.env))


def test_users_history_from_dated_exports_reruns_and_late_exports(spark, tmp_path):
    cfg = _cfg(tmp_path)
    users = tmp_path / "raw" / "users"
    _export(users / "export_date=2025-01-01", [_user("U1", "north"), _user("U2", "south")])
    first = _ingest(spark, cfg)
    assert first["users"]["inserted"] == 2
    assert _users(spark, cfg) == [("U1", "north", D(2025, 1, 1), None), ("U2", "south", D(2025, 1, 1), None)]

    # The next export lands beside the first: U1 moved, U2 is unchanged, U3 is new.
    _export(users / "export_date=2025-02-01", [_user("U1", "west"), _user("U2", "south"), _user("U3", "east")])
    second = _ingest(spark, cfg)
    assert (second["users"]["version"], second["users"]["inserted"], second["users"]["updated"],
            second["users"]["deleted"]) == (first["users"]["version"] + 1, 2, 1, 0)
    history = [("U1", "north", D(2025, 1, 1), D(2025, 2, 1)), ("U1", "west", D(2025, 2, 1), None),
               ("U2", "south", D(2025, 1, 1), None), ("U3", "east", D(2025, 2, 1), None)]
    assert _users(spark, cfg) == history

    # The same exports again: nothing changes, not even the table version.
    assert _ingest(spark, cfg)["users"] == {"version": second["users"]["version"], "inserted": 0,
                                            "updated": 0, "deleted": 0}
    assert _users(spark, cfg) == history

    # A late export, read alone: U1 was west already on 2025-01-15 (the version of 2025-02-01
    # merges into it), U2 was south since 2024-12-01 (before its first version).
    _export(tmp_path / "late" / "export_date=2025-01-15", [_user("U1", "west")])
    _export(tmp_path / "late" / "export_date=2024-12-01", [_user("U2", "south")])
    late = _ingest(spark, cfg.model_copy(update={"ingest": cfg.ingest.model_copy(
        update={"users_path": str(tmp_path / "late")})}))
    assert (late["users"]["inserted"], late["users"]["updated"], late["users"]["deleted"]) == (2, 1, 2)
    assert _users(spark, cfg) == [
        ("U1", "north", D(2025, 1, 1), D(2025, 1, 15)), ("U1", "west", D(2025, 1, 15), None),
        ("U2", "south", D(2024, 12, 1), None), ("U3", "east", D(2025, 2, 1), None)]
    table = read_table(spark, cfg.warehouse, "users")
    assert table.schema["valid_from"].nullable is False
    assert "first day" in table.schema["valid_from"].metadata["comment"]


def test_items_dated_by_their_valid_from_field_else_the_export_date(spark, tmp_path):
    cfg = _cfg(tmp_path, "ingest.items_valid_from_column=updated_at")
    items = tmp_path / "raw" / "items"
    _export(items, [
        {"item_id": "I1", "category_id": "books", "brand": "a", "list_price": 10.0, "updated_at": "2025-01-01"},
        {"item_id": "I2", "category_id": "toys", "brand": "b", "list_price": 5.0, "updated_at": None}])
    _ingest(spark, cfg)
    # The price of I1 changed on 2025-03-01 (a timestamp field counts by its date); a row
    # repeating I1's first version changes nothing.
    _export(items, [
        {"item_id": "I1", "category_id": "books", "brand": "a", "list_price": 12.0,
         "updated_at": "2025-03-01T08:30:00+00:00"},
        {"item_id": "I1", "category_id": "books", "brand": "a", "list_price": 10.0, "updated_at": "2025-01-20"}],
        name="part-1.parquet")
    result = _ingest(spark, cfg)
    assert (result["items"]["inserted"], result["items"]["updated"]) == (1, 1)
    rows = sorted((r.item_id, r.list_price, r.valid_from, r.valid_to)
                  for r in read_table(spark, cfg.warehouse, "items").collect())
    assert rows == [("I1", 10.0, D(2025, 1, 1), D(2025, 3, 1)), ("I1", 12.0, D(2025, 3, 1), None),
                    ("I2", 5.0, D(2030, 1, 1), None)]
    assert "users" not in result and not is_delta_table(spark, table_path(cfg.warehouse, "users"))


def test_source_without_dimension_exports_creates_no_tables(spark, tmp_path):
    cfg = _cfg(tmp_path)
    (tmp_path / "raw" / "items").mkdir(parents=True)  # an empty folder is no export either
    assert _ingest(spark, cfg) == {}
    for name in ("users", "items"):
        assert not is_delta_table(spark, table_path(cfg.warehouse, name))
    with pytest.raises(ConfigError, match="ingest.users_path"):
        _ingest(spark, _cfg(tmp_path, f"ingest.users_path={tmp_path / 'nowhere'}"))


def test_table_without_history_columns_is_refused_before_anything_is_written(spark, tmp_path):
    cfg = _cfg(tmp_path)
    legacy = spark.createDataFrame([("I1", "books", "a", 10.0)],
                                   "item_id string, category_id string, brand string, list_price double")
    version = write_table(legacy, cfg.warehouse, TableSpec("items", "items, current values only"), "overwrite")
    _export(tmp_path / "raw" / "users", [_user("U1", "north")])
    _export(tmp_path / "raw" / "items", [{"item_id": "I1", "category_id": "books", "brand": "a",
                                          "list_price": 11.0}])
    with pytest.raises(StageFailed, match=r"table 'items' .* no valid_from or valid_to column.*move it aside"):
        _ingest(spark, cfg)
    assert current_version(spark, table_path(cfg.warehouse, "items")) == version
    assert not is_delta_table(spark, table_path(cfg.warehouse, "users"))


@pytest.mark.parametrize("override, key", [
    ("ingest.users_valid_from_column=' '", "ingest.users_valid_from_column"),
    ("ingest.items_valid_from_column=item_id", "ingest.items_valid_from_column"),
    ("ingest.dimensions_export_date=2025-02-30", "ingest.dimensions_export_date")])
def test_bad_dimension_settings_name_the_key(tmp_path, override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _cfg(tmp_path, override)


def test_attributes_on_joins_the_version_valid_on_the_day(spark):
    users = spark.createDataFrame([
        ("u1", "north", D(2025, 1, 1), D(2025, 2, 1)), ("u1", "west", D(2025, 2, 1), None),
        ("u2", "south", D(2025, 1, 10), None)],
        "user_key string, region string, valid_from date, valid_to date")
    facts = spark.createDataFrame([
        (1, "u1", D(2024, 12, 31)), (2, "u1", D(2025, 1, 1)), (3, "u1", D(2025, 1, 31)),
        (4, "u1", D(2025, 2, 1)), (5, "u1", D(2030, 1, 1)), (6, "u2", D(2025, 1, 9)),
        (7, "u9", D(2025, 1, 15)), (8, "u2", None)],
        "n int, user_key string, day date")
    joined = attributes_on(facts, users, "user_key", "day")
    assert joined.columns == ["n", "user_key", "day", "region"]
    assert sorted((r.n, r.region) for r in joined.collect()) == [
        (1, None), (2, "north"), (3, "north"), (4, "west"), (5, "west"), (6, None), (7, None), (8, None)]

    # A snapshot D sees the users version of D - 1: on 2025-02-01, U1 was still north.
    snapshots = spark.createDataFrame([("u1", D(2025, 2, 1)), ("u1", D(2025, 2, 2))],
                                      "user_key string, snapshot_date date")
    known = attributes_on(snapshots.withColumn("_day", snapshot_day_of(snapshots["snapshot_date"])),
                          users, "user_key", "_day").drop("_day")
    assert sorted((r.snapshot_date, r.region) for r in known.collect()) == [
        (D(2025, 2, 1), "north"), (D(2025, 2, 2), "west")]
    with pytest.raises(ValueError, match="region"):
        attributes_on(facts.withColumn("region", facts["n"]), users, "user_key", "day")


def test_duckdb_reference_reads_users_as_of_the_day_before_and_items_as_of_the_event(tmp_path):
    from features.feature_spec import FeatureSpec
    from reference import duckdb_features as reference

    utc = dt.timezone.utc
    events = pd.DataFrame({
        "event_id": ["e1", "e2"], "user_key": ["u1", "u1"], "session_id": ["s1", "s2"],
        "event_time": [dt.datetime(2025, 1, 20, 10, tzinfo=utc), dt.datetime(2025, 1, 25, 10, tzinfo=utc)],
        "event_type": ["view", "purchase"], "item_id": ["i1", "i1"], "category_id": [None, None],
        "price": [9.0, 9.0], "quantity": [None, 1], "device": ["web", "web"]})
    users = pd.DataFrame({
        "user_key": ["u1", "u1"], "signup_date": [D(2024, 1, 1)] * 2, "region": ["north", "west"],
        "age_band": ["25-34"] * 2, "gender": ["f"] * 2,
        "valid_from": [D(2025, 1, 1), D(2025, 2, 1)], "valid_to": [D(2025, 2, 1), None]})
    # i1 was in category books at 10.0 until 2025-01-25, then in toys at 8.0.
    items = pd.DataFrame({
        "item_id": ["i1", "i1"], "category_id": ["books", "toys"], "brand": ["a", "a"],
        "list_price": [10.0, 8.0], "valid_from": [D(2025, 1, 1), D(2025, 1, 25)],
        "valid_to": [D(2025, 1, 25), None]})
    paths = {}
    for name, frame in (("events", events), ("users", users), ("items", items)):
        paths[name] = str(tmp_path / f"{name}.parquet")
        frame.to_parquet(paths[name], index=False)
    con = reference.connect()
    reference.register_inputs(con, [paths["events"]], [paths["users"]], [paths["items"]])
    spec = FeatureSpec()
    rows = reference.features(con, [D(2025, 2, 1), D(2025, 2, 2)], spec).set_index("snapshot_date")
    # A snapshot D knows the users version of D - 1: U1 moved west on 2025-02-01.
    assert list(rows["region"]) == ["north", "west"]
    # Each event once, with the item version of its day: the view in books, the purchase in
    # toys and not on promotion (9.0 is below the old list price 10.0, not the new 8.0).
    assert list(rows["purchases_last_30d"]) == [1, 1] and list(rows["views_last_30d"]) == [1, 1]
    assert list(rows[f"share_bought_on_promotion_last_{spec.price_window_days}d"]) == [0.0, 0.0]
    assert list(rows["top_category_1"]) == ["books"] * 2 and list(rows["top_category_2"]) == ["toys"] * 2
