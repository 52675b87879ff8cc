"""One tiny pipeline, built once per session through the real CLI (subprocesses), that the
reliability tests attack: kill -9 mid-write, concurrent scoring, schema drift, determinism, and
the security scans. Copies of its warehouse keep the tests independent of each other's writes."""
from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("demandcast"))
SNAPSHOTS = ("2025-02-01", "2025-02-15")
# A field no contract knows: ingest must carry it in events.extra and features must not care.
NEW_OPTIONAL_FIELD = "coupon_code"
STAGE_TIMEOUT_S = 900

TINY_CONF = """\
extends: {local}
warehouse: {root}/warehouse
raw_dir: {raw}
runs_dir: {root}/runs
seed: 7
snapshot_dates: [{snapshots}]
label_window_days: 14
spark: {{master: "local[2]", driver_memory: 1g, shuffle_partitions: 2}}
generate: {{n_users: 400, n_items: 120, n_days: 60, partitions: 2, formats: [json]}}
train:
  launcher: inprocess
  num_proc: 1
  epochs: 2
  batch_size: 128
  files_per_split: 1
  hidden_units: [16]
  top_k_categories: 3
"""


def stage_env() -> dict[str, str]:
    env = dict(os.environ)  # DEMANDCAST_USER_HASH_KEY comes from tests/conftest.py
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    return env


@dataclass(frozen=True)
class Pipeline:
    """A warehouse, runs folder and raw landing zone with the config file that points at them."""

    root: Path
    conf: Path
    raw_dir: Path

    @property
    def warehouse(self) -> Path:
        return self.root / "warehouse"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    def command(self, stage: str, *sets: str) -> list[str]:
        return [CLI, stage, "--conf", str(self.conf), *[a for s in sets for a in ("--set", s)]]

    def cli(self, stage: str, *sets: str, check: bool = True,
            timeout: float = STAGE_TIMEOUT_S) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(stage, *sets), cwd=PROJECT_ROOT, env=stage_env(),
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"`demandcast {stage}` exited {done.returncode}:\n{done.stderr[-4000:]}")
        return done

    def start(self, stage: str, *sets: str) -> subprocess.Popen:
        """The stage in its own process group, so os.killpg reaches the JVM and Python workers.
        Its stderr goes to a file (`.log_path`): a pipe nobody reads fills up and blocks Spark."""
        log_path = self.root / f"{stage}-{time.monotonic_ns()}.log"
        with open(log_path, "w") as log:
            job = subprocess.Popen(self.command(stage, *sets), cwd=PROJECT_ROOT, env=stage_env(),
                                   start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)
        job.log_path = log_path
        return job

    def copy_to(self, dest: Path) -> "Pipeline":
        """Same raw data, a copy of the warehouse (Delta logs hold relative paths) and runs."""
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copytree(self.warehouse, dest / "warehouse")
        if self.runs_dir.exists():
            shutil.copytree(self.runs_dir, dest / "runs")
        return make_pipeline(dest, self.raw_dir)


def make_pipeline(root: Path, raw_dir: Path) -> Pipeline:
    conf = root / "conf.yaml"
    conf.write_text(TINY_CONF.format(local=PROJECT_ROOT / "conf" / "local.yaml", root=root,
                                     raw=raw_dir, snapshots=", ".join(SNAPSHOTS)))
    return Pipeline(root, conf, raw_dir)


def raw_user_ids(raw_dir: Path) -> set[str]:
    import pyarrow.parquet as pq

    return set(pq.read_table(raw_dir / "users", columns=["user_id"]).column("user_id").to_pylist())


def land_events_with_new_field(raw_dir: Path, dest: Path | None = None,
                               drop: tuple[str, ...] = ()) -> Path:
    """A JSON landing file whose records carry a field the event contract does not know
    (and lack the fields in `drop`)."""
    users = sorted(raw_user_ids(raw_dir))[:10] if (raw_dir / "users").exists() else ["U00000001"]
    records = [{"event_id": f"schema-evolution-{n:03d}", "user_id": users[n % len(users)],
                "session_id": f"se-{n}", "event_time": f"2025-01-20T1{n % 10}:00:00Z",
                "event_type": "view", "item_id": "I-evolution", "category_id": "c00",
                "price": 10.0, "quantity": 1, "device": "mobile", "channel": "direct",
                NEW_OPTIONAL_FIELD: f"SPRING{n}"} for n in range(20)]
    path = dest or raw_dir / "events" / "json" / "event_date=2025-01-20" / "zz-new-field.json.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as out:
        out.write("\n".join(json.dumps({k: v for k, v in r.items() if k not in drop}, sort_keys=True)
                            for r in records) + "\n")
    return path


def build_pipeline(root: Path, raw_dir: Path | None = None) -> Pipeline:
    """generate (unless raw_dir is given) -> ingest -> features -> train -> score, via the CLI:
    one run-all process for the four stages after the landing (one JVM and TF start-up)."""
    root.mkdir(parents=True, exist_ok=True)
    pipeline = make_pipeline(root, raw_dir or root / "raw")
    if raw_dir is None:
        pipeline.cli("generate")
        land_events_with_new_field(pipeline.raw_dir)
    pipeline.cli("run-all", "run_all.stages=[ingest, features, train, score]")
    return pipeline


_BUILDS: dict[str, Future] = {}


@pytest.hookimpl(trylast=True)  # after -m/-k deselection: only for selected reliability tests
def pytest_collection_modifyitems(config, items) -> None:
    """Runs the reliability tests last and starts their pipeline builds now, in the background.

    The builds are CLI subprocesses that take minutes and leave a core idle much of the time;
    started at collection they overlap the rest of the suite instead of blocking its start.
    Besides the clean pipeline, a second build with the same seed when a selected test asks for
    it (`second_run`, the determinism tests). A build of this tiny world is mostly process
    start-up and single-threaded scheduling, so two at once on two cores take far less than two
    in a row."""
    reliability = [item for item in items if Path(__file__).parent in item.path.parents]
    if not reliability:
        return
    items[:] = [item for item in items if item not in reliability] + reliability
    uses = {name for item in reliability for name in getattr(item, "fixturenames", ())}
    # fixturenames is the closure: `pipeline` and `second_run` both bring pipeline_builds.
    if config.option.collectonly or "pipeline_builds" not in uses:
        return
    pool = ThreadPoolExecutor(max_workers=2)
    config.add_cleanup(lambda: pool.shutdown(cancel_futures=True))
    # Working on the suite itself: point this at a folder build_pipeline filled earlier (the
    # tests only read it and attack copies) to skip the few minutes of building it again.
    reuse = os.environ.get("DEMANDCAST_RELIABILITY_PIPELINE")
    if reuse:
        _BUILDS["clean"] = pool.submit(make_pipeline, Path(reuse), Path(reuse) / "raw")
    to_build = [name for name, wanted in (("clean", not reuse), ("again", "second_run" in uses))
                if wanted]
    if to_build:
        root = Path(tempfile.mkdtemp(prefix="demandcast-reliability-"))
        config.add_cleanup(lambda: shutil.rmtree(root, ignore_errors=True))
        for name in to_build:
            _BUILDS[name] = pool.submit(build_pipeline, root / name)


@pytest.fixture(scope="session")
def pipeline_builds() -> dict[str, Future]:
    """The builds started at collection (see pytest_collection_modifyitems)."""
    return _BUILDS


@pytest.fixture(scope="session")
def pipeline(pipeline_builds) -> Pipeline:
    return pipeline_builds["clean"].result()


@pytest.fixture(scope="session")
def second_run(pipeline_builds) -> Pipeline:
    """The same pipeline built again from nothing with the same seed (see pipeline_builds)."""
    return pipeline_builds["again"].result()


def data_files(table: Path) -> set[Path]:
    return {p for p in table.rglob("*.parquet") if "_delta_log" not in p.parts}


def kill_during_write(process: subprocess.Popen, table: Path, timeout_s: float = 600) -> bool:
    """Waits until the stage has written new data files into `table` (its commit not yet
    visible in the log), then SIGKILLs its whole process group. False if the stage ended first."""
    before = data_files(table)
    log_before = set((table / "_delta_log").glob("*.json"))
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        if data_files(table) - before:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return set((table / "_delta_log").glob("*.json")) == log_before
        time.sleep(0.01)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    return False


def table_rows(spark, path: Path, drop: tuple[str, ...] = (), where: str | None = None) -> list[tuple]:
    """Every row of a Delta table (all columns but `drop`) as sorted tuples, for exact comparison."""
    df = spark.read.format("delta").load(str(path))
    if where:
        df = df.where(where)
    df = df.select(*sorted(c for c in df.columns if c not in drop))
    return sorted((tuple(r) for r in df.collect()), key=repr)


