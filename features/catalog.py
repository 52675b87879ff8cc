"""The feature catalog: every feature column's name, description, type, window and source.

The family modules declare their features as `Feature`s (metadata plus the expression that
computes them); `feature_catalog` collects them in output order. The table's column comments and
docs/FEATURES.md are generated from this list, and `assemble` checks that the feature table has
exactly these columns, so the catalog cannot drift from the code.

Regenerate the document with `python -m features.catalog` (tests/test_features.py fails when
it is stale).
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Sequence

from features.families import FAMILIES
from features.feature_spec import Feature, FeatureSpec

KEY_COMMENTS = {
    "user_key": "Pseudonymous user id (HMAC of the raw id).",
    "snapshot_date": "Features use only events with event_time < this date (00:00 UTC).",
}


def feature_catalog(spec: FeatureSpec = FeatureSpec()) -> list[Feature]:
    """All feature columns in the order of the user_features table (keys excluded)."""
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
