"""A Spark standalone cluster on loopback (one master, N workers) from the installed pyspark.

The pip pyspark has no sbin/start-*.sh, so the daemons are started with its bin/spark-class.
Each daemon runs in its own process group and is stopped by that group's id, so a failed test
never leaves a JVM behind. Used by tests/test_cluster_standalone.py and by people:

    .venv/bin/python deploy/cluster_local.py --workers 2      # runs until Ctrl-C
    python deploy/submit.py ingest --profile standalone --conf conf/cluster.yaml ...
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def spark_home() -> Path:
    """The folder of the installed pyspark package: it holds bin/spark-class and the jars."""
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class StandaloneCluster:
    """Master plus `workers` workers on `host`; `start()` returns once every worker is ALIVE."""

    workers: int = 2
    cores_per_worker: int = 1
    memory_per_worker: str = "2g"
    host: str = "127.0.0.1"
    port: int = 7077
    master_ui_port: int = 8080
    work_root: Path | None = None
    # Interpreter of the Python workers the executors start (the project venv by default).
    python: str = sys.executable
    daemon_memory: str = "512m"
    _procs: list[tuple[str, subprocess.Popen]] = field(default_factory=list, init=False)

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.port}"

    @property
    def master_ui(self) -> str:
        return f"http://{self.host}:{self.master_ui_port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "SPARK_HOME": str(spark_home()),
            "SPARK_LOCAL_IP": self.host,
            "SPARK_DAEMON_MEMORY": self.daemon_memory,
            "PYSPARK_PYTHON": self.python,
            # The daemons' own config folder would otherwise be $SPARK_HOME/conf (absent in pip).
            "SPARK_CONF_DIR": str(self.work_root / "conf"),
        })
        return env

    def _launch(self, name: str, args: list[str]) -> None:
        log = open(self.work_root / f"{name}.log", "wb")
        proc = subprocess.Popen(
            [str(spark_home() / "bin" / "spark-class"), *args],
            stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=self.work_root,
            start_new_session=True,  # its own process group: stop() kills the JVM and children
        )
        log.close()
        self._procs.append((name, proc))

    def status(self) -> dict:
        """The master's JSON status page (workers, running and completed applications)."""
        with urllib.request.urlopen(f"{self.master_ui}/json/", timeout=5) as resp:
            return json.loads(resp.read())

    def alive_workers(self) -> int:
        try:
            return sum(1 for w in self.status().get("workers", []) if w.get("state") == "ALIVE")
        except OSError:
            return 0

    def start(self, timeout: float = 90.0) -> "StandaloneCluster":
        if self.work_root is None:
            self.work_root = Path(tempfile.mkdtemp(prefix="demandcast-standalone-"))
        self.work_root.mkdir(parents=True, exist_ok=True)
        (self.work_root / "conf").mkdir(exist_ok=True)
        (self.work_root / "conf" / "log4j2.properties").write_text(
            (PROJECT_ROOT / "conf" / "log4j2.properties").read_text())
        try:
            self._launch("master", [
                "org.apache.spark.deploy.master.Master", "--host", self.host,
                "--port", str(self.port), "--webui-port", str(self.master_ui_port)])
            for i in range(self.workers):
                work_dir = self.work_root / f"worker-{i}"
                work_dir.mkdir(exist_ok=True)
                self._launch(f"worker-{i}", [
                    "org.apache.spark.deploy.worker.Worker", "--host", self.host,
                    "--cores", str(self.cores_per_worker), "--memory", self.memory_per_worker,
                    "--webui-port", str(free_port(self.host)), "--work-dir", str(work_dir),
                    self.master_url])
            self._wait_for_workers(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_workers(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [(name, p.returncode) for name, p in self._procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"standalone daemon exited early: {dead}\n{self.log_tail()}")
            if self.alive_workers() == self.workers:
                return
            time.sleep(0.5)
        raise TimeoutError(f"{self.workers} workers not ALIVE after {timeout:.0f} s\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        """The end of every daemon's log and of every executor's stderr, for failure messages."""
        if self.work_root is None:
            return ""
        parts = []
        logs = sorted(self.work_root.glob("*.log")) + sorted(self.work_root.glob("worker-*/app-*/*/stderr"))
        for path in logs:
            text = path.read_text(errors="replace").splitlines()[-lines:]
            parts.append(f"--- {path.relative_to(self.work_root)}\n" + "\n".join(text))
        return "\n".join(parts)

    def stop(self, grace: float = 10.0) -> None:
        """Stops workers first, then the master: SIGTERM to each process group, SIGKILL if needed."""
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + grace
        for _, proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            try:  # the group may hold children of the JVM even when the JVM has exited
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        self._procs.clear()

    def __enter__(self) -> "StandaloneCluster":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run a Spark standalone cluster on loopback until Ctrl-C.")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=1, help="cores per worker")
    parser.add_argument("--memory", default="2g", help="memory per worker")
    parser.add_argument("--port", type=int, default=7077)
    parser.add_argument("--ui-port", type=int, default=8080)
    parser.add_argument("--work-root", type=Path, default=None)
    args = parser.parse_args(argv)
    cluster = StandaloneCluster(workers=args.workers, cores_per_worker=args.cores,
                                memory_per_worker=args.memory, port=args.port,
                                master_ui_port=args.ui_port, work_root=args.work_root)
    with cluster:
        print(f"master {cluster.master_url} (UI {cluster.master_ui}), {cluster.workers} workers; "
              f"logs in {cluster.work_root}. Ctrl-C stops it.", flush=True)
        try:
            while all(p.poll() is None for _, p in cluster._procs):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
