"""Settings of the Spark catalog registration (conf section `catalog`)."""
from __future__ import annotations

import re

from pydantic import field_validator

from demandcast.settings.base import Section

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class CatalogSettings(Section):
    # Database (schema) of the session's catalog in which every warehouse table is registered
    # after each stage (CREATE TABLE IF NOT EXISTS <database>.<table> USING DELTA LOCATION ...),
    # so SQL users query `demandcast.predictions_current`; None = tables stay path-only. Which
    # metastore that is (Hive, Glue, Unity) is the platform's Spark configuration (spark.conf).
    database: str | None = None

    @field_validator("database")
    @classmethod
    def _plain_identifier(cls, value: str | None) -> str | None:
        # Interpolated into SQL: letters, digits and underscores only.
        if value is not None and not _IDENTIFIER.match(value):
            raise ValueError(f"{value!r} is not a plain SQL identifier (letters, digits, _)")
        return value
