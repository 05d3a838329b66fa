"""The TFRS basic-retrieval tutorial's two-tower model, as a baseline: ids only, in-batch softmax.

Query tower = user-id StringLookup + Embedding, candidate tower = item-id StringLookup + Embedding,
tfrs.tasks.Retrieval, Adam; examples held in memory, shuffled once, batched and cached as the tutorial does. It
knows nothing but which user interacted with which item, so it is the floor a content-aware model should clear
on data where ids carry the signal, and the speed reference of bench/bench_training.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs


class IdOnlyTwoTower(tfrs.Model):
    def __init__(self, user_ids: list[str], item_ids: list[str], dim: int) -> None:
        super().__init__()
        self.query_tower = tf.keras.Sequential(
            [
                tf.keras.layers.StringLookup(vocabulary=user_ids, mask_token=None),
                tf.keras.layers.Embedding(len(user_ids) + 1, dim),
            ]
        )
        self.candidate_tower = tf.keras.Sequential(
            [
                tf.keras.layers.StringLookup(vocabulary=item_ids, mask_token=None),
                tf.keras.layers.Embedding(len(item_ids) + 1, dim),
            ]
        )
        self.task = tfrs.tasks.Retrieval()

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        return self.task(
            self.query_tower(features["user_id"]),
            self.candidate_tower(features["post_id"]),
            compute_metrics=False,
        )


@dataclass(frozen=True, eq=False)
class IdOnlyResult:
    """Vectors of every user and item seen in training (the vocabularies: distinct ids as strings, sorted), the
    examples trained on and the wall time of each epoch."""

    user_ids: np.ndarray
    user_vectors: np.ndarray  # float32 [users, dim]
    item_ids: np.ndarray
    item_vectors: np.ndarray  # float32 [items, dim]
    examples: int
    epoch_seconds: list[float]


# After each epoch: (epoch number from 1, the model so far).
EpochCallback = Callable[[int, IdOnlyResult], None]


def train_id_only_two_tower(
    user_ids: np.ndarray,
    item_ids: np.ndarray,
    *,
    embedding_dim: int,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int = 42,
    after_epoch: EpochCallback | None = None,
) -> IdOnlyResult:
    """Train the tutorial's model on (user_ids[i], item_ids[i]) pairs, one example each; returns the towers'
    vectors for the training vocabularies. after_epoch sees the model after every epoch (for validation)."""
    if len(user_ids) != len(item_ids) or len(user_ids) == 0:
        raise ValueError(f"need as many user as item ids, and some: got {len(user_ids)} and {len(item_ids)}")
    users = np.asarray(user_ids).astype(str)
    items = np.asarray(item_ids).astype(str)
    tf.keras.utils.set_random_seed(seed)
    user_vocabulary, item_vocabulary = sorted(set(users.tolist())), sorted(set(items.tolist()))
    model = IdOnlyTwoTower(user_vocabulary, item_vocabulary, embedding_dim)
    model.compile(optimizer=tf.keras.optimizers.Adam(learning_rate=learning_rate))
    dataset = (
        tf.data.Dataset.from_tensor_slices({"user_id": users, "post_id": items})
        .shuffle(len(users), seed=seed, reshuffle_each_iteration=False)
        .batch(batch_size)
        .cache()
    )

    seconds: list[float] = []

    def snapshot() -> IdOnlyResult:
        return IdOnlyResult(
            user_ids=np.array(user_vocabulary),
            user_vectors=model.query_tower(tf.constant(user_vocabulary)).numpy(),
            item_ids=np.array(item_vocabulary),
            item_vectors=model.candidate_tower(tf.constant(item_vocabulary)).numpy(),
            examples=len(users),
            epoch_seconds=list(seconds),
        )

    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        model.fit(dataset, epochs=1, verbose=0)
        seconds.append(time.perf_counter() - started)
        if after_epoch is not None:
            after_epoch(epoch, snapshot())
    return snapshot()
