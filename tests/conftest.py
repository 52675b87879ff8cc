"""Shared fixtures: one local SparkSession with Delta for the whole run, and a fresh warehouse."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DEMANDCAST_USER_HASH_KEY", "test-key-not-a-secret")
# The JVMs the tests start in subprocesses (stages through the CLI, spark-submit, the standalone
# cluster's daemons and executors) live for seconds on tiny data; there C2, the optimising JIT,
# spends more CPU compiling than its code saves, and the suite is CPU-bound on two cores. C1
# alone cut a CLI features stage from about 64 to 42 CPU-s. The suite's own session (`spark`)
# lives for the whole run and keeps C2: C1 there made the suite slower (bench/RESULTS.md).
SUBPROCESS_JVM_OPTIONS = "-XX:TieredStopAtLevel=1"
os.environ.setdefault("JDK_JAVA_OPTIONS", SUBPROCESS_JVM_OPTIONS)

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def spark():
    from demandcast.config import load_config
    from demandcast.session import build_spark_session

    cfg = load_config(PROJECT_ROOT / "conf" / "local.yaml",
                      ["spark.shuffle_partitions=2", "spark.driver_memory=3g"])
    # Without the subprocesses' JIT limit (above), but with any JVM options the caller set
    # itself: the JVM copies the environment at launch.
    ours = os.environ.get("JDK_JAVA_OPTIONS") == SUBPROCESS_JVM_OPTIONS
    if ours:
        del os.environ["JDK_JAVA_OPTIONS"]
    try:
        session = build_spark_session("tests", cfg.spark)
    finally:
        if ours:
            os.environ["JDK_JAVA_OPTIONS"] = SUBPROCESS_JVM_OPTIONS
    yield session
    session.stop()


@pytest.fixture
def warehouse(tmp_path: Path) -> str:
    """A fresh, empty warehouse root for one test."""
    root = tmp_path / "warehouse"
    root.mkdir()
    return str(root)


@pytest.fixture
def project_root() -> Path:
    return PROJECT_ROOT
