"""Sessions and activity profile: sessions, events per session, session length, active days,
weekend share and hour-of-day profile (UTC), over the profile window."""
from __future__ import annotations

from pyspark.sql import DataFrame

from features.feature_spec import Feature, FeatureSpec
from features.daily import DAY_PARTS
from features.families.common import ratio, total, with_features

FAMILY = "sessions"


def definitions(spec: FeatureSpec) -> list[Feature]:
    w = spec.profile_window_days
    features = [
        Feature(f"sessions_last_{w}d",
                f"Sessions in the {w} days before the snapshot (a session spanning midnight "
                "counts on each day it has events).", "int", FAMILY, "user_daily.sessions", w,
                compute=lambda: total("sessions", w)),
        Feature(f"events_per_session_last_{w}d", f"Events per session in the {w} days before the "
                "snapshot; null without sessions.", "double", FAMILY,
                "user_daily.events, user_daily.sessions", w,
                compute=lambda: ratio(total("events", w), total("sessions", w))),
        Feature(f"avg_session_minutes_last_{w}d", "Average session length in minutes (first to last "
                f"event of the session on a day) in the {w} days before the snapshot.", "double",
                FAMILY, "user_daily.session_seconds, user_daily.sessions", w,
                compute=lambda: ratio(total("session_seconds", w), total("sessions", w)) / 60.0),
    ]
    for days in sorted({30, w}):
        features.append(Feature(
            f"active_days_last_{days}d", f"Days with at least one event in the {days} days before "
            "the snapshot.", "int", FAMILY, "user_daily.active_days", days,
            compute=lambda days=days: total("active_days", days)))
    features.append(Feature(
        f"share_events_weekend_last_{w}d", f"Share of events on Saturday or Sunday (UTC) in the {w} "
        "days before the snapshot.", "double", FAMILY, "user_daily.weekend_events", w,
        compute=lambda: ratio(total("weekend_events", w), total("events", w))))
    for part, (lo, hi) in DAY_PARTS.items():
        features.append(Feature(
            f"share_events_{part}_last_{w}d", f"Share of events between {lo:02d}:00 and {hi:02d}:00 "
            f"UTC in the {w} days before the snapshot.", "double", FAMILY,
            f"user_daily.events_{part}", w,
            compute=lambda part=part: ratio(total(f"events_{part}", w), total("events", w))))
    return features


def add_session_features(totals: DataFrame, spec: FeatureSpec) -> DataFrame:
    return with_features(totals, definitions(spec))
