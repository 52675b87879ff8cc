"""Throughput of `generate` and `ingest` on a demo-sized world, against a plain Spark write.

    .venv/bin/python bench/generate.py --users 20000 --days 180 [--runs 1] [--formats json]
        [--skip-ingest]

Reference: writing the same number of rows of 11 synthetic columns as Parquet with Spark, in
the same session: the ratio shows what the simulator's logic costs over Spark's own I/O.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import TreeUsage, compare, emit, measure  # noqa: E402
from demandcast.config import load_config  # noqa: E402
from demandcast.logs import configure_logging  # noqa: E402
from demandcast.session import build_spark_session  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--formats", default="json", help="comma-separated: json, parquet")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--skip-ingest", action="store_true", help="time generate only")
    parser.add_argument("--set", action="append", default=[], help="extra config overrides k=v")
    args = parser.parse_args()
    configure_logging("WARNING")
    from jobs import generate, ingest

    with tempfile.TemporaryDirectory(prefix="dc-bench-") as tmp:
        cfg = load_config(ROOT / "conf" / "local.yaml", [
            f"raw_dir={tmp}/raw", f"warehouse={tmp}/warehouse", f"generate.n_users={args.users}",
            f"generate.n_days={args.days}", f"generate.formats=[{args.formats}]", "spark.log_level=ERROR",
            *args.set])
        spark = build_spark_session("bench-generate", cfg.spark)
        out: dict = {}

        def run_generate() -> None:
            out["generate"] = generate.run(cfg)

        def run_ingest() -> None:
            import shutil
            shutil.rmtree(f"{tmp}/warehouse", ignore_errors=True)
            out["ingest"] = ingest.run(cfg)

        with TreeUsage() as usage:
            load_start = round(__import__("os").getloadavg()[0], 1)
            gen = measure("generate", run_generate, warmup=args.warmup, runs=args.runs)
            load_after_generate = round(__import__("os").getloadavg()[0], 1)
            n_events = sum(out["generate"]["landed_records"].values())
            if not args.skip_ingest:
                ing = measure("ingest_json", run_ingest, warmup=args.warmup, runs=args.runs)

            def reference() -> None:
                (spark.range(n_events, numPartitions=cfg.generate.partitions)
                 .selectExpr("md5(cast(id as string)) as event_id", "concat('U', id % 20000) as user_id",
                             "concat('S', id % 99991) as session_id", "timestamp_seconds(1735689600 + id) as t",
                             "'view' as event_type", "concat('I', id % 5000) as item_id", "'books' as category_id",
                             "cast(id % 1000 as double) / 10 as price", "1 as quantity", "'desktop' as device",
                             "'direct' as channel")
                 .write.mode("overwrite").parquet(f"{tmp}/reference"))

            ref = measure("reference_parquet_write", reference, warmup=0, runs=args.runs)
        figures = {
            "command": " ".join(sys.argv),
            "users": args.users, "days": args.days, "formats": args.formats,
            "raw_records": n_events,
            "generate_vs_reference": compare(gen, ref),
            "generate_records_per_s": round(n_events / gen.median),
            "cpu_seconds_last_run": {t.name: round(t.cpu_runs[-1], 1)
                                     for t in (gen, ref, *([] if args.skip_ingest else [ing]))},
            "load_average_1m": {"start": load_start, "after_generate": load_after_generate,
                                "end": round(__import__("os").getloadavg()[0], 1)},
            "peak_rss_tree_mb": round(usage.peak_mb),
        }
        if not args.skip_ingest:
            figures.update({
                "events_inserted": out["ingest"]["tables"]["events"]["inserted"],
                "ingest_vs_reference": compare(ing, ref),
                "ingest_records_per_s": round(n_events / ing.median),
            })
        emit("generate_ingest", figures)


if __name__ == "__main__":
    main()
