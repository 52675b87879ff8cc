"""Which labelled snapshots a scheduled retrain uses, and on which days run-all retrains.

A run for day D trains on a rolling window of the snapshots that have labels by then (their
label window closed before D): the newest, then earlier ones at least `window_step_days` apart
(daily snapshots of the same users a day apart add little but rows), limited by a count, a span
or both. Pure date logic: the job reads the snapshot dates (partition values) from the tables.
"""
from __future__ import annotations

import datetime as dt
from typing import Iterable

from demandcast.errors import StageFailed
from demandcast.settings.train import TrainSettings

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def rolling_window(labelled: Iterable[dt.date], as_of: dt.date, count: int | None,
                   span_days: int | None, step_days: int) -> list[dt.date]:
    """The training snapshots for day `as_of`, ascending, from the labelled ones on or before it."""
    candidates = sorted((d for d in set(labelled) if d <= as_of), reverse=True)
    if not candidates:
        return []
    newest = candidates[0]
    chosen: list[dt.date] = []
    for day in candidates:
        if span_days is not None and (newest - day).days >= span_days:
            break
        if chosen and (chosen[-1] - day).days < step_days:
            continue
        chosen.append(day)
        if count is not None and len(chosen) == count:
            break
    return sorted(chosen)


def window_for(settings: TrainSettings, labelled: Iterable[dt.date], as_of: dt.date) -> list[dt.date]:
    """rolling_window with the train settings; a StageFailed naming the keys when it is empty."""
    labelled = set(labelled)
    dates = rolling_window(labelled, as_of, settings.window_snapshots, settings.window_days,
                           settings.window_step_days)
    if not dates:
        newest = max(labelled) if labelled else None
        raise StageFailed(f"as of {as_of} no snapshot has labels yet (newest labelled: {newest}): a "
                          "snapshot's labels are written once its label_window_days have passed; "
                          "train later or set train.snapshot_dates")
    return dates


def retrain_due(settings: TrainSettings, as_of: dt.date) -> bool:
    """Whether run-all --as-of `as_of` retrains (train.schedule, train.schedule_weekday)."""
    return settings.schedule == "daily" or WEEKDAYS[as_of.weekday()] == settings.schedule_weekday
