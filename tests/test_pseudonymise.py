"""User-id pseudonymisation: native Spark HMAC equals Python's hmac; key handling by mode."""
from __future__ import annotations

import hashlib
import hmac

import pytest

from demandcast.errors import ConfigError
from features.pseudonymise import DEVELOPMENT_KEY, HashKey, resolve_hash_key, with_user_key

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
