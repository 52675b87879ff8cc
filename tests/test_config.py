"""Layered YAML config, --set overrides, and errors that name the key and the file."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from demandcast.config import load_config
from demandcast.errors import ConfigError


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_local_extends_base(project_root):
    cfg = load_config(project_root / "conf" / "local.yaml")
    assert cfg.env == "local"
    assert cfg.spark.master.startswith("local")
    assert cfg.label_window_days == 30  # from base.yaml


def test_cluster_config_is_valid(project_root):
    cfg = load_config(project_root / "conf" / "cluster.yaml")
    assert cfg.env == "cluster"
    assert cfg.spark.packages and cfg.spark.jars_dir is None


def test_overrides_are_typed(project_root):
    cfg = load_config(project_root / "conf" / "local.yaml",
                      ["spark.shuffle_partitions=7", "snapshot_dates=[2026-03-01, 2026-02-01]",
                       "warehouse=/tmp/wh/"])
    assert cfg.spark.shuffle_partitions == 7
    assert cfg.snapshot_dates == [dt.date(2026, 2, 1), dt.date(2026, 3, 1)]
    assert cfg.warehouse == "/tmp/wh"


def test_unknown_key_names_key_and_files(tmp_path):
    base = _write(tmp_path / "base.yaml", "env: local\n")
    top = _write(tmp_path / "top.yaml", "extends: base.yaml\nspark:\n  masterr: local[1]\n")
    with pytest.raises(ConfigError) as err:
        load_config(top)
    text = str(err.value)
    assert "spark.masterr" in text and str(base) in text and str(top) in text


def test_wrong_type_names_key(project_root):
    with pytest.raises(ConfigError, match=r"spark\.shuffle_partitions"):
        load_config(project_root / "conf" / "local.yaml", ["spark.shuffle_partitions=many"])


def test_run_all_stages_are_checked_by_name(project_root):
    cfg = load_config(project_root / "conf" / "local.yaml", ["run_all.stages=[ingest, score]"])
    assert cfg.run_all.stages == ["ingest", "score"]
    with pytest.raises(ConfigError, match=r"run_all\.stages"):
        load_config(project_root / "conf" / "local.yaml", ["run_all.stages=[ingest, scoring]"])


def test_missing_file_and_bad_override(tmp_path, project_root):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory, not a config file"):
        load_config(tmp_path)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(project_root / "conf" / "local.yaml", ["spark.master"])


def test_paths_with_quotes_are_refused(project_root):
    with pytest.raises(ConfigError, match="warehouse"):
        load_config(project_root / "conf" / "local.yaml", ["warehouse=/tmp/x'; DROP"])


def test_runs_dir_must_be_a_file_system_path(project_root):
    with pytest.raises(ConfigError, match="runs_dir.*object-store URI"):
        load_config(project_root / "conf" / "local.yaml", ["runs_dir=s3a://lake/runs"])
    # A plain path for every consumer (pathlib made file:///mnt/runs the relative "file:/mnt/runs").
    assert load_config(project_root / "conf" / "local.yaml", ["runs_dir=file:///mnt/runs"]).runs_dir \
        == "/mnt/runs"


def test_extends_cycle_is_an_error(tmp_path):
    _write(tmp_path / "a.yaml", "extends: b.yaml\n")
    _write(tmp_path / "b.yaml", "extends: a.yaml\n")
    with pytest.raises(ConfigError, match="extends itself"):
        load_config(tmp_path / "a.yaml")


def test_impossible_dates_name_the_key_or_the_line(tmp_path, project_root):
    # yaml's date constructor raises a bare ValueError: it must still be a one-line ConfigError.
    with pytest.raises(ConfigError, match=r"--set snapshot_dates: invalid date '2025-13-01'"):
        load_config(project_root / "conf" / "local.yaml", ["snapshot_dates=[2025-13-01]"])
    with pytest.raises(ConfigError, match=r"--set score\.snapshot_date: invalid date '2025-02-30'"):
        load_config(project_root / "conf" / "local.yaml", ["score.snapshot_date=2025-02-30"])
    bad = _write(tmp_path / "bad.yaml", f"extends: {project_root / 'conf' / 'local.yaml'}\n"
                                        "snapshot_dates: [2025-13-01]\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml .*line 2.*invalid date '2025-13-01'"):
        load_config(bad)


def test_yaml_syntax_and_empty_files_are_one_line_errors(tmp_path):
    broken = _write(tmp_path / "broken.yaml", "env: local\nspark: [\n")
    with pytest.raises(ConfigError, match=r"broken\.yaml is not valid YAML: line 3") as err:
        load_config(broken)
    assert "\n" not in str(err.value)
    for text in ("", "# only a comment\n"):
        empty = _write(tmp_path / "empty.yaml", text)
        with pytest.raises(ConfigError, match=r"empty\.yaml is empty"):
            load_config(empty)


def test_validation_errors_are_one_line_with_a_suggestion(project_root):
    with pytest.raises(ConfigError) as err:
        load_config(project_root / "conf" / "local.yaml",
                     ["generate.n_user=5", "spark.shuffle_partitions=abc", f"train.epochs={'x' * 500}"])
    text = str(err.value)
    assert "\n" not in text and len(text) < 900
    assert "unknown key 'generate.n_user' (did you mean 'generate.n_users'?)" in text
    assert "key 'spark.shuffle_partitions'" in text and "key 'train.epochs'" in text
    assert "conf/local.yaml" in text and "--set" in text


def test_booleans_are_not_numbers(project_root):
    for override in ("spark.shuffle_partitions=true", "train.dropout=no",
                     "train.training_set_version=yes"):
        with pytest.raises(ConfigError, match=rf"key '{override.split('=')[0]}': .*not a boolean"):
            load_config(project_root / "conf" / "local.yaml", [override])
    assert load_config(project_root / "conf" / "local.yaml", ["train.use_gpu=false"]).train.use_gpu is False


def test_hash_key_env_must_be_a_variable_name(project_root):
    for value in ("", "my secret key"):
        with pytest.raises(ConfigError, match="user_hash_key_env.*not an environment variable name"):
            load_config(project_root / "conf" / "local.yaml", [f"user_hash_key_env={value}"])


def test_spark_master_and_memory_are_checked_before_the_jvm(project_root):
    conf = project_root / "conf" / "local.yaml"
    for override, key in (("spark.master=bogus", "spark.master"), ("spark.master=local[0]", "spark.master"),
                          ("spark.driver_memory=lots", "spark.driver_memory"),
                          ("spark.driver_memory=4gb", "spark.driver_memory")):
        with pytest.raises(ConfigError, match=rf"key '{key}'"):
            load_config(conf, [override])
    for master in ("local", "local[*]", "local[4,2]", "yarn", "spark://h:7077", "k8s://https://k:443"):
        assert load_config(conf, [f"spark.master={master}", "spark.driver_memory=512m"]).spark.master == master


def test_set_reaches_map_entries_whose_keys_hold_dots(project_root):
    cfg = load_config(project_root / "conf" / "local.yaml",
                      ["spark.conf.spark.sql.ansi.enabled=true", "spark.conf.spark.sql.files.maxPartitionBytes=1024",
                       "ingest.mapping.values.event_type.cart=add_to_cart", "ingest.csv_options.sep=;"])
    conf = cfg.spark.conf
    assert conf["spark.sql.ansi.enabled"] == "true" and conf["spark.sql.files.maxPartitionBytes"] == "1024"
    assert str(conf["spark.sql.sources.parallelPartitionDiscovery.parallelism"]) == "8"  # local.yaml's stays
    assert len(conf) == 3
    assert cfg.ingest.mapping.values == {"event_type": {"cart": "add_to_cart"}}
    assert cfg.ingest.csv_options == {"header": "true", "sep": ";"}  # the other entries stay
    with pytest.raises(ConfigError, match=r"unknown key 'spark\.nope'"):
        load_config(project_root / "conf" / "local.yaml", ["spark.nope.deep=1"])
