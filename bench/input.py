"""Input pipeline cost: steps/s of the same Wide & Deep train step fed by petastorm vs from memory,
and training examples/s of the Horovod train function on 1 and 2 ranks (horovodrun, Gloo).

- memory: the epoch already in RAM as a list of batches of tensors (the ceiling);
- petastorm: training.input.shard_batches (make_batch_reader over the Parquet files, vectorised
  re-batching and shuffling) through tf_dataset, exactly what training.distributed uses.
Both run the same compiled train step (forward, loss, two optimizers) on the same rows.

    .venv/bin/python bench/input.py --rows 200000 --batch-size 1024
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from bench.harness import emit, measure  # noqa: E402

OUT = ROOT / "bench" / "out" / "input"
REGIONS = np.array(["north", "south", "east", "west", "centre"])
DEVICES = np.array(["mobile", "desktop", "tablet"])


def write_data(rows: int, files: int, numeric: int, seed: int) -> tuple[list[str], dict]:
    """Parquet files like a training_set split (doubles, strings, labels) and their state."""
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
    categorical_state = {c: {"vocabulary": sorted(set(cols[c].tolist()))}
                         for c in ("region", "device", "top_category")}
    state = {"numeric": numeric_state, "categorical": categorical_state,
             "crosses": [["region", "device"], ["region", "top_category"], ["device", "num_0"]],
             "cross_hash_buckets": 2048, "category_ids": ["c0", "c1", "c2"],
             "labels": {"rows": rows, "base_rate": float(cols["label_purchased"].mean()),
                        "spend_mean": float(cols["label_spend"].mean()),
                        "category_rates": [float(cols[f"label_cat_{c}"].mean()) for c in range(3)]},
             "calibration": {"method": "none", "a": 1.0, "b": 0.0}}
    return paths, state


def train_step_fn(model):
    import tensorflow as tf

    from training.model import wide_and_deep_variables

    wide, deep = wide_and_deep_variables(model)
    wide_opt, deep_opt = tf.keras.optimizers.Ftrl(0.05), tf.keras.optimizers.Adam(0.002)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            out = model(batch, training=True)
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
    args = parser.parse_args()

    import tensorflow as tf

    from training.input import InputSpec, shard_batches, tf_dataset
    from training.model import ModelParams, build_model

    paths, state = write_data(args.rows, args.files, args.numeric, seed=3)
    spec = InputSpec(tuple(sorted(state["numeric"])), ("region", "device", "top_category"),
                     ("label_purchased",))
    model = build_model(state, ModelParams())
    step = train_step_fn(model)

    # The memory arm: the same rows, already decoded, shuffled and cut into batches of tensors,
    # held in a list (no reader, no per-row tf.data work): the ceiling for this train step.
    arrays = {k: np.concatenate([b[k] for b in shard_batches(paths, spec, 65536, 0, 1, 1, 0)])
              for k in spec.columns}
    order = np.random.default_rng(1).permutation(args.rows)
    memory = [{k: tf.constant(v[order[i:i + args.batch_size]]) for k, v in arrays.items()}
              for i in range(0, args.rows, args.batch_size)]
    epoch = {"n": 0}

    def petastorm_epoch():
        epoch["n"] += 1
        e = epoch["n"]
        return run_epoch(tf_dataset(lambda: shard_batches(paths, spec, args.batch_size, 0, 1, 1, e),
                                    spec), step)

    steps = run_epoch(memory, step)  # also traces the step
    memory_t = measure("memory", lambda: run_epoch(memory, step), warmup=0, runs=args.runs)
    petastorm_t = measure("petastorm", petastorm_epoch, warmup=1, runs=args.runs)
    read_only = measure("petastorm_read_only", lambda: sum(
        1 for _ in shard_batches(paths, spec, args.batch_size, 0, 1, 1, 0)), warmup=0, runs=args.runs)
    figures = {
        "rows": args.rows, "files": args.files, "batch_size": args.batch_size,
        "features": {"numeric": args.numeric, "categorical": 3}, "steps_per_epoch": steps,
        "memory": {**memory_t.as_dict(), "steps_per_s": round(steps / memory_t.median, 1)},
        "petastorm": {**petastorm_t.as_dict(), "steps_per_s": round(steps / petastorm_t.median, 1)},
        "petastorm_read_only": {**read_only.as_dict(),
                                "rows_per_s": round(args.rows / read_only.median)},
        "petastorm_cost_pct": round(100 * (petastorm_t.median / memory_t.median - 1), 1),
        "goal_cost_pct_at_most": 5.0,
    }
    if not args.skip_horovod:
        figures["horovod"] = [horovod_examples_per_s(paths, state, r, args.batch_size, args.rows,
                                                     args.horovod_epochs) for r in (1, 2)]
    emit("input", figures)


if __name__ == "__main__":
    main()
