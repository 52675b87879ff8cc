"""Calendar effects of one simulated day: weekly and yearly seasonality, promotions.

Defined for any integer day offset from the start date (also beyond the simulated range), so the
ground truth of a label window is computable wherever the window falls. Computed on rows of
days (a few hundred), never per user-day: `with_calendar` adds them to a table of days that is
then joined to the users.
"""
from __future__ import annotations

import datetime as dt
import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from features.simulator.randomness import uniform

# Activity multiplier Monday..Sunday: weekends browse more.
WEEKLY_PROFILE = (0.92, 0.92, 0.95, 1.0, 1.06, 1.2, 1.12)
# Yearly swing of activity, peaking in mid-December (day of year 350).
YEARLY_AMPLITUDE = 0.2
YEARLY_PEAK_DAY = 350
PROMO_LENGTH_DAYS = 3
# A promotion multiplies the daily visit probability by (1 + lift).
PROMO_ACTIVITY_LIFT = 0.6


def day_date(start_date: dt.date, day: Column) -> Column:
    return F.date_add(F.lit(start_date), day.cast("int"))


def seasonality(start_date: dt.date, day: Column) -> Column:
    """Multiplier of the visit probability on `day` (weekly x yearly)."""
    date = day_date(start_date, day)
    monday_first = (F.dayofweek(date) + 5) % 7  # Spark: Sunday=1 .. Saturday=7
    weekly = F.element_at(F.array(*[F.lit(w) for w in WEEKLY_PROFILE]), monday_first + 1)
    yearly = F.lit(1.0) + F.lit(YEARLY_AMPLITUDE) * F.cos(
        F.lit(2 * math.pi / 365.25) * (F.dayofyear(date) - F.lit(YEARLY_PEAK_DAY)))
    return weekly * yearly


def is_promotion(seed: int, promo_start_rate: float, day: Column) -> Column:
    """A promotion starts on a day with probability `promo_start_rate` and runs 3 days."""
    starts = [uniform(seed, "promo_start", day - F.lit(lag)) < F.lit(promo_start_rate)
              for lag in range(PROMO_LENGTH_DAYS)]
    result = starts[0]
    for started in starts[1:]:
        result = result | started
    return result


def with_calendar(days: DataFrame, start_date: dt.date, seed: int, promo_start_rate: float,
                  promo_discount: float) -> DataFrame:
    """Adds to rows with an integer `day`: is_promo, discount (price cut that day) and
    visit_multiplier (seasonality x promotion lift of the visit probability)."""
    day = F.col("day")
    promo = is_promotion(seed, promo_start_rate, day)
    return (
        days.withColumn("is_promo", promo)
        .withColumn("discount", F.when(F.col("is_promo"), F.lit(promo_discount)).otherwise(F.lit(0.0)))
        .withColumn("visit_multiplier", seasonality(start_date, day)
                    * F.when(F.col("is_promo"), F.lit(1 + PROMO_ACTIVITY_LIFT)).otherwise(F.lit(1.0)))
    )
