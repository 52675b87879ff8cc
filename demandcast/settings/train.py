"""Settings of the `train` stage (conf section `train`)."""
from __future__ import annotations

from demandcast.settings.base import Section


class TrainSettings(Section):
    pass
