"""Start-up of a local driver with and without the class-data archive (demandcast.session).

    .venv/bin/python bench/startup.py [--runs 3]

Each run is a fresh Python + JVM (what every `demandcast <stage>` and every CLI test pays): build
the session, write and read back a small Delta table, stop. Subject: the session factory as is
(maps CLASS_ARCHIVE); reference: the same with the archive's options left out. The two arms
alternate so that load changes hit both.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import Timing, compare, emit  # noqa: E402

# One run, in a child process: prints {"session_s", "roundtrip_s", "cpu_s"}.
CHILD = """
import json, os, sys, tempfile, time
sys.path.insert(0, {root!r})
started = time.perf_counter()
import psutil
from demandcast import session
from demandcast.config import SparkSettings
if {without_archive}:
    session.CLASS_ARCHIVE = session.CLASS_ARCHIVE.with_name("no-such-archive.jsa")
spark = session.build_spark_session("bench-startup", SparkSettings(master="local[2]", shuffle_partitions=2,
                                                                   log_level="ERROR"))
ready = time.perf_counter()
with tempfile.TemporaryDirectory() as tmp:
    spark.range(1000).selectExpr("id", "id % 7 AS k").write.format("delta").save(tmp + "/t")
    spark.read.format("delta").load(tmp + "/t").groupBy("k").count().collect()
done = time.perf_counter()
me = psutil.Process()
cpu = sum(sum(p.cpu_times()[:2]) for p in [me, *me.children(recursive=True)])
print(json.dumps({{"session_s": ready - started, "roundtrip_s": done - ready, "cpu_s": cpu}}))
"""


def one_run(without_archive: bool) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), without_archive=without_archive)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from demandcast.session import CLASS_ARCHIVE
    if not CLASS_ARCHIVE.is_file():
        sys.exit(f"{CLASS_ARCHIVE} is missing: run `make install` first")
    arms: dict[bool, list[dict]] = {False: [], True: []}
    load = [__import__("os").getloadavg()[0]]
    for _ in range(args.runs):
        for without in (False, True):
            arms[without].append(one_run(without))
    load.append(__import__("os").getloadavg()[0])

    def timing(name: str, runs: list[dict]) -> Timing:
        return Timing(name, [r["session_s"] + r["roundtrip_s"] for r in runs], tuple(r["cpu_s"] for r in runs))

    figures = compare(timing("with_class_archive", arms[False]), timing("without_class_archive", arms[True]))
    figures["session_start_s"] = {name: [round(r["session_s"], 2) for r in arms[w]]
                                  for name, w in (("with", False), ("without", True))}
    figures["cpu_s"] = {name: [round(r["cpu_s"], 1) for r in arms[w]] for name, w in (("with", False), ("without", True))}
    figures["load_average_1m"] = {"start": round(load[0], 1), "end": round(load[1], 1)}
    figures["archive_mb"] = CLASS_ARCHIVE.stat().st_size // 2**20
    emit("startup", figures)


if __name__ == "__main__":
    main()
