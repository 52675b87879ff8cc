"""catalog.database: a stage registers the warehouse's tables in the session's metastore, and a
fresh spark-sql against the same metastore (Spark's own embedded Derby, Hive support from the
jars pyspark ships) reads `demandcast.predictions_current` by name."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from demandcast.tables import table_path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _metastore_conf(tmp: Path) -> dict[str, str]:
    """A Hive metastore in Derby files under `tmp`: what a platform's catalog is in production."""
    return {
        "spark.sql.catalogImplementation": "hive",
        "spark.sql.warehouse.dir": str(tmp / "spark-warehouse"),
        "spark.hadoop.javax.jdo.option.ConnectionURL":
            f"jdbc:derby:;databaseName={tmp / 'metastore_db'};create=true",
    }


@pytest.mark.slow
def test_tables_registered_by_a_stage_are_read_by_name_from_spark_sql(spark, warehouse, tmp_path):
    current = table_path(warehouse, "predictions_current")
    spark.createDataFrame([("u1", "m7", 0.25), ("u2", "m7", 0.75)],
                          "user_key string, model_version string, p_purchase double") \
        .write.format("delta").save(current)
    spark.range(3).write.format("delta").save(table_path(warehouse, "events"))
    metastore = _metastore_conf(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}

    stage = [sys.executable, "-m", "demandcast.cli", "maintain",
             "--conf", str(PROJECT_ROOT / "conf" / "local.yaml"),
             "--set", f"warehouse={warehouse}", "--set", f"runs_dir={tmp_path / 'runs'}",
             "--set", "catalog.database=demandcast", "--set", "spark.shuffle_partitions=1",
             "--set", "maintain.optimize_tables=[]", "--set", "maintain.vacuum_tables=[]"]
    stage += [a for k, v in metastore.items() for a in ("--set", f"spark.conf.{k}={v}")]
    # cwd: Derby writes derby.log where the JVM starts.
    done = subprocess.run(stage, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "registered in catalog database demandcast: events, predictions_current" in done.stderr

    import pyspark
    spark_sql = Path(pyspark.__file__).parent / "bin" / "spark-sql"
    jars = ",".join(str(p) for p in sorted((PROJECT_ROOT / ".jars").glob("*.jar")))
    conf = {**metastore, "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
            "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
            "spark.ui.enabled": "false"}
    query = [str(spark_sql), "--master", "local[1]", "--jars", jars,
             *[a for k, v in conf.items() for a in ("--conf", f"{k}={v}")],
             "-e", "SELECT count(*), min(model_version), sum(p_purchase) "
                   "FROM demandcast.predictions_current; SHOW TABLES IN demandcast"]
    read = subprocess.run(query, cwd=tmp_path, env={**env, "PYSPARK_PYTHON": sys.executable},
                          capture_output=True, text=True, timeout=300)
    assert read.returncode == 0, read.stderr[-3000:]
    lines = [line.split("\t") for line in read.stdout.strip().splitlines()]
    assert lines[0] == ["2", "m7", "1.0"]
    listed = {field for line in lines[1:] for field in line}  # spark-sql's SHOW TABLES layout
    assert {"events", "predictions_current"} <= listed, read.stdout
