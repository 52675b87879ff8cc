"""Settings of the `run-all` stage (conf section `run_all`)."""
from __future__ import annotations

from typing import Literal

from demandcast.settings.base import Section

StageName = Literal["generate", "ingest", "features", "train", "evaluate", "score"]


class RunAllSettings(Section):
    # Rerun every stage even when its inputs and outputs are unchanged (`--force`).
    force: bool = False
    # The stages to chain, always in pipeline order; empty = all of them (generate in local
    # mode only). For example [ingest, features, score] for the daily run on landed logs.
    stages: list[StageName] = []
