"""Settings of the `ingest` stage (conf section `ingest`)."""
from __future__ import annotations

from demandcast.settings.base import Section


class IngestSettings(Section):
    pass
