"""The TFRS tutorial id-only two-tower baseline learns who interacts with what from ids alone."""

from __future__ import annotations

import numpy as np

from teamu_assets.model.baselines import IdOnlyResult, train_id_only_two_tower


def test_id_only_two_tower_separates_two_communities() -> None:
    # Users 0-19 interact with items 100-109, users 20-39 with items 200-209.
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 6)
    items = np.where(users < 20, 100, 200) + rng.integers(0, 10, len(users))
    epochs_seen: list[int] = []

    def after_epoch(epoch: int, so_far: IdOnlyResult) -> None:
        assert so_far.user_vectors.shape == (40, 8) and len(so_far.epoch_seconds) == epoch
        epochs_seen.append(epoch)

    result = train_id_only_two_tower(
        users,
        items,
        embedding_dim=8,
        epochs=15,
        batch_size=32,
        learning_rate=0.05,
        after_epoch=after_epoch,
    )
    assert epochs_seen == list(range(1, 16)) and len(result.epoch_seconds) == 15
    assert result.examples == len(users)
    assert result.user_vectors.shape == (40, 8) and result.item_vectors.shape == (20, 8)
    scores = result.user_vectors @ result.item_vectors.T
    own_community = (
        result.item_ids.astype(int)[None, :] // 100 == np.where(result.user_ids.astype(int) < 20, 1, 2)[:, None]
    )
    own = np.where(own_community, scores, np.nan)
    other = np.where(~own_community, scores, np.nan)
    assert (np.nanmean(own, axis=1) > np.nanmean(other, axis=1)).all()
