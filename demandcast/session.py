"""The one factory for every SparkSession: Delta, jars, UTC, Arrow, local defaults, quiet logs."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from pyspark.errors import PySparkRuntimeError
from pyspark.sql import SparkSession

from demandcast.errors import ConfigError, StageFailed
from demandcast.logs import get_logger
from demandcast.settings.runtime import SparkSettings

log = get_logger("session")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
# HotSpot never JIT-compiles a method above 8000 bytes of bytecode; Spark's whole-stage code for
# wide projections (the simulator's event stage) exceeds it and would run interpreted, several
# times slower.
JIT_OPTIONS = "-XX:-DontCompileHugeMethods"
# Class-data sharing: the classes a local driver loads (Spark, Delta, Hadoop, Scala), dumped once
# by the install self-check into an archive the JVM maps instead of reading and verifying them
# from jars again: a local session starts in about 4 s instead of 6-7 (bench/RESULTS.md,
# startup). The JVM checks the archive against its own build and class path and ignores it,
# silently, when they differ; `make install` removes it with .jars/ whenever the stack is
# reinstalled.
CLASS_ARCHIVE = PROJECT_ROOT / ".jars" / "driver-classes.jsa"
_QUIET_CDS = "-Xlog:cds=off -Xlog:cds+dynamic=off"


def class_sharing_options(archive: Path | None = None, dump_to: Path | None = None) -> str:
    """Driver JVM options: dump the loaded classes to `dump_to` at exit, or map `archive`
    (CLASS_ARCHIVE by default)."""
    archive = archive or CLASS_ARCHIVE
    if dump_to is not None:
        return f"-XX:ArchiveClassesAtExit={dump_to} {_QUIET_CDS}"
    return f"-XX:SharedArchiveFile={archive} {_QUIET_CDS}" if archive.is_file() else ""


def _launched_by_spark_submit() -> bool:
    # spark-submit starts the driver's Python with a gateway already running: master, memory and
    # jars then come from spark-submit and must not be overridden here.
    return "PYSPARK_GATEWAY_PORT" in os.environ


def delta_jars(settings: SparkSettings) -> list[str]:
    """The Delta jars from the local folder `make install` fills; empty when packages are used."""
    if settings.packages or not settings.jars_dir:
        return []
    folder = Path(settings.jars_dir)
    if not folder.is_absolute():
        folder = PROJECT_ROOT / folder
    jars = sorted(str(p) for p in folder.glob("*.jar"))
    if not jars:
        raise ConfigError(
            f"key 'spark.jars_dir': no Delta jars in {folder}; run `make install`, "
            "or set spark.packages to Maven coordinates"
        )
    return jars


def mapped_class_archive_bytes(spark: SparkSession) -> int:
    """Bytes of class-data archives the driver JVM has mapped (`jcmd VM.info`): the JDK's own
    base archive alone is about 13 MB; with CLASS_ARCHIVE mapped, more than that file's size."""
    import re
    import subprocess

    jcmd = Path(os.path.realpath(shutil.which("java") or "java")).parent / "jcmd"
    pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
    info = subprocess.run([str(jcmd), str(pid), "VM.info"], capture_output=True, text=True).stdout
    mapped = re.search(r"CDS archive\(s\) mapped at: .*size (\d+)", info)
    return int(mapped.group(1)) if mapped else 0


def spark_conf(app_name: str, settings: SparkSettings,
               dump_class_archive: Path | None = None) -> dict[str, str]:
    """Every configuration the factory sets, as a plain mapping (testable without a JVM)."""
    conf = {
        "spark.app.name": f"demandcast-{app_name}",
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": str(settings.arrow_batch_size),
        "spark.sql.shuffle.partitions": str(settings.shuffle_partitions),
        "spark.sql.adaptive.enabled": "true",
        # The features stage shuffles user_daily once by user_key and then joins and aggregates
        # per (user_key, snapshot_date) inside those partitions: without this, every join on
        # (user_key, snapshot_date) would shuffle both sides again.
        "spark.sql.requireAllClusterKeysForCoPartition": "false",
        "spark.ui.showConsoleProgress": "true",
        "spark.executor.extraJavaOptions": f"-Duser.timezone=UTC {JIT_OPTIONS}",
        # Training reads Parquet files of the pinned Delta version directly (petastorm): rows a
        # deletion vector hides would come back. Tables default to no deletion vectors.
        "spark.databricks.delta.properties.defaults.enableDeletionVectors": "false",
        "spark.databricks.delta.schema.autoMerge.enabled": "false",
        # Delta rebuilds table state with this many tasks; 50 (the default) is slow on few cores.
        "spark.databricks.delta.snapshotPartitions": str(max(1, settings.shuffle_partitions)),
    }
    if not _launched_by_spark_submit():
        conf["spark.master"] = settings.master
        conf["spark.driver.memory"] = settings.driver_memory
        conf["spark.driver.extraJavaOptions"] = (
            f"-Duser.timezone=UTC {JIT_OPTIONS} "
            f"-Dlog4j.configurationFile={PROJECT_ROOT / 'conf' / 'log4j2.properties'} "
            f"{class_sharing_options(dump_to=dump_class_archive)}").rstrip()
        conf["spark.ui.enabled"] = "false" if settings.master.startswith("local") else "true"
    if settings.packages:
        conf["spark.jars.packages"] = ",".join(settings.packages)
    else:
        jars = delta_jars(settings)
        if jars and not _launched_by_spark_submit():
            conf["spark.jars"] = ",".join(jars)
    python = settings.python or (None if _launched_by_spark_submit() else sys.executable)
    if python:
        conf["spark.pyspark.python"] = python
        conf["spark.pyspark.driver.python"] = python
    conf.update(settings.conf)
    return conf


def build_spark_session(app_name: str, settings: SparkSettings,
                        dump_class_archive: Path | None = None) -> SparkSession:
    """Builds (or returns the running) session for one stage; `dump_class_archive`: see
    class_sharing_options (the install self-check's session only)."""
    conf = spark_conf(app_name, settings, dump_class_archive)
    if "spark.pyspark.python" in conf:
        # Python workers start with PYSPARK_PYTHON, not python3 from PATH.
        os.environ["PYSPARK_PYTHON"] = conf["spark.pyspark.python"]
        os.environ.setdefault("PYSPARK_DRIVER_PYTHON", conf["spark.pyspark.python"])
    if settings.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    try:
        spark = builder.getOrCreate()
    except PySparkRuntimeError as exc:
        if exc.getErrorClass() != "JAVA_GATEWAY_EXITED":
            raise
        # The JVM printed why above (bad spark.conf value, no Java, no memory); say so in one line
        # instead of adding a Python stack trace under the Java one.
        raise StageFailed(
            f"Spark could not start: the JVM exited before the session was up (master "
            f"{settings.master}, driver memory {settings.driver_memory}); its own message is above; "
            "check spark.* in the config, JAVA_HOME and free memory") from None
    spark.sparkContext.setLogLevel(settings.log_level)
    log.info("Spark %s session '%s' on %s", spark.version, conf["spark.app.name"],
             spark.sparkContext.master)
    return spark
