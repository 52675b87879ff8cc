"""Settings shared by every stage: where tables live, the Spark session, secrets, snapshots."""
from __future__ import annotations

import datetime as dt
import re
from typing import Literal

from pydantic import Field, field_validator

from demandcast.settings.base import Section

_URI = re.compile(r"^(?:[a-zA-Z][a-zA-Z0-9+.-]*://)?[^\s;'\"`]+$")
_ENV_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# What spark-submit accepts ("Master must either be yarn or start with spark, k8s, or local").
_MASTER = re.compile(r"^(?:yarn|local(?:\[(?:\*|[1-9]\d*)(?:,\d+)?\])?|local-cluster\[\d+,\d+,\d+\]"
                     r"|(?:spark|k8s)://\S+)$")
# The JVM's -Xmx syntax: a number with an optional k/m/g/t unit ("4g", "4096m"; not "4gb").
_JVM_MEMORY = re.compile(r"^[1-9]\d*[kKmMgGtT]?$")


class SparkSettings(Section):
    master: str = "local[2]"
    driver_memory: str = "4g"
    shuffle_partitions: int = Field(4, ge=1)
    # Local jar folder filled by `make install`; used when `packages` is empty.
    jars_dir: str | None = ".jars"
    # Maven coordinates for spark.jars.packages (cluster images without the jars).
    packages: list[str] = []
    # Interpreter of the Python workers; None means this process's interpreter (local mode).
    python: str | None = None
    log_level: Literal["ERROR", "WARN", "INFO", "DEBUG"] = "WARN"
    arrow_batch_size: int = Field(10_000, ge=1)
    conf: dict[str, str] = {}

    # Checked here: a bad value otherwise kills the JVM before the gateway starts, and the user
    # sees a Java stack trace followed by a Python one.
    @field_validator("master")
    @classmethod
    def _known_master(cls, value: str) -> str:
        if not _MASTER.match(value):
            raise ValueError(f"{value!r} is not a Spark master URL (local[N], local[*], spark://host:port, "
                             "yarn, k8s://...)")
        return value

    @field_validator("conf", mode="before")
    @classmethod
    def _scalars_as_text(cls, value):
        # Spark takes every value as text; YAML reads `spark.sql.shuffle.partitions: 8` as a number.
        if isinstance(value, dict):
            return {k: (str(v).lower() if isinstance(v, bool) else str(v))
                    if isinstance(v, (bool, int, float)) else v for k, v in value.items()}
        return value

    @field_validator("driver_memory")
    @classmethod
    def _jvm_memory(cls, value: str) -> str:
        if not _JVM_MEMORY.match(value):
            raise ValueError(f"{value!r} is not a JVM memory size (e.g. 4g, 4096m)")
        return value


class RuntimeSettings(Section):
    env: Literal["local", "cluster"] = "local"
    warehouse: str = "warehouse"
    raw_dir: str = "data/raw"
    runs_dir: str = "runs"
    seed: int = 42
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # Name of the environment variable that holds the user-id hashing key (never the key itself).
    user_hash_key_env: str = "DEMANDCAST_USER_HASH_KEY"
    # Every snapshot the pipeline materialises (features, labels, ground truth), ascending.
    snapshot_dates: list[dt.date] = Field(default_factory=list)
    label_window_days: int = Field(30, ge=1, le=366)
    # The day a scheduled run works for (`--as-of DATE`, Airflow's {{ ds }}): ingest reads that
    # day's landing folder and the late margin, features computes snapshot DATE and labels every
    # snapshot whose window has closed, train takes its rolling window of labelled snapshots up
    # to DATE, score scores snapshot DATE. None: the stages follow snapshot_dates and their keys.
    as_of: dt.date | None = None
    spark: SparkSettings = SparkSettings()

    @field_validator("warehouse", "raw_dir", "runs_dir")
    @classmethod
    def _plain_uri(cls, value: str) -> str:
        if not _URI.match(value):
            raise ValueError(f"not a plain path or URI: {value!r}")
        return value.rstrip("/")

    @field_validator("runs_dir")
    @classmethod
    def _file_system_path(cls, value: str) -> str:
        # Checkpoints, model directories, reports and the run ledger are written with plain file
        # I/O (TensorFlow, JSON): an object-store URI fails at train, or becomes a local folder
        # named "s3a:" for the ledger.
        if "://" in value and not value.startswith("file://"):
            raise ValueError(f"{value!r} is an object-store URI: runs_dir needs a local or mounted "
                             "shared path (NFS, DBFS FUSE, a mounted bucket)")
        # A plain path from here on: the ledger (pathlib) read file:///x as the relative folder
        # "file:/x", and the score report took it for a remote location and skipped itself.
        return value.removeprefix("file://")

    @field_validator("user_hash_key_env")
    @classmethod
    def _env_var_name(cls, value: str) -> str:
        # The name of the variable, never the key: an empty or key-like value would silently fall
        # back to the development key in local mode.
        if not _ENV_VAR.match(value):
            raise ValueError(f"{value!r} is not an environment variable name (e.g. DEMANDCAST_USER_HASH_KEY)")
        return value

    @field_validator("snapshot_dates")
    @classmethod
    def _sorted_unique(cls, value: list[dt.date]) -> list[dt.date]:
        return sorted(set(value))
