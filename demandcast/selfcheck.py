"""Install self-check: proves the pieces of the stack load and work together."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path


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

    from demandcast.session import build_spark_session
    from demandcast.config import SparkSettings
    spark = build_spark_session("selfcheck", SparkSettings(master="local[1]", shuffle_partitions=1))
    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/check"
        spark.range(5).write.format("delta").save(path)
        got = spark.read.format("delta").load(path).count()
        assert got == 5, got
    print(f"[self-check] Spark {spark.version} wrote and read back a Delta table (5 rows)")
    spark.stop()
    print("[self-check] OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
