"""Headless Chromium for tests that check an HTML page really renders: find the browser, take a
screenshot, and tell whether it shows anything."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def require_chromium() -> str:
    """The browser, or a skip locally / a failure in CI (where it must be installed)."""
    browser = chromium()
    if browser is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium is not installed: CI must `apt-get install -y chromium`")
        pytest.skip("chromium not installed (apt-get install chromium)")
    return browser


def screenshot(page: Path, shot: Path, width: int = 1200, height: int = 900) -> np.ndarray:
    """Renders `page` offline in headless Chromium; the screenshot's RGB pixels (int)."""
    subprocess.run(
        [require_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--hide-scrollbars", f"--user-data-dir={shot.parent / 'profile'}",
         f"--screenshot={shot}", f"--window-size={width},{height}", page.as_uri()],
        check=True, capture_output=True, timeout=180)
    return np.asarray(Image.open(shot).convert("RGB")).astype(int)


def non_white_share(pixels: np.ndarray) -> float:
    return float((pixels.min(axis=2) < 240).mean())
