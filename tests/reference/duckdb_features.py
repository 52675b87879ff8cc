"""An independent DuckDB implementation of the user features and labels, straight from the
events Parquet files (no user_daily), used to check the Spark code with a second engine
(tests/test_features_duckdb.py) and as the reference of bench/features.py.

It follows the definitions in docs/FEATURES.md, not the Spark code: windows are
`event_time >= D - w days` (the Spark side uses event_date partitions), sessions are grouped per
(session, UTC day), and so on. Same inputs -> same numbers, within float tolerance.

users and items hold versions (docs/CONTRACTS.md): a version is valid on the days
valid_from <= day < valid_to (null valid_to: no end). An event sees the item version of its UTC
date; a snapshot D sees the user version of D - 1, the last day known before D.
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

import duckdb
import pandas as pd

from features.feature_spec import FeatureSpec
from features.daily import DAY_PARTS


def _files(paths: Sequence[str]) -> str:
    return "[" + ", ".join("'" + p.replace("file:", "", 1).replace("'", "''") + "'" for p in paths) + "]"


def connect(threads: int | None = None) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    return con


def register_inputs(con: duckdb.DuckDBPyConnection, events: Sequence[str], users: Sequence[str],
                    items: Sequence[str]) -> None:
    """Views over the Parquet data files of one version of each Delta table."""
    con.execute(f"CREATE OR REPLACE VIEW events AS SELECT * FROM read_parquet({_files(events)}, "
                "hive_partitioning = true, union_by_name = true)")
    con.execute(f"CREATE OR REPLACE VIEW users AS SELECT * FROM read_parquet({_files(users)})")
    con.execute(f"CREATE OR REPLACE VIEW items AS SELECT * FROM read_parquet({_files(items)})")


def _q(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _valid_on(alias: str, day: str) -> str:
    """The version of dimension `alias` valid on the date expression `day`."""
    return f"{alias}.valid_from <= {day} AND {day} < coalesce({alias}.valid_to, DATE '9999-12-31')"


# The items version of each event: its UTC date (the session time zone is UTC).
ITEM_OF_EVENT = f"e.item_id = i.item_id AND {_valid_on('i', 'CAST(e.event_time AS DATE)')}"


def features_sql(snapshot: dt.date, spec: FeatureSpec) -> str:
    d = f"TIMESTAMP '{snapshot.isoformat()} 00:00:00'"
    known = f"DATE '{(snapshot - dt.timedelta(days=1)).isoformat()}'"  # the users version of D - 1
    view, cart, buy = _q(spec.roles.view), _q(spec.roles.cart), _q(spec.roles.purchase)
    P, W, k, m = spec.profile_window_days, spec.price_window_days, spec.top_k_categories, spec.funnel_prior_strength
    windows = sorted({*spec.windows_days, *spec.funnel_windows_days, 7, 30, 90, 365, P, W})

    def since(w: int) -> str:
        return f"event_time >= {d} - INTERVAL {w} DAY"

    per_window = []
    for w in windows:
        per_window += [
            f"count(*) FILTER (WHERE event_type = {view} AND {since(w)}) AS views_{w}",
            f"count(*) FILTER (WHERE event_type = {cart} AND {since(w)}) AS carts_{w}",
            f"count(*) FILTER (WHERE event_type = {buy} AND {since(w)}) AS purchases_{w}",
            f"count(*) FILTER (WHERE {since(w)}) AS events_{w}",
            f"coalesce(sum(value) FILTER (WHERE event_type = {view} AND {since(w)}), 0) AS viewed_value_{w}",
            f"coalesce(sum(value) FILTER (WHERE event_type = {cart} AND {since(w)}), 0) AS carted_value_{w}",
            f"coalesce(sum(value) FILTER (WHERE event_type = {buy} AND {since(w)}), 0) AS spend_{w}",
            f"count(DISTINCT day) FILTER (WHERE {since(w)}) AS active_days_{w}",
        ]
    parts = ",\n".join(
        f"count(*) FILTER (WHERE {since(P)} AND hour(event_time) >= {lo} AND hour(event_time) < {hi}) AS part_{name}"
        for name, (lo, hi) in DAY_PARTS.items())

    def smooth(num: str, den: str, stem: str, w: int) -> str:
        if m > 0:
            return (f"CASE WHEN {den}_{w} + {m} > 0 THEN ({num}_{w} + {m} * pop.{stem}_{w}) "
                    f"/ ({den}_{w} + {m}) END")
        return f"CASE WHEN {den}_{w} > 0 THEN {num}_{w}::DOUBLE / {den}_{w} END"

    funnel_cols, pop_cols = [], []
    for w in spec.funnel_windows_days:
        for stem, num, den in (("cart_per_view", "carts", "views"),
                               ("purchase_per_cart", "purchases", "carts"),
                               ("purchase_per_view", "purchases", "views")):
            funnel_cols.append(f"{smooth(num, den, stem, w)} AS {stem}_last_{w}d")
            pop_cols.append(f"CASE WHEN sum({den}_{w}) > 0 THEN sum({num}_{w})::DOUBLE / sum({den}_{w}) END AS {stem}_{w}")

    def ratio(a: str, b: str) -> str:
        return f"CASE WHEN ({b}) > 0 THEN ({a})::DOUBLE / ({b}) END"

    freq_cols = [f"{stem}_{w} AS {stem}_last_{w}d" for stem in
                 ("views", "carts", "purchases", "viewed_value", "carted_value", "spend")
                 for w in spec.windows_days]
    top_cols = [f"c.top_{i} AS top_category_{i}" for i in range(1, k + 1)]
    ctx_cols = []
    ctx_joins = []
    for i in range(1, k + 1):
        ctx_cols += [f"p{i}.popularity AS top_category_{i}_popularity",
                     f"p{i}.conversion AS top_category_{i}_conversion"]
        ctx_joins.append(f"LEFT JOIN popularity p{i} ON p{i}.category_id = c.top_{i}")
    days = lambda ts: f"(epoch({d}) - epoch({ts})) / 86400.0"  # noqa: E731
    trends = [("events", 7, 30), ("views", 7, 90), ("views", 30, 365), ("purchases", 30, 365),
              ("spend", 30, 365)]

    per_window_sql = ",\n        ".join(per_window)
    return f"""
WITH ev AS (
    SELECT e.user_key, e.session_id, e.event_time, e.event_type, e.price, e.device,
           coalesce(e.category_id, i.category_id) AS category_id, i.list_price,
           e.price * coalesce(e.quantity, 1) AS value, coalesce(e.quantity, 1) AS qty,
           CAST(e.event_time AS DATE) AS day
    FROM events e LEFT JOIN items i ON {ITEM_OF_EVENT}
    WHERE e.event_time < {d}
),
per_user AS (
    SELECT user_key,
        {per_window_sql},
        {parts},
        count(*) FILTER (WHERE {since(P)} AND dayofweek(day) IN (0, 6)) AS weekend_{P},
        sum(price) FILTER (WHERE event_type = {view} AND {since(W)}) AS viewed_price_sum,
        count(price) FILTER (WHERE event_type = {view} AND {since(W)}) AS views_priced,
        sum(price) FILTER (WHERE event_type = {buy} AND {since(W)}) AS bought_price_sum,
        count(price) FILTER (WHERE event_type = {buy} AND {since(W)}) AS purchases_priced,
        count(*) FILTER (WHERE event_type = {buy} AND {since(W)} AND price < list_price) AS promo_{W},
        coalesce(sum(qty) FILTER (WHERE event_type = {buy} AND {since(W)}), 0) AS quantity_{W},
        max(event_time) FILTER (WHERE event_type = {view}) AS last_view,
        max(event_time) FILTER (WHERE event_type = {cart}) AS last_cart,
        max(event_time) FILTER (WHERE event_type = {buy}) AS last_purchase,
        max(event_time) AS last_event, min(event_time) AS first_event,
        first(device ORDER BY event_time DESC, device DESC) AS device
    FROM ev GROUP BY user_key
),
sessions AS (
    SELECT user_key, count(*) AS sessions, sum(seconds) AS seconds FROM (
        SELECT user_key, session_id, day, epoch(max(event_time)) - epoch(min(event_time)) AS seconds
        FROM ev WHERE {since(P)} GROUP BY user_key, session_id, day)
    GROUP BY user_key
),
pop AS (SELECT {", ".join(pop_cols)} FROM per_user),
cat AS (
    SELECT user_key, category_id,
           count(*) FILTER (WHERE event_type = {view}) AS views,
           count(*) FILTER (WHERE event_type = {buy}) AS purchases
    FROM ev WHERE {since(P)} AND category_id IS NOT NULL
    GROUP BY user_key, category_id
),
ranked AS (
    SELECT *, row_number() OVER (PARTITION BY user_key
                                 ORDER BY views DESC, purchases DESC, category_id ASC) AS rnk
    FROM cat WHERE views > 0 OR purchases > 0
),
cat_user AS (
    SELECT user_key,
        {", ".join(f"max(category_id) FILTER (WHERE rnk = {i}) AS top_{i}" for i in range(1, k + 1))},
        sum(views) FILTER (WHERE rnk <= {k}) AS views_top,
        sum(purchases) FILTER (WHERE rnk <= {k}) AS purchases_top,
        sum(views) AS views, sum(purchases) AS purchases,
        count(*) FILTER (WHERE views > 0) AS distinct_viewed,
        count(*) FILTER (WHERE purchases > 0) AS distinct_bought
    FROM ranked GROUP BY user_key
),
cat_entropy AS (
    SELECT user_key, -sum(p * ln(p)) AS entropy FROM (
        SELECT user_key, views::DOUBLE / sum(views) OVER (PARTITION BY user_key) AS p
        FROM ranked WHERE views > 0)
    GROUP BY user_key
),
popularity AS (
    SELECT category_id, sum(views)::DOUBLE / (SELECT sum(views) FROM cat) AS popularity,
           CASE WHEN sum(views) > 0 THEN sum(purchases)::DOUBLE / sum(views) END AS conversion
    FROM cat GROUP BY category_id
)
SELECT u.user_key, DATE '{snapshot.isoformat()}' AS snapshot_date,
    {days("last_view")} AS days_since_last_view,
    CASE WHEN last_view IS NULL THEN 0 ELSE 1 END AS has_viewed,
    {days("last_cart")} AS days_since_last_cart,
    CASE WHEN last_cart IS NULL THEN 0 ELSE 1 END AS has_carted,
    {days("last_purchase")} AS days_since_last_purchase,
    CASE WHEN last_purchase IS NULL THEN 0 ELSE 1 END AS has_purchased,
    {days("last_event")} AS days_since_last_event,
    {days("first_event")} AS days_since_first_event,
    date_diff('day', us.signup_date, DATE '{snapshot.isoformat()}') AS days_since_signup,
    {", ".join(freq_cols)},
    {", ".join(funnel_cols)},
    coalesce(s.sessions, 0) AS sessions_last_{P}d,
    {ratio(f"events_{P}", "s.sessions")} AS events_per_session_last_{P}d,
    {ratio("s.seconds", "s.sessions")} / 60.0 AS avg_session_minutes_last_{P}d,
    {", ".join(f"active_days_{w} AS active_days_last_{w}d" for w in sorted({30, P}))},
    {ratio(f"weekend_{P}", f"events_{P}")} AS share_events_weekend_last_{P}d,
    {", ".join(f"{ratio('part_' + name, f'events_{P}')} AS share_events_{name}_last_{P}d" for name in DAY_PARTS)},
    {", ".join(top_cols)},
    {ratio("c.views_top", "c.views")} AS share_views_top_categories_last_{P}d,
    {ratio("c.purchases_top", "c.purchases")} AS share_purchases_top_categories_last_{P}d,
    coalesce(c.distinct_viewed, 0) AS distinct_categories_viewed_last_{P}d,
    coalesce(c.distinct_bought, 0) AS distinct_categories_bought_last_{P}d,
    CASE WHEN c.views > 0 THEN coalesce(ce.entropy, 0) END AS category_view_entropy_last_{P}d,
    {ratio("viewed_price_sum", "views_priced")} AS avg_price_viewed_last_{W}d,
    {ratio("bought_price_sum", "purchases_priced")} AS avg_price_bought_last_{W}d,
    {ratio(ratio("bought_price_sum", "purchases_priced"), ratio("viewed_price_sum", "views_priced"))}
        AS price_bought_vs_viewed_last_{W}d,
    {ratio(f"promo_{W}", f"purchases_{W}")} AS share_bought_on_promotion_last_{W}d,
    {ratio(f"quantity_{W}", f"purchases_{W}")} AS avg_quantity_per_purchase_last_{W}d,
    {", ".join(f"{ratio(f'{c}_{s} / {s}.0', f'{c}_{lg} / {lg}.0')} AS {c}_trend_{s}d_vs_{lg}d" for c, s, lg in trends)},
    us.region AS region, us.age_band AS age_band, u.device AS device,
    {", ".join(ctx_cols)}
FROM per_user u
CROSS JOIN pop
LEFT JOIN users us ON us.user_key = u.user_key AND {_valid_on('us', known)}
LEFT JOIN sessions s ON s.user_key = u.user_key
LEFT JOIN cat_user c ON c.user_key = u.user_key
LEFT JOIN cat_entropy ce ON ce.user_key = u.user_key
{" ".join(ctx_joins)}
ORDER BY u.user_key
"""


def labels_sql(snapshot: dt.date, window_days: int, spec: FeatureSpec) -> str:
    d = f"TIMESTAMP '{snapshot.isoformat()} 00:00:00'"
    buy = _q(spec.roles.purchase)
    return f"""
WITH population AS (SELECT DISTINCT user_key FROM events WHERE event_time < {d}),
bought AS (
    SELECT e.user_key, coalesce(e.category_id, i.category_id) AS category_id,
           e.price * coalesce(e.quantity, 1) AS value
    FROM events e LEFT JOIN items i ON {ITEM_OF_EVENT}
    WHERE e.event_type = {buy} AND e.event_time >= {d}
      AND e.event_time < {d} + INTERVAL {int(window_days)} DAY
)
SELECT p.user_key, DATE '{snapshot.isoformat()}' AS snapshot_date,
       CASE WHEN count(b.user_key) > 0 THEN 1 ELSE 0 END AS label_purchased,
       coalesce(sum(b.value), 0) AS label_spend,
       count(b.user_key) AS label_n_purchases
FROM population p LEFT JOIN bought b ON b.user_key = p.user_key
GROUP BY p.user_key ORDER BY p.user_key
"""


def label_category_spend_sql(snapshot: dt.date, window_days: int, spec: FeatureSpec) -> str:
    """Long form of label_category_spend: one row per (user, category bought in the window)."""
    d = f"TIMESTAMP '{snapshot.isoformat()} 00:00:00'"
    return f"""
SELECT e.user_key, coalesce(e.category_id, i.category_id) AS category_id,
       coalesce(sum(e.price * coalesce(e.quantity, 1)), 0) AS spend
FROM events e LEFT JOIN items i ON {ITEM_OF_EVENT}
WHERE e.event_type = {_q(spec.roles.purchase)} AND e.event_time >= {d}
  AND e.event_time < {d} + INTERVAL {int(window_days)} DAY
  AND coalesce(e.category_id, i.category_id) IS NOT NULL
  AND e.user_key IN (SELECT user_key FROM events WHERE event_time < {d})
GROUP BY ALL ORDER BY ALL
"""


def purchase_history_sql(snapshot: dt.date, spec: FeatureSpec) -> str:
    """x, t_x, T and mean spend per purchase day of every customer, from the purchase events
    before the snapshot grouped by their UTC date."""
    d = f"TIMESTAMP '{snapshot.isoformat()} 00:00:00'"
    return f"""
WITH days AS (
    SELECT user_key, CAST(event_time AS DATE) AS day,
           coalesce(sum(price * coalesce(quantity, 1)), 0) AS spend
    FROM events WHERE event_type = {_q(spec.roles.purchase)} AND event_time < {d}
    GROUP BY ALL
)
SELECT user_key, count(*) - 1.0 AS x, date_diff('day', min(day), max(day))::DOUBLE AS t_x,
       date_diff('day', min(day), DATE '{snapshot.isoformat()}')::DOUBLE AS T,
       sum(spend) / count(*) AS mean_spend
FROM days GROUP BY user_key
"""


def btyd_features(con: duckdb.DuckDBPyConnection, snapshot: dt.date, spec: FeatureSpec) -> pd.DataFrame:
    """The BTYD family: fitted on every customer (the test worlds are below the sample bound)."""
    from features import btyd_models
    from features.families.btyd import OUTPUTS, definitions

    history = con.execute(purchase_history_sql(snapshot, spec)).fetchdf()
    ordered = history.sort_values(["x", "t_x", "T", "mean_spend", "user_key"], kind="mergesort")
    params, _ = btyd_models.fit_all(btyd_models.RFM.of(ordered.x, ordered.t_x, ordered["T"],
                                                       ordered.mean_spend))
    rfm = btyd_models.RFM.of(history.x, history.t_x, history["T"], history.mean_spend)
    predicted = btyd_models.predict_all(params, float(spec.label_window_days), rfm)
    out = pd.DataFrame({"user_key": history.user_key})
    for feature, name in zip(definitions(spec), OUTPUTS):
        out[feature.name] = predicted[name]
    return out


def features(con: duckdb.DuckDBPyConnection, snapshots: Sequence[dt.date], spec: FeatureSpec) -> pd.DataFrame:
    frames = []
    for s in snapshots:
        frame = con.execute(features_sql(s, spec)).fetchdf()
        frames.append(frame.merge(btyd_features(con, s, spec), on="user_key", how="left"))
    return pd.concat(frames, ignore_index=True)


def labels(con: duckdb.DuckDBPyConnection, snapshots: Sequence[dt.date], window_days: int,
           spec: FeatureSpec) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(labels without the map, long-form category spend with a snapshot_date column)."""
    main = pd.concat([con.execute(labels_sql(s, window_days, spec)).fetchdf() for s in snapshots],
                     ignore_index=True)
    parts = []
    for s in snapshots:
        part = con.execute(label_category_spend_sql(s, window_days, spec)).fetchdf()
        part.insert(1, "snapshot_date", s)
        parts.append(part)
    return main, pd.concat(parts, ignore_index=True)


def differences(actual: pd.DataFrame, expected: pd.DataFrame, keys: Sequence[str],
                rel_tol: float = 1e-9, abs_tol: float = 1e-9) -> list[str]:
    """Every (column, key) where two tables disagree: strings exactly, numbers within tolerance,
    null only against null. Empty list = equal."""
    import numpy as np

    problems = []
    if sorted(actual.columns) != sorted(expected.columns):
        return [f"columns differ: only actual {sorted(set(actual.columns) - set(expected.columns))}, "
                f"only expected {sorted(set(expected.columns) - set(actual.columns))}"]
    norm = lambda df: df.assign(**{k: df[k].astype(str) for k in keys}).sort_values(list(keys)).reset_index(drop=True)  # noqa: E731
    a, e = norm(actual), norm(expected)
    if len(a) != len(e) or not (a[list(keys)].values == e[list(keys)].values).all():
        return [f"rows differ: {len(a)} actual vs {len(e)} expected keys"]
    for column in a.columns:
        if column in keys:
            continue
        x, y = a[column], e[column]
        if x.dtype == object or y.dtype == object:
            ok = x.isna().values == y.isna().values
            ok &= (x.isna().values | (x.astype(str).values == y.astype(str).values))
        else:
            ok = np.isclose(x.astype(float), y.astype(float), rtol=rel_tol, atol=abs_tol, equal_nan=True)
        for i in np.flatnonzero(~ok)[:3]:
            problems.append(f"{column} at {tuple(a.loc[i, list(keys)])}: {x.iloc[i]!r} vs {y.iloc[i]!r}")
    return problems
