"""Airflow DAGs for demandcast: the daily sequence and the weekly retrain.

- demandcast_daily  (02:00 UTC every day):  ingest >> features >> score
- demandcast_weekly_retrain (02:00 UTC on Mondays): wait for that day's features >> train >> evaluate
- demandcast_weekly_maintain (02:00 UTC on Sundays): wait for that day's score >> maintain

Every task is a SparkSubmitOperator running `stage_launcher.py STAGE --conf cluster.yaml` (the
`demandcast STAGE` CLI from the shipped code) with the same packaging deploy/submit.py uses for
the `yarn` profile: the project wheel (as a .zip) in --py-files, the venv-pack archive of the
pinned stack in --archives (./environment), the config files in --files. A release (CI:
`python deploy/submit.py STAGE --profile yarn` builds the two artifacts under build/submit/) is
copied to DEMANDCAST_RELEASE_URI with deploy/stage_launcher.py and conf/{base,cluster}.yaml,
conf/log4j2.properties; the Spark connection `spark_demandcast` holds the master (yarn) and the
queue.

Every stage gets the logical date as `--as-of {{ ds }}` and does that day's work: ingest reads
the day's landing folder and the late margin (files already ingested are skipped), features
writes snapshot ds and the labels of every snapshot whose window has closed, train takes the
rolling window of labelled snapshots up to ds (train.window_*), score scores snapshot ds. A
rerun of a day commits nothing new; a day skipped is caught up by the next run.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow import DAG
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator
from airflow.sensors.external_task import ExternalTaskSensor

VERSION = os.environ.get("DEMANDCAST_VERSION", "0.1.0")
RELEASE = os.environ.get("DEMANDCAST_RELEASE_URI", f"s3a://demandcast-lake/releases/{VERSION}")
CONN_ID = os.environ.get("DEMANDCAST_SPARK_CONN", "spark_demandcast")

# Mirrors deploy/profiles.yaml `yarn` (tests/test_airflow_dag.py keeps the two in step).
SPARK_CONF = {
    "spark.pyspark.python": "./environment/bin/python",
    "spark.pyspark.driver.python": "./environment/bin/python",
    "spark.yarn.maxAppAttempts": "1",
    "spark.yarn.appMasterEnv.PYSPARK_PYTHON": "./environment/bin/python",
    "spark.executorEnv.TF_CPP_MIN_LOG_LEVEL": "2",
    "spark.driver.memory": "8g",
    "spark.executor.memory": "8g",
    "spark.executor.cores": "4",
    "spark.executor.memoryOverhead": "2g",
    "spark.dynamicAllocation.enabled": "true",
    "spark.dynamicAllocation.shuffleTracking.enabled": "true",
    "spark.dynamicAllocation.maxExecutors": "50",
    "spark.hadoop.fs.s3a.aws.credentials.provider": "com.amazonaws.auth.DefaultAWSCredentialsProviderChain",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC -Dlog4j2.configurationFile=log4j2.properties",
    # Keeps the hashing key (driver environment, below) out of the Spark UI and event log.
    "spark.redaction.regex": "(?i)secret|password|token|access[.]?key|hash_key",
}
# The user-id hashing key, from an Airflow Variable whose name Airflow masks in task logs;
# the driver (on the cluster in cluster mode) gets it as DEMANDCAST_USER_HASH_KEY.
DRIVER_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "DEMANDCAST_USER_HASH_KEY": "{{ var.value.demandcast_hash_key_secret }}",
}
DELTA_PACKAGES = "io.delta:delta-spark_2.13:4.0.1"

DEFAULT_ARGS = {
    "owner": "demandcast",
    "retries": 1,
    "retry_delay": timedelta(minutes=10),
    "depends_on_past": False,
}


def stage_task(stage: str, extra_sets: tuple[str, ...] = (), **spark_overrides: str) -> SparkSubmitOperator:
    """One pipeline stage as spark-submit of stage_launcher.py with the release's packaging."""
    conf = {**SPARK_CONF, **spark_overrides}
    args = [stage, "--conf", "cluster.yaml", "--as-of", "{{ ds }}",
            "--set", "spark.python=./environment/bin/python"]
    for assignment in extra_sets:
        args += ["--set", assignment]
    return SparkSubmitOperator(
        task_id=stage,
        conn_id=CONN_ID,
        deploy_mode="cluster",
        name=f"demandcast-{stage}-{{{{ ds_nodash }}}}",
        application=f"{RELEASE}/stage_launcher.py",
        application_args=args,
        py_files=f"{RELEASE}/demandcast-{VERSION}-py3-none-any.zip",
        archives=f"{RELEASE}/demandcast-env-{VERSION}.tar.gz#environment",
        files=",".join(f"{RELEASE}/conf/{name}" for name in ("base.yaml", "cluster.yaml", "log4j2.properties")),
        packages=DELTA_PACKAGES,
        conf=conf,
        env_vars=DRIVER_ENV,
    )


with DAG(
    dag_id="demandcast_daily",
    description="Daily: ingest the day's behaviour logs, compute the snapshot's features, score all users.",
    schedule="0 2 * * *",
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,  # stages MERGE into shared tables: one day at a time
    default_args=DEFAULT_ARGS,
    tags=["demandcast"],
) as daily:
    stage_task("ingest") >> stage_task("features") >> stage_task("score")


def wait_for_daily(task: str, timeout_hours: int) -> ExternalTaskSensor:
    """Waits for `task` of the daily DAG run with the same logical date, without holding a slot."""
    return ExternalTaskSensor(
        task_id=f"wait_for_daily_{task}",
        external_dag_id="demandcast_daily",
        external_task_id=task,
        mode="reschedule",
        poke_interval=300,
        timeout=timeout_hours * 3600,
    )


with DAG(
    dag_id="demandcast_weekly_retrain",
    description="Weekly: retrain the Wide & Deep model on the newest features and evaluate it.",
    schedule="0 2 * * 1",  # Mondays, same time as the daily run: the sensor matches its logical date
    start_date=datetime(2025, 1, 6),
    catchup=False,
    max_active_runs=1,
    default_args={**DEFAULT_ARGS, "retries": 0},  # a failed training run is looked at, not retried
    tags=["demandcast"],
) as weekly:
    features_done = wait_for_daily("features", timeout_hours=6)
    # Horovod runs one rank per executor task (training/launch.py); deploy/GPU.md has the
    # resources for GPU nodes. Dynamic allocation is off so every rank starts together.
    train = stage_task(
        "train",
        **{"spark.dynamicAllocation.enabled": "false", "spark.executor.instances": "4",
           "spark.task.cpus": "4"},
    )
    features_done >> train >> stage_task("evaluate")


with DAG(
    dag_id="demandcast_weekly_maintain",
    description="Weekly: compact small files and vacuum within the retention pinned models need.",
    schedule="0 2 * * 0",  # Sundays, after that day's daily run, away from Monday's retrain
    start_date=datetime(2025, 1, 5),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["demandcast"],
) as maintenance:
    # After the day's score: OPTIMIZE rewrites the files the daily stages append to, and two
    # writers of one table would make one of them retry or fail on Delta's conflict check.
    score_done = wait_for_daily("score", timeout_hours=12)
    score_done >> stage_task("maintain")
