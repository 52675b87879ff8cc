"""The planted truth: per user and cutoff, the exact purchase probability and expected spend.

For a cutoff D and a window of N days (event dates D+1 .. D+N, UTC), with p_d the day's
purchase probability from `with_daily_probabilities` (days independent given the latents):
- p_purchase            = 1 - prod_d (1 - p_d)
- p_purchase_by_category[c] = 1 - prod_d (1 - p_d q_c), q_c = P(a basket holds a line of c)
                           = 1 - (1 - pi_c) prod_j (1 - e_j pi_c) for the extra-line chances e_j
- expected_spend_by_category[c] = sum_d p_d (1 - discount_d) * E[lines] * pi_c * E[qty]
                                   * (s * mean budget price_c + (1 - s) * mean price_c)
pi = the user's category preferences, s = price sensitivity. Prices are rounded to cents when
events are written, so realised spend differs from this expectation by rounding only.
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from demandcast.settings.generate import GenerateSettings
from features.simulator.behaviour import (EXPECTED_LINES, EXPECTED_QUANTITY, EXTRA_LINE_PROBS,
                                          with_conversion_chances, with_daily_probabilities)
from features.simulator.calendar import with_calendar
from features.simulator.population import CategoryStats


def ground_truth(users_df: DataFrame, stats: CategoryStats, s: GenerateSettings, seed: int,
                 cutoffs: list[dt.date], window_days: int) -> DataFrame:
    """One row per (user signed up by the cutoff, cutoff): the contract's ground_truth columns."""
    spark = users_df.sparkSession
    cut = spark.createDataFrame([(d, (d - s.start_date).days) for d in cutoffs],
                                "cutoff_date date, cutoff_day int")
    window_days_df = with_calendar(
        cut.withColumn("day", F.explode(F.sequence(F.col("cutoff_day") + 1, F.col("cutoff_day") + window_days))),
        s.start_date, seed, s.promo_start_rate, s.promo_discount)
    def line_share(pi):
        none = F.lit(1.0) - pi
        for extra in EXTRA_LINE_PROBS:
            none = none * (F.lit(1.0) - F.lit(extra) * pi)
        return F.lit(1.0) - none

    n_cat = len(stats.names)
    # q_c depends on the user only: computed once per user, not per user-day.
    shares = [f"_share_{c}" for c in range(n_cat)]
    with_shares = with_conversion_chances(users_df).withColumns(
        {name: line_share(F.element_at("pref", c + 1)) for c, name in enumerate(shares)})
    window = (
        with_shares.crossJoin(F.broadcast(window_days_df))
        .where(F.col("signup_day") <= F.col("cutoff_day"))
    )
    daily = with_daily_probabilities(window)
    # Sums only, keyed by (uid, cutoff_date): a buffer of doubles under fixed-width keys is
    # hash-aggregated as the user-days stream out of the join. Carrying user_id or pref through
    # the aggregation (first(), or as keys) made Spark sort every user-day, or normalise the
    # pref array per row in interpreted code: most of the truth's cost. The user's own fields
    # are joined back to the (few) aggregated rows.
    # The chances of no purchase multiply over the days: product(), plain multiplications,
    # instead of exp(sum of log1p), thirteen StrictMath calls per user-day. A product that
    # underflows (a window of hundreds of near-certain days) gives 1.0, as exp() of its log did.
    sums = daily.groupBy("uid", "cutoff_date").agg(
        F.product(F.lit(1.0) - F.col("p_purchase")).alias("p_none"),
        *[F.product(F.lit(1.0) - F.col("p_purchase") * F.col(name)).alias(f"_none_{c}")
          for c, name in enumerate(shares)],
        F.sum(F.col("p_purchase") * (F.lit(1.0) - F.col("discount"))).alias("discounted_purchase_days"),
    )
    per_user = sums.join(users_df.select("uid", "user_id", "pref", "price_sensitivity"), "uid")
    p_by_category = F.array(*[F.lit(1.0) - F.col(f"_none_{c}") for c in range(n_cat)])
    s_u = F.col("price_sensitivity")
    spend = [F.col("discounted_purchase_days") * F.lit(EXPECTED_LINES * EXPECTED_QUANTITY)
             * F.element_at("pref", c + 1)
             * (s_u * F.lit(float(stats.mean_budget_price[c])) + (F.lit(1.0) - s_u) * F.lit(float(stats.mean_price[c])))
             for c in range(n_cat)]
    spend_by_category = F.array(*spend)
    names = F.array(*[F.lit(n) for n in stats.names])
    return (
        per_user
        .withColumn("spend_by_category", spend_by_category)
        .select(
            "user_id",
            "cutoff_date",
            F.lit(window_days).alias("window_days"),
            (F.lit(1.0) - F.col("p_none")).alias("p_purchase"),
            sum((F.element_at("spend_by_category", c + 1) for c in range(n_cat)), F.lit(0.0)).alias("expected_spend"),
            F.map_from_arrays(names, p_by_category).alias("p_purchase_by_category"),
            F.map_from_arrays(names, F.col("spend_by_category")).alias("expected_spend_by_category"),
        )
    )
