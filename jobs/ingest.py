"""ingest: raw behaviour logs -> Bronze `events` (exactly once), `quarantine`, `users`, `items`."""
from __future__ import annotations

import datetime as dt

from demandcast.cli import job_main
from demandcast.config import PipelineConfig
from demandcast.logs import get_logger
from demandcast.session import build_spark_session
from features.ingest.batch import check_gate, commit_batch, files_to_read, landing_bounds, prepare_batch
from features.ingest.dimensions import ingest_dimensions
from features.ingest.pseudonymise import resolve_hash_key

log = get_logger("ingest")


def run(cfg: PipelineConfig) -> dict:
    key = resolve_hash_key(cfg.user_hash_key_env, cfg.env)  # before Spark: fail fast without a key
    spark = build_spark_session("ingest", cfg.spark)
    now = dt.datetime.now(dt.timezone.utc)
    files, already = files_to_read(spark, cfg)
    if cfg.as_of is not None:
        first, last = landing_bounds(cfg)
        log.info("as of %s: landing folders %s..%s, %d new files, %d already ingested", cfg.as_of,
                 first, last, len(files), already)
        if not files:
            return {"as_of": str(cfg.as_of), "files": 0, "files_already_ingested": already,
                    "tables": _dimensions(spark, cfg, key)}
    batch = prepare_batch(spark, cfg, key, now, files)
    try:
        c = batch.counts
        log.info("batch %s: %d good rows (%d in-batch duplicates), %d bad rows %s, %d file problems",
                 batch.batch_id, c["good_rows"], c["duplicates_in_batch"], c["bad_rows"], c["bad_by_reason"],
                 c["file_problems"])
        for problem in batch.problems:
            log.warning("file problem: %s %s (%s)", problem.reason, problem.path, problem.detail)
        check_gate(batch, cfg.ingest.max_bad_fraction)
        tables = commit_batch(batch, cfg.warehouse)
    finally:
        batch.release()
    tables.update(_dimensions(spark, cfg, key))
    return {
        **({"as_of": str(cfg.as_of), "files_already_ingested": already} if cfg.as_of else {}),
        "batch_id": batch.batch_id,
        **batch.counts,
        "bad_fraction": round(batch.bad_fraction, 6),
        "file_problems": [{"path": p.path, "reason": p.reason, "detail": p.detail} for p in batch.problems],
        "tables": tables,
    }


def _dimensions(spark, cfg: PipelineConfig, key) -> dict:
    return ingest_dimensions(spark, cfg, key) if cfg.ingest.ingest_dimensions else {}


if __name__ == "__main__":
    job_main("ingest")
