"""User-id pseudonymisation: native Spark HMAC equals Python's hmac; key handling by mode."""
from __future__ import annotations

import hashlib
import hmac
from pathlib import Path

import pytest

from demandcast.errors import ConfigError
from features.ingest.pseudonymise import DEVELOPMENT_KEY, HashKey, resolve_hash_key, with_user_key

PROJECT_ROOT = Path(__file__).resolve().parent.parent
IDS = ["U00000001", "customer-42", "", "ünïcødé-ß", "x" * 300]


def _python_hmac(key: bytes, value: str) -> str:
    return hmac.new(key, value.encode("utf-8"), hashlib.sha256).hexdigest()


@pytest.mark.parametrize("secret", [b"test-key", b"k" * 64, b"a-key-longer-than-the-block-" * 4])
def test_spark_hmac_equals_python_hmac(spark, secret):
    df = spark.createDataFrame([(i, n) for n, i in enumerate(IDS)] + [(None, 99)], "user_id string, n int")
    got = {r.n: r.user_key for r in with_user_key(df, HashKey(secret)).collect()}
    assert got == {**{n: _python_hmac(secret, i) for n, i in enumerate(IDS)}, 99: None}


def test_hash_is_stable_and_depends_on_the_key(spark):
    df = spark.createDataFrame([("U1",), ("U2",)], "user_id string")
    first = with_user_key(df, HashKey(b"one")).collect()
    again = with_user_key(df, HashKey(b"one")).collect()
    other = with_user_key(df, HashKey(b"two")).collect()
    assert first == again
    assert {r.user_key for r in first}.isdisjoint({r.user_key for r in other})
    assert with_user_key(df, HashKey(b"one")).columns == ["user_key"]


def test_secret_never_appears_in_the_query_plan(spark):
    secret = b"plan-secret-0123456789"
    inner, outer = HashKey(secret).pads()
    df = with_user_key(spark.createDataFrame([("U1",)], "user_id string"), HashKey(secret))
    plan = df._jdf.queryExecution().toString().lower()
    assert inner.hex() not in plan and outer.hex() not in plan and "plan-secret" not in plan
    assert "***" in repr(HashKey(secret))


def test_key_resolution_by_mode(monkeypatch):
    monkeypatch.setenv("DC_TEST_KEY", "from-env")
    assert resolve_hash_key("DC_TEST_KEY", "cluster").secret == b"from-env"
    monkeypatch.delenv("DC_TEST_KEY")
    assert resolve_hash_key("DC_TEST_KEY", "local").secret == DEVELOPMENT_KEY.encode()
    with pytest.raises(ConfigError, match="DC_TEST_KEY"):
        resolve_hash_key("DC_TEST_KEY", "cluster")


def test_evaluate_without_the_key_in_cluster_mode_stops_before_any_work(spark, tmp_path, monkeypatch):
    """Simulated data evaluated in cluster mode: the oracle join needs the hashing key, so its
    absence is a usage error at the start, not after the baselines have been trained."""
    from demandcast.config import load_config
    from training.evaluation.stage import evaluate

    raw = tmp_path / "raw"
    spark.createDataFrame([("U1", 30, "2025-02-01", 0.5, 10.0)],
                          "user_id string, window_days int, cutoff_date string, p_purchase double, "
                          "expected_spend double") \
        .selectExpr("user_id", "window_days", "CAST(cutoff_date AS DATE) AS cutoff_date", "p_purchase",
                    "expected_spend").write.format("delta").save(str(raw / "ground_truth"))
    monkeypatch.setenv("DC_EVAL_TEST_KEY", "")
    cfg = load_config(PROJECT_ROOT / "conf" / "local.yaml", [
        "env=cluster", f"raw_dir={raw}", f"warehouse={tmp_path / 'warehouse'}",
        f"runs_dir={tmp_path / 'runs'}", "user_hash_key_env=DC_EVAL_TEST_KEY"])
    with pytest.raises(ConfigError, match="DC_EVAL_TEST_KEY"):
        evaluate(spark, cfg)  # the warehouse holds no model: without the early check, "no model"
