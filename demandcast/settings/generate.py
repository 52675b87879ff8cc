"""Settings of the `generate` stage (conf section `generate`)."""
from __future__ import annotations

from demandcast.settings.base import Section


class GenerateSettings(Section):
    pass
