"""Daily purchase probabilities and the view -> cart -> purchase funnel that realises them.

A user-day is independent of every other day given the user's latents and the calendar:
- p_active  = [signup <= day < churn] * min(0.95, activity * seasonality * promo lift)
- p_convert = sigmoid(conversion_logit + promo * PROMO_CONVERSION_LIFT * price_sensitivity)
- the user purchases on the day with probability p_purchase = p_active * p_convert.
`with_daily_probabilities` is the single definition used by both the event generator and the
ground truth, so labels computed from events agree with the truth in expectation.

An active day is one session: a few searches and views (categories from the user's preferences,
items from the cheaper half of a category with probability price_sensitivity), maybe an
abandoned cart (more often for high-propensity users), and on a purchase day 1-3 basket lines,
each a view, an add_to_cart and a purchase of the same item.
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from demandcast.settings.generate import GenerateSettings
from features.simulator.calendar import PROMO_ACTIVITY_LIFT, day_date, is_promotion, seasonality
from features.simulator.population import DEVICES, CategoryStats
from features.simulator.randomness import pick_from, pick_index, sigmoid, uniform

MAX_DAILY_ACTIVITY = 0.95
PROMO_CONVERSION_LIFT = 1.5
# A basket has 1 line plus one more with probability 0.35 plus another with probability 0.1.
EXTRA_LINE_PROBS = (0.35, 0.1)
# A line's quantity is 1, plus 1 with probability 0.2, plus 1 with probability 0.05.
EXTRA_QUANTITY_PROBS = (0.2, 0.05)
EXPECTED_LINES = 1 + sum(EXTRA_LINE_PROBS)
EXPECTED_QUANTITY = 1 + sum(EXTRA_QUANTITY_PROBS)
# Share of browsing (not purchase) choices made outside the user's preferences.
EXPLORATION = 0.15
MAX_VIEWS_PER_DAY = 60
# Events of a session are 40-70 s apart; the session starts early enough to end the same UTC day.
EVENT_SPACING_S = 40
SESSION_LATEST_START_S = 86_400 - 3_200
CHANNELS = ("direct", "organic_search", "paid_search", "email", "social")
CHANNEL_WEIGHTS = (0.3, 0.3, 0.2, 0.1, 0.1)


def with_daily_probabilities(user_days: DataFrame, s: GenerateSettings, seed: int) -> DataFrame:
    """Adds is_promo, discount, p_active, p_convert, p_purchase to rows of (user latents, day)."""
    day = F.col("day")
    promo = is_promotion(seed, s.promo_start_rate, day)
    alive = (day >= F.col("signup_day")) & (day < F.col("churn_day"))
    visit = F.least(F.lit(MAX_DAILY_ACTIVITY),
                    F.col("activity") * seasonality(s.start_date, day)
                    * F.when(promo, F.lit(1 + PROMO_ACTIVITY_LIFT)).otherwise(F.lit(1.0)))
    return (
        user_days
        .withColumn("is_promo", promo)
        .withColumn("discount", F.when(promo, F.lit(s.promo_discount)).otherwise(F.lit(0.0)))
        .withColumn("p_active", F.when(alive, visit).otherwise(F.lit(0.0)))
        .withColumn("p_convert", sigmoid(
            F.col("conversion_logit")
            + F.when(promo, F.lit(PROMO_CONVERSION_LIFT) * F.col("price_sensitivity")).otherwise(F.lit(0.0))))
        .withColumn("p_purchase", F.col("p_active") * F.col("p_convert"))
    )


def _bernoulli_sum(seed: int, stream: str, probs: tuple[float, ...], *keys: Column) -> Column:
    total = F.lit(0)
    for i, p in enumerate(probs):
        total = total + (uniform(seed, f"{stream}{i}", *keys) < F.lit(p)).cast("int")
    return total


def _int_array(values: list[int]) -> Column:
    return F.array(*[F.lit(int(v)) for v in values])


def events(users_df: DataFrame, items_df: DataFrame, stats: CategoryStats,
           s: GenerateSettings, seed: int) -> DataFrame:
    """Every event of the simulated period (true values, no landing flaws)."""
    spark = users_df.sparkSession
    uid, day = F.col("uid"), F.col("day")
    days = spark.range(0, s.n_days, numPartitions=1).select(F.col("id").cast("int").alias("day"))
    user_days = with_daily_probabilities(users_df.crossJoin(F.broadcast(days)), s, seed)

    purchased = uniform(seed, "convert", uid, day) < F.col("p_convert")
    views_mean = F.greatest(F.lit(0.2), F.lit(s.mean_events_per_active_day - 1.6) * F.col("browse_depth"))
    abandon = (~F.col("purchased")) & (uniform(seed, "abandon", uid, day) < F.col("cart_propensity"))
    active = (
        user_days.where(uniform(seed, "active", uid, day) < F.col("p_active"))
        .withColumn("purchased", purchased)
        .withColumn("n_search", _bernoulli_sum(seed, "search", (0.3, 0.1), uid, day))
        .withColumn("n_view", F.least(F.lit(MAX_VIEWS_PER_DAY), F.lit(1) + F.floor(
            -F.log(F.lit(1.0) - uniform(seed, "views", uid, day)) * views_mean).cast("int")))
        .withColumn("n_abandon", abandon.cast("int"))
        .withColumn("n_remove", (abandon & (uniform(seed, "remove", uid, day) < 0.4)).cast("int"))
        .withColumn("n_lines", F.when(F.col("purchased"), F.lit(1) + _bernoulli_sum(
            seed, "lines", EXTRA_LINE_PROBS, uid, day)).otherwise(F.lit(0)))
    )
    b1 = F.col("n_search")
    b2 = b1 + F.col("n_view")
    b3 = b2 + F.col("n_abandon")
    b4 = b3 + F.col("n_remove")
    k = F.col("k")
    exploded = active.withColumn("k", F.explode(F.sequence(F.lit(0), b4 + F.lit(3) * F.col("n_lines") - 1)))
    step = (k - b4) % 3
    typed = (
        exploded
        .withColumn("event_type", F.when(k < b1, "search").when(k < b2, "view").when(k < b3, "add_to_cart")
                    .when(k < b4, "remove_from_cart")
                    .otherwise(F.element_at(F.array(F.lit("view"), F.lit("add_to_cart"), F.lit("purchase")),
                                            step + 1)))
        # What the event is about: a search slot, a browsed item slot (carts refer to browsed
        # items), or a basket line. Draws are keyed by it, so a line's view, cart and purchase
        # share the item.
        .withColumn("draw_kind", F.when(k < b1, "search").when(k < b4, "browse").otherwise("line"))
        .withColumn("draw_idx", F.when(k < b1, k).when(k < b2, k - b1).when(k < b3, k - b2)
                    .when(k < b4, k - b3).otherwise(F.floor((k - b4) / 3)).cast("int"))
    )
    draw = (uid, day, F.col("draw_kind"), F.col("draw_idx"))
    preferred = pick_index(F.col("pref_cdf"), uniform(seed, "category", *draw))
    explore = (F.col("draw_kind") != "line") & (uniform(seed, "explore", *draw) < EXPLORATION)
    category_idx = F.when(explore, F.floor(uniform(seed, "explore_category", *draw) * s.n_categories)
                          .cast("int")).otherwise(preferred)
    budget = uniform(seed, "budget", *draw) < F.col("price_sensitivity")
    choices = F.when(budget, F.element_at(_int_array(stats.n_budget), F.col("category_idx") + 1)) \
        .otherwise(F.element_at(_int_array(stats.n_items), F.col("category_idx") + 1))
    chosen = (
        typed.withColumn("category_idx", category_idx)
        .withColumn("price_rank", F.when(F.col("draw_kind") != "search",
                                         F.floor(uniform(seed, "rank", *draw) * choices).cast("int")))
    )
    catalogue = F.broadcast(items_df.select("category_idx", "price_rank", "item_id", "list_price"))
    with_items = chosen.join(catalogue, ["category_idx", "price_rank"], "left")

    quantity = F.when(F.col("draw_kind") == "line", F.lit(1) + _bernoulli_sum(
        seed, "quantity", EXTRA_QUANTITY_PROBS, uid, day, F.col("draw_idx"))) \
        .when(F.col("draw_kind") == "browse", F.lit(1))
    start = F.floor(uniform(seed, "session_start", uid, day) * SESSION_LATEST_START_S)
    offset_s = start + k * EVENT_SPACING_S + F.floor(uniform(seed, "gap", uid, day, k) * 30)
    date = day_date(s.start_date, day)
    device = F.when(uniform(seed, "same_device", uid, day) < 0.85, F.col("primary_device")) \
        .otherwise(pick_from(list(DEVICES), [1.0] * len(DEVICES), uniform(seed, "other_device", uid, day)))
    channel = F.when(F.col("is_promo") & (uniform(seed, "promo_email", uid, day) < 0.4), F.lit("email")) \
        .otherwise(pick_from(list(CHANNELS), list(CHANNEL_WEIGHTS), uniform(seed, "channel", uid, day)))
    return with_items.select(
        F.md5(F.concat_ws("|", F.lit(seed), F.col("user_id"), day, k)).alias("event_id"),
        "user_id",
        F.concat(F.lit("S"), F.substring(F.md5(F.concat_ws("|", F.lit(seed), F.col("user_id"), day)), 1, 24))
        .alias("session_id"),
        F.timestamp_seconds(F.unix_date(date).cast("long") * 86_400 + offset_s).alias("event_time"),
        "event_type",
        "item_id",
        F.element_at(F.array(*[F.lit(n) for n in stats.names]), F.col("category_idx") + 1).alias("category_id"),
        F.round(F.col("list_price") * (F.lit(1.0) - F.col("discount")), 2).alias("price"),
        quantity.cast("int").alias("quantity"),
        device.alias("device"),
        channel.alias("channel"),
        "tz_offset",
        date.alias("event_date"),
    )
