"""A platform's own fields -> the event contract, driven by the `ingest.mapping` config section.

Input: records with `src` (map<string,string> of every source field). Output: one string column
per contract field (empty strings count as missing), `extra` (the source fields the contract
does not use), and the record's bookkeeping columns. Typing and checks come after (validation).
"""
from __future__ import annotations

import re
from typing import Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException

from demandcast.errors import ConfigError
from demandcast.settings.ingest import ColumnMapping
from features.ingest.event_contract import FIELD_NAMES, IGNORED_SOURCE_FIELDS

RECORD_COLUMNS = ("raw_record", "malformed", "source_file")


def _check_keys(mapping: ColumnMapping) -> None:
    for section in ("columns", "constants", "derive", "defaults", "values"):
        unknown = set(getattr(mapping, section)) - set(FIELD_NAMES)
        if unknown:
            raise ConfigError(f"ingest.mapping.{section}: {sorted(unknown)} are not event contract "
                              f"fields ({', '.join(FIELD_NAMES)})")
    unknown = set(mapping.event_id_from or []) - set(FIELD_NAMES)
    if unknown:
        raise ConfigError(f"ingest.mapping.event_id_from: {sorted(unknown)} are not contract fields")


def _blank_is_missing(value: Column) -> Column:
    # Trimmed: exports pad values (fixed-width tools, spreadsheets); ' 42 ' is the id 42.
    return F.when(F.trim(value) != "", F.trim(value))


def _recoded(name: str, value: Column, table: dict[str, str]) -> Column:
    """`value` through the configured lookup; event types are codes, compared in lower case."""
    if name == "event_type":
        value = F.lower(value)
        table = {k.strip().lower(): v for k, v in table.items()}
    if not table:
        return value
    lookup = F.create_map(*[F.lit(x) for pair in table.items() for x in pair])
    return F.coalesce(F.element_at(lookup, value), value)


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
    return _recoded(name, value, mapping.values.get(name, {}))


def copy_number(event_id: Column) -> Column:
    """1, 2, ... over the records of a batch with the same event id, in a stable order (the
    same files give the same numbering on a rerun)."""
    return F.row_number().over(Window.partitionBy(event_id).orderBy("source_file", "raw_record"))


def _numbered_repeats(event_id: Column) -> Column:
    """The n-th record with the same hashed id gets hash(id, n); the first keeps the plain hash.

    Copies with the same id are identical in the hashed fields, so their order does not matter
    for the result: a rerun of the same files gives the same ids.
    """
    copy = copy_number(event_id)
    return F.when(copy == 1, event_id).otherwise(F.sha2(F.concat_ws("\u0001", event_id, copy.cast("string")), 256))


_SRC_REFERENCE = re.compile(r"""src\s*\[\s*(?:'([^']*)'|"([^"]*)")\s*\]""")


def expression_sources(expression: str) -> set[str]:
    """Source fields a derive expression reads (its src['name'] references)."""
    return {a or b for a, b in _SRC_REFERENCE.findall(expression)}


def derive_sources(mapping: ColumnMapping) -> set[str]:
    """Source fields the derive expressions read: they are mapped, so they are not `extra`."""
    return {name for expression in mapping.derive.values() for name in expression_sources(expression)}


def _first_line(exc: Exception) -> str:
    # Spark's parse errors start with an empty line; the error class and position follow.
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _check_derive(records: DataFrame, mapping: ColumnMapping) -> None:
    """Each derive expression is parsed and resolved on its own, so the error names its key."""
    for name, expression in mapping.derive.items():
        try:
            records.select(F.expr(expression))
        except (AnalysisException, ValueError, TypeError) as exc:  # ParseException is an AnalysisException
            raise ConfigError(f"ingest.mapping.derive.{name}: {expression!r} does not work on the source "
                              f"(fields are read as src['name']): {_first_line(exc)}") from None


def _check_unambiguous_sources(mapping: ColumnMapping, repeated_names: Mapping[str, list[str]]) -> None:
    """A source field the mapping reads must not be a name the header repeats: which copy holds
    the value is a decision for the config, not a silent null."""
    for name in FIELD_NAMES:
        if name in mapping.constants or name in mapping.derive:
            continue
        source = source_field(mapping, name)
        copies = repeated_names.get(source)
        if copies:
            raise ConfigError(f"ingest.mapping.columns.{name}: the CSV header repeats {source!r} "
                              f"(read as {', '.join(copies)}); set ingest.mapping.columns.{name} "
                              f"to the copy to read, e.g. {copies[0]}")
    for name, expression in mapping.derive.items():
        for source in sorted(expression_sources(expression)):
            if repeated_names.get(source):
                raise ConfigError(f"ingest.mapping.derive.{name}: the CSV header repeats {source!r} "
                                  f"(read as {', '.join(repeated_names[source])}); use one of those "
                                  "names in the expression")


def map_to_contract(records: DataFrame, mapping: ColumnMapping,
                    repeated_names: Mapping[str, list[str]] | None = None) -> DataFrame:
    """`repeated_names`: header names the source repeats (raw_reader.RawRecords.repeated_names)."""
    _check_keys(mapping)
    _check_unambiguous_sources(mapping, repeated_names or {})
    _check_derive(records, mapping)
    fields = {name: _field(mapping, name) for name in FIELD_NAMES}
    if mapping.event_id_from is not None and "event_id" not in mapping.constants and "event_id" not in mapping.derive:
        basis = [fields[c] for c in mapping.event_id_from] or [F.col("raw_record")]
        # \u0001 cannot occur in the values, so different field splits never collide.
        fields["event_id"] = F.sha2(F.concat_ws("\u0001", *[F.coalesce(c, F.lit("")) for c in basis]), 256)
        if mapping.repeats_are_events:
            fields["event_id"] = _numbered_repeats(fields["event_id"])
    consumed = sorted(set(FIELD_NAMES) | set(mapping.columns.values()) | set(IGNORED_SOURCE_FIELDS)
                      | derive_sources(mapping))
    extra = F.map_filter("src", lambda k, v: ~F.array_contains(F.array(*[F.lit(c) for c in consumed]), k)
                         & v.isNotNull())
    return records.select(*[fields[n].alias(n) for n in FIELD_NAMES], extra.alias("extra"), *RECORD_COLUMNS)
