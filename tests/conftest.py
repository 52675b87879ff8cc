"""Shared fixtures: one local SparkSession with Delta for the whole run, and a fresh warehouse."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("DEMANDCAST_USER_HASH_KEY", "test-key-not-a-secret")

PROJECT_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def spark():
    from demandcast.config import load_config
    from demandcast.session import build_spark_session

    cfg = load_config(PROJECT_ROOT / "conf" / "local.yaml",
                      ["spark.shuffle_partitions=2", "spark.driver_memory=3g"])
    session = build_spark_session("tests", cfg.spark)
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
