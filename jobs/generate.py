"""generate: simulated raw behaviour logs, user/item files and the ground truth, under raw_dir."""
from __future__ import annotations

import datetime as dt

from pyspark.sql import Observation
from pyspark.sql import functions as F

from demandcast.cli import job_main
from demandcast.config import PipelineConfig
from demandcast.errors import ConfigError
from demandcast.logs import get_logger
from demandcast.session import build_spark_session
from demandcast.tables import absolute_uri
from features.simulator import ground_truth, landing, population, simulate

log = get_logger("generate")


def truth_cutoffs(cfg: PipelineConfig) -> list[dt.date]:
    """The configured snapshot dates; without any, the last cutoff whose window fits the data."""
    s = cfg.generate
    if cfg.snapshot_dates:
        return list(cfg.snapshot_dates)
    last = s.start_date + dt.timedelta(days=s.n_days - 1 - cfg.label_window_days)
    if last < s.start_date:
        raise ConfigError(f"generate.n_days={s.n_days} is shorter than label_window_days="
                          f"{cfg.label_window_days}: no cutoff has a complete label window")
    log.warning("snapshot_dates is empty: ground truth for cutoff %s only", last)
    return [last]


def write_events(world, s, raw: str, seed: int) -> dict[str, int]:
    """The full behaviour log with its flaws, and the users and items files; landed records
    per kind."""
    population.user_dimension(world.users, s.start_date).coalesce(max(1, s.n_users // 1_000_000)) \
        .write.mode("overwrite").parquet(f"{raw}/users")
    population.item_dimension(world.items).coalesce(1).write.mode("overwrite").parquet(f"{raw}/items")

    landed = landing.with_flaws(world.events, s.flaws, seed)
    # Landed records per kind, counted while the first format is written (no extra job).
    counted = Observation("landed_records")
    kinds = ["valid", *landing.BAD_KINDS]
    observed = landed.observe(counted, *[
        F.count_if(F.col("bad_kind").isNull() if k == "valid" else F.col("bad_kind") == k).alias(k) for k in kinds])
    # With two formats the events are simulated again for the second: persisting them costs
    # as much as that (bench/RESULTS.md, generate).
    for i, fmt in enumerate(s.formats):
        source = observed if i == 0 else landed
        if fmt == "json":
            landing.write_json(source, f"{raw}/events/json", s.json_gzip_level)
        else:
            landing.write_parquet(source, f"{raw}/events/parquet")
        log.info("wrote %s events under %s/events/%s", fmt, raw, fmt)
    kinds = {k: n for k, n in counted.get.items() if n}
    return kinds


def write_purchases(world, path: str) -> dict[str, int]:
    """Only the purchases, as an order export (landing.write_purchase_export)."""
    counted = Observation("exported_purchases")
    rows = world.events.observe(counted, F.count_if(F.col("event_type") == "purchase").alias("purchases"))
    landing.write_purchase_export(rows, path)
    log.info("wrote the purchase export under %s", path)
    return {"purchase_lines": counted.get["purchases"]}


def run(cfg: PipelineConfig) -> dict:
    s = cfg.generate
    if cfg.env != "local":
        raise ConfigError("generate writes simulated data and runs in local mode only (env=local)")
    cutoffs = truth_cutoffs(cfg)
    spark = build_spark_session("generate", cfg.spark)
    raw = absolute_uri(cfg.raw_dir)
    world = simulate(spark, s, cfg.seed)

    if s.export == "purchases":
        kinds = write_purchases(world, f"{raw}/transactions")
    else:
        kinds = write_events(world, s, raw, cfg.seed)

    truth = ground_truth(world, s, cfg.seed, cutoffs, cfg.label_window_days)
    truth_path = f"{raw}/ground_truth"
    # Users and mean probability per cutoff, counted while the truth is written (no re-read).
    written = Observation("ground_truth")
    cutoff = F.col("cutoff_date")
    observed_truth = truth.observe(written, *[column for i, day in enumerate(cutoffs) for column in (
        F.count_if(cutoff == F.lit(day)).alias(f"users_{i}"),
        F.avg(F.when(cutoff == F.lit(day), F.col("p_purchase"))).alias(f"p_{i}"))])
    # Not a warehouse table: the simulator's answer key, kept beside the raw files it explains.
    observed_truth.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(truth_path)
    stats = written.get
    per_cutoff = {str(day): {"users": stats[f"users_{i}"],
                             "mean_p_purchase": None if stats[f"p_{i}"] is None else round(stats[f"p_{i}"], 4)}
                  for i, day in enumerate(cutoffs)}
    world.items.unpersist()
    return {
        "raw_dir": raw,
        "export": s.export,
        "formats": s.formats if s.export == "events" else [],
        "users": s.n_users,
        "items": s.n_items,
        "days": f"{s.start_date}..{s.start_date + dt.timedelta(days=s.n_days - 1)}",
        "landed_records": kinds,
        "ground_truth": {"path": truth_path, "window_days": cfg.label_window_days, "cutoffs": per_cutoff},
    }


if __name__ == "__main__":
    job_main("generate")
