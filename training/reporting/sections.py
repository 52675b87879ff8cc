"""The run report's sections: pure functions of `RunInputs`, one per section of the page."""
from __future__ import annotations

import math
from typing import Any, Mapping

from demandcast.html_report import HtmlReport
from training.evaluation.report import (barh_plot, calibration_plot, lift_plot, pr_plot, roc_plot,
                                        scorer_rows)
from training.reporting.inputs import RunInputs
from training.reporting.plots import (events_per_day_plot, funnel_plot, histograms_plot,
                                      training_curves_plot)

MODEL = "wide_and_deep"
# Rows of the PSI table besides the flagged features (the full list is in the scoring report).
_PSI_ROWS = 20


def key_figures(inputs: RunInputs) -> dict[str, Any]:
    """The headline numbers (also printed under run-all's summary table)."""
    figures: dict[str, Any] = {"rows in (events)": inputs.rows_in,
                               "rows quarantined": (sum(inputs.quarantine_by_reason.values())
                                                    if inputs.quarantine_by_reason is not None else None),
                               "users scored": inputs.users_scored,
                               "model": inputs.model_version, "snapshot": inputs.snapshot_date}
    scorers = (inputs.evaluation or {}).get("scorers") or {}
    for name, metrics in _ordered(scorers).items():
        figures[f"AUC {name}"] = round(metrics["roc_auc"], 4)
    oracle = (inputs.evaluation or {}).get("oracle") or {}
    if "oracle" not in scorers and oracle.get("oracle"):
        figures["AUC oracle (covered rows)"] = round(oracle["oracle"]["roc_auc"], 4)
    return {k: v for k, v in figures.items() if v is not None}


def _ordered(scorers: Mapping[str, Any]) -> dict[str, Any]:
    """The model first, the oracle last, the baselines between."""
    order = sorted(scorers, key=lambda n: (n != MODEL, n == "oracle", n))
    return {n: scorers[n] for n in order}


def curves_from_lift(scorers: Mapping[str, Any]) -> dict[str, Any]:
    """Coarse ROC and PR points (one per decile) from each scorer's lift table, for an
    evaluation folder without curves.json."""
    out = {}
    for name, metrics in scorers.items():
        deciles = sorted(metrics.get("lift") or [], key=lambda d: d["decile"])
        positives = [d["buyer_rate"] * d["rows"] for d in deciles]
        total_pos, total = sum(positives), sum(d["rows"] for d in deciles)
        if not deciles or total_pos == 0 or total_pos == total:
            continue
        fpr, tpr, recall, precision = [0.0], [0.0], [], []
        cum_pos = cum_rows = 0.0
        for d, pos in zip(deciles, positives):
            cum_pos += pos
            cum_rows += d["rows"]
            tpr.append(cum_pos / total_pos)
            fpr.append((cum_rows - cum_pos) / (total - total_pos))
            recall.append(cum_pos / total_pos)
            precision.append(cum_pos / cum_rows)
        out[name] = {"roc": {"fpr": fpr, "tpr": tpr}, "pr": {"recall": recall, "precision": precision}}
    return out


def _absent(section, inputs: RunInputs, value: Any, *names: str) -> bool:
    """True when `value` is not there, after writing why (the first of `names` with a reason)."""
    for name in names:
        if name in inputs.missing:
            section.note(f"Not available: {name}: {inputs.missing[name]}.")
            return True
    if value is None:
        section.note(f"Not available: {names[0]}: not gathered for this run.")
        return True
    return False


def overview_section(report: HtmlReport, inputs: RunInputs) -> None:
    section = report.section("Run overview")
    section.table([{"figure": k, "value": v} for k, v in key_figures(inputs).items()], digits=4)
    section.table(inputs.stages, caption="Stages of this run", digits=1)


def data_section(report: HtmlReport, inputs: RunInputs) -> None:
    section = report.section("Data: events, funnel and quarantine")
    if not _absent(section, inputs, inputs.events_per_day, "events"):
        section.figure(events_per_day_plot(inputs.events_per_day), dpi=90)
        section.figure(funnel_plot([(f"{s['step']} ({s['event_type']})", s["users"])
                                    for s in inputs.funnel], "Users reaching each funnel step"),
                       dpi=90)
        section.table(inputs.funnel, columns=["step", "event_type", "events", "users"],
                      caption="Funnel: events and distinct users per step")
    if not _absent(section, inputs, inputs.quarantine_by_reason, "quarantine"):
        if inputs.quarantine_by_reason:
            section.table([{"reason": r, "rows": n} for r, n in inputs.quarantine_by_reason.items()],
                          caption="Quarantined rows by reason (all batches)")
        else:
            section.paragraph("No row was quarantined.")


def features_section(report: HtmlReport, inputs: RunInputs) -> None:
    section = report.section("Feature distributions and drift",
                             f"Scored snapshot {inputs.snapshot_date or '(none)'}; reference "
                             f"(training) snapshot {inputs.reference_snapshot_date or '(none)'}.")
    if "feature distributions" in inputs.remarks:
        section.note(inputs.remarks["feature distributions"])
    if not _absent(section, inputs, inputs.feature_samples, "feature distributions"):
        section.figure(histograms_plot(inputs.feature_samples), dpi=90,
                       caption="Densities of key features (1st to 99th percentile range)")
    if _absent(section, inputs, inputs.drift, "drift"):
        return
    threshold = inputs.psi_threshold
    # "alert" (PSI above the threshold and a material move) where the scoring report has it.
    drifted = [d for d in inputs.drift if _finite(d["psi"]) and d["psi"] > threshold and d.get("alert", True)]
    if inputs.reference_snapshot_date == inputs.snapshot_date:
        section.note("The reference snapshot is the scored snapshot (the model was trained on it): "
                     "PSI is 0 by construction and says nothing about drift.")
    if drifted:
        section.note(f"{len(drifted)} feature(s) above the PSI threshold {threshold}: "
                     + ", ".join(d["feature"] for d in drifted), warning=True)
    else:
        section.paragraph(f"No feature has a PSI above {threshold}.")
    psi = {d["feature"]: d["psi"] for d in inputs.drift if _finite(d["psi"])}
    if any(psi.values()):
        section.figure(barh_plot(psi, "PSI per feature (highest 20)", "PSI", threshold), dpi=90)
    shown = sorted(inputs.drift, key=lambda d: -d["psi"] if _finite(d["psi"]) else 0.0)
    shown = [d for d in shown if d in drifted] + [d for d in shown if d not in drifted][:_PSI_ROWS]
    section.table([{**d, "flag": "DRIFT" if d in drifted else ""} for d in shown],
                  columns=["feature", "kind", "psi", "bins", "flag"],
                  caption=f"PSI, highest first ({len(shown)} of {len(inputs.drift)} model inputs)")


def training_section(report: HtmlReport, inputs: RunInputs) -> None:
    section = report.section("Training curves", f"Model {inputs.model_version or '(none)'}.")
    if _absent(section, inputs, inputs.history, "training history"):
        return
    section.figure(training_curves_plot(inputs.history), dpi=90)
    section.table(inputs.history, columns=[c for c in ("epoch", "loss", "val_auc", "steps", "rows", "seconds")
                                           if c in inputs.history[0]])


def evaluation_section(report: HtmlReport, inputs: RunInputs) -> None:
    section = report.section("Model against baselines and oracle")
    if _absent(section, inputs, inputs.evaluation, "evaluation"):
        return
    evaluation = inputs.evaluation
    if "evaluation" in inputs.remarks:
        section.note(inputs.remarks["evaluation"])
    scorers = _ordered(evaluation["scorers"])
    model = scorers.get(MODEL) or next(iter(scorers.values()))
    section.paragraph(f"Model {evaluation.get('model_version')}, protocol {evaluation.get('protocol')}, "
                      f"{model['rows']:,} test rows, purchase rate {model['positive_rate']:.4f}.")
    for name, why in (evaluation.get("skipped") or {}).items():
        section.note(f"{name} not scored: {why}.")
    oracle = evaluation.get("oracle") or {}
    if "oracle" not in scorers and oracle.get("oracle"):
        section.note(f"The oracle covers {oracle['coverage']:.1%} of the test rows: on those rows its "
                     f"ROC-AUC is {oracle['oracle']['roc_auc']:.4f}, the model's "
                     f"{oracle['wide_and_deep_same_rows']['roc_auc']:.4f}; it is left out of the charts.")
    section.table(scorer_rows(scorers))
    curves = inputs.curves
    if curves is None:
        curves = curves_from_lift(scorers)
        section.note("This evaluation has no curves.json: ROC and PR are drawn from the decile "
                     "table, one point per decile.")
    curves = {n: curves[n] for n in scorers if n in curves}
    for fig in (roc_plot(curves), pr_plot(curves, model["positive_rate"]),
                calibration_plot(scorers), lift_plot(scorers)):
        section.figure(fig, dpi=80)


def demand_section(report: HtmlReport, inputs: RunInputs) -> None:
    section = report.section("Category demand",
                             "Expected buyers and revenue in the next label window, per category "
                             "(sums of per-user expectations).")
    if _absent(section, inputs, inputs.category_demand, "category demand"):
        return
    section.figure(barh_plot({r["category_id"]: r["expected_buyers"] for r in inputs.category_demand},
                             "Expected buyers per category", "expected buyers"), dpi=90)
    section.table(inputs.category_demand, digits=1)


def drivers_section(report: HtmlReport, inputs: RunInputs) -> None:
    section = report.section("Top drivers")
    if not _absent(section, inputs, inputs.global_importance, "global importance"):
        section.paragraph(f"Global importance: {inputs.importance_source}.")
        section.figure(barh_plot(inputs.global_importance, "Global importance (top 20)"), dpi=90)
    if not _absent(section, inputs, inputs.driver_examples, "driver examples"):
        section.table(inputs.driver_examples, caption="Per-user drivers (highest propensity among the "
                                                      "explained users; contribution to p_purchase)")


SECTIONS = (overview_section, data_section, features_section, training_section,
            evaluation_section, demand_section, drivers_section)


def build_report(inputs: RunInputs) -> HtmlReport:
    report = HtmlReport(inputs.title, subtitle=f"model {inputs.model_version or '(none)'}, "
                                               f"snapshot {inputs.snapshot_date or '(none)'}")
    for render in SECTIONS:
        render(report, inputs)
    return report


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
