"""User ids -> `user_key`: HMAC-SHA256 with a secret key, computed by native Spark expressions.

HMAC(K, m) = SHA256((K0 ^ opad) || SHA256((K0 ^ ipad) || m)), K0 = K padded (or hashed) to the
64-byte block (RFC 2104). The two padded keys travel as a one-row broadcast DataFrame rather
than literals, so the secret never appears in a query plan, the Spark UI or an event log.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from demandcast.errors import ConfigError
from demandcast.logs import get_logger

log = get_logger("pseudonymise")

_BLOCK = 64  # SHA-256 block size in bytes
# Used only in local mode when the environment holds no key: fine for generated data, never
# for real users (outside local mode a missing key is an error).
DEVELOPMENT_KEY = "demandcast-local-development-key-not-a-secret"


@dataclass(frozen=True, repr=False)
class HashKey:
    """The secret as bytes; repr hides it so it cannot leak into logs or tracebacks."""

    secret: bytes

    def __repr__(self) -> str:
        return "HashKey(***)"

    def pads(self) -> tuple[bytes, bytes]:
        """(K0 ^ ipad, K0 ^ opad) of RFC 2104."""
        key = hashlib.sha256(self.secret).digest() if len(self.secret) > _BLOCK else self.secret
        key = key.ljust(_BLOCK, b"\0")
        return bytes(b ^ 0x36 for b in key), bytes(b ^ 0x5C for b in key)


def resolve_hash_key(env_var: str, env: str) -> HashKey:
    """The key from environment variable `env_var`; a fixed development key in local mode only."""
    value = os.environ.get(env_var, "")
    if value:
        return HashKey(value.encode("utf-8"))
    if env == "local":
        log.warning("%s is not set: using the fixed DEVELOPMENT key (local mode only; user keys "
                    "will not match any other environment)", env_var)
        return HashKey(DEVELOPMENT_KEY.encode("utf-8"))
    raise ConfigError(f"environment variable {env_var} must hold the user-id hashing key "
                      f"(env={env}); it is never read from the repository")


def _pads_frame(spark: SparkSession, key: HashKey) -> DataFrame:
    inner, outer = key.pads()
    return spark.createDataFrame([(bytearray(inner), bytearray(outer))],
                                 "_hmac_ipad binary, _hmac_opad binary")


def _hmac_sha256_hex(message: Column) -> Column:
    inner = F.unhex(F.sha2(F.concat(F.col("_hmac_ipad"), F.encode(message, "UTF-8")), 256))
    return F.sha2(F.concat(F.col("_hmac_opad"), inner), 256)


def with_user_key(df: DataFrame, key: HashKey, source: str = "user_id",
                  target: str = "user_key", drop_source: bool = True) -> DataFrame:
    """Adds `target` = hex HMAC-SHA256 of column `source` (null stays null), drops `source`.

    `target` takes the place of `source` in the column order.
    """
    pads = F.broadcast(_pads_frame(df.sparkSession, key))
    keyed = df.crossJoin(pads).withColumn(
        "_hmac_value",
        F.when(F.col(source).isNotNull(), _hmac_sha256_hex(F.col(source).cast("string"))))
    columns = []
    for name in df.columns:
        if name == source:
            columns.append(F.col("_hmac_value").alias(target))
            if not drop_source:
                columns.append(F.col(source))
        elif name != target:
            columns.append(F.col(name))
    return keyed.select(*columns)
