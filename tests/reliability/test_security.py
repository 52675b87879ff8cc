"""Security promises (issue 8, point 7): secrets only from the environment, validated names and
paths, no unpickling of user files, and no raw user id in any output table."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from demandcast.config import load_config
from demandcast.errors import ConfigError
from demandcast.tables import TABLE_NAMES, partition_predicate, table_path

from .conftest import PROJECT_ROOT, raw_user_ids

pytestmark = pytest.mark.slow

# The simulator's raw ids (U + 8 digits); pseudonymous keys are lowercase hex, never match.
RAW_ID = re.compile(r"U\d{8}")


def delta_tables(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.rglob("_delta_log") if p.is_dir())


def test_no_output_table_holds_a_raw_user_id(spark, pipeline):
    ids = raw_user_ids(pipeline.raw_dir)
    tables = delta_tables(pipeline.warehouse)
    assert {t.name for t in tables} >= {"events", "quarantine", "users", "user_daily", "user_features",
                                        "labels", "training_set", "models", "predictions",
                                        "category_demand"}
    # Sanity of the scan itself: the raw landing zone does hold the ids it looks for.
    assert len(ids) == 400 and all(RAW_ID.fullmatch(i) for i in ids)

    leaks = {}
    for table in tables:
        df = spark.read.format("delta").load(str(table))
        # Every column of every row as one JSON string: ids hidden in maps, arrays or raw
        # records (quarantine.raw_record) are found as substrings.
        found = (df.select(F.regexp_extract_all(F.to_json(F.struct(*df.columns)),
                                                F.lit(RAW_ID.pattern), F.lit(0)).alias("m"))
                 .select(F.explode("m").alias("id")).distinct().collect())
        hits = {r.id for r in found} & ids
        if hits:
            leaks[table.name] = sorted(hits)[:5]
    assert leaks == {}
    quarantine = spark.read.format("delta").load(str(pipeline.warehouse / "quarantine"))
    assert quarantine.where(F.col("raw_record").isNotNull()).count() > 0  # the scan saw records


def test_the_hashing_secret_comes_from_the_environment_and_is_written_nowhere(pipeline):
    secret = os.environ["DEMANDCAST_USER_HASH_KEY"].encode()
    # The config holds the variable's name, never a value: a key for the value is refused.
    with pytest.raises(ConfigError, match="user_hash_key"):
        load_config(pipeline.conf, [f"user_hash_key={secret.decode()}"])
    written = [p for root in (pipeline.warehouse, pipeline.runs_dir) for p in root.rglob("*")
               if p.is_file() and secret in p.read_bytes()]
    assert written == []


@pytest.mark.parametrize("key", ["warehouse", "raw_dir", "runs_dir"])
@pytest.mark.parametrize("value", ["/tmp/wh' OR '1'='1", "/tmp/a;b", "/tmp/x`y", '/tmp/q"t'])
def test_paths_with_quotes_or_separators_are_refused_by_config_validation(key, value):
    with pytest.raises(ConfigError, match=key):
        load_config(PROJECT_ROOT / "conf" / "local.yaml", [f"{key}={value}"])


def test_table_names_and_predicates_are_built_only_from_checked_strings(tmp_path):
    with pytest.raises(ConfigError, match="unknown table"):
        table_path(str(tmp_path), "events'; DROP TABLE events; --")
    assert table_path(str(tmp_path), "events") == f"{tmp_path}/events"
    with pytest.raises(ValueError):
        partition_predicate("snapshot_date", ["2025-01-01' OR '1'='1"])
    with pytest.raises(ValueError):
        partition_predicate("snapshot_date) OR (1=1", ["2025-01-01"])
    assert partition_predicate("snapshot_date", ["2025-01-01"]) == "snapshot_date IN ('2025-01-01')"
    assert "cluster_check" in TABLE_NAMES  # every name is a fixed literal of the code


# Deserialisers that execute code from the bytes they read.
UNSAFE_LOADS = re.compile(
    r"\b(?:c?pickle|cloudpickle|dill|joblib|marshal|shelve)\.(?:loads?|Unpickler|open)\b"
    r"|allow_pickle\s*=\s*True|\byaml\.(?:unsafe_)?load\((?![^)]*SafeLoader)"
    r"|\btorch\.load\(|\bpd\.read_pickle\(|\bread_pickle\(")


def test_no_code_unpickles_files_a_user_supplies():
    offenders = []
    for package in ("features", "training", "demandcast", "jobs"):
        for source in sorted((PROJECT_ROOT / package).rglob("*.py")):
            for number, line in enumerate(source.read_text().splitlines(), 1):
                if UNSAFE_LOADS.search(line):
                    offenders.append(f"{source.relative_to(PROJECT_ROOT)}:{number}: {line.strip()}")
    assert offenders == []
    # The scan recognises what it must refuse.
    assert UNSAFE_LOADS.search("state = pickle.load(open(path, 'rb'))")
    assert UNSAFE_LOADS.search("np.load(path, allow_pickle=True)")
    assert UNSAFE_LOADS.search("yaml.load(text)")
    assert not UNSAFE_LOADS.search("yaml.safe_load(text)")
