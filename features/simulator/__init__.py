"""A Spark-native e-commerce behaviour simulator with planted, exactly computable truth.

Modules: randomness (hash-based draws), population (users with latents, items, categories),
calendar (seasonality, promotions), behaviour (daily probabilities and the funnel), truth
(ground truth per user and cutoff), landing (raw files with flaws). See docs/SIMULATOR.md.
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from pyspark.sql import DataFrame, SparkSession

from demandcast.settings.generate import GenerateSettings
from features.simulator import behaviour, landing, population, truth


@dataclass
class SimulatedWorld:
    users: DataFrame  # latents included (never written raw)
    items: DataFrame
    stats: population.CategoryStats
    events: DataFrame  # true events, before landing flaws


def simulate(spark: SparkSession, s: GenerateSettings, seed: int) -> SimulatedWorld:
    """The world of a seed."""
    users = population.users(spark, s, seed)
    items = population.items(spark, s, seed).cache()
    stats = population.category_stats(items, s.n_categories)
    return SimulatedWorld(users=users, items=items, stats=stats,
                          events=behaviour.events(users, items, stats, s, seed))


def ground_truth(world: SimulatedWorld, s: GenerateSettings, seed: int,
                 cutoffs: list[dt.date], window_days: int) -> DataFrame:
    return truth.ground_truth(world.users, world.stats, s, seed, cutoffs, window_days)


__all__ = ["SimulatedWorld", "simulate", "ground_truth", "landing", "population"]
