"""The one schema contract of a behaviour event: names, types, required or optional, limits.

Raw sources (JSON lines, CSV, Parquet; any platform's names through the config's column
mapping) are reduced to these fields before validation; the Bronze `events` table holds them
typed, with `user_id` replaced by `user_key` (features/ingest/pseudonymise.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FieldType = Literal["string", "timestamp", "double", "int"]


@dataclass(frozen=True)
class EventField:
    name: str
    type: FieldType
    required: bool
    comment: str


FIELDS: tuple[EventField, ...] = (
    EventField("event_id", "string", True, "unique id of the event (dedup key)"),
    EventField("user_id", "string", True, "platform user id (raw; hashed to user_key at ingest)"),
    EventField("session_id", "string", False, "platform session id"),
    EventField("event_time", "timestamp", True, "when the event happened, normalised to UTC"),
    EventField("event_type", "string", True, "kind of event, one of the allowed event types"),
    EventField("item_id", "string", False, "item the event is about"),
    EventField("category_id", "string", False, "category of the item or of the search"),
    EventField("price", "double", False, "unit price paid or shown, in the shop currency"),
    EventField("quantity", "int", False, "units (carts and purchases)"),
    EventField("device", "string", False, "device class"),
    EventField("channel", "string", False, "marketing channel of the session"),
)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)
REQUIRED: tuple[str, ...] = tuple(f.name for f in FIELDS if f.required)
# Fields an event of a given type cannot do without (in addition to REQUIRED).
REQUIRED_BY_EVENT_TYPE: dict[str, tuple[str, ...]] = {
    "purchase": ("price", "quantity"),
    "add_to_cart": ("item_id",),
    "remove_from_cart": ("item_id",),
}
# Landing-folder keys a reader may add; they describe the file, not the event.
IGNORED_SOURCE_FIELDS = ("event_date",)


def field(name: str) -> EventField:
    for f in FIELDS:
        if f.name == name:
            return f
    raise KeyError(f"{name!r} is not a field of the event contract; fields are {FIELD_NAMES}")


class Reason:
    """Quarantine reason codes (the `reason` column). Row-level first, then file-level."""

    MALFORMED_RECORD = "malformed_record"          # not parseable (JSON syntax, CSV column count)
    MISSING_REQUIRED = "missing_required"          # a required field is absent or empty
    WRONG_TYPE = "wrong_type"                      # a value does not parse as the field's type
    UNKNOWN_EVENT_TYPE = "unknown_event_type"      # event_type not in the allowed list
    PRICE_OUT_OF_RANGE = "price_out_of_range"      # negative or above validation.max_price
    QUANTITY_OUT_OF_RANGE = "quantity_out_of_range"  # below 1 or above validation.max_quantity
    TIME_IN_FUTURE = "time_in_future"              # after the ingest clock + max_future_minutes
    TIME_BEFORE_FLOOR = "time_before_floor"        # before validation.time_floor
    STRING_TOO_LONG = "string_too_long"            # longer than validation.max_string_length
    # File-level: one quarantine row per file (raw_record null, detail says why).
    EMPTY_FILE = "empty_file"
    UNREADABLE_FILE = "unreadable_file"            # truncated gzip, corrupt Parquet, cut-off JSON document
    FOREIGN_SCHEMA = "foreign_schema"              # no record carries the contract, or a CSV header differs

    ROW_LEVEL = (MALFORMED_RECORD, MISSING_REQUIRED, WRONG_TYPE, UNKNOWN_EVENT_TYPE,
                 PRICE_OUT_OF_RANGE, QUANTITY_OUT_OF_RANGE, TIME_IN_FUTURE, TIME_BEFORE_FLOOR,
                 STRING_TOO_LONG)
    FILE_LEVEL = (EMPTY_FILE, UNREADABLE_FILE, FOREIGN_SCHEMA)
