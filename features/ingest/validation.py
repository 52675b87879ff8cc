"""Contract checks: string fields in, typed fields and a list of problems per row out.

Pure transformations (no I/O). A row is good when `problems` is empty; otherwise its first
problem is the quarantine reason and all of them are the detail.
"""
from __future__ import annotations

import datetime as dt

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from demandcast.settings.ingest import ColumnMapping, ValidationLimits
from features.ingest.event_contract import FIELDS, REQUIRED, REQUIRED_BY_EVENT_TYPE, Reason

_PROBLEM = "struct<reason:string,detail:string>"
# A time followed by a zone: 'Z', '+02', '+0200', '+02:00', 'UTC', 'GMT+2' or a region such as
# 'Europe/London' (REES46 writes '2019-10-01 00:00:00 UTC'); Spark's cast honours all of them,
# and such text must not be shifted again by source_timezone.
_ZONE = r"(Z|[+-][0-9]{2}(:?[0-9]{2})?|(UTC|GMT|UT)([+-][0-9]{1,2}(:?[0-9]{2})?)?|[A-Za-z]+(/[A-Za-z0-9_+-]+)+)"
_HAS_OFFSET = r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]+)?)?\s*" + _ZONE + "$"
# Java's ZonedDateTime.toString() appends the region in brackets: '...+01:00[Europe/Paris]'.
_BRACKETED_ZONE = r"\s*\[([A-Za-z][A-Za-z0-9_/+-]*)\]$"
# Java leaves out zero seconds ('2025-03-01T10:00+01:00'), which Spark's cast refuses before a zone.
_MINUTES_ONLY = r"([T ][0-9]{2}:[0-9]{2})(?![0-9:.])"
_EPOCH = r"^-?[0-9]+(\.[0-9]+)?$"
_ZONE_LETTERS = set("XxZOVz")
_MAX_EPOCH_SECONDS = 1e11  # above: milliseconds (1e11 s is the year 5138)


def java_zoned_text(text: Column) -> Column:
    """ISO text as Java writes a zoned time, in a form Spark's cast reads: the offset before a
    bracketed region fixes the instant, so the region is dropped; without an offset the region
    is the zone. Zero seconds left out are put back."""
    unbracketed = F.regexp_replace(text, _BRACKETED_ZONE, "")
    zoned = (F.when(~text.endswith("]"), text)
             .when(unbracketed.rlike(_HAS_OFFSET), unbracketed)
             .otherwise(F.regexp_replace(text, _BRACKETED_ZONE, " $1")))
    # Most text skips the regex: in 'yyyy-MM-ddTHH:mm:ss' the 17th character is the seconds' colon.
    return F.when(F.substring(zoned, 17, 1) == ":", zoned).otherwise(
        F.regexp_replace(zoned, _MINUTES_ONLY, "$1:00"))


def parse_timestamp(text: Column, mapping: ColumnMapping) -> Column:
    """UTC timestamp from text: the configured pattern, else ISO-8601 (offset or not, also
    Java's zoned form '2025-03-01T10:00+01:00[Europe/Paris]') or epoch s/ms.

    Text without an offset is read in `mapping.source_timezone`.
    """
    zone = F.lit(mapping.source_timezone)
    if mapping.timestamp_format:
        parsed = F.try_to_timestamp(text, F.lit(mapping.timestamp_format))
        return parsed if _ZONE_LETTERS & set(mapping.timestamp_format) else F.to_utc_timestamp(parsed, zone)
    number = text.try_cast("double")
    seconds = F.when(F.abs(number) >= _MAX_EPOCH_SECONDS, number / 1000).otherwise(number)
    epoch = F.when(F.abs(seconds) < _MAX_EPOCH_SECONDS, F.timestamp_seconds(seconds))
    iso_text = java_zoned_text(text)
    iso = iso_text.try_cast("timestamp")
    return (F.when(text.rlike(_EPOCH), epoch)
            .when(iso_text.rlike(_HAS_OFFSET), iso)
            .otherwise(F.to_utc_timestamp(iso, zone)))


def _finite_double(text: Column) -> Column:
    value = text.try_cast("double")
    return F.when(~F.isnan(value) & (F.abs(value) != F.lit(float("inf"))), value)


def _whole_int(text: Column) -> Column:
    value = _finite_double(text)
    return F.when((value == F.floor(value)) & (F.abs(value) <= 2_147_483_647), value.cast("int"))


def _decimal_point(text: Column, separator: str) -> Column:
    """Number text with a '.' decimal point: with a comma separator, '1.081,98' -> '1081.98'."""
    if separator == ".":
        return text
    return F.replace(F.regexp_replace(text, "[.\\s\u00a0]", ""), F.lit(","), F.lit("."))


def typed_fields(df: DataFrame, mapping: ColumnMapping) -> DataFrame:
    """Replaces each contract string column with its typed value, keeping the text as `_text_<name>`."""
    sep = mapping.decimal_separator
    converters = {"timestamp": lambda c: parse_timestamp(c, mapping),
                  "double": lambda c: _finite_double(_decimal_point(c, sep)),
                  "int": lambda c: _whole_int(_decimal_point(c, sep)), "string": lambda c: c}
    for f in FIELDS:
        df = df.withColumn(f"_text_{f.name}", F.col(f.name)) \
            .withColumn(f.name, converters[f.type](F.col(f.name)))
    return df


def _problem(condition: Column, reason: str, detail: Column) -> Column:
    return F.when(condition, F.struct(F.lit(reason).alias("reason"), detail.alias("detail")))


def _names_where(checks: dict[str, Column]) -> Column:
    return F.array_compact(F.array(*[F.when(cond, F.lit(name)) for name, cond in checks.items()]))


def _shown(column: str) -> Column:
    return F.substring(F.col(column).cast("string"), 1, 60)


def with_problems(df: DataFrame, limits: ValidationLimits, now: dt.datetime) -> DataFrame:
    """Adds `problems` (array of reason/detail, empty when the row is good) to typed rows."""
    text = {f.name: F.col(f"_text_{f.name}") for f in FIELDS}
    missing_checks = {name: F.col(name).isNull() & text[name].isNull() for name in REQUIRED}
    for event_type, needed in REQUIRED_BY_EVENT_TYPE.items():
        for name in needed:
            cond = (F.col("event_type") == event_type) & text[name].isNull()
            missing_checks[name] = missing_checks[name] | cond if name in missing_checks else cond
    missing = _names_where(missing_checks)
    wrong = _names_where({f.name: text[f.name].isNotNull() & F.col(f.name).isNull()
                          for f in FIELDS if f.type != "string"})
    too_long = _names_where({f.name: F.length(f.name) > limits.max_string_length
                             for f in FIELDS if f.type == "string"})
    price, quantity, when_ = F.col("price"), F.col("quantity"), F.col("event_time")
    # Aware datetimes: PySpark would read naive ones in the machine's local zone.
    latest = F.lit(now.astimezone(dt.timezone.utc) + dt.timedelta(minutes=limits.max_future_minutes))
    floor = F.lit(dt.datetime.combine(limits.time_floor, dt.time(), tzinfo=dt.timezone.utc))
    checks = [
        _problem(F.size(missing) > 0, Reason.MISSING_REQUIRED, F.array_join(missing, ",")),
        _problem(F.size(wrong) > 0, Reason.WRONG_TYPE, F.array_join(F.transform(
            wrong, lambda n: F.concat(n, F.lit("="), F.substring(
                F.element_at(F.create_map(*[x for f in FIELDS for x in (F.lit(f.name), text[f.name])]), n),
                1, 60))), ",")),
        _problem(F.col("event_type").isNotNull()
                 & ~F.col("event_type").isin(*limits.allowed_event_types),
                 Reason.UNKNOWN_EVENT_TYPE, _shown("event_type")),
        _problem((price < 0) | (price > limits.max_price), Reason.PRICE_OUT_OF_RANGE, _shown("price")),
        _problem((quantity < 1) | (quantity > limits.max_quantity), Reason.QUANTITY_OUT_OF_RANGE,
                 _shown("quantity")),
        _problem(when_ > latest, Reason.TIME_IN_FUTURE, _shown("event_time")),
        _problem(when_ < floor, Reason.TIME_BEFORE_FLOOR, _shown("event_time")),
        _problem(F.size(too_long) > 0, Reason.STRING_TOO_LONG, F.array_join(too_long, ",")),
    ]
    malformed = F.array(_problem(F.lit(True), Reason.MALFORMED_RECORD,
                                 F.lit("not a parseable record of the input format")))
    return df.withColumn("problems", F.when(F.col("malformed"), malformed)
                         .otherwise(F.array_compact(F.array(*checks))).cast(f"array<{_PROBLEM}>"))


def validate_events(df: DataFrame, limits: ValidationLimits, mapping: ColumnMapping,
                    now: dt.datetime) -> DataFrame:
    """Typed contract columns plus `problems`; the `_text_*` helper columns are dropped."""
    checked = with_problems(typed_fields(df, mapping), limits, now)
    return checked.drop(*[f"_text_{f.name}" for f in FIELDS])
