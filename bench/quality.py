"""Model quality on the simulator's default data set: Wide & Deep vs the oracle and LightGBM.

Runs generate -> ingest -> features -> train -> evaluate (the CLI stages, default settings unless
given with --set) into bench/out/quality, then prints the test-split AUCs of the evaluation:
goals: |AUC(oracle) - AUC(model)| <= 0.01 on the same rows, and AUC(model) >= AUC(LightGBM).

    .venv/bin/python bench/quality.py --set snapshot_dates=[2025-04-01,2025-05-01]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import emit  # noqa: E402
from demandcast.cli import main as cli  # noqa: E402

OUT = ROOT / "bench" / "out" / "quality"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--conf", default="conf/local.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--skip-data", action="store_true", help="reuse generated data and features")
    args = parser.parse_args()
    common = ["--conf", args.conf, "--set", f"warehouse={OUT}/warehouse", "--set",
              f"raw_dir={OUT}/raw", "--set", f"runs_dir={OUT}/runs"]
    for o in args.overrides:
        common += ["--set", o]
    stages = ["train", "evaluate"] if args.skip_data else ["generate", "ingest", "features",
                                                           "train", "evaluate"]
    seconds = {}
    for stage in stages:
        started = time.monotonic()
        code = cli([stage, *common])
        seconds[stage] = round(time.monotonic() - started, 1)
        if code != 0:
            raise SystemExit(f"stage {stage} failed with exit code {code}")
    report = json.loads(max((OUT / "runs" / "evaluations").glob("*/metrics.json"),
                            key=lambda p: p.stat().st_mtime).read_text())
    auc = {k: round(v["roc_auc"], 4) for k, v in report["scorers"].items()}
    figures = {"stage_seconds": seconds, "protocol": report["protocol"],
               "test_rows": report["scorers"]["wide_and_deep"]["rows"], "roc_auc": auc,
               "ece": {k: round(v["ece"], 4) for k, v in report["scorers"].items()}}
    if report.get("oracle"):
        oracle = report["oracle"]["oracle"]["roc_auc"]
        model = report["oracle"]["wide_and_deep_same_rows"]["roc_auc"]
        figures["oracle_same_rows"] = {"oracle": round(oracle, 4), "model": round(model, 4),
                                       "gap": round(oracle - model, 4),
                                       "coverage": report["oracle"]["coverage"],
                                       "goal_gap_at_most": 0.01}
    figures["model_minus_lightgbm"] = round(auc["wide_and_deep"] - auc["lightgbm"], 4)
    emit("quality", figures)


if __name__ == "__main__":
    main()
