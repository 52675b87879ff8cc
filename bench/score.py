"""Throughput of the scoring UDF against its two ceilings, in one run on the same rows.

- scoring: the score stage's mapInPandas UDF (training.scoring.udf.score_users: worker-cached model,
  one predict per Arrow batch, flat outputs) over N users, to Spark's noop sink;
- identity: a mapInPandas UDF that returns its batches unchanged over the same input columns:
  the JVM -> Python -> JVM Arrow transfer ceiling;
- in-process: model.predict on the same rows as one pandas frame in this process;
- read only: Spark reading and casting the model's input columns to the noop sink, no Python:
  the floor under any Spark UDF over these rows.

Every arm reports wall time and CPU seconds of the process tree (JVM + Python workers + this
process); CPU ratios stay comparable when other work shares the machine, wall ratios do not.

The model is the project's Wide & Deep (training.model + model_directory SavedModel, default train
settings: hidden 64-32, embeddings 8, automatic crosses, 10 categories) over the feature
catalog's columns, with preprocessing statistics from the generated rows and initial weights
(throughput does not depend on the weights); or a trained model directory (--model-dir).

    .venv/bin/python bench/score.py --rows 1000000
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyspark.sql import DataFrame, SparkSession  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from bench.harness import TreeUsage, emit, measure  # noqa: E402
from demandcast.config import load_config  # noqa: E402
from demandcast.session import build_spark_session  # noqa: E402
from training.scoring.model_loading import cached_model  # noqa: E402
from training.scoring.udf import ScoringPlan, score_users, udf_inputs  # noqa: E402

OUT = ROOT / "bench" / "out" / "score"
ARROW_BATCH_CONF = "spark.sql.execution.arrow.maxRecordsPerBatch"


def catalog_inputs() -> dict[str, str]:
    from features.catalog import feature_catalog

    return {f.name: ("categorical" if f.dtype == "string" else "numeric") for f in feature_catalog()}


def synthetic_features(spark: SparkSession, rows: int, inputs: dict[str, str]) -> DataFrame:
    """N users with every input: skewed non-negative numerics with 10% nulls, categoricals of
    up to 30 values with 5% nulls; generated natively in Spark, seeded."""
    cols = [F.sha2(F.col("id").cast("string"), 256).alias("user_key")]
    for i, (name, kind) in enumerate(inputs.items()):
        u = F.rand(seed=i)
        if kind == "numeric":
            value = F.round(F.exp(F.randn(seed=1000 + i) * 1.2) * (1 + i % 7), 3)
        else:
            value = F.concat(F.lit(f"{name[:6]}_"), F.floor(F.pow(F.rand(seed=2000 + i), 2) * 30)
                             .cast("int").cast("string"))
        cols.append(F.when(u < (0.1 if kind == "numeric" else 0.05), F.lit(None))
                    .otherwise(value).alias(name))
    return spark.range(rows).select(*cols)


def build_model_dir(features: DataFrame, inputs: dict[str, str], model_dir: Path) -> Path:
    """The project's model with default train settings, statistics from `features`."""
    from demandcast.settings.train import TrainSettings
    from training.model import ModelParams, build_model
    from training.model_directory import save_model_dir
    from training.preprocessing import (default_crosses, numeric_statistics, vocabularies)

    settings = TrainSettings()
    numeric = tuple(c for c, k in inputs.items() if k == "numeric")
    categorical = tuple(c for c, k in inputs.items() if k == "categorical")
    sample = features
    n_categories = settings.top_k_categories
    state = {
        "numeric": numeric_statistics(sample, numeric, settings.numeric_buckets),
        "categorical": vocabularies(sample, categorical, settings.vocab_max_size,
                                    settings.vocab_min_count),
        "feature_order": [*numeric, *categorical],
        "crosses": default_crosses(numeric, categorical),
        "cross_hash_buckets": settings.cross_hash_buckets,
        "category_ids": [f"cat{i:02d}" for i in range(n_categories)],
        "labels": {"rows": 100_000, "base_rate": 0.2, "spend_mean": 35.0,
                   "category_rates": [0.05] * n_categories},
        "calibration": {"method": "none", "a": 1.0, "b": 0.0},
    }
    params = ModelParams.from_settings(settings)
    info = {"model_version": "bench", "params": {
        "embedding_dim": params.embedding_dim, "hidden_units": list(params.hidden_units),
        "dropout": params.dropout, "l2": params.l2}}
    return save_model_dir(build_model(state, params), state, model_dir, info, metrics={})


def identity_batches(batches):
    for batch in batches:
        yield batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--arrow-batch-sizes", type=int, nargs="+", default=[10_000, 50_000])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--model-dir", help="a trained model directory (default: build one)")
    parser.add_argument("--conf", default=str(ROOT / "conf" / "local.yaml"))
    args = parser.parse_args()

    cfg = load_config(args.conf)
    spark = build_spark_session("bench-score", cfg.spark)
    OUT.mkdir(parents=True, exist_ok=True)

    if args.model_dir:
        model_dir = Path(args.model_dir)
        inputs = dict(cached_model(str(model_dir)).input_columns)
    else:
        inputs = catalog_inputs()
        model_dir = OUT / "model"
    data_path = OUT / f"features_{args.rows}_{len(inputs)}.parquet"
    if not data_path.exists():
        synthetic_features(spark, args.rows, inputs).write.mode("overwrite").parquet(str(data_path))
    features = spark.read.parquet(str(data_path))
    if not args.model_dir:
        build_model_dir(features, inputs, model_dir)
    model = cached_model(str(model_dir))
    rows = features.count()

    plan = ScoringPlan(model_dir=str(model_dir), input_columns=dict(model.input_columns),
                       category_ids=tuple(model.category_ids), top_k=3)
    inputs_df = udf_inputs(features, model.input_columns, F.lit(False))

    def scoring() -> None:
        score_users(inputs_df, plan).write.format("noop").mode("overwrite").save()

    def identity() -> None:
        inputs_df.mapInPandas(identity_batches, inputs_df.schema) \
            .write.format("noop").mode("overwrite").save()

    def read_only() -> None:
        inputs_df.write.format("noop").mode("overwrite").save()

    figures: dict = {"rows": rows, "inputs": len(inputs), "categories": len(model.category_ids),
                     "spark_master": cfg.spark.master, "model_dir": str(model_dir),
                     "by_arrow_batch_size": {}}
    with TreeUsage() as peak:
        for size in args.arrow_batch_sizes:
            spark.conf.set(ARROW_BATCH_CONF, str(size))
            s = measure(f"scoring_udf_batch{size}", scoring, warmup=1, runs=args.runs)
            i = measure(f"identity_udf_batch{size}", identity, warmup=1, runs=args.runs)
            figures["by_arrow_batch_size"][size] = {
                "scoring_rows_per_s": round(rows / s.median), "identity_rows_per_s": round(rows / i.median),
                "scoring_vs_identity": round(i.median / s.median, 3),
                "scoring": s.as_dict(), "identity": i.as_dict()}

        import pyarrow.parquet as pq

        r = measure("spark_read_only", read_only, warmup=1, runs=args.runs)
        figures["read_only"] = {"rows_per_s": round(rows / r.median), **r.as_dict()}

        pdf = pq.read_table(str(data_path), columns=list(model.input_columns)).to_pandas()
        started = time.perf_counter()
        model.predict(pdf.head(1000))  # graph warm-up
        warm = time.perf_counter() - started
        p = measure("in_process_predict", lambda: model.predict(pdf), warmup=0, runs=args.runs)
        figures["in_process"] = {"rows_per_s": round(len(pdf) / p.median), "warmup_s": round(warm, 2),
                                 **p.as_dict()}
    best_size, best = max(figures["by_arrow_batch_size"].items(),
                          key=lambda kv: kv[1]["scoring_rows_per_s"])
    figures["best_arrow_batch_size"] = best_size
    figures["scoring_vs_identity"] = best["scoring_vs_identity"]
    figures["scoring_vs_in_process"] = round(best["scoring_rows_per_s"]
                                             / figures["in_process"]["rows_per_s"], 3)
    best_timing = best["scoring"]
    if "median_cpu_s" in best_timing:
        in_process_cpu = figures["in_process"]["median_cpu_s"]
        figures["cpu_s_per_million_rows"] = {
            arm: round(t["median_cpu_s"] * 1e6 / rows, 2) for arm, t in (
                ("scoring", best_timing), ("identity", best["identity"]),
                ("read_only", figures["read_only"]), ("in_process", figures["in_process"]))}
        # The best any UDF could do is read + predict: if reading alone costs more CPU than the
        # model, "half of in-process" is out of reach whatever the UDF does.
        figures["in_process_vs_read_plus_predict_cpu"] = round(
            in_process_cpu / (figures["read_only"]["median_cpu_s"] + in_process_cpu), 3)
        figures["scoring_vs_in_process_cpu"] = round(in_process_cpu / best_timing["median_cpu_s"], 3)
    figures["goals"] = {"scoring_vs_identity >= 0.8": figures["scoring_vs_identity"] >= 0.8,
                        "scoring_vs_in_process >= 0.5": figures["scoring_vs_in_process"] >= 0.5}
    figures["peak_rss_tree_mb"] = round(peak.peak_mb)
    emit("score", figures)


if __name__ == "__main__":
    main()
