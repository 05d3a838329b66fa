"""Names and sizes of the data contract (docs/DATA_CONTRACT.md) that several layers share: the ingester, the
synthetic and real-data writers, the evaluation, the model and the dbt project. Defined once here, and imported
from here; this module imports nothing, so any layer (the code location at load included) can read it cheaply.
"""

from __future__ import annotations

# The Mixpanel events Teamu tracks and the ingester validates.
POST_VIEWED = "Post Viewed"
RECOMMENDATION_SHOWN = "Recommendation Shown"
RECOMMENDATION_CLICKED = "Recommendation Clicked"
TEAMU_EVENTS = (POST_VIEWED, RECOMMENDATION_SHOWN, RECOMMENDATION_CLICKED)

# How many of a member's most recently engaged posts make their history: marts.user_features.recent_post_ids
# (what serving embeds) and the histories the training examples replay. Raising it raises both, so training
# never sees longer histories than serving.
HISTORY_LENGTH = 50

# The values the dbt project reads with var(): the code location passes them on every dbt invocation (--vars).
# dbt_project.yml repeats them as defaults for a bare `dbt build`; tests/unit/test_contract.py keeps the two equal.
DBT_VARS: dict[str, str | int] = {"history_length": HISTORY_LENGTH, "post_viewed_event": POST_VIEWED}
