"""The one application tests/test_cluster_standalone.py submits to its standalone cluster: the
ingest stage as `deploy/submit.py ingest` runs it (deploy/stage_launcher.py as the main module,
same arguments), then deploy/cluster_probe.py, in one driver with the same two executors.

    python deploy/submit.py tests/cluster_ingest_and_probe.py --profile standalone --conf ... --set ...

Every spark-submit pays a driver JVM, an executor JVM per worker and their Python workers before
any work, which on a 2-core box is most of what each of two separate submits took; one
application pays it once. Both jobs read the same --conf and --set: the probe's table
(cluster_check) and the stage's tables share one warehouse. The probe goes last because its
main() stops the session; its Spark jobs run in job group PROBE_JOB_GROUP, so the event log
tells the stage's tasks from the probe's.
"""
from __future__ import annotations

import runpy
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
STAGE = "ingest"
PROBE_JOB_GROUP = "cluster_probe"


def run_stage(args: list[str]) -> int:
    """deploy/stage_launcher.py STAGE ARGS, as spark-submit would run it; its exit code."""
    launcher = DEPLOY / "stage_launcher.py"
    sys.argv = [str(launcher), STAGE, *args]
    try:
        runpy.run_path(str(launcher), run_name="__main__")
    except SystemExit as launcher_exit:  # the launcher always ends with sys.exit(main(...))
        return launcher_exit.code if isinstance(launcher_exit.code, int) else 1
    return 0


def main(args: list[str]) -> int:
    code = run_stage(args)
    if code != 0:
        return code
    from pyspark import SparkContext

    # The stage's context, still running (stages leave the session to the process's end).
    SparkContext.getOrCreate().setJobGroup(PROBE_JOB_GROUP, "deploy/cluster_probe.py")
    probe = runpy.run_path(str(DEPLOY / "cluster_probe.py"))
    return probe["main"](args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
