"""Install self-check: proves the pieces of the stack load and work together."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path


def save_class_archive(dumped: Path) -> None:
    """Ends the driver JVM (it dumps the archive on exit) and puts the archive in place."""
    from pyspark import SparkContext

    from demandcast.session import CLASS_ARCHIVE

    jvm = SparkContext._gateway.proc
    jvm.stdin.close()  # the gateway exits when its stdin closes
    jvm.wait(timeout=300)
    if dumped.is_file() and dumped.stat().st_size:
        dumped.replace(CLASS_ARCHIVE)
        print(f"[self-check] driver class archive written: {CLASS_ARCHIVE} "
              f"({CLASS_ARCHIVE.stat().st_size // 2**20} MB)")
    else:
        print("[self-check] the JVM dumped no class archive: drivers start without one")


def main() -> int:
    venv_bin = Path(sys.executable).parent
    out = subprocess.run([str(venv_bin / "horovodrun"), "--check-build"],
                         capture_output=True, text=True, check=True).stdout
    lines = {ln.strip() for ln in out.splitlines()}
    assert "[X] TensorFlow" in lines, out
    assert "[X] Gloo" in lines, out
    print("[self-check] horovodrun --check-build: TensorFlow [X], Gloo [X]")

    import petastorm  # noqa: F401
    import pyarrow
    print(f"[self-check] petastorm {petastorm.__version__} imports (pyarrow {pyarrow.__version__})")

    from pyspark.sql import functions as F

    from demandcast.session import CLASS_ARCHIVE, build_spark_session, mapped_class_archive_bytes
    from demandcast.config import SparkSettings
    # The first self-check after an install also dumps the driver's class archive (see
    # demandcast.session.CLASS_ARCHIVE), written beside it and renamed once the JVM has exited,
    # so no driver ever maps a half-written file.
    dump_to = None if CLASS_ARCHIVE.is_file() else CLASS_ARCHIVE.with_name(f"{CLASS_ARCHIVE.name}.{os.getpid()}")
    spark = build_spark_session("selfcheck", SparkSettings(master="local[1]", shuffle_partitions=1),
                                dump_class_archive=dump_to)
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/check"
        spark.range(5).write.format("delta").save(path)
        got = spark.read.format("delta").load(path).groupBy((F.col("id") % 2).alias("odd")).count().collect()
        assert sorted(r["count"] for r in got) == [2, 3], got
    print(f"[self-check] Spark {spark.version} wrote and read back a Delta table (5 rows)")
    stale = dump_to is None and mapped_class_archive_bytes(spark) < CLASS_ARCHIVE.stat().st_size
    spark.stop()
    if dump_to is not None:
        save_class_archive(dump_to)
    elif stale:  # the JDK or the jars changed since the dump: the JVM ignores it
        CLASS_ARCHIVE.unlink()
        print(f"[self-check] {CLASS_ARCHIVE} no longer matches the JVM or its jars: removed; "
              "the next `make install` dumps a new one")
    print("[self-check] OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
