"""`demandcast STAGE [--conf FILE] [--set KEY=VALUE ...]`: one console script for every stage.

Also the `__main__` of jobs/<stage>.py under spark-submit. Exit codes: 0 success, 2 usage or
configuration error, 3 a data-quality gate refused the data, 1 anything else.
"""
from __future__ import annotations

import argparse
import importlib
import json
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Sequence

from demandcast.config import DEFAULT_CONF, PipelineConfig, load_config
from demandcast.errors import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, ConfigError, DemandcastError
from demandcast.logs import configure_logging, get_logger, stage_timer

# Stage name -> module in jobs/. Each module has `run(cfg: PipelineConfig) -> dict`. No job module
# is named after a top-level package: `spark-submit jobs/<stage>.py` puts jobs/ first on sys.path,
# where a jobs/features.py would hide the `features` package.
STAGES = {
    "generate": "jobs.generate",
    "ingest": "jobs.ingest",
    "features": "jobs.build_features",
    "train": "jobs.train",
    "evaluate": "jobs.evaluate",
    "score": "jobs.score",
    "promote": "jobs.promote",
    "run-all": "jobs.run_all",
    "report": "jobs.report",
    "maintain": "jobs.maintain",
}

# Stages that write model folders, checkpoints, evaluations, reports or the run ledger under
# runs_dir with file I/O: checked before any work, so a read-only or mistyped runs_dir is one
# line at start-up, not a traceback after tables were already written.
RUNS_DIR_STAGES = {"train", "evaluate", "score", "run-all", "report"}

# Flags that are shorthands for a config key, so `--resume` reads as the issue asks.
FLAG_KEYS = {"resume": "train.resume", "force": "run_all.force", "rollback": "promote.rollback"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # exit 2 with one line, as for config errors
        self.print_usage(sys.stderr)
        print(f"demandcast: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="demandcast", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=sorted(STAGES), help="pipeline stage to run")
    parser.add_argument("--conf", default=DEFAULT_CONF,
                        help=f"YAML config (layered on what it `extends`); default {DEFAULT_CONF}")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one config key, e.g. spark.master=local[1]")
    parser.add_argument("--resume", action="store_true", help="train: continue from the last checkpoint")
    parser.add_argument("--force", action="store_true", help="run-all: rerun stages whose outputs exist")
    parser.add_argument("--rollback", action="store_true",
                        help="promote: make the previous champion champion again")
    parser.add_argument("--as-of", dest="as_of", metavar="YYYY-MM-DD",
                        help="do this day's work: sets the config key as_of")
    return parser


def parse(argv: Sequence[str]) -> tuple[str, PipelineConfig]:
    args = build_parser().parse_args(list(argv))
    overrides = list(args.overrides)
    for flag, key in FLAG_KEYS.items():
        if getattr(args, flag):
            overrides.append(f"{key}=true")
    if args.as_of is not None:
        overrides.append(f"as_of={args.as_of}")
    return args.stage, load_config(args.conf, overrides)


def check_writable_dir(location: str, key: str) -> Path:
    """Creates `location` if needed and proves a file can be written in it; else a ConfigError
    (exit 2) naming the key."""
    path = Path(location)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise ConfigError(f"key '{key}': {location} is not a writable directory "
                          f"({exc.strerror or exc}: {exc.filename or location})") from None
    return path


def run_stage(stage: str, cfg: PipelineConfig) -> dict:
    """Runs one stage; when it fails, the tables it wrote go back to their versions before it
    (project standard: a failed job leaves every table at its last good version)."""
    from demandcast.tables import rolled_back_on_failure  # here: usage errors exit before PySpark loads

    if stage in RUNS_DIR_STAGES:
        check_writable_dir(cfg.runs_dir, "runs_dir")
    module = importlib.import_module(STAGES[stage])
    with stage_timer(stage), rolled_back_on_failure(stage):
        summary = module.run(cfg)
    if cfg.catalog.database:
        register_in_catalog(cfg)
    return summary


def register_in_catalog(cfg: PipelineConfig) -> list[str]:
    """After a stage: its tables under `catalog.database` in the stage's session catalog. Outside
    the stage's rollback: a catalog that refuses an entry takes nothing back from good tables."""
    from pyspark.sql import SparkSession

    from demandcast.tables.catalog import register_tables

    spark = SparkSession.getActiveSession()
    if spark is None:  # a stage without Spark (generate writes files) has no catalog to update
        return []
    return register_tables(spark, cfg.warehouse, cfg.catalog.database)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    configure_logging()
    log = get_logger("cli")
    try:
        stage, cfg = parse(argv)
        configure_logging(cfg.log_level)
        summary = run_stage(stage, cfg)
    except SystemExit as exc:
        return int(exc.code or 0)
    except DemandcastError as exc:
        print(f"demandcast: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("demandcast: interrupted", file=sys.stderr)
        return EXIT_FAILURE
    except Exception:  # the last resort keeps the traceback: this is a bug, not a user error
        traceback.print_exc()
        return EXIT_FAILURE
    if summary:
        log.info("summary: %s", json.dumps(summary, sort_keys=True, default=str))
    if isinstance(summary, dict) and summary.get("report_html"):
        # The last line of run-all and report: where the run's HTML report is.
        print(summary["report_html"], flush=True)
    return EXIT_OK


def job_main(stage: str) -> None:
    """Entry for `spark-submit jobs/<stage>.py --conf ...`."""
    sys.exit(main([stage, *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
