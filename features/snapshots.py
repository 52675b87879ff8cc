"""Which snapshot dates a `features` run computes: --set features.snapshot_date, else the range
features.range_start..range_end every range_step_days, else the root `snapshot_dates`."""
from __future__ import annotations

import datetime as dt

from demandcast.errors import ConfigError


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
