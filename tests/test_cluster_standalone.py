"""A real Spark standalone cluster (master + two workers on loopback), a job submitted to it with
deploy/submit.py, and the Delta tables it wrote checked: code that works in local mode also works
when driver and executors are separate processes that import the shipped package.

The ingest stage and deploy/cluster_probe.py run as one application (one submit,
tests/cluster_ingest_and_probe.py): a submit's driver, executor and Python worker start-up cost
more than either job on this data, and each test checks its own job's results."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from demandcast.tables import current_version, read_table, table_path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy"))
from cluster_ingest_and_probe import PROBE_JOB_GROUP  # noqa: E402  (tests/: the submitted app)
from cluster_local import StandaloneCluster, free_port  # noqa: E402

pytestmark = pytest.mark.slow

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PROBE_ROWS = 2000  # deploy/cluster_probe.py's default
HASH_KEY = "5e" * 32  # a test key in the production format (64 hex characters)
APPLICATION = "tests/cluster_ingest_and_probe.py"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Free ports, so a second checkout running the suite on the same machine does not collide.
    with StandaloneCluster(workers=2, port=free_port(), master_ui_port=free_port(),
                           work_root=tmp_path_factory.mktemp("standalone")) as running:
        yield running  # the context manager stops every daemon, also when a test fails


def _submit(project_root: Path, cluster: StandaloneCluster, job: str, *sets: str,
            spark_conf: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(project_root / "deploy" / "submit.py"), job,
           "--profile", "standalone", "--master", cluster.master_url,
           "--conf", str(project_root / "conf" / "cluster.yaml"),
           "--build-dir", str(cluster.work_root / "build")]
    for pair in spark_conf:
        cmd += ["--spark-conf", pair]
    for assignment in sets:
        cmd += ["--set", assignment]
    env = {**os.environ, "DEMANDCAST_USER_HASH_KEY": HASH_KEY}
    return subprocess.run(cmd, capture_output=True, text=True, cwd=project_root, env=env, timeout=600)


def _executors_with_stage_tasks(event_log_dir: Path) -> dict[str, int]:
    """Executor id -> tasks the stage finished, from the application's Spark event log: those
    that ended before the probe's first job (job group PROBE_JOB_GROUP) started."""
    tasks: dict[str, int] = {}
    files = [p for p in event_log_dir.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(files) == 1, f"expected one application's event log under {event_log_dir}: {files}"
    probe_started = False
    for line in files[0].read_text().splitlines():
        event = json.loads(line)
        if event.get("Event") == "SparkListenerJobStart" \
                and (event.get("Properties") or {}).get("spark.jobGroup.id") == PROBE_JOB_GROUP:
            probe_started = True
            break
        if event.get("Event") == "SparkListenerTaskEnd":
            executor = event["Task Info"]["Executor ID"]
            tasks[executor] = tasks.get(executor, 0) + 1
    assert probe_started, "the event log has no job of the probe: the stage/probe boundary is unknown"
    return tasks


def _write_landing_files(raw: Path) -> tuple[set[str], set[str]]:
    """Two days of JSON behaviour logs in the landing layout; one bad price per day."""
    good, bad = set(), set()
    for day in ("2025-01-01", "2025-01-02"):
        folder = raw / "events" / "json" / f"event_date={day}"
        folder.mkdir(parents=True)
        lines = []
        for i in range(30):
            event_id = f"e-{day}-{i}"
            good.add(event_id)
            lines.append({"event_id": event_id, "user_id": f"u{i % 7}", "session_id": f"s{i % 5}",
                          "event_time": f"{day}T{10 + i % 10:02d}:00:00+00:00",
                          "event_type": ("view", "add_to_cart", "purchase")[i % 3],
                          "item_id": f"i{i % 4}", "category_id": f"c{i % 3}", "price": 10.5 + i,
                          "quantity": 1 + i % 2, "device": "web", "channel": "organic"})
        bad.add(f"bad-{day}")
        lines.append({**lines[0], "event_id": f"bad-{day}", "price": -5.0})
        (folder / "part-0.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    return good, bad


@dataclass(frozen=True)
class ClusterRun:
    """What the one submit of the ingest stage and the probe left behind."""

    result: subprocess.CompletedProcess
    warehouse: Path
    event_log: Path
    good_events: set[str]
    bad_events: set[str]


@pytest.fixture(scope="module")
def cluster_run(cluster, tmp_path_factory) -> ClusterRun:
    """The real ingest stage (jobs/ingest.py through deploy/stage_launcher.py), submitted as
    operators do with the cluster config, then deploy/cluster_probe.py in the same application."""
    root = tmp_path_factory.mktemp("cluster_run")
    raw, warehouse, event_log = root / "raw", root / "warehouse", root / "eventlog"
    event_log.mkdir()
    good, bad = _write_landing_files(raw)
    result = _submit(PROJECT_ROOT, cluster, APPLICATION,
                     f"raw_dir={raw}", f"warehouse={warehouse}", f"runs_dir={root / 'runs'}",
                     "spark.shuffle_partitions=2",
                     spark_conf=("spark.ui.showConsoleProgress=false", "spark.eventLog.enabled=true",
                                 f"spark.eventLog.dir={event_log.as_uri()}",
                                 "spark.eventLog.rolling.enabled=false", "spark.eventLog.compress=false"))
    return ClusterRun(result, warehouse, event_log, good, bad)


def _assert_submitted_ok(run: ClusterRun, cluster: StandaloneCluster) -> None:
    result = run.result
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}\n{cluster.log_tail()}"


def test_probe_job_runs_on_two_executors_and_writes_delta(cluster, cluster_run, spark, project_root):
    _assert_submitted_ok(cluster_run, cluster)
    submitted = cluster_run.result.stdout.splitlines()[0]
    assert f"--master {cluster.master_url}" in submitted and "--py-files" in submitted

    warehouse = str(cluster_run.warehouse)
    path = table_path(warehouse, "cluster_check")
    assert current_version(spark, path) is not None  # a Delta table, with a log
    rows = read_table(spark, warehouse, "cluster_check").toPandas()
    assert sorted(rows["id"]) == list(range(PROBE_ROWS))  # nothing lost or duplicated

    # Two executor processes, one under each worker's work dir, did the Python work.
    workdirs = sorted(rows["executor_workdir"].unique())
    assert len(workdirs) == 2, workdirs
    assert {Path(w).parent.parent.name for w in workdirs} == {"worker-0", "worker-1"}
    assert rows["pid"].nunique() >= 2
    # They ran the project's interpreter, and imported the project from the shipped zip, not
    # from the editable install on this machine.
    assert set(rows["python"]) == {str(project_root / ".venv" / "bin" / "python")}
    assert all(".zip" in f and "demandcast-0.1.0" in f for f in rows["demandcast_file"]), \
        rows["demandcast_file"].unique()

    # The stage's session named the one application (the probe's session factory reuses it).
    apps = cluster.status()["completedapps"]
    assert [a["state"] for a in apps if a["name"] == "demandcast-ingest"] == ["FINISHED"]


def test_ingest_stage_on_the_cluster_writes_events_and_quarantine(cluster, cluster_run, spark):
    _assert_submitted_ok(cluster_run, cluster)
    warehouse = str(cluster_run.warehouse)
    events = read_table(spark, warehouse, "events").toPandas()
    assert set(events["event_id"]) == cluster_run.good_events  # every valid event exactly once, the bad ones not
    expected_keys = {hmac.new(HASH_KEY.encode(), f"u{i}".encode(), hashlib.sha256).hexdigest()
                     for i in range(7)}
    assert set(events["user_key"]) == expected_keys  # pseudonymised with the key from the env
    quarantine = read_table(spark, warehouse, "quarantine").toPandas()
    assert len(quarantine) == len(cluster_run.bad_events)
    assert all(any(b in record for b in cluster_run.bad_events) for record in quarantine["raw_record"])

    # Both executors (separate JVMs, one per worker) ran tasks of the stage, not only the probe.
    executors = _executors_with_stage_tasks(cluster_run.event_log)
    assert set(executors) == {"0", "1"}, executors


def test_bad_config_fails_before_anything_is_submitted(cluster, project_root, warehouse):
    result = _submit(project_root, cluster, "deploy/cluster_probe.py", "spark.no_such_key=1")
    assert result.returncode == 2
    assert "unknown key 'spark.no_such_key'" in result.stderr
    assert not any(a["name"] == "demandcast-cluster_probe" and a["state"] == "RUNNING"
                   for a in cluster.status().get("activeapps", []))


def test_failed_start_leaves_no_daemon(tmp_path):
    # A worker that cannot start (invalid memory) makes start() fail; nothing may keep running.
    broken = StandaloneCluster(workers=1, memory_per_worker="lots", port=free_port(),
                               master_ui_port=free_port(), work_root=tmp_path)
    with pytest.raises(RuntimeError, match="exited early"):
        broken.start(timeout=60)
    leftovers = [p for p in psutil.process_iter(["cmdline"])
                 if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert leftovers == []
