"""The synthetic world and the model config the end-to-end tests materialize the graph with.

The world is the smallest tried in which a small model beats, by the gate's paired interval, both popularity and
the popularity fallback as it would serve (engaged users over age ** the decay chosen on validation): in a world of
300 users, 200 posts and 30 days that fallback ranks as well as any model tried (the demo's full model included),
so the gate rightly refuses every candidate there, and the tests that need a promoted model would have none.
"""

from __future__ import annotations

from teamu_assets.synthetic import SyntheticConfig

WORLD = SyntheticConfig(users=1000, posts=500, days=60, seed=11, bad_fraction=0.02)
SMALL_MODEL = {"epochs": 8, "embedding_dim": 64, "batch_size": 256, "patience": 2}
