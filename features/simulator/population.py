"""Users with latent traits, items with prices, and the category statistics the truth needs.

Latents of a user (all drawn from hashes of the user's index, see randomness.py):
- activity: base daily probability of a visit, logit-normal around `mean_daily_activity`;
- conversion_logit: purchase propensity on an active day, normal around logit(mean_conversion);
- cart_propensity: chance of an abandoned cart on a day without purchase, correlated with
  conversion_logit (so carts reveal propensity before any purchase);
- price_sensitivity in [0, 1): share of item choices made among the cheaper half of a category,
  and how strongly promotions raise conversion;
- category preferences: a softmax of normal scores plus a global popularity slope;
- browse_depth: multiplier of the number of views per visit;
- signup_day and churn_day: the user exists from signup and stops visiting at churn
  (lifetime exponential with a per-user hazard around `mean_churn_hazard`).
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from demandcast.settings.generate import GenerateSettings
from features.simulator.randomness import logit, normal, pick_from, pick_index, sigmoid, uniform

CATEGORY_NAMES = ("electronics", "fashion", "home", "beauty", "sports", "books", "toys",
                  "grocery", "garden", "automotive", "health", "pets")
# Region -> fixed UTC offset of its users' devices (raw event times carry this offset).
REGIONS = {"north_america": "-05:00", "europe": "+01:00", "asia_pacific": "+08:00",
           "latin_america": "-03:00"}
REGION_WEIGHTS = (0.4, 0.3, 0.2, 0.1)
AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_WEIGHTS = (0.15, 0.28, 0.22, 0.16, 0.11, 0.08)
GENDERS = ("female", "male", "other")
GENDER_WEIGHTS = (0.52, 0.45, 0.03)
DEVICES = ("mobile_app", "mobile_web", "desktop", "tablet")
DEVICE_WEIGHTS = (0.4, 0.3, 0.25, 0.05)
# Days of sign-ups before the simulated period (users with history at the start).
SIGNUP_HISTORY_DAYS = 365
# Log-weight slope of category popularity: category c is exp(-0.15 c) as popular as the first.
POPULARITY_SLOPE = 0.15
PREFERENCE_SPREAD = 1.2


def category_names(n: int) -> list[str]:
    return [CATEGORY_NAMES[c] if c < len(CATEGORY_NAMES) else f"category_{c:02d}" for c in range(n)]


# Latents that decide whether a user visits on a day. The event generator broadcasts these, and
# the category preferences packed into a few longs, with the user index to every task: they are
# needed on every user-day, or cost too much to recompute on each visit. The rest of a user
# (`with_purchase_latents`, `with_user_traits`) is recomputed from the index on the days the user
# visits. Every broadcast column costs 8 bytes per user: at millions of users a broadcast of
# every latent (a dozen preference doubles each) ran the driver out of memory (bench/RESULTS.md,
# generate).
VISIT_LATENTS = ("activity", "signup_day", "churn_day")


def user_indices(spark: SparkSession, s: GenerateSettings) -> DataFrame:
    """The user index `uid` (0-based), the key every latent is a hash of."""
    return spark.range(0, s.n_users, numPartitions=s.partitions).withColumnRenamed("id", "uid")


def with_visit_latents(df: DataFrame, s: GenerateSettings, seed: int) -> DataFrame:
    """Adds VISIT_LATENTS of the user index `uid`."""
    uid = F.col("uid")
    hazard = F.lit(s.mean_churn_hazard) * F.exp(F.lit(0.6) * normal(seed, "churn_rate", uid) - 0.18)
    lifetime = F.ceil(-F.log(F.lit(1.0) - uniform(seed, "lifetime", uid)) / hazard)
    signup_span = SIGNUP_HISTORY_DAYS + int(0.8 * s.n_days)
    return (
        df.withColumn("activity", sigmoid(F.lit(logit(s.mean_daily_activity))
                                          + F.lit(0.9) * normal(seed, "activity", uid)))
        .withColumn("signup_day", (F.floor(uniform(seed, "signup", uid) * signup_span)
                                   - SIGNUP_HISTORY_DAYS).cast("int"))
        .withColumn("churn_day", F.when(hazard > 0, F.col("signup_day") + lifetime)
                    .otherwise(F.lit(10 ** 7)).cast("int"))
    )


def with_purchase_latents(df: DataFrame, s: GenerateSettings, seed: int) -> DataFrame:
    """Adds conversion_logit and price_sensitivity of the user index `uid`."""
    uid = F.col("uid")
    return (
        df.withColumn("conversion_logit", F.lit(logit(s.mean_conversion)) + F.lit(0.8) * normal(seed, "propensity", uid))
        .withColumn("price_sensitivity", uniform(seed, "price_sensitivity", uid))
    )


def with_preferences(df: DataFrame, s: GenerateSettings, seed: int) -> DataFrame:
    """Adds the category preferences of the user index `uid`: pref (shares) and pref_cdf."""
    uid = F.col("uid")
    # Preferences as plain columns, not transform/aggregate over arrays: higher-order functions
    # run interpreted, and this is the costliest part of a user. Sums run left to right as
    # aggregate() would, so the values are the same.
    scores = [f"_score_{c}" for c in range(s.n_categories)]
    total = F.lit(0.0)
    for name in scores:
        total = total + F.col(name)
    shares = [F.col(name) / F.col("_total") for name in scores]
    running, cumulative = F.lit(0.0), []
    for share in shares:
        running = running + share
        cumulative.append(running)
    return (
        df.withColumns({name: F.exp(F.lit(PREFERENCE_SPREAD) * normal(seed, "pref", uid, F.lit(c))
                                    - F.lit(POPULARITY_SLOPE) * F.lit(c)) for c, name in enumerate(scores)})
        .withColumn("_total", total)
        .withColumn("pref", F.array(*shares))
        .withColumn("pref_cdf", F.array(*cumulative))
        .drop(*scores, "_total")
    )


def with_user_traits(df: DataFrame, s: GenerateSettings, seed: int) -> DataFrame:
    """Adds the user's other latents and demographics to rows with the user index `uid` and its
    conversion_logit: user_id, cart_propensity, browse_depth, region, tz_offset, age_band,
    gender, primary_device. Cheap enough to recompute on every day the user visits."""
    uid = F.col("uid")
    # -1.6 + 0.8 z with the z of conversion_logit (= logit(mean_conversion) + 0.8 z).
    cart_logit = F.lit(-1.6 - logit(s.mean_conversion)) + F.col("conversion_logit")
    return (
        df.withColumn("user_id", padded_id("U", uid, 8))
        .withColumn("cart_propensity", sigmoid(cart_logit))
        .withColumn("browse_depth", F.lit(0.5) + uniform(seed, "browse_depth", uid))
        .withColumn("region", pick_from(list(REGIONS), list(REGION_WEIGHTS), uniform(seed, "region", uid)))
        .withColumn("tz_offset", lookup(REGIONS, F.col("region")))
        .withColumn("age_band", pick_from(list(AGE_BANDS), list(AGE_WEIGHTS), uniform(seed, "age", uid)))
        .withColumn("gender", pick_from(list(GENDERS), list(GENDER_WEIGHTS), uniform(seed, "gender", uid)))
        .withColumn("primary_device", pick_from(list(DEVICES), list(DEVICE_WEIGHTS),
                                                uniform(seed, "device", uid)))
    )


def lookup(table: dict, key: Column) -> Column:
    """table[key] for a small fixed table (a map literal; null for a key it lacks)."""
    return F.element_at(F.create_map(*[F.lit(x) for pair in table.items() for x in pair]), key)


def padded_id(prefix: str, index: Column, digits: int) -> Column:
    """prefix + index zero-padded to `digits` (more digits when it needs them): format_string's
    text, without the java.util.Formatter it parses for every row."""
    text = index.cast("string")
    return F.concat(F.lit(prefix), F.when(index < 10 ** digits, F.lpad(text, digits, "0")).otherwise(text))


def users(spark: SparkSession, s: GenerateSettings, seed: int) -> DataFrame:
    """One row per user with all its latents and demographics (user index `uid`, 0-based)."""
    latents = with_purchase_latents(with_visit_latents(user_indices(spark, s), s, seed), s, seed)
    return with_user_traits(with_preferences(latents, s, seed), s, seed)


def user_dimension(users_df: DataFrame, start_date) -> DataFrame:
    """The raw users file a platform would export (no latents). A user's attributes never change
    in the simulated world: they hold since signup, which `updated_at` says (ingest's
    users_valid_from_column in conf/local.yaml)."""
    signup = F.date_add(F.lit(start_date), F.col("signup_day"))
    return users_df.select("user_id", signup.alias("signup_date"), "region", "age_band", "gender",
                           signup.alias("updated_at"))


def items(spark: SparkSession, s: GenerateSettings, seed: int) -> DataFrame:
    """Items with a category (every category has at least one), brand, list price, price rank and
    the date they are listed from (the first simulated day)."""
    iid = F.col("iid")
    names = category_names(s.n_categories)
    popularity = [pow(2.718281828, -POPULARITY_SLOPE * c) for c in range(s.n_categories)]
    total = sum(popularity)
    cdf = [sum(popularity[: c + 1]) / total for c in range(s.n_categories)]
    category_idx = F.when(iid < s.n_categories, iid.cast("int")).otherwise(
        pick_index(F.array(*[F.lit(x) for x in cdf]), uniform(seed, "item_category", iid), len(cdf)))
    # Each category has its own price level (about 12 to 90) and a log-normal spread around it.
    level = F.exp(F.lit(2.5) + F.lit(2.0) * uniform(seed, "category_price", F.col("category_idx")))
    by_price = Window.partitionBy("category_idx").orderBy("list_price", "item_id")
    return (
        spark.range(0, s.n_items, numPartitions=max(1, min(s.partitions, 4)))
        .withColumnRenamed("id", "iid")
        .withColumn("item_id", padded_id("I", iid, 6))
        .withColumn("category_idx", category_idx)
        .withColumn("category_id", F.element_at(F.array(*[F.lit(n) for n in names]),
                                                F.col("category_idx") + 1))
        .withColumn("brand", F.format_string("%s_brand_%02d", F.col("category_id"),
                                             F.floor(uniform(seed, "brand", iid) * 12).cast("int")))
        .withColumn("list_price", F.round(level * F.exp(F.lit(0.5) * normal(seed, "item_price", iid)), 2))
        .withColumn("price_rank", (F.row_number().over(by_price) - 1).cast("int"))
        .withColumn("listed_date", F.lit(s.start_date))
        .drop("iid")
    )


def item_dimension(items_df: DataFrame) -> DataFrame:
    """The raw items file; `updated_at` says since when the attributes hold (every item is
    listed, unchanged, from the first simulated day)."""
    return items_df.select("item_id", "category_id", "brand", "list_price",
                           F.col("listed_date").alias("updated_at"))


@dataclass(frozen=True)
class CategoryStats:
    """Per category (by index): item count, size of the cheaper half, mean prices of both."""

    names: list[str]
    n_items: list[int]
    n_budget: list[int]
    mean_price: list[float]
    mean_budget_price: list[float]


def category_stats(items_df: DataFrame, n_categories: int) -> CategoryStats:
    """Collected to the driver: a handful of numbers per category."""
    sizes = {r.category_idx: r.n for r in items_df.groupBy("category_idx").agg(F.count("*").alias("n")).collect()}
    n_budget = {c: (n + 1) // 2 for c, n in sizes.items()}
    budget = F.element_at(F.array(*[F.lit(n_budget.get(c, 1)) for c in range(n_categories)]),
                          F.col("category_idx") + 1)
    means = {r.category_idx: (r.mean_all, r.mean_budget) for r in items_df.groupBy("category_idx").agg(
        F.avg("list_price").alias("mean_all"),
        F.avg(F.when(F.col("price_rank") < budget, F.col("list_price"))).alias("mean_budget")).collect()}
    return CategoryStats(
        names=category_names(n_categories),
        n_items=[sizes[c] for c in range(n_categories)],
        n_budget=[n_budget[c] for c in range(n_categories)],
        mean_price=[means[c][0] for c in range(n_categories)],
        mean_budget_price=[means[c][1] for c in range(n_categories)],
    )
