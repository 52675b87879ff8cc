"""Which snapshot dates a `features` run computes: --set features.snapshot_date, else the range
features.range_start..range_end every range_step_days, else the root `snapshot_dates`."""
from __future__ import annotations

import datetime as dt

from demandcast.errors import ConfigError, DataQualityError


def resolve_snapshots(cfg) -> list[dt.date]:  # cfg: demandcast.config.PipelineConfig
    s = cfg.features
    if s.snapshot_date is not None:
        return [s.snapshot_date]
    if s.range_start is not None and s.range_end is not None:
        days = (s.range_end - s.range_start).days
        return [s.range_start + dt.timedelta(days=i) for i in range(0, days + 1, s.range_step_days)]
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
    return "snapshot_dates"


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
