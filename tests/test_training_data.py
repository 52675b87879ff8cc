"""Training set, pinned-version reader and preprocessing state on real Spark + Delta + petastorm."""
from __future__ import annotations

import collections
import datetime as dt
import math
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from demandcast.config import load_config
from demandcast.errors import ConfigError, DataQualityError
from demandcast.tables import current_version, files_of_version, table_path, write_table
from training_fixtures import FEATURES_SPEC, SNAPSHOTS, simulate, write_contract_tables
from training.dataset import (SPLITS, build_training_set, pin_training_set, snapshot_gaps,
                              split_class_counts, split_problems)
from training.batches import STRINGS, WEIGHT, InputSpec, to_columns
from training.input import Prefetcher, ShardReader, shard_batches
from training.preprocessing import compute_state, numeric_statistics


@pytest.fixture(scope="module")
def world(spark, tmp_path_factory):
    warehouse = str(tmp_path_factory.mktemp("training_data") / "warehouse")
    data = simulate(300, SNAPSHOTS, seed=3)
    write_contract_tables(spark, warehouse, data)
    cfg = load_config("conf/local.yaml", [f"warehouse={warehouse}", "train.files_per_split=3",
                                          "train.top_k_categories=3", "train.vocab_min_count=2"])
    training_set = build_training_set(spark, warehouse, cfg.train, [])
    return cfg, data, training_set


def read_all(files, spec, size=2, epoch=0, batch_size=50):
    rows = []
    for rank in range(size):
        for batch in shard_batches(files, spec, batch_size, rank, size, seed=5, epoch=epoch):
            assert len(batch[WEIGHT]) <= batch_size
            rows += [(k, None if math.isnan(d) else float(d))
                     for k, d in zip(batch["user_key"], batch["days_since_last_purchase"])]
    return rows


def test_training_set_follows_the_contract(spark, world):
    cfg, data, ts = world
    df = ts.read(spark)
    assert ts.columns.numeric == ("days_since_last_purchase", "purchases_last_30d",
                                  "spend_last_30d", "sessions_last_7d")
    assert ts.columns.categorical == ("region", "device", "top_category")
    assert df.count() == len(data) == sum(ts.row_counts.values())
    # top-3 categories by buyers, expanded to 0/1 columns that agree with the label map
    buyers = data[data.label_purchased == 1].bought_category.value_counts()
    assert list(ts.category_ids) == list(buyers.index[:3])
    cat0 = {r.user_key + str(r.snapshot_date): r.label_cat_0 for r in df.collect()}
    expected = {k + str(s): int(c == ts.category_ids[0]) for k, s, c in
                zip(data.user_key, data.snapshot_date, data.bought_category)}
    assert cat0 == expected
    # a user lands in one split at every snapshot (no leakage between train and test)
    per_user = df.groupBy("user_key").agg(F.countDistinct("split").alias("n")).where("n > 1").count()
    assert per_user == 0
    # the pinned version can be described again from the table alone
    pinned = pin_training_set(spark, cfg.warehouse, ts.version, cfg.train)
    assert (pinned.category_ids, pinned.columns, pinned.source_versions, pinned.row_counts) == \
        (ts.category_ids, ts.columns, ts.source_versions, ts.row_counts)


def test_reader_returns_exactly_the_pinned_version_after_an_update(spark, world):
    cfg, data, ts = world
    spec = InputSpec(("days_since_last_purchase",), ("user_key",))
    files = ts.files(spark, "train")
    expected = collections.Counter(  # the reader hands numerics over as float32
        (r.user_key, None if r.days_since_last_purchase is None
         else float(np.float32(r.days_since_last_purchase)))
        for r in ts.read(spark, "train").collect())

    # Newer features, a new training_set version; nothing vacuumed.
    features = spark.read.format("delta").load(f"{cfg.warehouse}/user_features")
    # Shifted rather than set to one value: a feature constant in every row is left out.
    write_table(features.withColumn("days_since_last_purchase", F.col("days_since_last_purchase") + 1000.0),
                cfg.warehouse, FEATURES_SPEC, "overwrite")
    newer = build_training_set(spark, cfg.warehouse, cfg.train, [])
    assert newer.version > ts.version
    assert not set(files) & set(newer.files(spark, "train"))

    for epoch in (0, 1):  # each row exactly once per epoch across two ranks, in any order
        assert collections.Counter(read_all(files, spec, epoch=epoch)) == expected
    newer_values = [r.days_since_last_purchase for r in newer.read(spark, "train").collect()]
    assert any(v is not None for v in newer_values)
    assert all(v is None or v >= 1000.0 for v in newer_values)


def test_shuffle_is_reproducible_for_a_seed(spark, world):
    _, _, ts = world
    spec = InputSpec(("label_spend",), ("user_key",))
    files = ts.files(spark, "validation")
    order = lambda epoch: [k for b in shard_batches(files, spec, 16, 0, 1, seed=9, epoch=epoch)
                           for k in b["user_key"]]
    first, again, other_epoch = order(0), order(0), order(1)
    assert first == again
    assert first != other_epoch and sorted(first) == sorted(other_epoch)


def test_cached_epochs_see_every_row_once_and_match_a_resumed_reader(spark, world):
    _, _, ts = world
    spec = InputSpec(("label_spend",), ("user_key",))
    files = ts.files(spark, "train")
    expected = collections.Counter(r.user_key for r in ts.read(spark, "train").collect())

    def epoch_keys(reader, epoch):
        return [k for b in reader.blocks(epoch, 32) for k in to_columns(b, spec)["user_key"]]

    readers = [ShardReader(files, spec, rank, 2, seed=4, cache_mb=64) for rank in (0, 1)]
    orders = {}
    for epoch in (0, 1, 2):
        orders[epoch] = [epoch_keys(r, epoch) for r in readers]
        assert collections.Counter(orders[epoch][0] + orders[epoch][1]) == expected
        assert all(r.cached for r in readers)  # after epoch 0 the shards come from memory
    assert orders[1] != orders[2]
    # A run resumed at epoch 2 (a new reader, nothing cached) yields the very same batches.
    resumed = [ShardReader(files, spec, rank, 2, seed=4, cache_mb=64) for rank in (0, 1)]
    assert [epoch_keys(r, 2) for r in resumed] == orders[2]
    # The tensors the train loop gets (streamed chunks split, cached chunks gathered and split,
    # through the Prefetcher) are the same batches, also when a cached epoch is gathered in
    # several chunks.
    fresh = ShardReader(files, spec, 0, 2, seed=4, cache_mb=64)
    for epoch in (0, 2):
        batches = list(Prefetcher(lambda: fresh.tensor_chunks(epoch, 32, gather_batches=3)))
        assert [len(b[WEIGHT]) for b in batches[:-1]] == [32] * (len(batches) - 1)
        assert [k.decode() for b in batches for k in b[STRINGS].numpy()[:, 0]] == orders[epoch][0]
        assert len(batches) > 3
    # Over the budget: nothing is kept, every epoch streams, still every row once.
    tight = [ShardReader(files, spec, rank, 2, seed=4, cache_mb=0.001) for rank in (0, 1)]
    for epoch in (0, 1):
        keys = [k for r in tight for k in epoch_keys(r, epoch)]
        assert collections.Counter(keys) == expected
    assert not any(r.cached for r in tight)


def test_preprocessing_state_is_computed_from_the_train_split(spark, world):
    cfg, _, ts = world
    train = ts.read(spark, "train")
    state = compute_state(ts, train, cfg.train)
    pdf = train.toPandas()
    values = pdf["spend_last_30d"].astype(float)
    transformed = np.sign(values) * np.log1p(np.abs(values))
    assert state["numeric"]["spend_last_30d"]["mean"] == pytest.approx(transformed.mean(), rel=1e-9)
    assert state["numeric"]["spend_last_30d"]["std"] == pytest.approx(transformed.std(ddof=0), rel=1e-9)
    counts = pdf["region"].value_counts()
    assert state["categorical"]["region"]["vocabulary"] == \
        sorted(counts.index, key=lambda v: (-counts[v], v))
    assert state["labels"]["base_rate"] == pytest.approx(pdf["label_purchased"].mean())
    assert state["labels"]["rows"] == ts.row_counts["train"]
    assert ["region", "device"] in state["crosses"]


def test_bad_cross_is_a_clear_error(spark, world):
    from demandcast.errors import DataQualityError

    cfg, _, ts = world
    settings = cfg.train.model_copy(update={"crosses": [["region", "no_such_feature"]]})
    with pytest.raises(DataQualityError, match="no_such_feature"):
        compute_state(ts, ts.read(spark, "train"), settings)


def cli_train(project_root: Path, warehouse: str, runs_dir: Path, *overrides: str) -> int:
    """`demandcast train` in this process, on the session the tests share."""
    from demandcast.cli import main

    settings = ["spark.shuffle_partitions=2", "spark.driver_memory=3g", f"warehouse={warehouse}",
                f"runs_dir={runs_dir}", f"snapshot_dates=[{','.join(map(str, SNAPSHOTS))}]",
                "train.files_per_split=1", *overrides]
    return main(["train", "--conf", str(project_root / "conf" / "local.yaml"),
                 *[arg for setting in settings for arg in ("--set", setting)]])


def test_a_train_run_that_fails_after_writing_leaves_training_set_as_it_was(
        spark, world, tmp_path, project_root, caplog):
    from delta.tables import DeltaTable

    cfg, _, _ = world
    path = table_path(cfg.warehouse, "training_set")
    before = current_version(spark, path)
    # Passes config validation, fails in preprocessing, after the new version is written.
    no_such_cross = "train.crosses=[[region,no_such_feature]]"

    assert cli_train(project_root, cfg.warehouse, tmp_path, no_such_cross) == 3  # its own exit code
    # The run's version stays in the history; a RESTORE on top brings back the previous content.
    assert current_version(spark, path) == before + 2
    assert files_of_version(spark, path, before + 2) == files_of_version(spark, path, before)
    last = DeltaTable.forPath(spark, path).history(1).first()
    assert (last.operation, last.operationParameters["version"]) == ("RESTORE", str(before))
    assert f"table training_set restored to version {before}" in caplog.text

    # A pinned version is not written by the run: nothing to restore.
    assert cli_train(project_root, cfg.warehouse, tmp_path, no_such_cross,
                     f"train.training_set_version={before}") == 3
    assert current_version(spark, path) == before + 2


def test_splits_need_buyers_and_non_buyers():
    full = {(s, c): 10 for s in SPLITS for c in (0, 1)}
    assert split_problems(full) == []
    assert split_problems({**full, ("test", 1): 0, ("validation", 0): 0, ("validation", 1): 0}) == [
        "the 'validation' split has no rows", "the 'test' split has 10 rows, all with label_purchased=0"]
    assert split_problems({**full, ("train", 0): 0}) == [
        "the 'train' split has 10 rows, all with label_purchased=1"]


def test_a_one_class_training_set_is_refused_and_nothing_written(spark, tmp_path):
    warehouse = str(tmp_path / "warehouse")
    nobody_buys = simulate(60, SNAPSHOTS[:1], seed=3).assign(
        label_purchased=0, label_spend=0.0, label_n_purchases=0, bought_category=None)
    write_contract_tables(spark, warehouse, nobody_buys)
    cfg = load_config("conf/local.yaml", [f"warehouse={warehouse}", "train.files_per_split=1"])
    with pytest.raises(DataQualityError, match=r"training set refused, nothing written: the 'train' "
                                               r"split has \d+ rows, all with label_purchased=0"):
        build_training_set(spark, warehouse, cfg.train, [])
    assert current_version(spark, table_path(warehouse, "training_set")) is None


def test_missing_snapshots_say_what_to_run():
    d1, d2, d3 = SNAPSHOTS[0], SNAPSHOTS[-1], SNAPSHOTS[-1] + dt.timedelta(days=30)
    gaps = snapshot_gaps([d1, d2, d3], {d1, d2}, {d1})
    assert gaps[0].startswith(f"snapshots ['{d3}'] are missing from user_features: run `features`")
    assert gaps[1].startswith(f"snapshots ['{d2}'] have no labels: their label window")
    assert snapshot_gaps([d1], {d1, d2}, {d1}) == []


def test_pinning_a_version_that_does_not_exist_names_the_key(spark, world):
    cfg, _, ts = world
    with pytest.raises(ConfigError, match=r"train.training_set_version=99: training_set has no "
                                          r"such version \(it has 0\.\.\d+\)"):
        pin_training_set(spark, cfg.warehouse, 99, cfg.train)


def test_numerics_null_in_every_row_are_named_together(spark):
    train = spark.createDataFrame([(1.0, None, None), (2.0, None, None)], "a double, b double, c double")
    with pytest.raises(DataQualityError, match=r"numeric features \['b', 'c'\] are null in every "
                                               r"training row: leave them out \(train.exclude_features="):
        numeric_statistics(train, ("a", "b", "c"), buckets=4)


def test_split_counts_and_train_non_nulls_come_from_one_pass(spark):
    rows = spark.createDataFrame(
        [("train", 1, 1.0, None, 5.0, 5.0), ("train", 0, None, None, 5.0, None),
         ("test", 0, 2.0, 3.0, 6.0, 5.0), ("train", 0, 4.0, None, 5.0, 5.0)],
        "split string, label_purchased int, a double, b double, c double, d double")
    by_class, non_null, constant = split_class_counts(rows, ("a", "b", "c", "d"))
    assert by_class == {("train", 1): 1, ("train", 0): 2, ("test", 0): 1}
    assert non_null == {"a": 2, "b": 0, "c": 3, "d": 2}  # b has a value only outside the train split
    # c is 5.0 in every train row (6.0 in test counts not); d is null in one: its nullness informs
    assert constant == ["c"]
