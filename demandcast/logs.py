"""Python logging for every stage: one format, and a timer that reports start, end and duration."""
from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Iterator

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s | %(message)s"


def configure_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_demandcast", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler._demandcast = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("py4j", "matplotlib", "urllib3", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("demandcast") else f"demandcast.{name}")


@contextlib.contextmanager
def stage_timer(stage: str, logger: logging.Logger | None = None) -> Iterator[None]:
    """Logs '=== stage: start', then 'done in N s' or 'FAILED after N s'."""
    log = logger or get_logger(stage)
    log.info("=== %s: start", stage)
    started = time.monotonic()
    try:
        yield
    except BaseException:
        log.error("=== %s: FAILED after %.1f s", stage, time.monotonic() - started)
        raise
    log.info("=== %s: done in %.1f s", stage, time.monotonic() - started)
