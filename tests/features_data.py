"""Small random warehouse inputs (events, users, items) that follow docs/CONTRACTS.md, for the
feature tests. Written through demandcast.tables.write_table like ingest writes them."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession

from demandcast.tables import TableSpec, write_table

EVENTS_SCHEMA = (
    "event_id string, user_key string, session_id string, event_time timestamp, "
    "event_type string, item_id string, category_id string, price double, quantity int, "
    "device string, channel string, extra map<string,string>, source_file string, "
    "batch_id string, ingested_at timestamp, event_date date")
USERS_SCHEMA = ("user_key string, signup_date date, region string, age_band string, gender string, "
                "valid_from date, valid_to date")
ITEMS_SCHEMA = "item_id string, category_id string, brand string, list_price double, valid_from date, valid_to date"
# The dimensions hold versions (valid_from <= day < valid_to); inputs given without them get one
# version per key, valid since before any test event, so every point-in-time join finds it.
ALWAYS_VALID_FROM = dt.date(2000, 1, 1)

EVENTS = TableSpec("events", "test events", ("event_date",),
                   properties={"delta.enableChangeDataFeed": "true"})
USERS = TableSpec("users", "test users")
ITEMS = TableSpec("items", "test items")


def events_frame(spark: SparkSession, rows: list[dict]) -> DataFrame:
    """Events from dicts with at least user_key, event_time, event_type; the rest defaulted."""
    full = []
    for i, r in enumerate(rows):
        t = r["event_time"]
        full.append({
            "event_id": r.get("event_id", f"e{i}"), "user_key": r["user_key"],
            "session_id": r.get("session_id", "s1"), "event_time": t,
            "event_type": r["event_type"], "item_id": r.get("item_id", "i1"),
            "category_id": r.get("category_id", "c1"), "price": r.get("price", 10.0),
            "quantity": r.get("quantity", 1), "device": r.get("device", "mobile"),
            "channel": r.get("channel", "web"), "extra": {}, "source_file": "test",
            "batch_id": r.get("batch_id", "b1"), "ingested_at": dt.datetime(2030, 1, 1),
            "event_date": t.date(),
        })
    return spark.createDataFrame(pd.DataFrame(full), EVENTS_SCHEMA)


def random_inputs(seed: int, n_users: int, n_events: int, start: dt.date, days: int,
                  n_items: int = 60, n_categories: int = 8) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Random events with sessions, missing prices and quantities, promotions, null categories."""
    rng = np.random.default_rng(seed)
    categories = [f"cat{c}" for c in range(n_categories)]
    items = pd.DataFrame({
        "item_id": [f"item{i}" for i in range(n_items)],
        "category_id": rng.choice(categories, n_items),
        "brand": rng.choice(["a", "b", "c"], n_items),
        "list_price": np.round(rng.uniform(5, 200, n_items), 2),
    })
    users = pd.DataFrame({
        "user_key": [f"u{u:04d}" for u in range(n_users)],
        "signup_date": [start + dt.timedelta(days=int(x)) for x in rng.integers(-100, days // 2, n_users)],
        "region": rng.choice(["north", "south", None], n_users),
        "age_band": rng.choice(["18-24", "25-34", "35-54"], n_users),
        "gender": rng.choice(["f", "m"], n_users),
    })
    item_idx = rng.integers(0, n_items, n_events)
    base = pd.Timestamp(start)
    seconds = rng.integers(0, days * 86400, n_events)
    times = base + pd.to_timedelta(seconds, unit="s")
    user_idx = rng.zipf(1.6, n_events) % n_users
    event_type = rng.choice(["view", "add_to_cart", "purchase", "search"], n_events, p=[0.7, 0.15, 0.1, 0.05])
    list_price = items["list_price"].to_numpy()[item_idx]
    price = np.where(rng.random(n_events) < 0.2, np.round(list_price * 0.8, 2), list_price)
    price = np.where(rng.random(n_events) < 0.03, np.nan, price)
    quantity = rng.integers(1, 4, n_events).astype("float")
    quantity[rng.random(n_events) < 0.05] = np.nan
    category = items["category_id"].to_numpy()[item_idx].astype(object)
    category[rng.random(n_events) < 0.05] = None  # filled from the items dimension
    events = pd.DataFrame({
        "event_id": [f"ev{i}" for i in range(n_events)],
        "user_key": [f"u{u:04d}" for u in user_idx],
        "session_id": [f"s{u}-{t // 7200}" for u, t in zip(user_idx, seconds)],
        "event_time": times,
        "event_type": event_type,
        "item_id": [f"item{i}" for i in item_idx],
        "category_id": category,
        "price": price,
        "quantity": pd.array(quantity, dtype="Int32"),
        "device": rng.choice(["mobile", "desktop", "tablet"], n_events),
        "channel": rng.choice(["web", "app"], n_events),
        "extra": [{} for _ in range(n_events)],
        "source_file": "random",
        "batch_id": "b1",
        "ingested_at": pd.Timestamp("2030-01-01"),
        "event_date": [t.date() for t in times],
    })
    return events, users, items


def write_inputs(spark: SparkSession, warehouse: str, events: pd.DataFrame | DataFrame,
                 users: pd.DataFrame, items: pd.DataFrame, mode: str = "overwrite") -> None:
    ev = events if isinstance(events, DataFrame) else spark.createDataFrame(events, EVENTS_SCHEMA)
    write_table(ev, warehouse, EVENTS, mode)
    write_table(spark.createDataFrame(one_version(users), USERS_SCHEMA), warehouse, USERS, "overwrite")
    write_table(spark.createDataFrame(one_version(items), ITEMS_SCHEMA), warehouse, ITEMS, "overwrite")


def one_version(dimension: pd.DataFrame) -> pd.DataFrame:
    """A dimension's rows with valid_from and valid_to, ALWAYS_VALID_FROM and null unless given."""
    if "valid_from" in dimension.columns:
        return dimension
    return dimension.assign(valid_from=ALWAYS_VALID_FROM, valid_to=None)
