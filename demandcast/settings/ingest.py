"""Settings of the `ingest` stage (conf section `ingest`): raw logs -> events, quarantine, dims."""
from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from demandcast.settings.base import Section

# Letters of Spark's datetime patterns usable for parsing (docs: sql-ref-datetime-pattern).
_PATTERN_LETTERS = "GyDMLdQqEFahKkHmsSVzOXxZ"
DEFAULT_EVENT_TYPES = ["view", "search", "add_to_cart", "remove_from_cart", "purchase"]


class ColumnMapping(Section):
    """How a platform's export maps onto the event contract, without code changes.

    Every source field is available to the mapping as a string in the map `src`
    (JSON keys, CSV header names, Parquet column names).
    """

    # contract column -> source field name (a rename), e.g. {user_id: customer_id}.
    columns: dict[str, str] = {}
    # contract column -> constant value for every row, e.g. {event_type: purchase}.
    constants: dict[str, str] = {}
    # contract column -> Spark SQL expression over `src`, e.g.
    # {price: "try_divide(try_cast(src['amount'] AS DOUBLE), try_cast(src['qty'] AS DOUBLE))"}.
    derive: dict[str, str] = {}
    # contract column -> value used when the field is missing or empty.
    defaults: dict[str, str] = {}
    # contract column -> {source value: contract value}, applied to the trimmed value after
    # columns/constants/derive; values not listed pass unchanged. Codes differ between platforms
    # (REES46 'cart', Retailrocket 'addtocart'), and a lookup is clearer than a CASE expression.
    # event_type is matched case-insensitively (it is lower-cased before the lookup).
    values: dict[str, dict[str, str]] = {}
    # None: event_id comes from the source (and is required). A list: the source has no event
    # id and it is a hash of these contract columns after mapping; [] hashes the raw record.
    event_id_from: list[str] | None = None
    # With event_id_from: identical records of a batch are separate events, not duplicates (an
    # invoice export repeats a line when the same item is scanned twice). The n-th copy (n > 1)
    # gets the id hash(fields, n), so a rerun of the same files yields the same ids.
    repeats_are_events: bool = False
    # Decimal separator of price and quantity: "," reads "12,50" and "1.081,98" (European
    # exports; '.', ' ' and no-break spaces are then digit grouping and dropped).
    decimal_separator: Literal[".", ","] = "."
    # Java DateTimeFormatter pattern of event_time, e.g. "dd/MM/yyyy HH:mm"; None accepts
    # ISO-8601 (with or without offset), "yyyy-MM-dd[ HH:mm:ss]" and epoch seconds/milliseconds.
    timestamp_format: str | None = None
    # Zone of timestamps that carry no offset (IANA name); timestamps with an offset keep theirs.
    source_timezone: str = "UTC"

    @field_validator("source_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        import zoneinfo

        if re.fullmatch(r"[+-]\d{2}:\d{2}", value):
            return value
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Europe/Paris, or +HH:MM)")
        return value

    @field_validator("timestamp_format")
    @classmethod
    def _pattern_letters(cls, value: str | None) -> str | None:
        # Spark fails only when the first row is parsed, deep in a stage: check the letters here.
        # Text between single quotes is literal ('T', 'UTC'); week-based letters are refused by Spark 3+.
        if value is None:
            return value
        if not value.strip():
            raise ValueError("empty pattern (use null for ISO-8601 or epoch)")
        unquoted = re.sub(r"'[^']*'", "", value)
        if unquoted.count("'"):
            raise ValueError(f"unbalanced quote in {value!r}")
        bad = sorted({c for c in unquoted if c.isalpha() and c not in _PATTERN_LETTERS})
        if bad:
            raise ValueError(f"{bad} in {value!r} are not date-time pattern letters ({_PATTERN_LETTERS}); "
                             "quote literal text, e.g. \"yyyy-MM-dd HH:mm:ss 'UTC'\"")
        return value

    @model_validator(mode="after")
    def _repeats_need_hashed_ids(self) -> "ColumnMapping":
        if self.repeats_are_events and self.event_id_from is None:
            raise ValueError("repeats_are_events needs event_id_from (ids hashed from fields): with ids from "
                             "the source, a repeated id is a duplicate")
        return self


class ValidationLimits(Section):
    allowed_event_types: list[str] = DEFAULT_EVENT_TYPES
    max_price: float = Field(100_000.0, gt=0)
    max_quantity: int = Field(1_000, ge=1)
    # Events before this date are rejected (clock errors, epoch-zero defaults).
    time_floor: dt.date = dt.date(2000, 1, 1)
    # Events later than the ingest clock plus this many minutes are rejected.
    max_future_minutes: int = Field(60, ge=0)
    max_string_length: int = Field(256, ge=1)


class IngestSettings(Section):
    # json: JSON lines; json_document: each file one JSON array of objects (read whole: small
    # exports and API dumps); csv; parquet.
    format: Literal["json", "json_document", "csv", "parquet"] = "json"
    # Files or folders to read. Empty: {raw_dir}/events/{format}. Folders are read recursively.
    paths: list[str] = []
    # Inclusive range of `event_date=YYYY-MM-DD` landing folders to read (None: no bound).
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    # With as_of (a scheduled run): the landing folders read are as_of - late_margin_days .. as_of
    # (date_from/date_to, when set, win), and a file already ingested (same path and size, in the
    # ingested_files table) is not read again, so a rerun of the day commits nothing and a bad
    # row is quarantined once. The margin catches files landing late in an earlier day's folder;
    # events dated earlier than their folder need none (user_daily re-aggregates their dates).
    late_margin_days: int = Field(2, ge=0, le=366)
    # Reader options for CSV (Spark names); the header row names the source fields.
    csv_options: dict[str, str] = {"header": "true", "sep": ","}
    mapping: ColumnMapping = ColumnMapping()
    validation: ValidationLimits = ValidationLimits()
    # Above this share of bad rows the job exits 3 and commits nothing.
    max_bad_fraction: float = Field(0.05, ge=0, le=1)
    # Default: derived from the input file list (paths, sizes), so a rerun is the same batch.
    batch_id: str | None = None
    # Dimension exports (Parquet). None: {raw_dir}/users and {raw_dir}/items, where a missing or
    # empty folder means the platform has no such export: no table is created or changed (the
    # features stage then has no dimension). A path given here must exist.
    users_path: str | None = None
    items_path: str | None = None
    ingest_dimensions: bool = True
    # users and items keep their history (type-2): each row is one version of a key's
    # attributes, valid from `valid_from` (the first day the values are known) until `valid_to`
    # (exclusive; null while current). A row's valid_from is, first that applies:
    #   1. the date in this export column (text 'yyyy-MM-dd...' or a date), when set and the
    #      row has a value; it must say since when the row's values hold (an updated_at), not a
    #      fixed date such as a signup date, or a changed value would correct the old version
    #      instead of starting a new one;
    #   2. the date of the file's landing folder `export_date=YYYY-MM-DD` (anywhere in its path);
    #   3. dimensions_export_date, or, when that is null, as_of, or the UTC date of the ingest run.
    # A version whose values equal the previous one's adds nothing, so re-ingesting an export
    # changes nothing. An export older than the current version (a late or replayed one) is put
    # into the history at its date: the versions around it are cut or merged, none is lost.
    # Two rows of a key with the same valid_from: the later file's wins within an export, the
    # export being ingested wins over the table (a correction). A key missing from an export
    # keeps its current version (an export may hold changed rows only).
    users_valid_from_column: str | None = None
    items_valid_from_column: str | None = None
    dimensions_export_date: dt.date | None = None

    @field_validator("batch_id")
    @classmethod
    def _safe_batch_id(cls, value: str | None) -> str | None:
        if value is not None and (not value or not all(c.isalnum() or c in "-_." for c in value)):
            raise ValueError("batch_id may hold letters, digits, '-', '_' and '.' only")
        return value

    @field_validator("users_valid_from_column", "items_valid_from_column")
    @classmethod
    def _field_name(cls, value: str | None, info: ValidationInfo) -> str | None:
        # A blank or padded name would silently match no field, and every row would fall back.
        if value is not None and (not value.strip() or value != value.strip()):
            raise ValueError(f"{value!r} is not a field name of the export (null for none)")
        key = {"users_valid_from_column": "user_id", "items_valid_from_column": "item_id"}[info.field_name]
        if value == key:
            raise ValueError(f"{value!r} is the export's key field; name its date field")
        return value

    @model_validator(mode="after")
    def _date_range(self) -> "IngestSettings":
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError(f"date_from {self.date_from} is after date_to {self.date_to}")
        return self
