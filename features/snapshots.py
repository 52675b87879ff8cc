"""Which snapshot dates a `features` run computes: --set features.snapshot_date, else the range
features.range_start..range_end every range_step_days, else as_of (a scheduled run), else the
root `snapshot_dates`; and which snapshots' labels are due."""
from __future__ import annotations

import datetime as dt
from typing import Iterable

from demandcast.errors import ConfigError, DataQualityError


def resolve_snapshots(cfg) -> list[dt.date]:  # cfg: demandcast.config.PipelineConfig
    s = cfg.features
    if s.snapshot_date is not None:
        return [s.snapshot_date]
    if s.range_start is not None and s.range_end is not None:
        days = (s.range_end - s.range_start).days
        return [s.range_start + dt.timedelta(days=i) for i in range(0, days + 1, s.range_step_days)]
    if cfg.as_of is not None:
        return [cfg.as_of]
    if cfg.snapshot_dates:
        return list(cfg.snapshot_dates)
    raise ConfigError("no snapshot date: set snapshot_dates, features.snapshot_date or "
                      "features.range_start/range_end")


def snapshot_source(cfg) -> str:
    """The config key the snapshots came from, for messages that tell the user what to change."""
    s = cfg.features
    if s.snapshot_date is not None:
        return "features.snapshot_date"
    if s.range_start is not None:
        return "features.range_start/range_end"
    if cfg.as_of is not None:
        return "as_of"
    return "snapshot_dates"


def label_window_complete(snapshot: dt.date, window_days: int, last_event_date: dt.date | None) -> bool:
    return last_event_date is not None and snapshot + dt.timedelta(days=window_days - 1) <= last_event_date


def labels_due(with_features: Iterable[dt.date], with_labels: Iterable[dt.date],
               recomputed: Iterable[dt.date], changed_event_dates: Iterable[dt.date],
               window_days: int, last_event_date: dt.date | None) -> list[dt.date]:
    """Snapshots of user_features whose labels must be written now: their window has closed and
    they have no labels yet (a snapshot's labels come days after its features, and a skipped
    day's come with the next run), or their features were just recomputed, or an event date of
    their window was re-aggregated (late events)."""
    labelled, recomputed = set(with_labels), set(recomputed)
    changed = sorted(set(changed_event_dates))

    def window_changed(snapshot: dt.date) -> bool:
        end = snapshot + dt.timedelta(days=window_days - 1)
        return any(snapshot <= day <= end for day in changed)

    return sorted(d for d in set(with_features)
                  if label_window_complete(d, window_days, last_event_date)
                  and (d not in labelled or d in recomputed or window_changed(d)))


def check_snapshots_in_events(snapshots: list[dt.date], first_event: dt.date | None,
                              last_event: dt.date | None, source: str,
                              max_days_after_last_event: int = 1) -> None:
    """Refuses snapshots the events cannot describe, before anything is written.

    Features at D read the events before D. At or before the first event date nobody has any
    history (the snapshot would be empty); more than a day after the last event date the days
    not ingested yet would read as inactivity (recency, frequency and trends silently wrong).
    D = last event date + 1 is the everyday case: score today on everything up to yesterday;
    `max_days_after_last_event` (features.max_days_after_last_event) allows a longer gap.
    """
    if first_event is None or last_event is None:
        raise DataQualityError("the events table has no rows (every ingested row quarantined?): "
                               "no features can be computed; see the quarantine table's reasons "
                               "and ingest valid events first")
    latest = last_event + dt.timedelta(days=max_days_after_last_event)
    early = [d.isoformat() for d in snapshots if d <= first_event]
    late = [d.isoformat() for d in snapshots if d > latest]
    if early or late:
        problems = ([f"{early} on or before the first event date {first_event} (no history)"] if early
                    else []) + ([f"{late} after {latest}, {max_days_after_last_event} day(s) after "
                                 f"the last event date {last_event} (missing days would read as "
                                 "inactivity; features.max_days_after_last_event allows more)"]
                                if late else [])
        raise ConfigError(f"{source}: snapshots {' and '.join(problems)}; pick snapshots in "
                          f"{first_event + dt.timedelta(days=1)}..{latest} or ingest the events "
                          "they need")
