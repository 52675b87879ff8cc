"""A real Spark standalone cluster (master + two workers on loopback), a job submitted to it with
deploy/submit.py, and the Delta table it wrote checked: code that works in local mode also works
when driver and executors are separate processes that import the shipped package."""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from demandcast.tables import current_version, read_table, table_path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "deploy"))
from cluster_local import StandaloneCluster, free_port  # noqa: E402

pytestmark = pytest.mark.slow

PROBE_ROWS = 2000  # deploy/cluster_probe.py's default
HASH_KEY = "5e" * 32  # a test key in the production format (64 hex characters)


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


def _executors_with_tasks(event_log_dir: Path) -> dict[str, int]:
    """Executor id -> finished tasks, from the application's Spark event log."""
    tasks: dict[str, int] = {}
    files = [p for p in event_log_dir.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert files, f"no event log under {event_log_dir}"
    for path in files:
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if event.get("Event") == "SparkListenerTaskEnd":
                executor = event["Task Info"]["Executor ID"]
                tasks[executor] = tasks.get(executor, 0) + 1
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


def test_probe_job_runs_on_two_executors_and_writes_delta(cluster, spark, warehouse, project_root):
    result = _submit(project_root, cluster, "deploy/cluster_probe.py",
                     f"warehouse={warehouse}", "spark.shuffle_partitions=2",
                     spark_conf=("spark.ui.showConsoleProgress=false",))
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}\n{cluster.log_tail()}"
    submitted = result.stdout.splitlines()[0]
    assert f"--master {cluster.master_url}" in submitted and "--py-files" in submitted

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

    apps = cluster.status()["completedapps"]
    assert [a["state"] for a in apps if a["name"] == "demandcast-cluster_probe"] == ["FINISHED"]


def test_ingest_stage_on_the_cluster_writes_events_and_quarantine(cluster, spark, tmp_path, project_root):
    """The real ingest stage (jobs/ingest.py), submitted as operators do, with the cluster config."""
    raw, warehouse, event_log = tmp_path / "raw", tmp_path / "warehouse", tmp_path / "eventlog"
    event_log.mkdir()
    good, bad = _write_landing_files(raw)
    result = _submit(project_root, cluster, "ingest",
                     f"raw_dir={raw}", f"warehouse={warehouse}", f"runs_dir={tmp_path / 'runs'}",
                     "spark.shuffle_partitions=2",
                     spark_conf=("spark.ui.showConsoleProgress=false", "spark.eventLog.enabled=true",
                                 f"spark.eventLog.dir={event_log.as_uri()}",
                                 "spark.eventLog.rolling.enabled=false", "spark.eventLog.compress=false"))
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}\n{cluster.log_tail()}"

    events = read_table(spark, str(warehouse), "events").toPandas()
    assert set(events["event_id"]) == good  # every valid event exactly once, the bad ones not
    expected_keys = {hmac.new(HASH_KEY.encode(), f"u{i}".encode(), hashlib.sha256).hexdigest()
                     for i in range(7)}
    assert set(events["user_key"]) == expected_keys  # pseudonymised with the key from the env
    quarantine = read_table(spark, str(warehouse), "quarantine").toPandas()
    assert len(quarantine) == len(bad)
    assert all(any(b in record for b in bad) for record in quarantine["raw_record"])

    # Both executors (separate JVMs, one per worker) ran tasks of the stage.
    executors = _executors_with_tasks(event_log)
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
