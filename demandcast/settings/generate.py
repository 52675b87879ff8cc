"""Settings of the `generate` stage (conf section `generate`): the behaviour simulator."""
from __future__ import annotations

import datetime as dt
from typing import Literal

from pydantic import Field, field_validator

from demandcast.settings.base import Section


class SimulatorFlaws(Section):
    """Realistic defects in the raw landing files, so ingest's exactly-once and quarantine show."""

    # Events written twice with the same event_id (a platform retrying a delivery).
    duplicate_fraction: float = Field(0.01, ge=0, le=0.5)
    # Events landing in the folder of a later day (1-2 days late); event_time stays true.
    late_fraction: float = Field(0.01, ge=0, le=0.5)
    # Extra invalid records: malformed JSON, missing user_id, unknown event type, negative price,
    # absurd quantity, future timestamp, oversized string, non-numeric price.
    bad_row_fraction: float = Field(0.001, ge=0, le=0.2)


class PlantedShift(Section):
    """A change of the simulated world from a date on, for testing drift checks: prices scaled
    and a share of sessions moved to one device. Purchase behaviour (and the ground truth) is
    unchanged: only what the features observe moves."""

    # First day of the changed world; None = no change.
    from_date: dt.date | None = None
    # Every price (list and promotion) multiplied by this from from_date on.
    price_factor: float = Field(1.0, gt=0)
    # This share of active days use `device` instead of the user's usual device choice.
    device: Literal["mobile_app", "mobile_web", "desktop", "tablet"] = "tablet"
    device_share: float = Field(0.0, ge=0, le=1)


class GenerateSettings(Section):
    n_users: int = Field(20_000, ge=1)
    n_items: int = Field(5_000, ge=1)
    n_categories: int = Field(12, ge=1, le=64)
    start_date: dt.date = dt.date(2025, 1, 1)
    n_days: int = Field(180, ge=1, le=3660)
    # Mean number of events on a day a user is active (browsing depth; purchases add 3 per line).
    mean_events_per_active_day: float = Field(5.0, ge=1.0, le=50.0)
    # Mean daily probability that a user visits (before seasonality, promotions and churn).
    mean_daily_activity: float = Field(0.06, gt=0, lt=1)
    # Mean probability that an active day ends with a purchase (before promotions).
    mean_conversion: float = Field(0.12, gt=0, lt=1)
    # Mean daily churn hazard; a user's lifetime is exponential with a per-user rate around it.
    mean_churn_hazard: float = Field(1 / 300, ge=0, lt=1)
    # Probability that a promotion (3 days, site-wide discount) starts on a given day.
    promo_start_rate: float = Field(0.03, ge=0, le=1)
    promo_discount: float = Field(0.2, ge=0, lt=1)
    # Landing formats of the events. The default is what ingest reads by default (ingest.format:
    # json); each further format writes every event again (its events are simulated again too).
    formats: list[Literal["json", "parquet"]] = ["json"]
    # What lands: `events`, the full behaviour log (sessions, views, carts, purchases) with the
    # users and items files; or `purchases`, an order export of the same world and truth, one
    # CSV line `customer_id,date,quantity,amount` per purchase under raw_dir/transactions, no
    # dimension files (what conf/examples/transactions.yaml reads).
    export: Literal["events", "purchases"] = "events"
    # zlib level of the JSON files' gzip (1 fastest .. 9 smallest). Level 1 writes them in about
    # half the CPU of zlib's default 6 for ~20% more bytes.
    json_gzip_level: int = Field(1, ge=1, le=9)
    # Output files per event-date folder, per format.
    files_per_day: int = Field(1, ge=1, le=64)
    # Generating tasks: ceil(partitions / files_per_day) blocks of consecutive days, times
    # files_per_day user slices; each task writes whole date folders (output does not depend on it).
    partitions: int = Field(8, ge=1)
    flaws: SimulatorFlaws = SimulatorFlaws()
    shift: PlantedShift = PlantedShift()

    @field_validator("formats")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one output format")
        return sorted(set(value))
