"""Settings of the `run_all` stage (conf section `run_all`)."""
from __future__ import annotations

from demandcast.settings.base import Section


class RunAllSettings(Section):
    pass
