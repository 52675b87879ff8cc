"""The simulator: deterministic for a seed, truth that the generated events agree with, and
latents that leave visible traces in behaviour."""
from __future__ import annotations

import datetime as dt
import math

import pytest
from pyspark.sql import functions as F

from demandcast.settings.generate import GenerateSettings
from features.simulator import ground_truth, simulate

SEED = 7
SETTINGS = GenerateSettings(n_users=3000, n_items=600, n_categories=8, start_date=dt.date(2025, 3, 1),
                            n_days=60, partitions=3, mean_daily_activity=0.1)
CUTOFF = dt.date(2025, 3, 30)  # window: 2025-03-31 .. 2025-04-29, inside the 60 simulated days
WINDOW = 30


def _checksum(df):
    return df.select(F.bit_xor(F.xxhash64(*df.columns)).alias("h"), F.count("*").alias("n")).first()


@pytest.fixture(scope="module")
def world(spark):
    w = simulate(spark, SETTINGS, SEED)
    w.events = w.events.cache()
    yield w
    w.events.unpersist()


@pytest.fixture(scope="module")
def truth_vs_labels(world):
    truth = ground_truth(world, SETTINGS, SEED, [CUTOFF], WINDOW)
    window = world.events.where(F.col("event_date").between(CUTOFF + dt.timedelta(days=1),
                                                            CUTOFF + dt.timedelta(days=WINDOW)))
    bought = window.where(F.col("event_type") == "purchase").groupBy("user_id").agg(
        F.sum(F.col("price") * F.col("quantity")).alias("spend"),
        F.collect_set("category_id").alias("categories"))
    rows = truth.join(bought, "user_id", "left").collect()
    return rows


def test_deterministic_for_a_seed_whatever_the_partitioning(spark):
    small = SETTINGS.model_copy(update={"n_users": 400, "n_days": 20})
    first = _checksum(simulate(spark, small, SEED).events)
    assert first == _checksum(simulate(spark, small.model_copy(update={"partitions": 5}), SEED).events)
    assert first != _checksum(simulate(spark, small, SEED + 1).events)
    assert first.n > 1_000


def test_event_fields_and_funnel_order(world):
    ev = world.events
    types = {r.event_type: r.n for r in ev.groupBy("event_type").agg(F.count("*").alias("n")).collect()}
    assert set(types) == {"view", "search", "add_to_cart", "remove_from_cart", "purchase"}
    assert types["view"] > types["add_to_cart"] > types["purchase"] > 0
    # Every purchase is preceded, in the same session, by a view and a cart of the same item.
    p = ev.where("event_type = 'purchase'").select("session_id", "item_id", F.col("event_time").alias("t"))
    prior = ev.where("event_type in ('view', 'add_to_cart')").select("session_id", "item_id", "event_type",
                                                                      "event_time")
    steps = p.join(prior, ["session_id", "item_id"]).where(F.col("event_time") < F.col("t")) \
        .groupBy("session_id", "item_id", "t").agg(F.countDistinct("event_type").alias("k"))
    assert steps.where("k = 2").count() == p.count()
    assert ev.where("event_id is null or user_id is null or price < 0 or quantity < 1").count() == 0
    assert ev.select("event_id").distinct().count() == ev.count()


def test_truth_agrees_with_generated_labels(truth_vs_labels):
    rows = truth_vs_labels
    n = len(rows)
    p = [r.p_purchase for r in rows]
    y = [1.0 if r.spend is not None else 0.0 for r in rows]
    mean_p, rate = sum(p) / n, sum(y) / n
    # Given the truth, labels are independent Bernoullis: their mean has this standard error.
    se = math.sqrt(sum(q * (1 - q) for q in p)) / n
    assert 0.05 < mean_p < 0.6
    assert abs(rate - mean_p) < 4 * se
    assert 4 * se < 0.1 * mean_p  # the tolerance is tight enough to catch a 10% bias

    spend = [r.spend or 0.0 for r in rows]
    expected = [r.expected_spend for r in rows]
    mean_spend = sum(spend) / n
    sd = math.sqrt(sum((s - mean_spend) ** 2 for s in spend) / (n - 1))
    assert abs(mean_spend - sum(expected) / n) < 4 * sd / math.sqrt(n)
    assert 4 * sd / math.sqrt(n) < 0.3 * mean_spend  # catches a 30% bias

    # Per category: expected number of buyers vs observed, summed over all categories.
    expected_buyers = sum(sum(r.p_purchase_by_category.values()) for r in rows)
    observed_buyers = sum(len(r.categories or []) for r in rows)
    assert abs(observed_buyers - expected_buyers) < 4 * math.sqrt(expected_buyers)

    # The truth ranks users well: the oracle AUC is far above chance.
    pos = [q for q, lab in zip(p, y) if lab]
    neg = [q for q, lab in zip(p, y) if not lab]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos[:400] for b in neg[:1500])
    assert wins / (len(pos[:400]) * len(neg[:1500])) > 0.7


def test_latents_are_visible_in_behaviour(world):
    ev = world.events
    users = world.users.select("user_id", "activity", "price_sensitivity", "pref")
    per_user = ev.groupBy("user_id").agg(
        F.countDistinct("event_date").alias("active_days"),
        F.avg(F.when(F.col("event_type") == "view", F.col("price"))).alias("view_price"),
        F.mode(F.when(F.col("event_type") == "view", F.col("category_id"))).alias("top_viewed"))
    joined = users.join(per_user, "user_id").withColumn(
        "top_preferred", F.element_at(F.array(*[F.lit(c) for c in world.stats.names]),
                                      F.array_position("pref", F.array_max("pref")).cast("int")))
    stats = joined.select(
        F.corr("activity", "active_days").alias("activity"),
        F.corr("price_sensitivity", "view_price").alias("price"),
        F.avg((F.col("top_viewed") == F.col("top_preferred")).cast("double")).alias("preference")).first()
    assert stats.activity > 0.5
    assert stats.price < -0.1
    assert stats.preference > 0.5


def test_one_hash_gives_independent_uniforms_and_pick_index_follows_the_cdf(spark):
    from features.simulator.randomness import hash64, pick_index, split_uniform

    h = F.col("h")
    cdf = F.array(F.lit(0.2), F.lit(0.5), F.lit(0.5), F.lit(0.9999))
    rows = (spark.range(0, 40_000, numPartitions=2).withColumn("h", hash64(SEED, "test", F.col("id")))
            .select(*[split_uniform(h, i, 3).alias(f"u{i}") for i in range(3)])
            .withColumn("pick", pick_index(cdf, F.col("u0"), 4)))
    stats = rows.select(*[F.avg(f"u{i}").alias(f"m{i}") for i in range(3)],
                        *[F.min(f"u{i}").alias(f"lo{i}") for i in range(3)],
                        *[F.max(f"u{i}").alias(f"hi{i}") for i in range(3)],
                        F.corr("u0", "u1").alias("c01"), F.corr("u1", "u2").alias("c12"),
                        *[F.avg((F.col("pick") == k).cast("double")).alias(f"p{k}") for k in range(4)]).first()
    for i in range(3):
        assert abs(stats[f"m{i}"] - 0.5) < 0.01 and stats[f"lo{i}"] >= 0.0 and stats[f"hi{i}"] < 1.0
    assert abs(stats.c01) < 0.02 and abs(stats.c12) < 0.02
    # P(index) = cdf[i] - cdf[i-1]; an empty bin (0.5 -> 0.5) is never picked; rounding below 1
    # at the end falls to the last index.
    assert abs(stats.p0 - 0.2) < 0.01 and abs(stats.p1 - 0.3) < 0.012 and stats.p2 == 0.0
    assert abs(stats.p3 - 0.5) < 0.012


@pytest.mark.parametrize("size", [1, 2, 4, 12, 13])
def test_packed_cdf_draws_the_same_index_as_the_cdf_it_packs(spark, size):
    from features.simulator.randomness import (hash64, packed_cdf, packed_cdf_words, pick_index, pick_index_packed,
                                               split_bits, split_uniform, uniform)

    h = F.col("h")
    u = split_uniform(h, 0, 3)
    # Per row a non-decreasing cdf: random values, some equal to the row's draw or a hair above
    # it (within and at the next step of the draws' 2^-21 grid), some above 1 by a rounding
    # error, then the last value 1.
    def value(i: int):
        coin = uniform(SEED, "coin", F.col("id"), F.lit(i))
        return (F.when(coin < 0.2, u).when(coin < 0.3, u + F.lit(2.0 ** -23)).when(coin < 0.4, u + F.lit(2.0 ** -21))
                .when(coin > 0.95, F.lit(1.0 + 2.0 ** -52)).otherwise(uniform(SEED, "cdf", F.col("id"), F.lit(i))))
    inner = F.array_sort(F.array(*[value(i) for i in range(size - 1)])) if size > 1 else F.array().cast("array<double>")
    words = packed_cdf([F.col("cdf")[i] for i in range(size)])
    assert len(words) == packed_cdf_words(size)
    rows = (spark.range(0, 40_000, numPartitions=2).withColumn("h", hash64(SEED, "test", F.col("id")))
            .withColumn("cdf", F.concat(inner, F.array(F.lit(1.0))))
            .withColumn("tie", F.array_contains("cdf", u))
            .withColumn("plain", pick_index(F.col("cdf"), u, size))
            .withColumn("packed", pick_index_packed(words, split_bits(h, 0, 3), size)))
    got = rows.select(F.count_if(F.col("plain") != F.col("packed")).alias("differ"),
                      F.count_if("tie").alias("ties"), F.count_distinct("plain").alias("indices")).first()
    assert got.differ == 0
    assert got.indices == size
    if size > 1:
        assert got.ties > 1000


def test_json_gzip_level_changes_the_compression_and_not_the_records(world, tmp_path):
    import gzip

    from demandcast.settings.generate import SimulatorFlaws
    from features.simulator import landing

    week = world.events.where(F.col("event_date") < dt.date(2025, 3, 8))
    landed = landing.with_flaws(week, SimulatorFlaws(bad_row_fraction=0.05), SEED)

    def written(level: int) -> tuple[list[str], int]:
        root = tmp_path / f"level{level}"
        landing.write_json(landed, str(root), gzip_level=level)
        files = sorted(root.rglob("*.json.gz"))
        assert files
        lines = sorted(line for f in files for line in gzip.open(f, "rt").read().splitlines())
        return lines, sum(f.stat().st_size for f in files)

    fast, fast_bytes = written(1)
    small, small_bytes = written(9)
    assert fast == small and len(fast) > 1000
    assert fast_bytes > 1.05 * small_bytes  # the level reached the compressor
    with pytest.raises(ValueError, match="gzip_level"):
        landing.write_json(landed, str(tmp_path / "bad"), gzip_level=0)
