"""The console script: exit codes and messages, run as a real subprocess."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from demandcast.session import (CLASS_ARCHIVE, class_sharing_options, mapped_class_archive_bytes,
                                spark_conf)
from demandcast.settings.runtime import SparkSettings

BIN = Path(sys.executable).parent / "demandcast"


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    # The console script imports the checkout the venv was installed from (editable install):
    # put this checkout first, so a worktree's tests exercise the worktree's code.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([str(BIN), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def test_unknown_key_exits_2_without_traceback(project_root):
    res = _run("generate", "--set", "spark.nope=1", cwd=project_root)
    assert res.returncode == 2
    assert "unknown key 'spark.nope'" in res.stderr
    assert "conf/local.yaml" in res.stderr and "base.yaml" in res.stderr
    assert "Traceback" not in res.stderr


def test_impossible_date_exits_2_with_one_line(project_root):
    res = _run("features", "--set", "snapshot_dates=[2025-13-01]", cwd=project_root)
    assert res.returncode == 2
    assert res.stderr.strip() == "demandcast: --set snapshot_dates: invalid date '2025-13-01' " \
                                 "(month must be in 1..12)"


def test_jvm_that_cannot_start_is_one_line_not_a_python_traceback(project_root, tmp_path):
    res = _run("score", "--set", "spark.conf.spark.driver.memory=lots", "--set", f"warehouse={tmp_path}",
               cwd=project_root)
    assert res.returncode == 1
    assert "demandcast: Spark could not start" in res.stderr
    assert "Traceback" not in res.stderr


def test_unknown_stage_and_missing_conf_exit_2(project_root, tmp_path):
    assert _run("teleport", cwd=project_root).returncode == 2
    res = _run("ingest", "--conf", str(tmp_path / "missing.yaml"), cwd=project_root)
    assert res.returncode == 2 and "missing.yaml" in res.stderr
    assert "Traceback" not in res.stderr


def test_session_conf_is_delta_utc_arrow_and_project_python():
    conf = spark_conf("unit", SparkSettings(master="local[1]", shuffle_partitions=3))
    assert conf["spark.sql.extensions"] == "io.delta.sql.DeltaSparkSessionExtension"
    assert conf["spark.sql.session.timeZone"] == "UTC"
    assert conf["spark.sql.execution.arrow.pyspark.enabled"] == "true"
    assert conf["spark.sql.shuffle.partitions"] == "3"
    assert conf["spark.pyspark.python"] == sys.executable
    assert all(j.endswith(".jar") for j in conf["spark.jars"].split(","))
    assert "spark.jars" not in spark_conf("pkg", SparkSettings(packages=["io.delta:delta-spark_2.13:4.0.1"]))


def test_driver_maps_the_class_archive_the_install_dumped(spark, tmp_path):
    # make install's self-check dumps it; a driver that ignored it (the JDK or the jars changed
    # since) would start at twice the cost without a word.
    assert CLASS_ARCHIVE.is_file(), "run `make install`: its self-check dumps the class archive"
    assert mapped_class_archive_bytes(spark) >= CLASS_ARCHIVE.stat().st_size
    driver = spark_conf("unit", SparkSettings(master="local[1]"))["spark.driver.extraJavaOptions"]
    assert f"-XX:SharedArchiveFile={CLASS_ARCHIVE}" in driver
    dumping = spark_conf("unit", SparkSettings(master="local[1]"), dump_class_archive=tmp_path / "a.jsa")
    assert f"-XX:ArchiveClassesAtExit={tmp_path / 'a.jsa'}" in dumping["spark.driver.extraJavaOptions"]
    assert "SharedArchiveFile" not in dumping["spark.driver.extraJavaOptions"]
    assert class_sharing_options(archive=tmp_path / "missing.jsa") == ""


def test_python_workers_use_the_project_interpreter(spark):
    import os

    worker_python = spark.sparkContext.parallelize([0], 1).map(
        lambda _: __import__("sys").executable).first()
    assert os.path.realpath(worker_python) == os.path.realpath(sys.executable)


def test_runs_dir_that_cannot_be_written_is_exit_2_before_any_work(project_root, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    for stage in ("score", "evaluate", "report"):
        res = _run(stage, "--set", f"runs_dir={blocker}/runs", "--set", f"warehouse={tmp_path}/wh",
                   cwd=project_root)
        assert res.returncode == 2, res.stderr
        assert f"key 'runs_dir': {blocker}/runs is not a writable directory" in res.stderr
        assert "Traceback" not in res.stderr and "Spark" not in res.stderr
