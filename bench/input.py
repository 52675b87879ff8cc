"""Input pipeline cost: steps/s of the same Wide & Deep train step fed by petastorm vs from memory,
and training examples/s of the Horovod train function on 1 and 2 ranks (horovodrun, Gloo).

- memory: the epoch already in RAM as a list of batches of tensors (the ceiling);
- petastorm_stream: every epoch decoded from the Parquet files by petastorm (make_batch_reader,
  blocks of two matrices, vectorised re-batching and shuffling) through training.input.Prefetcher
  (a background thread handing packed batches to the loop): what training
  does in its first epoch, and every epoch when the shard exceeds train.input_cache_mb;
- petastorm_cached: later epochs of the same reader once the decoded shard is kept in memory
  (train.input_cache_mb, the default), a seeded permutation per epoch through the Prefetcher.
All arms run the same compiled train step (forward, loss, two optimizers) on the same rows, in
interleaved rounds (memory, stream, cached, memory, ...) so a busy shared machine hits all
alike; CPU seconds of the process are reported beside wall time, with the load average.

    .venv/bin/python bench/input.py --rows 100000 --batch-size 1024 --runs 5 --skip-horovod
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import psutil  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.harness import Timing, emit, measure  # noqa: E402

OUT = ROOT / "bench" / "out" / "input"
REGIONS = np.array(["north", "south", "east", "west", "centre"])
DEVICES = np.array(["mobile", "desktop", "tablet"])


def write_data(rows: int, files: int, numeric: int, seed: int,
               embedding_bins: int) -> tuple[list[str], dict]:
    """Parquet files like a training_set split (doubles, strings, labels) and their state
    (the layout training.preprocessing writes, with the demo's embedding bins)."""
    rng = np.random.default_rng(seed)
    cols = {f"num_{i}": rng.gamma(1.0 + i % 3, 5.0, rows) for i in range(numeric)}
    cols["region"] = REGIONS[rng.integers(0, len(REGIONS), rows)]
    cols["device"] = DEVICES[rng.integers(0, len(DEVICES), rows)]
    cols["top_category"] = np.char.add("cat", rng.integers(0, 50, rows).astype(str))
    logit = -1.5 + 0.05 * cols["num_0"] - 0.03 * cols["num_1"] + (cols["region"] == "north")
    cols["label_purchased"] = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.int32)
    cols["label_spend"] = cols["label_purchased"] * rng.gamma(2.0, 20.0, rows)
    cols["label_n_purchases"] = cols["label_purchased"].astype(np.int32)
    for c in range(3):
        cols[f"label_cat_{c}"] = (cols["label_purchased"] * (rng.random(rows) < 0.3)).astype(np.int32)
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    table = pa.table(cols)
    paths = []
    for i, chunk in enumerate(np.array_split(np.arange(rows), files)):
        path = OUT / f"part-{i:03d}.parquet"
        pq.write_table(table.take(chunk), path, row_group_size=len(chunk))
        paths.append(f"file:{path}")
    numeric_state = {}
    for name in (c for c in cols if c.startswith("num_")):
        t = np.log1p(cols[name])
        numeric_state[name] = {"mean": float(t.mean()), "std": float(t.std()),
                               "boundaries": np.quantile(t, np.linspace(0.125, 0.875, 7)).tolist()}
        if embedding_bins:
            numeric_state[name]["embedding_edges"] = sorted(set(
                np.quantile(t, np.linspace(0, 1, embedding_bins + 1)).tolist()))
    categorical_state = {c: {"vocabulary": sorted(set(cols[c].tolist()))}
                         for c in ("region", "device", "top_category")}
    state = {"numeric": numeric_state, "categorical": categorical_state, "numeric_missing": True,
             "crosses": [["region", "device"], ["region", "top_category"], ["device", "num_0"]],
             "cross_hash_buckets": 2048, "category_ids": ["c0", "c1", "c2"],
             "labels": {"rows": rows, "base_rate": float(cols["label_purchased"].mean()),
                        "spend_mean": float(cols["label_spend"].mean()),
                        "category_rates": [float(cols[f"label_cat_{c}"].mean()) for c in range(3)]},
             "calibration": {"method": "none", "a": 1.0, "b": 0.0}}
    return paths, state


def train_step_fn(model, spec):
    import tensorflow as tf

    from training.input import unpack

    from training.model import wide_and_deep_variables

    wide, deep = wide_and_deep_variables(model)
    wide_opt, deep_opt = tf.keras.optimizers.Ftrl(0.05), tf.keras.optimizers.Adam(0.002)

    @tf.function(reduce_retracing=True)
    def step(packed):
        batch = unpack(packed, spec)
        with tf.GradientTape() as tape:
            out = model({c: batch[c] for c in (*spec.numeric, *spec.categorical)}, training=True)
            loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
                batch["label_purchased"], out["logit"]))
        grads = tape.gradient(loss, wide + deep)
        wide_opt.apply_gradients(zip(grads[:len(wide)], wide))
        deep_opt.apply_gradients(zip(grads[len(wide):], deep))
        return loss
    return step


def run_epoch(dataset, step) -> int:
    steps = 0
    for batch in dataset:
        step(batch)
        steps += 1
    return steps


def cpu_seconds() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


def interleaved(arms: dict, runs: int) -> tuple[dict[str, Timing], dict[str, float]]:
    """Wall times and median CPU seconds of each arm, run in rounds (one run of every arm each)."""
    wall = {name: [] for name in arms}
    cpu = {name: [] for name in arms}
    for _ in range(runs):
        for name, fn in arms.items():
            started_cpu, started = cpu_seconds(), time.perf_counter()
            fn()
            wall[name].append(time.perf_counter() - started)
            cpu[name].append(cpu_seconds() - started_cpu)
    return ({name: Timing(name, times) for name, times in wall.items()},
            {name: round(statistics.median(c), 3) for name, c in cpu.items()})


def horovod_examples_per_s(paths: list[str], state: dict, ranks: int, batch_size: int,
                           rows: int, epochs: int) -> dict:
    from demandcast.settings.train import TrainSettings
    from training.launch import horovodrun_command, worker_env, write_spec

    run_dir = OUT / f"hvd_{ranks}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "preprocessing.json").write_text(json.dumps(state))
    settings = TrainSettings(batch_size=batch_size, epochs=epochs, patience=epochs,
                             launcher="horovodrun", num_proc=ranks).model_dump(mode="json")
    numeric = sorted(state["numeric"])
    spec = {"run_dir": str(run_dir), "model_dir": str(run_dir / "model"),
            "state_path": str(run_dir / "preprocessing.json"), "train_files": paths[1:],
            "validation_files": paths[:1], "numeric": numeric,
            "categorical": ["region", "device", "top_category"],
            "labels": ["label_purchased", "label_spend", "label_n_purchases",
                       "label_cat_0", "label_cat_1", "label_cat_2"],
            "train_rows": sum(pq.ParquetFile(p[5:]).metadata.num_rows for p in paths[1:]),
            "validation_rows": pq.ParquetFile(paths[0][5:]).metadata.num_rows,
            "seed": 1, "settings": settings, "resume": False,
            "model_info": {"model_version": f"bench-{ranks}", "training_set": {}, "config": {},
                           "code_version": "bench"}}
    path = write_spec(spec)
    with open(run_dir / "ranks.log", "w") as log:
        done = subprocess.run(horovodrun_command(path, ranks), cwd=ROOT, env=worker_env(False),
                              stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        return {"ranks": ranks, "failed": f"exit {done.returncode}, see {run_dir / 'ranks.log'}"}
    result = json.loads((run_dir / "result.json").read_text())
    return {"ranks": ranks, "examples_per_s": round(result["examples_per_s"], 1),
            "epochs": result["epochs_run"],
            "epoch_seconds": [h["seconds"] for h in result["history"]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--numeric", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--horovod-epochs", type=int, default=2)
    parser.add_argument("--skip-horovod", action="store_true")
    parser.add_argument("--conf", default="conf/demo.yaml",
                        help="the model and the epoch count of a training run come from its train section")
    args = parser.parse_args()

    from demandcast.config import load_config

    settings = load_config(args.conf, []).train

    import tensorflow as tf

    from training.input import FLOATS, STRINGS, WEIGHT, InputSpec, Prefetcher, ShardReader, to_block
    from training.model import ModelParams, build_model

    paths, state = write_data(args.rows, args.files, args.numeric, seed=3,
                              embedding_bins=settings.numeric_embedding_bins)
    spec = InputSpec(tuple(sorted(state["numeric"])), ("region", "device", "top_category"),
                     ("label_purchased",))
    model = build_model(state, ModelParams.from_settings(settings))
    step = train_step_fn(model, spec)

    # The memory arm: the same rows, already decoded, shuffled and cut into packed batches of
    # tensors (the train step's input), held in a list: the ceiling for this train step.
    table = pa.concat_tables(pq.read_table(p[len("file:"):], columns=spec.columns) for p in paths)
    block = to_block({c: table.column(c).to_numpy(zero_copy_only=False) for c in spec.columns}, spec)
    order = np.random.default_rng(1).permutation(args.rows)
    memory = [{FLOATS: tf.constant(block[FLOATS][idx]), STRINGS: tf.constant(block[STRINGS][idx]),
               WEIGHT: tf.ones([len(idx)], tf.float32)}
              for idx in (order[i:i + args.batch_size] for i in range(0, args.rows, args.batch_size))]
    epoch = {"n": 0}

    def next_epoch() -> int:
        epoch["n"] += 1
        return epoch["n"]

    streaming = ShardReader(paths, spec, 0, 1, seed=1, cache_mb=0)
    cached = ShardReader(paths, spec, 0, 1, seed=1, cache_mb=4096)

    def reader_epoch(reader: ShardReader, e: int) -> int:
        return run_epoch(Prefetcher(lambda: reader.tensor_batches(e, args.batch_size)), step)

    steps = run_epoch(memory, step)  # also traces the step
    reader_epoch(streaming, 0)       # warms petastorm and the prefetch path
    first_started_cpu, first_started = cpu_seconds(), time.perf_counter()
    reader_epoch(cached, 0)          # the first epoch of a caching reader: stream and keep
    first = {"wall_s": round(time.perf_counter() - first_started, 4),
             "cpu_s": round(cpu_seconds() - first_started_cpu, 3)}
    assert cached.cached, "the benchmark's shard should fit the cache"
    load_before = os.getloadavg()
    timings, cpu = interleaved({
        "memory": lambda: run_epoch(memory, step),
        "petastorm_stream": lambda: reader_epoch(streaming, next_epoch()),
        "petastorm_cached": lambda: reader_epoch(cached, next_epoch()),
    }, args.runs)
    load_after = os.getloadavg()
    read_only = measure("petastorm_read_only", lambda: sum(
        1 for _ in streaming.blocks(next_epoch(), args.batch_size)), warmup=0, runs=args.runs)
    mem = timings["memory"].median

    def arm(name: str) -> dict:
        t = timings[name]
        return {**t.as_dict(), "steps_per_s": round(steps / t.median, 1), "cpu_s": cpu[name],
                "cost_vs_memory_pct": round(100 * (t.median / mem - 1), 1),
                "cost_vs_memory_of_fastest_runs_pct": round(
                    100 * (min(t.runs) / min(timings["memory"].runs) - 1), 1),
                "cpu_cost_vs_memory_pct": round(100 * (cpu[name] / cpu["memory"] - 1), 1)}

    epochs = settings.epochs  # a training run of --conf: one streamed epoch, then cached ones
    training_mean = (first["wall_s"] + (epochs - 1) * timings["petastorm_cached"].median) / epochs
    figures = {
        "rows": args.rows, "files": args.files, "batch_size": args.batch_size,
        "features": {"numeric": args.numeric, "categorical": 3}, "steps_per_epoch": steps,
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
        "memory": {**timings["memory"].as_dict(), "steps_per_s": round(steps / mem, 1),
                   "cpu_s": cpu["memory"]},
        "petastorm_stream": arm("petastorm_stream"),
        "petastorm_cached": arm("petastorm_cached"),
        "petastorm_first_epoch": {**first, "cost_vs_memory_pct": round(100 * (first["wall_s"] / mem - 1), 1)},
        f"petastorm_mean_of_{epochs}_epochs_cost_pct": round(100 * (training_mean / mem - 1), 1),
        # A whole run of `epochs` epochs (1 streamed + cached ones) against as many memory epochs.
        "petastorm_whole_run": {
            "epochs": epochs,
            "wall_s": round(epochs * training_mean, 3), "memory_wall_s": round(epochs * mem, 3),
            "cpu_s": round(first["cpu_s"] + (epochs - 1) * cpu["petastorm_cached"], 3),
            "memory_cpu_s": round(epochs * cpu["memory"], 3),
            "cost_vs_memory_pct": round(100 * (training_mean / mem - 1), 1),
            "cpu_cost_vs_memory_pct": round(100 * (
                (first["cpu_s"] + (epochs - 1) * cpu["petastorm_cached"]) / (epochs * cpu["memory"]) - 1), 1)},
        "petastorm_read_only": {**read_only.as_dict(),
                                "rows_per_s": round(args.rows / read_only.median)},
        "goal_cost_pct_at_most": 5.0,
    }
    if not args.skip_horovod:
        figures["horovod"] = [horovod_examples_per_s(paths, state, r, args.batch_size, args.rows,
                                                     args.horovod_epochs) for r in (1, 2)]
    emit("input", figures)


if __name__ == "__main__":
    main()
