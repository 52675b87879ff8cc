"""The training set: user features joined to labels for chosen snapshots, one pinned Delta version.

Each run materialises the join once (or pins an existing version) so that every rank, every epoch,
evaluation and a resumed run read exactly the same rows. Readers get the version's files from the
Delta log, never from listing the folder, so later writes (without VACUUM) do not leak in.
"""
from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from demandcast.errors import ConfigError, DataQualityError, StageFailed
from demandcast.logs import get_logger
from demandcast.settings.train import TrainSettings
from demandcast.tables import (NO_DELETION_VECTORS, TableSpec, current_version, read_table,
                               table_path, write_table)

log = get_logger("training.dataset")

KEYS = ("user_key", "snapshot_date")
LABELS = ("label_purchased", "label_spend", "label_n_purchases")
SPLITS = ("train", "validation", "test")
SPLIT_COLUMN = "split"
NUMERIC_TYPES = (T.ByteType, T.ShortType, T.IntegerType, T.LongType, T.FloatType, T.DoubleType,
                 T.DecimalType, T.BooleanType)

TRAINING_SET_SPEC = TableSpec(
    name="training_set",
    comment="user_features joined to labels for the run's snapshots; one version per training run",
    partition_by=(SPLIT_COLUMN,),
    column_comments={
        SPLIT_COLUMN: "train | validation | test, from a stable hash of user_key (holdout) or "
                      "the snapshot (out of time)",
        "label_purchased": "1 if the user bought within the label window after snapshot_date",
    },
    properties=NO_DELETION_VECTORS,
)


def category_label_column(index: int) -> str:
    return f"label_cat_{index}"


@dataclass(frozen=True)
class FeatureColumns:
    """Which user_features columns the model uses, and how: numeric or categorical."""

    numeric: tuple[str, ...]
    categorical: tuple[str, ...]
    ignored: dict[str, str] = field(default_factory=dict)

    @property
    def kinds(self) -> dict[str, str]:
        return {**{c: "numeric" for c in self.numeric}, **{c: "categorical" for c in self.categorical}}


def feature_columns(features_schema: T.StructType, exclude: list[str]) -> FeatureColumns:
    """Numeric types are numeric features, strings categorical; anything else is left out, loudly."""
    numeric, categorical, ignored = [], [], {}
    for fld in features_schema.fields:
        if fld.name in KEYS or fld.name.startswith("label_") or fld.name == SPLIT_COLUMN:
            continue
        if fld.name in exclude:
            ignored[fld.name] = "excluded by train.exclude_features"
        elif isinstance(fld.dataType, NUMERIC_TYPES):
            numeric.append(fld.name)
        elif isinstance(fld.dataType, T.StringType):
            categorical.append(fld.name)
        else:
            ignored[fld.name] = f"type {fld.dataType.simpleString()} is neither numeric nor string"
    if ignored:
        log.warning("feature columns not used by the model: %s", ignored)
    if not numeric and not categorical:
        raise DataQualityError("user_features has no numeric or string feature columns")
    return FeatureColumns(tuple(numeric), tuple(categorical), ignored)


def top_categories(labels: DataFrame, k: int) -> list[str]:
    """The k categories with the most buyers in `labels` (ties by name, so the order is stable)."""
    if k == 0:
        return []
    rows = (labels.select(F.explode("label_category_spend").alias("category_id", "spend"))
            .where(F.col("spend") > 0).groupBy("category_id").count()
            .orderBy(F.desc("count"), F.asc("category_id")).limit(k).collect())
    return [r.category_id for r in rows]


def split_bucket(salt: str) -> Column:
    """A stable bucket 0..99 of user_key: the same user lands in the same split on every run."""
    digest = F.sha2(F.concat(F.lit(salt), F.col("user_key")), 256)
    return F.conv(F.substring(digest, 1, 8), 16, 10).cast("long") % 100


def split_column(settings: TrainSettings, test_snapshot: dt.date | None) -> Column:
    bucket = split_bucket(settings.split_salt)
    hashed = (F.when(bucket < settings.test_percent, F.lit("test"))
              .when(bucket < settings.test_percent + settings.validation_percent, F.lit("validation"))
              .otherwise(F.lit("train")))
    if settings.protocol == "holdout":
        return hashed
    # Out of time: the later snapshot is the test set; earlier snapshots hold out validation
    # users by hash (test-bucket users train there, since they are not the test set).
    early = F.when(bucket < settings.validation_percent, F.lit("validation")).otherwise(F.lit("train"))
    return F.when(F.col("snapshot_date") == F.lit(test_snapshot), F.lit("test")).otherwise(early)


def joined_training_rows(features: DataFrame, labels: DataFrame, columns: FeatureColumns,
                         categories: list[str], split: Column) -> DataFrame:
    """Features inner-join labels on the keys, with fixed per-category label columns and the split.

    Numeric features become double, booleans 0/1, so the petastorm reader sees one dtype per kind.
    """
    feature_cols = [F.col(c).cast("double").alias(c) for c in columns.numeric] + \
                   [F.col(c) for c in columns.categorical]
    category_cols = [
        (F.coalesce(F.col("label_category_spend")[cat], F.lit(0.0)) > 0).cast("int")
        .alias(category_label_column(i), metadata={
            "category_id": cat, "comment": f"1 if the user bought category {cat} in the window"})
        for i, cat in enumerate(categories)
    ]
    label_cols = [F.col("label_purchased").cast("int").alias("label_purchased"),
                  F.col("label_spend").cast("double").alias("label_spend"),
                  F.col("label_n_purchases").cast("int").alias("label_n_purchases"),
                  *category_cols]
    return (features.select(*KEYS, *feature_cols)
            .join(labels.select(*KEYS, *label_cols), on=list(KEYS), how="inner")
            .withColumn(SPLIT_COLUMN, split))


def file_bucket(files_per_split: int) -> Column:
    """Spreads a split over about `files_per_split` files (petastorm shards by row group)."""
    return F.pmod(F.xxhash64("user_key"), F.lit(files_per_split))


@dataclass(frozen=True)
class TrainingSet:
    """A pinned training_set version and what it holds."""

    path: str
    version: int
    snapshot_dates: tuple[dt.date, ...]
    columns: FeatureColumns
    category_ids: tuple[str, ...]
    source_versions: dict[str, int]
    protocol: str
    row_counts: dict[str, int]

    def to_json(self) -> dict:
        return {
            "path": self.path, "version": self.version,
            "snapshot_dates": [d.isoformat() for d in self.snapshot_dates],
            "numeric": list(self.columns.numeric), "categorical": list(self.columns.categorical),
            "ignored": self.columns.ignored, "category_ids": list(self.category_ids),
            "source_versions": self.source_versions, "protocol": self.protocol,
            "row_counts": self.row_counts,
        }

    @classmethod
    def from_json(cls, data: dict) -> "TrainingSet":
        return cls(
            path=data["path"], version=int(data["version"]),
            snapshot_dates=tuple(dt.date.fromisoformat(d) for d in data["snapshot_dates"]),
            columns=FeatureColumns(tuple(data["numeric"]), tuple(data["categorical"]),
                                   dict(data.get("ignored", {}))),
            category_ids=tuple(data["category_ids"]), source_versions=dict(data["source_versions"]),
            protocol=data["protocol"], row_counts=dict(data["row_counts"]),
        )

    def label_columns(self) -> list[str]:
        return [*LABELS, *[category_label_column(i) for i in range(len(self.category_ids))]]

    def read(self, spark: SparkSession, split: str | None = None) -> DataFrame:
        df = spark.read.format("delta").option("versionAsOf", self.version).load(self.path)
        return df if split is None else df.where(F.col(SPLIT_COLUMN) == split)

    def files(self, spark: SparkSession, split: str) -> list[str]:
        """Data files of one split of the pinned version, from the Delta log (partition pruning)."""
        return sorted(self.read(spark, split).inputFiles())


def snapshot_gaps(wanted: list[dt.date], with_features: set[dt.date], with_labels: set[dt.date]
                  ) -> list[str]:
    """What is missing for each wanted snapshot, and what to do about it: a snapshot with
    features but no labels is one whose label window was not complete when features ran."""
    no_features = sorted(d.isoformat() for d in set(wanted) - with_features)
    no_labels = sorted(d.isoformat() for d in (set(wanted) & with_features) - with_labels)
    gaps = []
    if no_features:
        gaps.append(f"snapshots {no_features} are missing from user_features: run `features` "
                    "for them first")
    if no_labels:
        gaps.append(f"snapshots {no_labels} have no labels: their label window (label_window_days) "
                    "reached past the last ingested event when `features` ran; ingest the later "
                    "events and rerun `features`, or train on earlier snapshots")
    return gaps


def resolve_snapshots(spark: SparkSession, features: DataFrame, labels: DataFrame,
                      wanted: list[dt.date]) -> list[dt.date]:
    with_features = {r[0] for r in features.select("snapshot_date").distinct().collect()}
    with_labels = {r[0] for r in labels.select("snapshot_date").distinct().collect()}
    if not wanted:
        if not with_features & with_labels:
            raise StageFailed("user_features and labels share no snapshot_date: run `features` first")
        return sorted(with_features & with_labels)
    gaps = snapshot_gaps(wanted, with_features, with_labels)
    if gaps:
        raise StageFailed("; ".join(gaps))
    return sorted(wanted)


def split_class_counts(rows: DataFrame, numeric: tuple[str, ...] = ()
                       ) -> tuple[dict[tuple[str, int], int], dict[str, int], list[str]]:
    """Rows per (split, label_purchased), the non-null values of each numeric in the train split,
    and the numerics with one and the same value in every train row, in one pass over the
    needed columns only."""
    counted = rows.groupBy(SPLIT_COLUMN, "label_purchased").agg(
        F.count(F.lit(1)).alias("_rows"),
        *[agg for i, c in enumerate(numeric) for agg in (
            F.count(c).alias(f"_nn{i}"), F.min(c).alias(f"_lo{i}"), F.max(c).alias(f"_hi{i}"))]
    ).collect()
    by_class = {(r[0], int(r[1])): int(r["_rows"]) for r in counted}
    in_train = {c: sum(int(r[f"_nn{i}"]) for r in counted if r[0] == "train")
                for i, c in enumerate(numeric)}
    train_rows = sum(n for (split, _), n in by_class.items() if split == "train")
    groups = [r for r in counted if r[0] == "train"]
    constant = [c for i, c in enumerate(numeric) if train_rows and in_train[c] == train_rows
                and len({r[f"_lo{i}"] for r in groups} | {r[f"_hi{i}"] for r in groups}) == 1]
    return by_class, in_train, constant


def all_null_error(columns: list[str]) -> DataQualityError:
    # Typically snapshots too early for anyone to have that history: naming every such column
    # at once saves a failed run per column.
    return DataQualityError(f"numeric features {columns} are null in every training row: leave "
                            f"them out (train.exclude_features={columns}) or train on later snapshots")


def rows_per_split(by_class: dict[tuple[str, int], int]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for (split, _), n in by_class.items():
        counts[split] = counts.get(split, 0) + n
    return counts


def split_problems(by_class: dict[tuple[str, int], int]) -> list[str]:
    """Why the splits cannot train and evaluate a classifier: every split needs buyers and
    non-buyers, or validation AUC (early stopping), Platt calibration and test ROC-AUC are
    undefined and training would go on with meaningless figures."""
    problems = []
    for name in SPLITS:
        buyers, others = by_class.get((name, 1), 0), by_class.get((name, 0), 0)
        if buyers + others == 0:
            problems.append(f"the '{name}' split has no rows")
        elif buyers == 0 or others == 0:
            problems.append(f"the '{name}' split has {buyers + others} rows, all with "
                            f"label_purchased={1 if buyers else 0}")
    return problems


def check_splits(by_class: dict[tuple[str, int], int], what: str, remedy: str) -> None:
    problems = split_problems(by_class)
    if problems:
        shown = {f"{s}/{c}": n for (s, c), n in sorted(by_class.items())}
        raise DataQualityError(f"{what}: {'; '.join(problems)} (rows per split/label: {shown}); "
                               f"every split needs buyers and non-buyers: {remedy}")


def build_training_set(spark: SparkSession, warehouse: str, settings: TrainSettings,
                       snapshot_dates: list[dt.date]) -> TrainingSet:
    """Materialises the join for `snapshot_dates` as a new training_set version and pins it."""
    f_path, l_path = table_path(warehouse, "user_features"), table_path(warehouse, "labels")
    f_version, l_version = current_version(spark, f_path), current_version(spark, l_path)
    if f_version is None or l_version is None:
        raise StageFailed("user_features or labels does not exist: run `features` first")
    features = read_table(spark, warehouse, "user_features", f_version)
    labels = read_table(spark, warehouse, "labels", l_version)
    dates = resolve_snapshots(spark, features, labels, snapshot_dates)
    if settings.protocol == "out_of_time" and len(dates) < 2:
        raise ConfigError("train.protocol=out_of_time needs at least two snapshots (train on the "
                          f"earlier, test on the last); have {[d.isoformat() for d in dates]}: list "
                          "more in train.snapshot_dates (or snapshot_dates) or use protocol holdout")
    test_snapshot = dates[-1] if settings.protocol == "out_of_time" else None
    in_dates = F.col("snapshot_date").isin([F.lit(d) for d in dates])
    features, labels = features.where(in_dates), labels.where(in_dates)
    columns = feature_columns(features.schema, settings.exclude_features)
    train_labels = labels if test_snapshot is None else labels.where(F.col("snapshot_date") != test_snapshot)
    categories = top_categories(train_labels, settings.top_k_categories)
    split = split_column(settings, test_snapshot)
    rows = joined_training_rows(features, labels, columns, categories, split)
    # Counted on the narrow join before the write: a refused set leaves training_set untouched.
    by_class, non_null, constant = split_class_counts(rows, columns.numeric)
    check_splits(by_class, "training set refused, nothing written",
                 "add snapshots or users, or change train.test_percent/validation_percent")
    all_null = [c for c, n in non_null.items() if n == 0]
    if all_null and settings.refuse_all_null_features:
        raise all_null_error(all_null)
    # A constant teaches the model nothing and its standard deviation is 0: the same treatment.
    left_out = {**{c: "null in every training row" for c in all_null},
                **{c: "the same value in every training row" for c in constant}}
    if left_out:
        log.warning("numeric features null or constant in every training row, left out of the "
                    "model (train.refuse_all_null_features=true refuses the null ones instead): %s",
                    left_out)
        columns = FeatureColumns(tuple(c for c in columns.numeric if c not in left_out),
                                 columns.categorical, {**columns.ignored, **left_out})
        rows = joined_training_rows(features, labels, columns, categories, split)
    counts = rows_per_split(by_class)
    rows = rows.repartition(settings.files_per_split * len(SPLITS), SPLIT_COLUMN,
                            file_bucket(settings.files_per_split))
    sources = {"user_features": f_version, "labels": l_version}
    lineage = {"source_versions": sources, "protocol": settings.protocol,
               "snapshot_dates": [d.isoformat() for d in dates]}
    # The commit records its own lineage, so a pinned version can be reused without this run.
    key = "spark.databricks.delta.commitInfo.userMetadata"
    spark.conf.set(key, json.dumps(lineage, sort_keys=True))
    try:
        version = write_table(rows, warehouse, TRAINING_SET_SPEC, "overwrite")
    finally:
        spark.conf.unset(key)
    path = table_path(warehouse, "training_set")
    log.info("training_set version %d: %s rows from snapshots %s", version, counts,
             [d.isoformat() for d in dates])
    return TrainingSet(path, version, tuple(dates), columns, tuple(categories),
                       sources, settings.protocol, counts)


def pin_training_set(spark: SparkSession, warehouse: str, version: int,
                     settings: TrainSettings) -> TrainingSet:
    """An existing training_set version, described from its schema and its commit's lineage."""
    from delta.tables import DeltaTable

    path = table_path(warehouse, "training_set")
    if current_version(spark, path) is None:
        raise StageFailed(f"train.training_set_version={version}, but there is no training_set table")
    history = {int(r[0]): r[1] for r in
               DeltaTable.forPath(spark, path).history().select("version", "userMetadata").collect()}
    if int(version) not in history:
        raise ConfigError(f"train.training_set_version={version}: training_set has no such version "
                          f"(it has {min(history)}..{max(history)}); pin one of those or unset it "
                          "to build a new one")
    lineage = json.loads(history[int(version)] or "{}")
    df = spark.read.format("delta").option("versionAsOf", int(version)).load(path)
    features_schema = T.StructType([f for f in df.schema.fields if f.name not in LABELS
                                    and not f.name.startswith("label_cat_")])
    columns = feature_columns(features_schema, settings.exclude_features)
    n_categories = sum(1 for f in df.schema.fields if f.name.startswith("label_cat_"))
    categories = tuple(df.schema[category_label_column(i)].metadata["category_id"]
                       for i in range(n_categories))
    by_class, _, _ = split_class_counts(df)
    check_splits(by_class, f"training_set version {version} cannot be trained on",
                 "pin another version (train.training_set_version) or build a new one")
    counts = rows_per_split(by_class)
    dates = lineage.get("snapshot_dates") or [r[0].isoformat() for r in
                                              df.select("snapshot_date").distinct().collect()]
    return TrainingSet(path, int(version), tuple(sorted(dt.date.fromisoformat(d) for d in dates)),
                       columns, categories, dict(lineage.get("source_versions", {})),
                       lineage.get("protocol", "unknown"), counts)
