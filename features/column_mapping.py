"""A platform's own fields -> the event contract, driven by the `ingest.mapping` config section.

Input: records with `src` (map<string,string> of every source field). Output: one string column
per contract field (empty strings count as missing), `extra` (the source fields the contract
does not use), and the record's bookkeeping columns. Typing and checks come after (validation).
"""
from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from demandcast.errors import ConfigError
from demandcast.settings.ingest import ColumnMapping
from features.event_contract import FIELD_NAMES, IGNORED_SOURCE_FIELDS

RECORD_COLUMNS = ("raw_record", "malformed", "source_file")


def _check_keys(mapping: ColumnMapping) -> None:
    for section in ("columns", "constants", "derive", "defaults"):
        unknown = set(getattr(mapping, section)) - set(FIELD_NAMES)
        if unknown:
            raise ConfigError(f"ingest.mapping.{section}: {sorted(unknown)} are not event contract "
                              f"fields ({', '.join(FIELD_NAMES)})")
    unknown = set(mapping.event_id_from or []) - set(FIELD_NAMES)
    if unknown:
        raise ConfigError(f"ingest.mapping.event_id_from: {sorted(unknown)} are not contract fields")


def _blank_is_missing(value: Column) -> Column:
    return F.when(F.trim(value) != "", value)


def source_field(mapping: ColumnMapping, name: str) -> str:
    """The source field a contract field is read from."""
    return mapping.columns.get(name, name)


def _field(mapping: ColumnMapping, name: str) -> Column:
    if name in mapping.constants:
        value: Column = F.lit(mapping.constants[name])
    elif name in mapping.derive:
        value = F.expr(mapping.derive[name]).cast("string")
    else:
        value = F.element_at(F.col("src"), F.lit(source_field(mapping, name)))
    value = _blank_is_missing(value)
    if name in mapping.defaults:
        value = F.coalesce(value, F.lit(mapping.defaults[name]))
    return value


def map_to_contract(records: DataFrame, mapping: ColumnMapping) -> DataFrame:
    _check_keys(mapping)
    fields = {name: _field(mapping, name) for name in FIELD_NAMES}
    if mapping.event_id_from is not None and "event_id" not in mapping.constants and "event_id" not in mapping.derive:
        basis = [fields[c] for c in mapping.event_id_from] or [F.col("raw_record")]
        # \u0001 cannot occur in the values, so different field splits never collide.
        fields["event_id"] = F.sha2(F.concat_ws("\u0001", *[F.coalesce(c, F.lit("")) for c in basis]), 256)
    consumed = sorted(set(FIELD_NAMES) | set(mapping.columns.values()) | set(IGNORED_SOURCE_FIELDS))
    extra = F.map_filter("src", lambda k, v: ~F.array_contains(F.array(*[F.lit(c) for c in consumed]), k)
                         & v.isNotNull())
    try:
        return records.select(*[fields[n].alias(n) for n in FIELD_NAMES], extra.alias("extra"),
                              *RECORD_COLUMNS)
    except AnalysisException as exc:
        raise ConfigError(f"ingest.mapping.derive: an expression does not work on the source: "
                          f"{str(exc).splitlines()[0]}") from None
