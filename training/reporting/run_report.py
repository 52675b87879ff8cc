"""The run report: one self-contained HTML page per pipeline run, for the operator.

Sections: run overview, data (events per day, the view -> cart -> purchase funnel, quarantine by
reason), feature distributions and drift of the scored snapshot, training curves, the model
against the baselines and the oracle, category demand, and drivers (global and per user).

Reading happens in one place (inputs.gather_inputs, into a plain RunInputs), rendering in pure
functions of it (sections.py), writing here. The core (demandcast/) imports no stage, so the
report that reads every stage's output lives on this side.
"""
from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

from pyspark.sql import SparkSession

from demandcast.config import PipelineConfig
from demandcast.html_report import HtmlReport
from demandcast.logs import get_logger
from demandcast.run_folders import local_dir
from training.reporting.inputs import RunInputs, gather_inputs
from training.reporting.sections import build_report

log = get_logger("run_report")


def write_run_report(report: HtmlReport, runs_dir: str, now: dt.datetime | None = None) -> Path:
    """{runs_dir}/reports/run-<UTC time>.html, and the same file as reports/latest.html."""
    now = now or dt.datetime.now(dt.timezone.utc)
    folder = local_dir(runs_dir) / "reports"
    path = report.write(folder / f"run-{now.strftime('%Y%m%dT%H%M%SZ')}.html")
    latest = folder / "latest.html"
    tmp = latest.with_suffix(".html.tmp")
    shutil.copyfile(path, tmp)
    tmp.replace(latest)
    return path


def make_run_report(spark: SparkSession, cfg: PipelineConfig, summaries: Mapping[str, dict],
                    stages: Sequence[dict[str, Any]]) -> tuple[Path, RunInputs]:
    """Gathers, renders and writes the report of a run; returns its path and the inputs."""
    inputs = gather_inputs(spark, cfg, summaries, stages, title=f"demandcast run ({cfg.env})")
    path = write_run_report(build_report(inputs), cfg.runs_dir)
    log.info("run report: %s", path)
    return path, inputs
