"""Settings of the `run-all` stage (conf section `run_all`)."""
from __future__ import annotations

from demandcast.settings.base import Section


class RunAllSettings(Section):
    # Rerun every stage even when its inputs and outputs are unchanged (`--force`).
    force: bool = False
