"""Population stability of every model input between the training snapshot and a scored snapshot.

The reference profile (bin edges from the training snapshot's quantiles, the most frequent
categorical values, medians and modes) is computed in Spark with one quantile pass and one
grouped count; binning and counting of both snapshots run in Spark too. Only the per-feature bin
counts (features x bins rows) reach the driver, where the PSI sums are taken.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from demandcast.logs import get_logger

log = get_logger("drift")

NULL_BIN = "null"
OTHER_BIN = "other"
# Proportions are floored here so an empty bin on one side gives a large but finite PSI.
MIN_SHARE = 1e-4


@dataclass(frozen=True)
class ReferenceProfile:
    """What the training snapshot looked like, per model input."""

    kinds: Mapping[str, str]                       # column -> "numeric" | "categorical"
    edges: Mapping[str, tuple[float, ...]] = field(default_factory=dict)   # numeric bin edges
    top_values: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # categorical bins
    typical: Mapping[str, object] = field(default_factory=dict)  # median / mode (occlusion value)


@dataclass(frozen=True)
class FeatureDrift:
    feature: str
    kind: str
    psi: float
    bins: int

    def as_dict(self) -> dict[str, object]:
        return {"feature": self.feature, "kind": self.kind, "psi": round(self.psi, 6), "bins": self.bins}


def reference_profile(reference: DataFrame, kinds: Mapping[str, str], bins: int,
                      max_categories: int) -> ReferenceProfile:
    """Quantile edges and medians of numeric inputs, top values and modes of categorical ones."""
    numeric = [c for c, k in kinds.items() if k == "numeric"]
    categorical = [c for c, k in kinds.items() if k == "categorical"]
    edges: dict[str, tuple[float, ...]] = {}
    typical: dict[str, object] = {}
    if numeric:
        edge_probs = [i / bins for i in range(1, bins)]
        probs = sorted(set(edge_probs) | {0.5})
        doubles = reference.select(*[_as_double(c).alias(c) for c in numeric])
        quantiles = doubles.approxQuantile(numeric, probs, 1e-3)
        for column, values in zip(numeric, quantiles):
            by_prob = dict(zip(probs, values))  # empty when the column is all null
            # Repeated quantiles (a mass at one value, e.g. zero counts) collapse into one edge.
            edges[column] = tuple(sorted({by_prob[p] for p in edge_probs if p in by_prob}))
            typical[column] = by_prob.get(0.5)
    top_values: dict[str, tuple[str, ...]] = {}
    if categorical:
        counts = (reference
                  .select(F.explode(F.array(*[
                      F.struct(F.lit(c).alias("feature"), F.col(c).cast("string").alias("value"))
                      for c in categorical])).alias("fv"))
                  .where(F.col("fv.value").isNotNull())
                  .groupBy("fv.feature", "fv.value").count())
        rank = Window.partitionBy("feature").orderBy(F.desc("count"), F.asc("value"))
        rows = (counts.withColumn("rank", F.row_number().over(rank))
                .where(F.col("rank") <= max_categories).collect())
        ranked: dict[str, list[tuple[int, str]]] = {c: [] for c in categorical}
        for row in rows:
            ranked[row["feature"]].append((row["rank"], row["value"]))
        for column in categorical:
            values = [v for _, v in sorted(ranked[column])]
            top_values[column] = tuple(values)
            typical[column] = values[0] if values else None
    return ReferenceProfile(kinds=dict(kinds), edges=edges, top_values=top_values, typical=typical)


def _as_double(column: str) -> Column:
    value = F.col(column).cast("double")
    return F.when(F.isnan(value), F.lit(None).cast("double")).otherwise(value)


def unpivoted_inputs(df: DataFrame, profile: ReferenceProfile) -> DataFrame:
    """One row per (input row, profiled feature): `feature`, its value as a double (`number`,
    numeric features; NaN becomes null) and as a string (`text`, categorical features)."""
    def value_of(column: str) -> Column:
        numeric = profile.kinds[column] == "numeric"
        return F.struct(F.lit(column).alias("feature"),
                        (_as_double(column) if numeric else F.lit(None).cast("double")).alias("number"),
                        (F.lit(None) if numeric else F.col(column)).cast("string").alias("text"))
    return df.select(F.explode(F.array(*[value_of(c) for c in profile.kinds])).alias("fv")).select("fv.*")


def _lookup(per_feature: Mapping[str, tuple], element_type: str) -> Column:
    """The profile's per-feature tuples as one map literal, looked up by the row's feature."""
    entries = [part for feature, values in per_feature.items()
               for part in (F.lit(feature), F.array(*[F.lit(v) for v in values]).cast(f"array<{element_type}>"))]
    if not entries:  # no feature of this kind: a typed null keeps the expression resolvable
        return F.lit(None).cast(f"array<{element_type}>")
    return F.element_at(F.create_map(*entries), F.col("feature"))


def bin_of_unpivoted(profile: ReferenceProfile) -> Column:
    """The PSI bin of an unpivoted row as a string: numeric bins count the feature's edges below
    the value, categorical bins are the reference's frequent values or "other"; null is a bin.
    The edges and frequent values are looked up by feature, so the expression is the same size
    however many features there are (a CASE per feature and edge outgrew the JVM's 64 KB method
    limit on ~100 features, and Spark fell back to interpreting it, logging a compile error)."""
    numeric = {c: profile.edges[c] for c, k in profile.kinds.items() if k == "numeric"}
    categorical = {c: profile.top_values[c] for c, k in profile.kinds.items() if k != "numeric"}
    number, text = F.col("number"), F.col("text")
    edges_below = F.size(F.filter(_lookup(numeric, "double"), lambda edge: number > edge))
    in_top = F.coalesce(F.array_contains(_lookup(categorical, "string"), text), F.lit(False))
    is_numeric = F.col("feature").isin(list(numeric)) if numeric else F.lit(False)
    return (F.when(is_numeric & number.isNull(), F.lit(NULL_BIN))
            .when(is_numeric, edges_below.cast("string"))
            .when(text.isNull(), F.lit(NULL_BIN))
            .when(in_top, text).otherwise(F.lit(OTHER_BIN)))


def bin_counts(df: DataFrame, profile: ReferenceProfile) -> dict[tuple[str, str], int]:
    """Rows per (feature, bin), computed in one Spark aggregation."""
    rows = (unpivoted_inputs(df, profile)
            .groupBy("feature", bin_of_unpivoted(profile).alias("bin")).count().collect())
    return {(r["feature"], r["bin"]): int(r["count"]) for r in rows}


def psi(expected: Mapping[str, int], actual: Mapping[str, int]) -> float:
    """Population stability index of two bin-count maps: sum (a - e) * ln(a / e) over bins."""
    n_expected, n_actual = sum(expected.values()), sum(actual.values())
    if n_expected == 0 or n_actual == 0:
        return float("nan")
    total = 0.0
    for b in set(expected) | set(actual):
        e = max(expected.get(b, 0) / n_expected, MIN_SHARE)
        a = max(actual.get(b, 0) / n_actual, MIN_SHARE)
        total += (a - e) * math.log(a / e)
    return total


def feature_drift(reference: DataFrame, current: DataFrame, profile: ReferenceProfile,
                  warn_threshold: float) -> list[FeatureDrift]:
    """PSI of every profiled feature, highest first; features above the threshold are logged."""
    ref_counts, cur_counts = bin_counts(reference, profile), bin_counts(current, profile)
    results = []
    for feature, kind in profile.kinds.items():
        expected = {b: n for (f, b), n in ref_counts.items() if f == feature}
        actual = {b: n for (f, b), n in cur_counts.items() if f == feature}
        results.append(FeatureDrift(feature, kind, psi(expected, actual),
                                    len(set(expected) | set(actual))))
    results.sort(key=lambda d: (-d.psi if not math.isnan(d.psi) else 0.0, d.feature))
    for drift in results:
        if drift.psi > warn_threshold:
            log.warning("feature drift: %s has PSI %.3f > %.3f between the training and the "
                        "scored snapshot", drift.feature, drift.psi, warn_threshold)
    return results
