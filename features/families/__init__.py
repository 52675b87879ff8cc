"""Feature families: each module declares its features (catalog metadata + expression).

Families whose features are column expressions over the window totals (per-user sums of
user_daily, see features.window_sums) give each Feature a `compute`; the category families' sums
come from a keyed table of their own (features.families.category_affinity / context).
"""
from __future__ import annotations

from features.families import (btyd, category_affinity, context, frequency, funnel, price,
                               recency, sessions, trend)

# Output order of the feature table.
FAMILIES = (recency, frequency, funnel, sessions, category_affinity, price, trend, context, btyd)
