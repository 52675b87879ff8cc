"""The features stage on real Spark and Delta: hand-computed values for every family, labels,
the label-window boundary, catalog and table documentation."""
from __future__ import annotations

import datetime as dt
import math

import pandas as pd
import pytest

from demandcast.tables import current_version, read_table, table_path, write_table
from features.catalog import DOC_PATH, feature_catalog, label_section, render_markdown
from features.feature_spec import FeatureSpec
from demandcast.errors import ConfigError, DataQualityError
from features.feature_tables import (event_date_range, label_window_complete, update_user_daily,
                                     write_snapshots)
from features.snapshots import check_snapshots_in_events
from features_data import EVENTS, EVENTS_SCHEMA, events_frame, write_inputs

D = dt.date(2026, 3, 10)  # a Tuesday


def ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text)


HAND_EVENTS = [
    # user A: a Monday morning session (view, cart, promotional purchase) the day before D ...
    dict(user_key="A", event_time=ts("2026-03-09 10:00"), event_type="view", item_id="i1",
         category_id="c1", price=10.0, session_id="s1", device="mobile"),
    dict(user_key="A", event_time=ts("2026-03-09 10:30"), event_type="add_to_cart", item_id="i1",
         category_id="c1", price=10.0, quantity=2, session_id="s1", device="mobile"),
    dict(user_key="A", event_time=ts("2026-03-09 11:00"), event_type="purchase", item_id="i1",
         category_id="c1", price=8.0, quantity=2, session_id="s1", device="desktop"),
    # ... two Sunday views of c2 (the category comes from the items dimension for one of them),
    dict(user_key="A", event_time=ts("2026-03-01 20:00"), event_type="view", item_id="i2",
         category_id=None, price=50.0, session_id="s2"),
    dict(user_key="A", event_time=ts("2026-02-01 03:00"), event_type="view", item_id="i2",
         category_id="c2", price=50.0, session_id="s3"),
    # ... and purchases at D 00:00 (label, not feature), at D+29 23:00 (label), at D+30 (neither).
    dict(user_key="A", event_time=ts("2026-03-10 00:00"), event_type="purchase", item_id="i3",
         category_id="c2", price=100.0, session_id="s4"),
    dict(user_key="A", event_time=ts("2026-04-08 23:00"), event_type="purchase", item_id="i1",
         category_id="c1", price=5.0, session_id="s5"),
    dict(user_key="A", event_time=ts("2026-04-09 00:00"), event_type="purchase", item_id="i1",
         category_id="c1", price=7.0, session_id="s6"),
    # user B appears only after D: in neither table for D.
    dict(user_key="B", event_time=ts("2026-03-12 09:00"), event_type="purchase", item_id="i1"),
    # user C: one view exactly 365 days before D, one 366 days before.
    dict(user_key="C", event_time=ts("2025-03-10 00:00"), event_type="view", item_id="i2",
         category_id="c2", price=40.0, session_id="c1"),
    dict(user_key="C", event_time=ts("2025-03-09 12:00"), event_type="view", item_id="i2",
         category_id="c2", price=40.0, session_id="c0"),
]
HAND_USERS = pd.DataFrame({
    "user_key": ["A", "B", "C"],
    "signup_date": [dt.date(2026, 1, 1), dt.date(2026, 3, 1), None],
    "region": ["north", "south", None], "age_band": ["25-34", "18-24", None],
    "gender": ["f", "m", None]})
HAND_ITEMS = pd.DataFrame({"item_id": ["i1", "i2", "i3"], "category_id": ["c1", "c2", "c2"],
                           "brand": ["x", "y", "y"], "list_price": [10.0, 50.0, 120.0]})


@pytest.fixture(scope="module")
def hand(spark, tmp_path_factory):
    warehouse = str(tmp_path_factory.mktemp("hand") / "warehouse")
    write_inputs(spark, warehouse, events_frame(spark, HAND_EVENTS), HAND_USERS, HAND_ITEMS)
    spec = FeatureSpec()
    daily = update_user_daily(spark, warehouse, spec)
    summary = write_snapshots(spark, warehouse, [D], spec, daily.last_event_date)
    features = {r["user_key"]: r.asDict() for r in read_table(spark, warehouse, "user_features").collect()}
    labels = {r["user_key"]: r.asDict() for r in read_table(spark, warehouse, "labels").collect()}
    return {"warehouse": warehouse, "summary": summary, "features": features, "labels": labels}


def close(actual, expected):
    if expected is None:
        return actual is None
    return actual is not None and math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-9)


def check(row: dict, expected: dict) -> None:
    wrong = {k: (row[k], v) for k, v in expected.items()
             if not (close(row[k], v) if isinstance(v, float) or v is None else row[k] == v)}
    assert not wrong, f"feature: (actual, expected) {wrong}"


def test_population_is_users_with_events_before_the_snapshot(hand):
    assert set(hand["features"]) == {"A", "C"}
    assert set(hand["labels"]) == {"A", "C"}
    assert hand["summary"]["labels_skipped"] == []


def test_recency_and_tenure(hand):
    check(hand["features"]["A"], {
        "days_since_last_view": 14 / 24, "days_since_last_purchase": 13 / 24,
        "days_since_last_cart": 13.5 / 24, "has_viewed": 1, "has_carted": 1, "has_purchased": 1,
        "days_since_first_event": 36 + 21 / 24, "days_since_signup": 68,
    })
    check(hand["features"]["C"], {
        "days_since_last_view": 365.0, "days_since_first_event": 365.5,
        "days_since_last_purchase": None, "has_purchased": 0, "days_since_signup": None,
    })


def test_frequency_and_monetary_windows(hand):
    check(hand["features"]["A"], {
        "views_last_1d": 1, "views_last_7d": 1, "views_last_30d": 2, "views_last_90d": 3,
        "purchases_last_1d": 1, "spend_last_1d": 16.0, "spend_last_365d": 16.0,
        "carted_value_last_1d": 20.0, "viewed_value_last_30d": 60.0, "viewed_value_last_90d": 110.0,
    })
    # the 365-day window is D-365 .. D-1: the view at D-365 is in, the one at D-366 is not
    check(hand["features"]["C"], {"views_last_365d": 1, "views_last_90d": 0, "spend_last_365d": 0.0})


def test_funnel_ratios_shrink_towards_the_population_rate(hand):
    # population over 365 days: 4 views (A 3, C 1), 1 cart -> rate 0.25; pseudo-count 5
    check(hand["features"]["C"], {"cart_per_view_last_365d": (0 + 5 * 0.25) / (1 + 5)})
    check(hand["features"]["A"], {"cart_per_view_last_365d": (1 + 5 * 0.25) / (3 + 5),
                                  "purchase_per_cart_last_30d": (1 + 5 * 1.0) / (1 + 5)})


def test_sessions_and_activity_profile(hand):
    check(hand["features"]["A"], {
        "sessions_last_90d": 3, "events_per_session_last_90d": 5 / 3,
        "avg_session_minutes_last_90d": 60 / 3, "active_days_last_30d": 2, "active_days_last_90d": 3,
        "share_events_weekend_last_90d": 2 / 5, "share_events_night_last_90d": 1 / 5,
        "share_events_morning_last_90d": 3 / 5, "share_events_afternoon_last_90d": 0.0,
        "share_events_evening_last_90d": 1 / 5,
    })
    check(hand["features"]["C"], {"sessions_last_90d": 0, "events_per_session_last_90d": None})


def test_category_affinity(hand):
    p = [2 / 3, 1 / 3]
    check(hand["features"]["A"], {
        "top_category_1": "c2", "top_category_2": "c1", "top_category_3": None,
        "share_views_top_categories_last_90d": 1.0, "share_purchases_top_categories_last_90d": 1.0,
        "distinct_categories_viewed_last_90d": 2, "distinct_categories_bought_last_90d": 1,
        "category_view_entropy_last_90d": -sum(x * math.log(x) for x in p),
    })
    check(hand["features"]["C"], {"top_category_1": None, "distinct_categories_viewed_last_90d": 0,
                                  "category_view_entropy_last_90d": None})


def test_price_level_and_promotions(hand):
    check(hand["features"]["A"], {
        "avg_price_viewed_last_365d": 110 / 3, "avg_price_bought_last_365d": 8.0,
        "price_bought_vs_viewed_last_365d": 8.0 / (110 / 3),
        "share_bought_on_promotion_last_365d": 1.0, "avg_quantity_per_purchase_last_365d": 2.0,
    })


def test_trend(hand):
    check(hand["features"]["A"], {"views_trend_7d_vs_90d": (1 / 7) / (3 / 90),
                                  "events_trend_7d_vs_30d": (3 / 7) / (4 / 30),
                                  "purchases_trend_30d_vs_365d": (1 / 30) / (1 / 365)})
    check(hand["features"]["C"], {"views_trend_30d_vs_365d": 0.0, "purchases_trend_30d_vs_365d": None})


def test_user_attributes_and_category_context(hand):
    check(hand["features"]["A"], {
        "region": "north", "age_band": "25-34", "device": "desktop",
        "top_category_1_popularity": 2 / 3, "top_category_1_conversion": 0.0,
        "top_category_2_popularity": 1 / 3, "top_category_2_conversion": 1.0,
        "top_category_3_popularity": None,
    })
    check(hand["features"]["C"], {"region": None, "device": "mobile"})


def test_labels_cover_the_window_from_d_to_d_plus_n(hand):
    a, c = hand["labels"]["A"], hand["labels"]["C"]
    assert (a["label_purchased"], a["label_n_purchases"], a["label_spend"]) == (1, 2, 105.0)
    assert a["label_category_spend"] == {"c1": 5.0, "c2": 100.0}
    assert (c["label_purchased"], c["label_n_purchases"], c["label_spend"], c["label_category_spend"]) \
        == (0, 0, 0.0, {})


def test_user_daily_recomputes_only_dates_whose_events_changed(spark, tmp_path):
    """The first run compares counts per date (no earlier run to start from); later runs read
    the events' change data feed from the version user_daily last recorded. A late event
    recomputes its date only; a rerun changes nothing; a feed that cannot be read (not enabled
    for the versions in between) falls back to the count comparison."""
    warehouse = str(tmp_path / "warehouse")
    day = lambda d, n, tag="": [dict(user_key="A", event_time=ts(f"2026-03-0{d} 1{i}:00"),  # noqa: E731
                                     event_type="view", event_id=f"{d}-{i}{tag}") for i in range(n)]
    write_table(events_frame(spark, day(1, 2) + day(2, 1)), warehouse, EVENTS, "append")
    spec = FeatureSpec()
    first = update_user_daily(spark, warehouse, spec)
    assert first.processed_dates == [dt.date(2026, 3, 1), dt.date(2026, 3, 2)]
    assert first.how.startswith("event counts per date")
    assert update_user_daily(spark, warehouse, spec).processed_dates == []

    write_table(events_frame(spark, day(2, 2, "late") + day(3, 1)), warehouse, EVENTS, "append")
    late = update_user_daily(spark, warehouse, spec)
    assert late.processed_dates == [dt.date(2026, 3, 2), dt.date(2026, 3, 3)]
    assert late.how.startswith("change data feed of events versions")
    counts = {r[0]: r[1] for r in read_table(spark, warehouse, "user_daily")
              .groupBy("event_date").sum("events").collect()}
    assert counts == {dt.date(2026, 3, 1): 2, dt.date(2026, 3, 2): 3, dt.date(2026, 3, 3): 1}
    assert event_date_range(spark, warehouse) == (dt.date(2026, 3, 1), dt.date(2026, 3, 3))

    spark.sql(f"ALTER TABLE delta.`{table_path(warehouse, 'events')}` "
              "SET TBLPROPERTIES (delta.enableChangeDataFeed = false)")
    write_table(events_frame(spark, day(4, 1)), warehouse, EVENTS, "append")
    fallback = update_user_daily(spark, warehouse, spec)
    assert fallback.processed_dates == [dt.date(2026, 3, 4)]
    assert fallback.how.startswith("event counts per date")
    assert fallback.version == current_version(spark, table_path(warehouse, "user_daily"))


def test_an_events_table_without_rows_has_no_date_range(spark, tmp_path):
    warehouse = str(tmp_path / "warehouse")
    write_table(spark.createDataFrame([], EVENTS_SCHEMA), warehouse, EVENTS, "append")
    assert event_date_range(spark, warehouse) == (None, None)
    with pytest.raises(DataQualityError, match="events table has no rows"):
        check_snapshots_in_events([D], None, None, "snapshot_dates")


def test_snapshots_must_lie_within_the_events():
    first, last = dt.date(2026, 1, 1), dt.date(2026, 3, 31)
    # The day after the last event is the everyday case (score today on data up to yesterday).
    check_snapshots_in_events([dt.date(2026, 1, 2), dt.date(2026, 4, 1)], first, last, "snapshot_dates")
    with pytest.raises(ConfigError, match=r"features.snapshot_date: snapshots \['2030-01-01'\] "
                                          r"after 2026-04-01.*2026-01-02..2026-04-01"):
        check_snapshots_in_events([dt.date(2030, 1, 1)], first, last, "features.snapshot_date")
    with pytest.raises(ConfigError, match=r"\['2025-06-01', '2026-01-01'\] on or before the first"):
        check_snapshots_in_events([dt.date(2025, 6, 1), first, dt.date(2026, 2, 1)], first, last,
                                  "snapshot_dates")
    # A landing outage: the operator accepts a longer gap, and only that gap.
    check_snapshots_in_events([dt.date(2026, 4, 3)], first, last, "snapshot_dates", 3)
    with pytest.raises(ConfigError, match=r"after 2026-04-03, 3 day\(s\) after the last event date "
                                          r"2026-03-31.*features.max_days_after_last_event"):
        check_snapshots_in_events([dt.date(2026, 4, 4)], first, last, "snapshot_dates", 3)


def test_label_window_must_be_observed():
    assert label_window_complete(D, 30, dt.date(2026, 4, 8))
    assert not label_window_complete(D, 30, dt.date(2026, 4, 7))
    assert not label_window_complete(D, 30, None)


def test_table_schema_follows_the_catalog(spark, hand):
    table = read_table(spark, hand["warehouse"], "user_features")
    catalog = feature_catalog(FeatureSpec())
    assert table.columns == ["user_key", "snapshot_date", *[f.name for f in catalog]]
    types = dict(table.dtypes)
    assert {f.name: types[f.name] for f in catalog} == {f.name: f.dtype for f in catalog}
    for field in table.schema.fields:
        assert field.metadata.get("comment"), f"column {field.name} has no comment"
    props = spark.sql(f"SHOW TBLPROPERTIES delta.`{hand['warehouse']}/user_features`").collect()
    assert {r.key: r.value for r in props}.get("delta.enableDeletionVectors") == "false"


def test_feature_doc_is_generated_from_the_code():
    assert DOC_PATH.read_text() == render_markdown(feature_catalog()) + label_section(), \
        "docs/FEATURES.md is stale: run `python -m features.catalog`"
