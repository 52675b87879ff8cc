"""A real Spark standalone cluster (master + two workers on loopback), a job submitted to it with
deploy/submit.py, and the Delta table it wrote checked: code that works in local mode also works
when driver and executors are separate processes that import the shipped package."""
from __future__ import annotations

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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    # Free ports, so a second checkout running the suite on the same machine does not collide.
    with StandaloneCluster(workers=2, port=free_port(), master_ui_port=free_port(),
                           work_root=tmp_path_factory.mktemp("standalone")) as running:
        yield running  # the context manager stops every daemon, also when a test fails


def _submit(project_root: Path, cluster: StandaloneCluster, job: str, *sets: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(project_root / "deploy" / "submit.py"), job,
           "--profile", "standalone", "--master", cluster.master_url,
           "--conf", str(project_root / "conf" / "cluster.yaml"),
           "--build-dir", str(cluster.work_root / "build"),
           # Spark's console progress bar is noise in a captured log.
           "--spark-conf", "spark.ui.showConsoleProgress=false"]
    for assignment in sets:
        cmd += ["--set", assignment]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=project_root, timeout=300)


def test_probe_job_runs_on_two_executors_and_writes_delta(cluster, spark, warehouse, project_root):
    result = _submit(project_root, cluster, "deploy/cluster_probe.py",
                     f"warehouse={warehouse}", "spark.shuffle_partitions=2")
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
