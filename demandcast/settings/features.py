"""Settings of the `features` stage (conf section `features`)."""
from __future__ import annotations

from demandcast.settings.base import Section


class FeaturesSettings(Section):
    pass
