"""The feature catalog: every feature column's name, description, type, window and source.

The family modules declare their features as `Feature`s (metadata plus the expression that
computes them); `feature_catalog` collects them in output order. The table's column comments and
docs/FEATURES.md are generated from this list, and `assemble` checks that the feature table has
exactly these columns, so the catalog cannot drift from the code.

Regenerate the document with `python -m features.catalog` (tests/test_features_catalog.py fails
when it is stale).
"""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

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


KEY_COMMENTS = {
    "user_key": "Pseudonymous user id (HMAC of the raw id).",
    "snapshot_date": "Features use only events with event_time < this date (00:00 UTC).",
}


def feature_catalog(spec: FeatureSpec = FeatureSpec()) -> list[Feature]:
    """All feature columns in the order of the user_features table (keys excluded)."""
    from features.families import FAMILIES

    features: list[Feature] = []
    for family in FAMILIES:
        features.extend(family.definitions(spec))
    names = [f.name for f in features]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise ValueError(f"feature names defined twice: {sorted(duplicates)}")
    return features


def column_comments(spec: FeatureSpec = FeatureSpec()) -> dict[str, str]:
    comments = dict(KEY_COMMENTS)
    for f in feature_catalog(spec):
        comments[f.name] = f"{f.description} [{f.dtype}; window {f.window}; source {f.source}]"
    return comments


def render_markdown(features: Sequence[Feature]) -> str:
    lines = [
        "# Feature catalog",
        "",
        "Generated from the code by `python -m features.catalog` (default settings); do not edit.",
        "One row per user with any event before the snapshot date D; every feature uses only",
        "events with event_time < D (00:00 UTC). Windows are whole days before D: `_last_7d` covers",
        "the days D-7 .. D-1. Defaults when there is no history: counts and sums are 0; ratios,",
        "averages and `days_since_*` are null (the `has_*` columns say whether the event type was",
        "ever seen); categorical columns are null. Numeric features are int or double, categorical",
        "features are strings.",
        "",
        "| name | family | type | window | source | description |",
        "|---|---|---|---|---|---|",
    ]
    for f in features:
        lines.append(f"| `{f.name}` | {f.family} | {f.dtype} | {f.window} | {f.source} | "
                     f"{f.description} |")
    return "\n".join(lines) + "\n"


DOC_PATH = Path(__file__).resolve().parent.parent / "docs" / "FEATURES.md"


def label_section(spec: FeatureSpec = FeatureSpec()) -> str:
    return "\n".join([
        "",
        "# Labels (`labels` table)",
        "",
        f"For snapshot D, the label window is the events with D <= event_time < D + N days "
        f"(N = `label_window_days`, default {spec.label_window_days}): the N whole days starting at D.",
        "Features use event_time < D, so the two never overlap. Every user of the feature table",
        "has a label row (0 / empty map when they bought nothing).",
        "",
        "| name | type | description |",
        "|---|---|---|",
        "| `label_purchased` | int | 1 if the user made at least one purchase in the window, else 0 |",
        "| `label_spend` | double | sum of price x quantity of the window's purchases |",
        "| `label_n_purchases` | int | number of purchase events in the window |",
        "| `label_category_spend` | map<string,double> | spend per category bought in the window |",
        "",
    ])


def write_doc(path: Path = DOC_PATH) -> Path:
    path.write_text(render_markdown(feature_catalog()) + label_section())
    return path


if __name__ == "__main__":
    print(f"wrote {write_doc()} on {dt.date.today()}")
