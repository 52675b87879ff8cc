"""Settings of the `evaluate` stage (conf section `evaluate`)."""
from __future__ import annotations

from demandcast.settings.base import Section


class EvaluateSettings(Section):
    pass
