"""Population stability of every model input between the training snapshot and a scored snapshot.

The reference profile (bin edges from the training snapshot's quantiles, the most frequent
categorical values, medians and modes) is computed in Spark with one quantile pass, one pass
that moves each edge off the value it sits on, and one grouped count; binning and counting of
both snapshots run in Spark too. Only the per-feature bin counts (features x bins rows) reach
the driver, where the PSI sums are taken.

Why the edges move: a quantile edge is a value of the reference, and many inputs are masses on a
few values (zero counts, a category's conversion rate shared by all its users). An edge on such
a value puts the whole mass on one side of it, and the next snapshot's value of the same thing
(a rate recomputed over a new window, 0.1201 instead of 0.1200) on the other: a large PSI for
no change. Each edge is moved halfway to the next larger value of the reference, so every
repeated value lies inside a bin. Shares are smoothed (half a row per bin) instead of floored,
so a bin empty on one side gives a PSI that grows with the evidence, not a fixed large one.
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
# Pseudo-count added to every bin of both sides (Laplace / Jeffreys smoothing of the shares).
SMOOTHING = 0.5


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
    # Numeric inputs: relative change of the mean of the non-null values, and change of the
    # share of nulls (None for categorical inputs).
    mean_change: float | None = None
    null_share_change: float | None = None
    # PSI above the threshold and, for a numeric input, a material move (see feature_drift).
    alert: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"feature": self.feature, "kind": self.kind, "psi": round(self.psi, 6), "bins": self.bins,
                "mean_change": None if self.mean_change is None else round(self.mean_change, 6),
                "null_share_change": None if self.null_share_change is None else round(self.null_share_change, 6),
                "alert": self.alert}


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
        edges = edges_between_values(reference, edges, kinds)
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


def edges_between_values(reference: DataFrame, edges: Mapping[str, tuple[float, ...]],
                         kinds: Mapping[str, str]) -> dict[str, tuple[float, ...]]:
    """Each edge moved halfway to the next larger value of its feature in `reference` (one
    aggregation: per feature, the smallest value above each edge); an edge with no larger value
    stays. A value the reference repeats then never sits on a bin boundary."""
    if not any(edges.values()):
        return dict(edges)
    profile = ReferenceProfile(kinds={c: "numeric" for c in edges if edges[c]}, edges=edges)
    most = max(len(e) for e in edges.values())
    number = F.col("number")
    per_edge = _lookup(profile.edges, "double")
    rows = (unpivoted_inputs(reference.select(*profile.kinds), profile)
            .groupBy("feature")
            .agg(*[F.min(F.when(number > F.try_element_at(per_edge, F.lit(k + 1)), number)).alias(f"next_{k}")
                   for k in range(most)])
            .collect())
    above = {r["feature"]: [r[f"next_{k}"] for k in range(most)] for r in rows}
    moved = dict(edges)
    for column, column_edges in edges.items():
        nexts = above.get(column)
        if nexts is not None:
            moved[column] = tuple(edge if nxt is None else (edge + nxt) / 2
                                  for edge, nxt in zip(column_edges, nexts))
    return moved


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
    return {key: n for key, (n, _) in bin_sums(df, profile).items()}


def bin_sums(df: DataFrame, profile: ReferenceProfile) -> dict[tuple[str, str], tuple[int, float]]:
    """Rows and the sum of the numeric values per (feature, bin), in one Spark aggregation."""
    rows = (unpivoted_inputs(df, profile)
            .groupBy("feature", bin_of_unpivoted(profile).alias("bin"))
            .agg(F.count(F.lit(1)).alias("count"), F.sum("number").alias("total")).collect())
    return {(r["feature"], r["bin"]): (int(r["count"]), float(r["total"] or 0.0)) for r in rows}


def _mean_and_null_share(sums: Mapping[str, tuple[int, float]]) -> tuple[float | None, float]:
    rows = sum(n for n, _ in sums.values())
    nulls = sums.get(NULL_BIN, (0, 0.0))[0]
    valued = rows - nulls
    mean = sum(t for b, (_, t) in sums.items() if b != NULL_BIN) / valued if valued else None
    return mean, (nulls / rows if rows else 0.0)


def psi(expected: Mapping[str, int], actual: Mapping[str, int]) -> float:
    """Population stability index of two bin-count maps: sum (a - e) * ln(a / e) over the bins
    of either side, each share smoothed by SMOOTHING rows per bin."""
    n_expected, n_actual = sum(expected.values()), sum(actual.values())
    if n_expected == 0 or n_actual == 0:
        return float("nan")
    bins = set(expected) | set(actual)
    total = 0.0
    for b in bins:
        e = (expected.get(b, 0) + SMOOTHING) / (n_expected + SMOOTHING * len(bins))
        a = (actual.get(b, 0) + SMOOTHING) / (n_actual + SMOOTHING * len(bins))
        total += (a - e) * math.log(a / e)
    return total


def relative_change(before: float | None, after: float | None) -> float | None:
    if before is None or after is None:
        return None
    if before == 0:
        return 0.0 if after == 0 else math.inf
    return abs(after - before) / abs(before)


def feature_drift(reference: DataFrame, current: DataFrame, profile: ReferenceProfile,
                  warn_threshold: float, min_relative_change: float = 0.0,
                  min_null_share_change: float = 0.0) -> list[FeatureDrift]:
    """PSI of every profiled feature, highest first; alerts are logged.

    A numeric input alerts when its PSI is above `warn_threshold` and it moved materially: the
    mean of its values by at least `min_relative_change` (relative), or its share of nulls by at
    least `min_null_share_change`. PSI alone reads any move of a value many rows share (a
    category's conversion rate recomputed over a new window, 0.035 -> 0.036) as a different
    population, however small the move; the mean says how far the values went.
    """
    ref_sums, cur_sums = bin_sums(reference, profile), bin_sums(current, profile)
    results = []
    for feature, kind in profile.kinds.items():
        expected = {b: v for (f, b), v in ref_sums.items() if f == feature}
        actual = {b: v for (f, b), v in cur_sums.items() if f == feature}
        value = psi({b: n for b, (n, _) in expected.items()}, {b: n for b, (n, _) in actual.items()})
        mean_change = null_change = None
        material = True
        if kind == "numeric":
            (ref_mean, ref_nulls), (cur_mean, cur_nulls) = _mean_and_null_share(expected), _mean_and_null_share(actual)
            mean_change, null_change = relative_change(ref_mean, cur_mean), abs(cur_nulls - ref_nulls)
            material = (null_change >= min_null_share_change
                        or (mean_change is not None and mean_change >= min_relative_change))
        results.append(FeatureDrift(feature, kind, value, len(set(expected) | set(actual)), mean_change,
                                    null_change, bool(value > warn_threshold and material)))
    results.sort(key=lambda d: (-d.psi if not math.isnan(d.psi) else 0.0, d.feature))
    for drift in results:
        if drift.alert:
            log.warning("feature drift: %s has PSI %.3f > %.3f between the training and the scored "
                        "snapshot (mean moved %s, null share %s)", drift.feature, drift.psi, warn_threshold,
                        "n/a" if drift.mean_change is None else f"{drift.mean_change:.1%}",
                        "n/a" if drift.null_share_change is None else f"{drift.null_share_change:+.1%}")
    return results
