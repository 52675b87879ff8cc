"""What a feature is (`Feature`: name, description, type, window, source and the expression that
computes it) and the parameters every feature depends on (`FeatureSpec`, from the `features`
settings). The families declare their features with these; features.catalog lists them."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Literal

from pyspark.sql import Column

from features.daily import EventRoles

DType = Literal["int", "double", "string"]


@dataclass(frozen=True)
class FeatureSpec:
    """The parameters the features depend on (from the `features` settings)."""

    windows_days: tuple[int, ...] = (1, 7, 30, 90, 365)
    profile_window_days: int = 90
    price_window_days: int = 365
    funnel_windows_days: tuple[int, ...] = (30, 365)
    funnel_prior_strength: float = 5.0
    top_k_categories: int = 3
    label_window_days: int = 30
    btyd_fit_max_customers: int = 20_000
    roles: EventRoles = EventRoles()

    @classmethod
    def from_config(cls, cfg) -> "FeatureSpec":  # cfg: demandcast.config.PipelineConfig
        s = cfg.features
        return cls(
            windows_days=tuple(sorted(set(s.windows_days))),
            profile_window_days=s.profile_window_days,
            price_window_days=s.price_window_days,
            funnel_windows_days=tuple(sorted(set(s.funnel_windows_days))),
            funnel_prior_strength=s.funnel_prior_strength,
            top_k_categories=s.top_k_categories,
            label_window_days=cfg.label_window_days,
            btyd_fit_max_customers=s.btyd_fit_max_customers,
            roles=EventRoles(s.view_event, s.cart_event, s.purchase_event),
        )

    @property
    def all_windows(self) -> tuple[int, ...]:
        """Every window some feature sums over (the conditional sums of one pass)."""
        trend = (7, 30, 90, 365)
        return tuple(sorted({*self.windows_days, *self.funnel_windows_days, *trend,
                             self.profile_window_days, self.price_window_days, 30}))


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    dtype: DType
    family: str
    source: str
    window_days: int | None = None
    # Builds the column from the window totals; None when the family computes it as a table.
    compute: Callable[[], Column] | None = field(default=None, compare=False, repr=False)

    @property
    def window(self) -> str:
        return f"{self.window_days}d" if self.window_days else "all history"
