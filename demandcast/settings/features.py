"""Settings of the `features` stage (conf section `features`)."""
from __future__ import annotations

import datetime as dt
from pydantic import Field, model_validator

from demandcast.settings.base import Section


class FeaturesSettings(Section):
    # One snapshot to compute instead of the root `snapshot_dates` (e.g. --set features.snapshot_date=2026-03-01).
    snapshot_date: dt.date | None = None
    # A backfill range: every `range_step_days`-th day from range_start to range_end inclusive.
    range_start: dt.date | None = None
    range_end: dt.date | None = None
    range_step_days: int = Field(7, ge=1)
    # Windows (days before the snapshot) of the frequency and monetary features.
    windows_days: list[int] = [1, 7, 30, 90, 365]
    # Window of the session, weekday/hour profile, category affinity and category context features.
    profile_window_days: int = Field(90, ge=1)
    # Window of the price-level features (average price viewed/bought, promotion share).
    price_window_days: int = Field(365, ge=1)
    # Windows of the funnel ratios.
    funnel_windows_days: list[int] = [30, 365]
    # Pseudo-count of the funnel ratios: the ratio is shrunk towards the population rate with
    # this many pseudo-events, so a user with 1 view and 1 purchase does not get rate 1.0.
    funnel_prior_strength: float = Field(5.0, ge=0)
    # Number of top categories (by views in the profile window) kept as categorical features.
    top_k_categories: int = Field(3, ge=1, le=20)
    # Customers (with a purchase before the snapshot) a snapshot's BG/NBD, Pareto/NBD and
    # Gamma-Gamma parameters are fitted on, on the driver: a sample chosen by a hash of user_key.
    btyd_fit_max_customers: int = Field(20_000, ge=100, le=1_000_000)
    # Event types of the source data that play the roles view, cart and purchase.
    view_event: str = "view"
    cart_event: str = "add_to_cart"
    purchase_event: str = "purchase"
    # How many days after the last event date a snapshot may lie. 1 is the everyday case (score
    # today on everything up to yesterday); more accepts that days with no events (an outage, a
    # landing delay) read as inactivity in recency, frequency and trend features.
    max_days_after_last_event: int = Field(1, ge=1, le=366)
    # Write labels only for snapshots whose whole label window lies inside the ingested events.
    require_complete_label_window: bool = True
    # Rewrite snapshots even when they were computed from the current user_daily version with
    # the same feature spec (a rerun normally leaves those untouched and commits nothing).
    rewrite_up_to_date: bool = False

    @model_validator(mode="after")
    def _check(self) -> "FeaturesSettings":
        if (self.range_start is None) != (self.range_end is None):
            raise ValueError("set both features.range_start and features.range_end, or neither")
        if self.range_start and self.range_end and self.range_start > self.range_end:
            raise ValueError("features.range_start is after features.range_end")
        for w in [*self.windows_days, *self.funnel_windows_days]:
            if not 1 <= w <= 3660:
                raise ValueError(f"window of {w} days is out of range 1..3660")
        if len({self.view_event, self.cart_event, self.purchase_event}) != 3:
            raise ValueError("features.view_event, cart_event and purchase_event must differ")
        return self
