"""features: update user_daily from the events, then write user_features and labels per snapshot."""
from __future__ import annotations

from demandcast.cli import job_main
from demandcast.config import PipelineConfig
from demandcast.session import build_spark_session
from features.feature_spec import FeatureSpec
from features.feature_tables import event_date_range, update_user_daily, write_snapshots
from features.snapshots import check_snapshots_in_events, resolve_snapshots, snapshot_source


def run(cfg: PipelineConfig) -> dict:
    snapshots = resolve_snapshots(cfg)
    spec = FeatureSpec.from_config(cfg)
    spark = build_spark_session("features", cfg.spark)
    check_snapshots_in_events(snapshots, *event_date_range(spark, cfg.warehouse), snapshot_source(cfg),
                              cfg.features.max_days_after_last_event)
    daily = update_user_daily(spark, cfg.warehouse, spec)
    written = write_snapshots(spark, cfg.warehouse, snapshots, spec, daily.last_event_date,
                              cfg.features.require_complete_label_window, daily.processed_dates,
                              skip_up_to_date=not cfg.features.rewrite_up_to_date)
    return {"user_daily_dates_processed": len(daily.processed_dates),
            "user_daily_version": daily.version, **written}


if __name__ == "__main__":
    job_main("features")
