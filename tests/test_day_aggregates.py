"""The numpy aggregation of one event date (features.day_aggregates) on hand-made Arrow tables:
the edge cases a GROUP BY defines (null keys, null sessions and devices, ties, no category); and
the snapshot workers' helpers for what a GROUP BY or a JOIN defines (features.snapshot_aggregates).
Their agreement with DuckDB on generated data is checked by tests/test_features_pipeline.py."""
from __future__ import annotations

import datetime as dt
import random

import numpy as np
import pyarrow as pa

from features.daily import (EVENTS_PER_TASK, ROLE_CART, ROLE_PURCHASE, ROLE_VIEW, USER_DAILY_COLUMNS,
                            daily_tasks)
from features.day_aggregates import user_aggregates_of_day
from features.snapshot_aggregates import (FIRST_TIMES, LAST_TIMES, SnapshotAccumulator, are_distinct, scatter_into,
                                          user_daily_columns, with_user_attributes)

DAY = dt.date(2026, 3, 7)  # a Saturday
UTC = dt.timezone.utc


def at(hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 3, 7, hour, minute, tzinfo=UTC)


def day_table(rows: list[dict]) -> pa.Table:
    """Events in the layout of features.day_aggregates.compact_events."""
    def column(name, default=None):
        return [r.get(name, default) for r in rows]
    return pa.table({
        "user_key": pa.array(column("user_key"), pa.string()),
        "event_date": pa.array([DAY] * len(rows), pa.date32()),
        "session_id": pa.array(column("session_id"), pa.string()),
        "event_time": pa.array(column("time"), pa.timestamp("us", tz="UTC")),
        "category_id": pa.array(column("category_id"), pa.string()),
        "device": pa.array(column("device"), pa.string()),
        "quantity": pa.array(column("quantity", 1), pa.int32()),
        "role": pa.array(column("role", 0), pa.int8()),
        "promo": pa.array(column("promo", False), pa.bool_()),
        "price_micros": pa.array(column("price_micros"), pa.int64()),
        "value_micros": pa.array([r.get("price_micros") and r["price_micros"] * r.get("quantity", 1)
                                  for r in rows], pa.int64()),
        "hour": pa.array([r["time"].hour for r in rows], pa.int8()),
        "weekend": pa.array([True] * len(rows), pa.bool_()),
    })


def by_user(rows: list[dict]) -> dict:
    return {r["user_key"]: r for r in user_aggregates_of_day(day_table(rows)).to_pylist()}


def test_columns_are_the_user_daily_schema_in_order():
    table = user_aggregates_of_day(day_table([dict(user_key="u", time=at(1), role=ROLE_VIEW)]))
    assert table.column_names == [name for name, _ in USER_DAILY_COLUMNS]
    assert table.schema.field("events").type == pa.int32()
    assert table.schema.field("spend").type == pa.float64()
    assert table.schema.field("first_event_time").type == pa.timestamp("us", tz="UTC")


def test_sums_counts_and_parts_of_the_day():
    rows = by_user([
        dict(user_key="a", time=at(7), role=ROLE_VIEW, price_micros=2_500_000, session_id="s"),
        dict(user_key="a", time=at(8), role=ROLE_CART, price_micros=2_500_000, quantity=3, session_id="s"),
        dict(user_key="a", time=at(20), role=ROLE_PURCHASE, price_micros=2_000_000, quantity=3,
             promo=True, session_id="s"),
        dict(user_key="a", time=at(21), role=ROLE_PURCHASE, price_micros=None, session_id="s"),
        dict(user_key="a", time=at(22), role=0, session_id="s"),
    ])
    a = rows["a"]
    assert (a["events"], a["views"], a["carts"], a["purchases"]) == (5, 1, 1, 2)
    assert (a["viewed_value"], a["carted_value"], a["spend"]) == (2.5, 7.5, 6.0)
    assert (a["viewed_price_sum"], a["bought_price_sum"]) == (2.5, 2.0)
    assert (a["views_priced"], a["purchases_priced"], a["purchased_quantity"]) == (1, 1, 4)
    assert a["promo_purchases"] == 1 and a["weekend_events"] == 5
    assert (a["events_night"], a["events_morning"], a["events_afternoon"], a["events_evening"]) == (0, 2, 0, 3)
    assert (a["sessions"], a["session_seconds"], a["active_days"]) == (1, 15 * 3600.0, 1)
    assert (a["first_event_time"], a["last_event_time"]) == (at(7), at(22))
    assert (a["last_view_time"], a["last_cart_time"], a["last_purchase_time"]) == (at(7), at(8), at(21))


def test_null_keys_group_as_a_group_by_does():
    rows = by_user([
        dict(user_key=None, time=at(1), role=ROLE_VIEW, session_id="s"),
        dict(user_key="b", time=at(1), role=ROLE_VIEW, session_id=None),
        dict(user_key="b", time=at(3), role=ROLE_VIEW, session_id=None),
        dict(user_key="b", time=at(5), role=ROLE_VIEW, session_id="t"),
    ])
    assert rows[None]["events"] == 1
    # the null session is one session of 2 hours; "t" one of none
    assert (rows["b"]["sessions"], rows["b"]["session_seconds"]) == (2, 7200.0)
    assert rows["b"]["last_cart_time"] is None and rows["b"]["last_purchase_time"] is None


def test_last_device_ties_go_to_the_larger_name_and_a_later_null_wins():
    rows = by_user([
        dict(user_key="a", time=at(9), device="app"),
        dict(user_key="a", time=at(9), device="web"),
        dict(user_key="a", time=at(9), device=None),
        dict(user_key="b", time=at(9), device="web"),
        dict(user_key="b", time=at(10), device=None),
        dict(user_key="c", time=at(9)),
    ])
    assert rows["a"]["last_device"] == "web"
    assert rows["b"]["last_device"] is None
    assert rows["c"]["last_device"] is None


def test_categories_are_sorted_and_events_without_one_are_left_out():
    rows = by_user([
        dict(user_key="a", time=at(1), role=ROLE_VIEW, category_id="c9"),
        dict(user_key="a", time=at(2), role=ROLE_PURCHASE, category_id="c10", price_micros=1_000_000,
             quantity=2),
        dict(user_key="a", time=at(3), role=ROLE_VIEW, category_id="c9"),
        dict(user_key="a", time=at(4), role=ROLE_VIEW, category_id=None),
        dict(user_key="b", time=at(1), role=ROLE_VIEW, category_id=None),
    ])
    assert rows["a"]["categories"] == [
        {"category_id": "c10", "views": 0, "purchases": 1, "spend": 2.0},
        {"category_id": "c9", "views": 2, "purchases": 0, "spend": 0.0},
    ]
    assert rows["b"]["categories"] == []


def test_a_day_whose_events_all_lack_category_and_device():
    rows = by_user([dict(user_key="a", time=at(1), role=ROLE_VIEW),
                    dict(user_key="b", time=at(2), role=ROLE_CART)])
    assert rows["a"]["categories"] == [] and rows["b"]["categories"] == []
    assert rows["a"]["last_device"] is None and rows["b"]["carts"] == 1


def test_rows_do_not_depend_on_the_order_of_the_events():
    # Users and sessions interleaved and times out of order: files need not group them.
    rows = [dict(user_key=f"u{i % 3}", session_id=f"s{i % 2}", time=at(i % 5, i),
                 role=ROLE_VIEW if i % 2 else ROLE_CART, device=("app", "web")[i % 4 // 2],
                 category_id=f"c{i % 4}", price_micros=1_000_000 + i) for i in range(24)]
    forward = by_user(rows)
    assert forward == by_user(rows[::-1]) == by_user(random.Random(7).sample(rows, len(rows)))
    for user in ("u0", "u1", "u2"):
        mine = [r for r in rows if r["user_key"] == user]
        sessions = {s: [r["time"] for r in mine if r["session_id"] == s] for s in ("s0", "s1")}
        got = forward[user]
        assert (got["first_event_time"], got["last_event_time"]) == (min(r["time"] for r in mine),
                                                                     max(r["time"] for r in mine))
        assert got["sessions"] == 2
        assert got["session_seconds"] == sum((max(t) - min(t)).total_seconds() for t in sessions.values())
        assert got["last_device"] == max((r["time"], r["device"]) for r in mine)[1]


def test_scatter_into_folds_values_as_ufunc_at_does():
    for rows in (np.array([3, 0, 2]), np.array([1, 3, 1, 1])):  # distinct, then repeated
        values = np.arange(2 * len(rows)).reshape(len(rows), 2) - 3
        for op in (np.add, np.maximum, np.minimum):
            expected, got = np.ones((4, 2), np.int64), np.ones((4, 2), np.int64)
            op.at(expected, rows, values)
            scatter_into(rows, are_distinct(rows, 4))(op, got, values)
            assert (got == expected).all(), (rows, op)


def test_last_device_is_the_latest_and_the_larger_name_at_equal_times():
    """The snapshot workers code devices as they come, not known up front. A tie (the same last
    time in two rows of a user: user_daily holds one row per user and date, so only a broken
    table has it) goes to the larger name; a null device ranks lowest, as in Spark's max."""
    keys = pa.array(["a", "b", "c"])
    snapshot = DAY + dt.timedelta(days=3)

    def last_devices(days: list[list[tuple]]) -> list:
        accumulator = SnapshotAccumulator(snapshot, [7], 0, keys)  # profile window 0: no categories
        schema = user_daily_columns(False)
        for i, rows in enumerate(days):
            times = pa.array([at(hour) for _, hour, _ in rows], pa.timestamp("us", tz="UTC"))
            day = pa.table({f.name: pa.array([0] * len(rows), f.type) if f.name not in LAST_TIMES + FIRST_TIMES
                            else times for f in schema if f.name != "last_device"})
            day = day.append_column("last_device", pa.array([d for _, _, d in rows], pa.string()))
            accumulator.add_day(DAY + dt.timedelta(days=i), np.array([u for u, _, _ in rows]), day)
        return accumulator.result(top_k=1)["last_device"].to_pylist()

    # a: a later time wins; b: equal times (repeated rows) go to the larger name; c: null lowest
    assert last_devices([[(0, 9, "web"), (1, 9, "app"), (2, 9, None)],
                         [(0, 10, "app"), (1, 9, "web"), (1, 9, "tablet"), (2, 9, "app")]]) == [
        "app", "web", "app"]
    # the same in another order of arrival; a's only device is null
    assert last_devices([[(1, 9, "tablet"), (1, 9, "web"), (2, 9, "app")],
                         [(1, 9, "app"), (2, 9, None), (0, 3, None)]]) == [None, "web", "app"]


def test_user_attributes_join_as_a_sql_left_join():
    sums = pa.table({"user_key": ["a", "b", None, "c"], "n": [1, 2, 3, 4]})
    users = pa.table({"user_key": ["b", "c", "c", None, "z"],
                      "signup_date": pa.array([DAY - dt.timedelta(days=i) for i in range(5)], pa.date32()),
                      "region": ["r1", "r2", "r3", "r4", "r5"], "age_band": ["18-24"] * 5})
    rows = sorted(with_user_attributes(sums, users).to_pylist(), key=lambda r: (r["n"], r["user_region"]))
    assert [(r["user_key"], r["n"], r["user_region"], r["_in_users"]) for r in rows] == [
        ("a", 1, None, None),  # no users record
        ("b", 2, "r1", True),
        (None, 3, None, None),  # a null key matches no record, not even a null one
        ("c", 4, "r2", True), ("c", 4, "r3", True),  # two records, two rows
    ]
    assert rows[1]["signup_date"] == DAY and rows[1]["user_age_band"] == "18-24"


def test_daily_tasks_are_balanced_and_bounded_by_events():
    # 400 dates of 100k-290k events (78M): about 2M events a task, every date in one task.
    events = {DAY - dt.timedelta(days=i): 100_000 + 1_000 * (i % 191) for i in range(400)}
    tasks = daily_tasks(events, cores=2)
    assert len(tasks) == -(-sum(events.values()) // EVENTS_PER_TASK)
    assert sorted(d for task in tasks for d in task) == sorted(events)
    sizes = [sum(events[d] for d in task) for task in tasks]
    assert max(sizes) - min(sizes) <= max(events.values())
    assert max(sizes) <= EVENTS_PER_TASK + max(events.values())
    # Few events: still four tasks per core, so both cores stay busy to the end.
    assert len(daily_tasks({d: 1_000 for d in list(events)[:30]}, cores=2)) == 8
    # One date larger than a task is a task of its own.
    assert daily_tasks({DAY: 5 * EVENTS_PER_TASK}, cores=2) == [[DAY]]
