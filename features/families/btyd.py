"""Buy till you die: the field's reference models of repeat buying (BG/NBD, Pareto/NBD and
Gamma-Gamma, features.btyd_models) as features. For each snapshot D the models are fitted on a
bounded sample of the customers' purchase histories before D, then every customer with a
purchase before D is scored inside Spark with those parameters (a pandas UDF: the conditional
expectations need the hypergeometric function, which Spark SQL lacks). Users without a purchase
before D have no purchase history for these models to describe: their values are null.

Per customer and snapshot the models read x = purchase days - 1, t_x = days from the first to the
last purchase day, T = days from the first purchase day to D and the mean spend per purchase day,
all from user_daily's days with a purchase before D.
"""
from __future__ import annotations

import datetime as dt
from typing import Sequence

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from demandcast.logs import get_logger
from features import btyd_models
from features.daily import exact_sum
from features.feature_spec import Feature, FeatureSpec
from features.families.common import with_features
from features.window_sums import daily_rows_by_snapshot

FAMILY = "btyd"
KEYS = ["user_key", "snapshot_date"]
HISTORY = ("btyd__x", "btyd__t_x", "btyd__T", "btyd__mean_spend")
# Output fields of the scoring UDF, in btyd_models.predict_all's names.
OUTPUTS = ("bgnbd_expected", "bgnbd_p_alive", "pareto_expected", "pareto_p_alive", "expected_spend")

log = get_logger("features.btyd")

# Fitted parameters per snapshot: {snapshot: {model: {param: value}}}; a model missing from a
# snapshot's dict could not be fitted there and its features are null at that snapshot.
Parameters = dict[dt.date, dict[str, dict[str, float]]]


def definitions(spec: FeatureSpec) -> list[Feature]:
    n = spec.label_window_days
    source = "user_daily purchase days"

    def field(name: str):
        # The UDF returns NaN where a model is missing or its value overflows: null in the table.
        return lambda: F.when(~F.isnan(F.col("btyd__scores")[name]), F.col("btyd__scores")[name])

    return [
        Feature(f"bgnbd_expected_purchase_days_next_{n}d", f"BG/NBD expected number of days with "
                f"a purchase in the {n} days from the snapshot, given the user's purchase days "
                "before it (parameters fitted on purchases before the snapshot); null without a "
                "purchase.", "double", FAMILY, source, compute=field("bgnbd_expected")),
        Feature("bgnbd_p_alive", "BG/NBD probability that the user is still an active customer at "
                "the snapshot; null without a purchase.", "double", FAMILY, source,
                compute=field("bgnbd_p_alive")),
        Feature(f"pareto_nbd_expected_purchase_days_next_{n}d", "Pareto/NBD expected number of days "
                f"with a purchase in the {n} days from the snapshot; null without a purchase.",
                "double", FAMILY, source, compute=field("pareto_expected")),
        Feature("pareto_nbd_p_alive", "Pareto/NBD probability that the user is still an active "
                "customer at the snapshot; null without a purchase.", "double", FAMILY, source,
                compute=field("pareto_p_alive")),
        Feature(f"btyd_expected_spend_next_{n}d", f"Expected spend in the {n} days from the "
                "snapshot: the BG/NBD expected purchase days times the Gamma-Gamma expected spend "
                "per purchase day; null without a purchase.", "double", FAMILY,
                f"{source}, user_daily.spend", compute=field("expected_spend")),
    ]


def purchase_history(daily_rows: DataFrame) -> DataFrame:
    """Per (user_key, snapshot_date) with a purchase day before the snapshot: x, t_x, T and the
    mean spend per purchase day (HISTORY), the spend summed exactly (in millionths) so the
    fit's inputs do not depend on the order rows are summed in. `daily_rows` carry `age_days` = D - event_date
    (features.window_sums.daily_rows_by_snapshot); laid out by user_key, this needs no shuffle."""
    bought = daily_rows.where((F.col("purchases") > 0) & F.col("user_key").isNotNull())
    return (bought.groupBy(*KEYS)
            .agg(F.count(F.lit(1)).alias("_days"), F.max("age_days").alias("_first"),
                 F.min("age_days").alias("_last"), exact_sum(F.col("spend")).alias("_spend"))
            .select(*KEYS, (F.col("_days") - 1).cast("double").alias("btyd__x"),
                    (F.col("_first") - F.col("_last")).cast("double").alias("btyd__t_x"),
                    F.col("_first").cast("double").alias("btyd__T"),
                    (F.col("_spend") / F.col("_days")).alias("btyd__mean_spend")))


def _rfm(frame: pd.DataFrame) -> btyd_models.RFM:
    return btyd_models.RFM.of(frame["btyd__x"], frame["btyd__t_x"], frame["btyd__T"],
                              frame["btyd__mean_spend"])


def fitting_sample(user_daily: DataFrame, snapshots: Sequence[dt.date], max_customers: int) -> DataFrame:
    """Per snapshot D, the purchase histories before D of at most `max_customers` customers: those
    with the smallest hash of user_key among the customers with a purchase before D, so the
    sample of D depends on the data before D only (a backfill and a one-by-one run fit the same).

    Reads only user_daily's purchase days. An approximate count of customers per snapshot first
    sets a hash fraction three times the sample's share, so the per-snapshot ranking sees a few
    times `max_customers` rows however many customers there are.
    """
    bought = user_daily.where(F.col("purchases") > 0).select("user_key", "event_date", "purchases", "spend")
    rows = daily_rows_by_snapshot(bought, snapshots, by_user=False)
    counts = {r[0]: int(r[1]) for r in rows.groupBy("snapshot_date")
              .agg(F.approx_count_distinct("user_key")).collect()}
    unit = (F.xxhash64("user_key").cast("double") + 2.0 ** 63) / 2.0 ** 64  # uniform in [0, 1)
    fraction = F.lit(1.0)
    for snapshot, n in counts.items():
        share = min(1.0, 3.0 * max_customers / max(n, 1))
        fraction = F.when(F.col("snapshot_date") == F.lit(snapshot), F.lit(share)).otherwise(fraction)
    histories = purchase_history(rows.where(unit < fraction)).withColumn("_unit", unit)
    rank = F.row_number().over(Window.partitionBy("snapshot_date").orderBy("_unit", "user_key"))
    return histories.withColumn("_rank", rank).where(F.col("_rank") <= max_customers).drop("_rank", "_unit")


def fit_parameters(user_daily: DataFrame, snapshots: Sequence[dt.date], spec: FeatureSpec) -> Parameters:
    """Fits the models per snapshot on fitting_sample (at most btyd_fit_max_customers rows per
    snapshot reach the driver). A model the data cannot identify is left out with a warning
    naming the reason; its features are then null at that snapshot."""
    snapshots = sorted(set(snapshots))
    sample = fitting_sample(user_daily, snapshots, spec.btyd_fit_max_customers).toPandas()
    params: Parameters = {}
    for snapshot in snapshots:
        rows = sample[sample["snapshot_date"] == snapshot]
        # Sorted, so the fit does not depend on the order rows arrive in (bit-identical reruns).
        rows = rows.sort_values(list(HISTORY) + ["user_key"], kind="mergesort")
        fitted, refused = btyd_models.fit_all(_rfm(rows))
        params[snapshot] = fitted
        log.info("btyd %s: fitted on %d customers: %s", snapshot, len(rows),
                 {m: {k: round(v, 4) for k, v in p.items()} for m, p in fitted.items()})
        for model, reason in refused.items():
            log.warning("btyd %s: %s not fitted, its features are null at this snapshot: %s",
                        snapshot, model, reason)
    return params


def score_histories(histories: DataFrame, params: Parameters, window_days: int) -> DataFrame:
    """KEYS and `btyd__scores` (a struct of OUTPUTS) for every purchase history."""
    by_day = {d.isoformat(): p for d, p in params.items()}
    schema = ", ".join(f"{name} double" for name in OUTPUTS)

    @F.pandas_udf(f"struct<{schema}>")
    def scores(snapshot: pd.Series, x: pd.Series, t_x: pd.Series, T: pd.Series,
               mean_spend: pd.Series) -> pd.DataFrame:
        out = pd.DataFrame({name: np.full(len(x), np.nan) for name in OUTPUTS})
        frame = pd.DataFrame({"snapshot": snapshot.astype(str), "btyd__x": x, "btyd__t_x": t_x,
                              "btyd__T": T, "btyd__mean_spend": mean_spend})
        for day, rows in frame.groupby("snapshot"):
            predicted = btyd_models.predict_all(by_day.get(day, {}), float(window_days), _rfm(rows))
            for name in OUTPUTS:
                out.loc[rows.index, name] = predicted[name]
        return out

    return histories.select(*KEYS, scores(F.col("snapshot_date").cast("string"),
                                          *[F.col(c) for c in HISTORY]).alias("btyd__scores"))


def add_btyd_features(base: DataFrame, daily_rows: DataFrame, params: Parameters,
                      spec: FeatureSpec) -> DataFrame:
    """`base` (one row per user and snapshot) with the BTYD features; `daily_rows` as for
    purchase_history, `params` from fit_parameters."""
    scored = score_histories(purchase_history(daily_rows), params, spec.label_window_days)
    joined = base.join(scored.hint("shuffle_hash"), KEYS, "left")
    return with_features(joined, definitions(spec)).drop("btyd__scores")
