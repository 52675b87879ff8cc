"""Settings of the `score` stage (conf section `score`)."""
from __future__ import annotations

from demandcast.settings.base import Section


class ScoreSettings(Section):
    pass
