"""The HTML report is one self-contained file that a real browser (headless Chromium) renders."""
from __future__ import annotations

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from browser import non_white_share, screenshot  # noqa: E402
from demandcast.html_report import HtmlReport  # noqa: E402

BAR_RGB = (214, 39, 40)  # matplotlib's tab:red, a colour nothing else on the page uses


def _sample_report() -> HtmlReport:
    report = HtmlReport("demandcast run <2025-06-30>", subtitle="model v3 & baseline")
    metrics = report.section("Metrics", "AUC and calibration on the holdout snapshot.")
    metrics.table([{"model": "wide_deep", "auc": 0.8123456, "users": 20000, "note": None},
                   {"model": "<script>alert(1)</script>", "auc": float("nan"), "users": 0}],
                  columns=["model", "auc", "users", "note"])
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(["a", "b", "c", "d"], [3, 5, 2, 4], color="tab:red")
    metrics.figure(fig, caption="Expected buyers per category")
    return report


def test_report_is_self_contained_and_escaped(tmp_path):
    path = _sample_report().write(tmp_path / "report.html")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    # Nothing fetched from outside: no URL in src/href other than data: and in-page anchors.
    refs = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert refs and all(r.startswith(("data:image/png;base64,", "#")) for r in refs), refs
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "demandcast run &lt;2025-06-30&gt;" in text
    assert '<td class="num">0.8123</td>' in text and '<td class="num">20,000</td>' in text
    assert not list(tmp_path.glob("*.tmp"))


def test_image_rejects_non_png():
    with pytest.raises(ValueError, match="PNG"):
        HtmlReport("x").section("s").image(b"GIF89a...")


def test_report_renders_in_headless_chromium(tmp_path):
    path = _sample_report().write(tmp_path / "report.html")
    pixels = screenshot(path, tmp_path / "shot.png")
    assert pixels.shape[:2] == (900, 1200)
    non_white = non_white_share(pixels)
    assert non_white > 0.01, f"screenshot is blank ({non_white:.4f} non-white)"
    # The embedded figure itself was decoded and painted: its bars' colour is on screen.
    bar = (np.abs(pixels - np.array(BAR_RGB)).max(axis=2) < 30).sum()
    assert bar > 2000, f"only {bar} pixels of the figure's bar colour"
