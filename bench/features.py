"""The features stage (user_daily from scratch + one snapshot of user_features and labels) against
DuckDB computing the same features and labels from the same events Parquet files, in the same run.

    .venv/bin/python bench/features.py --events 10000000,50000000
    .venv/bin/python bench/features.py --events 10000000,200000000 --reference-up-to 50000000
    .venv/bin/python bench/features.py --events 10000000,50000000 --replicate-from /tmp/dcb/10000000

Events come from the project's simulator (features/simulator), written as the `events` Delta
table the way ingest lays it out (partitioned by event_date, user_key = a 64-hex hash). Inputs
are generated once per size under --workdir and reused. Figures: median wall time of each
engine, the time ratio Spark / DuckDB, the peak RSS of Spark's process tree (this process, the
JVM, Python workers) and of DuckDB's own process (it runs in a child), CPU seconds of each,
the load average after each engine (the machine may be shared), and events per second. `--replicate-from` makes a missing size
from copies of an already generated one (see replicate_inputs), much faster than simulating.
With `--runs N` the engines alternate, N rounds of Spark then DuckDB, and each round's ratio is
printed too: a shared machine's speed can drift by up to 2x within minutes.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from bench.harness import Timing, TreeUsage, emit, measure  # noqa: E402
from demandcast.config import load_config  # noqa: E402
from demandcast.logs import configure_logging  # noqa: E402
from demandcast.session import build_spark_session  # noqa: E402
from demandcast.settings.generate import GenerateSettings  # noqa: E402
from reference import duckdb_features as reference  # noqa: E402  (tests/reference)
from demandcast.tables import (TableSpec, current_version, files_of_version, read_table,  # noqa: E402
                               table_path, write_table)

START = dt.date(2025, 1, 1)
DAYS = 365
SNAPSHOT = START + dt.timedelta(days=DAYS - 30)  # the 30-day label window ends with the data
EVENTS_PER_USER = 72.0  # measured on the simulator's defaults over 365 days; sizes are approximate


def build_inputs(spark, warehouse: str, target_events: int, seed: int) -> int:
    """Simulated events/users/items as warehouse tables; returns the number of events."""
    from pyspark.sql import functions as F

    from features.simulator import population, simulate

    marker = Path(warehouse) / "_inputs.json"
    if marker.exists():
        return json.loads(marker.read_text())["events"]
    shutil.rmtree(warehouse, ignore_errors=True)
    n_users = max(1000, int(target_events / EVENTS_PER_USER))
    s = GenerateSettings(n_users=n_users, n_days=DAYS, start_date=START,
                         partitions=max(8, target_events // 2_000_000))
    world = simulate(spark, s, seed)
    user_key = F.sha2(F.col("user_id"), 256)
    events = world.events.select(
        "event_id", user_key.alias("user_key"), "session_id", "event_time", "event_type", "item_id",
        "category_id", "price", "quantity", "device", "channel",
        F.create_map().cast("map<string,string>").alias("extra"), F.lit("bench").alias("source_file"),
        F.lit("bench").alias("batch_id"), F.current_timestamp().alias("ingested_at"), "event_date")
    write_table(events.repartition("event_date"), warehouse,
                TableSpec("events", "bench events", ("event_date",)), "overwrite")
    # One version per user and item, valid from the export's updated_at, as ingest writes them.
    users = population.user_dimension(world.users, START).select(
        user_key.alias("user_key"), "signup_date", "region", "age_band", "gender",
        F.col("updated_at").alias("valid_from"), F.lit(None).cast("date").alias("valid_to"))
    write_table(users, warehouse, TableSpec("users", "bench users"), "overwrite")
    items = population.item_dimension(world.items).select(
        "item_id", "category_id", "brand", "list_price", F.col("updated_at").alias("valid_from"),
        F.lit(None).cast("date").alias("valid_to"))
    write_table(items, warehouse, TableSpec("items", "bench items"), "overwrite")
    n = read_table(spark, warehouse, "events").count()
    marker.write_text(json.dumps({"events": n, "users": n_users}))
    return n


def replicate_inputs(spark, source: str, warehouse: str, target_events: int) -> int:
    """Inputs of about `target_events` events made of k copies of a smaller simulated world
    (k = target / its events, rounded): copy c > 0 of a user gets a new key
    sha2(user_key#c) and new session and event ids, so the copies are distinct users with the
    same behaviour. Each source file holds one event_date, and scan tasks never split a small
    file, so the copies are written without a shuffle, one file per source file.
    """
    from pyspark.sql import functions as F

    marker = Path(warehouse) / "_inputs.json"
    if marker.exists():
        return json.loads(marker.read_text())["events"]
    shutil.rmtree(warehouse, ignore_errors=True)
    have = json.loads((Path(source) / "_inputs.json").read_text())
    copies = max(1, round(target_events / have["events"]))
    copy = F.broadcast(spark.range(copies).select(F.col("id").cast("int").alias("copy")))

    def renamed(column: str, hashed: bool = False):
        name = F.concat_ws("#", F.col(column), F.col("copy").cast("string"))
        return F.when(F.col("copy") == 0, F.col(column)).otherwise(
            F.sha2(name, 256) if hashed else name).alias(column)

    events = read_table(spark, source, "events")
    changed = {"user_key": renamed("user_key", True), "session_id": renamed("session_id"),
               "event_id": renamed("event_id")}
    events = events.crossJoin(copy).select(*[changed.get(c, F.col(c)) for c in events.columns])
    write_table(events, warehouse, TableSpec("events", "bench events", ("event_date",)), "overwrite")
    users = read_table(spark, source, "users")
    users = users.crossJoin(copy).select(
        *[renamed(c, True) if c == "user_key" else F.col(c) for c in users.columns])
    write_table(users, warehouse, TableSpec("users", "bench users"), "overwrite")
    write_table(read_table(spark, source, "items"), warehouse, TableSpec("items", "bench items"),
                "overwrite")
    n = have["events"] * copies
    marker.write_text(json.dumps({"events": n, "users": have.get("users", 0) * copies,
                                  "replicated_from": source, "copies": copies}))
    return n


def run_duckdb_reference(files: dict, out: Path, spec) -> None:
    """The independent DuckDB SQL of the same features and labels, written to Parquet under
    `out`, with this process's peak RSS (run in a child process, see duckdb_stage)."""
    import resource

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    con = reference.connect()
    reference.register_inputs(con, files["events"], files["users"], files["items"])
    con.execute(f"COPY ({reference.features_sql(SNAPSHOT, spec)}) TO '{out}/features.parquet'")
    con.execute(f"COPY ({reference.labels_sql(SNAPSHOT, spec.label_window_days, spec)}) "
                f"TO '{out}/labels.parquet'")
    con.execute(f"COPY ({reference.label_category_spend_sql(SNAPSHOT, spec.label_window_days, spec)}) "
                f"TO '{out}/label_category_spend.parquet'")
    con.close()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (out / "_peak_rss.json").write_text(json.dumps({"mb": round(peak_kib / 1024)}))


def timed(name: str, fn) -> tuple:
    """(Timing of one run, peak RSS MB of the process tree, load average after)."""
    import os

    with TreeUsage() as usage:
        timing = measure(name, fn, warmup=0, runs=1)
    return timing, round(usage.peak_mb), [round(x, 1) for x in os.getloadavg()]


def alternating(arms: dict, runs: int) -> dict:
    """Runs the arms (name -> function) one after the other, `runs` rounds: this machine's speed
    drifts by up to 2x within minutes, and a round compares the arms at about the same speed.
    Per arm: (Timing of all rounds, peak RSS MB, median CPU seconds, load average after)."""
    import statistics

    rounds: dict = {name: [] for name in arms}
    for _ in range(runs):
        for name, fn in arms.items():
            rounds[name].append(timed(name, fn))
    result = {}
    for name, measured in rounds.items():
        timing = Timing(name, [t.runs[0] for t, _, _ in measured], tuple(t.cpu_runs[0] for t, _, _ in measured))
        result[name] = (timing, max(peak for _, peak, _ in measured),
                        round(statistics.median(timing.cpu_runs), 1), measured[-1][2])
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", default="10000000,50000000", help="comma-separated target sizes")
    parser.add_argument("--reference-up-to", type=int, default=10**12,
                        help="run the DuckDB reference only for sizes up to this")
    parser.add_argument("--workdir", default="/tmp/demandcast-bench-features")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--shuffle-partitions", type=int, default=16)
    parser.add_argument("--driver-memory", default="5g")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--event-log", default=None,
                        help="write Spark's event log to this folder and report shuffle bytes, tasks "
                             "and per-task memory from it (bench/spark_event_log.py)")
    parser.add_argument("--replicate-from", default=None,
                        help="build missing inputs as copies of this generated warehouse "
                             "instead of running the simulator (see replicate_inputs)")
    args = parser.parse_args()
    configure_logging("WARNING")

    from features.feature_spec import FeatureSpec
    from features.feature_tables import update_user_daily, write_snapshots
    overrides = [f"spark.shuffle_partitions={args.shuffle_partitions}",
                 f"spark.driver_memory={args.driver_memory}", "spark.log_level=ERROR"]
    if args.event_log:
        shutil.rmtree(args.event_log, ignore_errors=True)
        Path(args.event_log).mkdir(parents=True)
        overrides += ["spark.conf.spark.eventLog.enabled=true",
                      f"spark.conf.spark.eventLog.dir=file://{Path(args.event_log).resolve()}"]
    cfg = load_config(ROOT / "conf" / "local.yaml", overrides)
    spark = build_spark_session("bench-features", cfg.spark)
    spec = FeatureSpec.from_config(cfg)
    results = []
    for target in [int(x) for x in args.events.split(",")]:
        warehouse = f"{args.workdir}/{target}"
        is_source = args.replicate_from and Path(warehouse).resolve() == Path(args.replicate_from).resolve()
        if args.replicate_from and not is_source and not (Path(warehouse) / "_inputs.json").exists():
            n_events = replicate_inputs(spark, args.replicate_from, warehouse, target)
        else:
            n_events = build_inputs(spark, warehouse, target, args.seed)
        out = Path(warehouse) / "_duckdb"

        def spark_stage() -> None:
            for name in ("user_daily", "user_features", "labels"):
                shutil.rmtree(Path(warehouse) / name, ignore_errors=True)
            daily = update_user_daily(spark, warehouse, spec)
            write_snapshots(spark, warehouse, [SNAPSHOT], spec, daily.last_event_date)

        files = {name: files_of_version(spark, table_path(warehouse, name),
                                        current_version(spark, table_path(warehouse, name)))
                 for name in ("events", "users", "items")}

        def duckdb_stage() -> None:
            # A child process of its own: DuckDB's memory is returned when it exits (in this
            # process its allocator kept gigabytes, counted in the next size's Spark peak) and
            # its peak is its own, not the idle Spark JVM's plus its own.
            child = multiprocessing.get_context("fork").Process(
                target=run_duckdb_reference, args=(files, out, spec))
            child.start()
            child.join()
            if child.exitcode != 0:
                raise RuntimeError(f"the DuckDB reference exited {child.exitcode}")

        arms = {"spark_features": spark_stage}
        if target <= args.reference_up_to:
            arms["duckdb_features"] = duckdb_stage
        measured = alternating(arms, args.runs)
        spark_timing, spark_peak, spark_cpu, spark_load = measured["spark_features"]
        figures = {
            "target_events": target, "events": n_events, "snapshot": str(SNAPSHOT),
            "spark": spark_timing.as_dict(), "spark_peak_rss_tree_mb": spark_peak,
            "spark_cpu_s": spark_cpu, "load_average_after_spark": spark_load,
            "spark_events_per_s": round(n_events / spark_timing.median),
            "spark_us_per_event": round(1e6 * spark_timing.median / n_events, 3),
            "feature_rows": read_table(spark, warehouse, "user_features").count(),
        }
        if target <= args.reference_up_to:
            duck_timing, _, duck_cpu, duck_load = measured["duckdb_features"]
            import duckdb
            figures.update({
                "duckdb": duck_timing.as_dict(),
                "duckdb_peak_rss_mb": json.loads((out / "_peak_rss.json").read_text())["mb"],
                "duckdb_cpu_s": duck_cpu, "load_average_after_duckdb": duck_load,
                "duckdb_events_per_s": round(n_events / duck_timing.median),
                "time_ratio_spark_over_duckdb": round(spark_timing.median / duck_timing.median, 3),
                # Each round's Spark time over the DuckDB time measured right after it.
                "round_time_ratios": [round(a / b, 3) for a, b in zip(spark_timing.runs, duck_timing.runs)],
                "cpu_ratio_spark_over_duckdb": round(spark_cpu / duck_cpu, 3),
                "duckdb_feature_rows": duckdb.sql(f"SELECT count(*) FROM '{out}/features.parquet'").fetchone()[0],
            })
        results.append(emit("features", figures))
    spark.stop()
    if args.event_log:
        from bench.spark_event_log import application_log, per_event, task_figures

        # The whole application: input building, every Spark round and the checks above.
        totals = task_figures(application_log(args.event_log))
        emit("features_event_log", {**totals, **per_event(totals, results[-1]["events"])})


if __name__ == "__main__":
    main()
