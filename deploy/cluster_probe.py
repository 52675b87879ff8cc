"""Smoke test of a cluster's packaging: Python tasks on every executor, a Delta table written.

    python deploy/submit.py deploy/cluster_probe.py --profile yarn --conf conf/cluster.yaml

Writes table `cluster_check` (one row per id) through the project's session factory and
write_table; each row records which executor process computed it, with which interpreter, and
where that process imported `demandcast` from (the shipped package, not an install on the node).
Prints one JSON summary line and exits non-zero when the table does not read back complete.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Iterator

import pandas as pd

SCHEMA = ("id long, executor_workdir string, pid int, host string, python string, "
          "demandcast_file string")


def executor_facts(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Tags each id with facts about the Python worker that handled it (runs on executors)."""
    import os
    import socket
    from pathlib import Path

    import demandcast

    for batch in batches:
        yield batch.assign(
            # An executor's working directory is its own (standalone: .../app-ID/EXECUTOR_ID).
            executor_workdir=str(Path.cwd()), pid=os.getpid(), host=socket.gethostname(),
            python=sys.executable, demandcast_file=str(demandcast.__file__))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--partitions", type=int, default=8)
    args = parser.parse_args(argv)

    from pyspark.sql import functions as F

    from demandcast.config import load_config
    from demandcast.session import build_spark_session
    from demandcast.tables import TableSpec, read_table, write_table

    cfg = load_config(args.conf, args.overrides)
    spark = build_spark_session("cluster_probe", cfg.spark)
    spec = TableSpec(
        name="cluster_check",
        comment="Cluster smoke test (deploy/cluster_probe.py): which executor computed each id.",
        column_comments={"executor_workdir": "working directory of the executor process",
                         "demandcast_file": "where the executor imported the project code from"})
    df = spark.range(0, args.rows, numPartitions=args.partitions).mapInPandas(executor_facts, SCHEMA)
    version = write_table(df, cfg.warehouse, spec, mode="overwrite")
    back = read_table(spark, cfg.warehouse, "cluster_check", version).agg(
        F.count("*").alias("rows"), F.countDistinct("id").alias("distinct_ids"),
        F.collect_set("executor_workdir").alias("executors")).first()
    summary = {"version": version, "rows": back["rows"], "distinct_ids": back["distinct_ids"],
               "executors": sorted(back["executors"]), "master": spark.sparkContext.master}
    print("cluster_probe: " + json.dumps(summary, sort_keys=True), flush=True)
    spark.stop()
    return 0 if summary["rows"] == summary["distinct_ids"] == args.rows else 1


if __name__ == "__main__":
    sys.exit(main())
