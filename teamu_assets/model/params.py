"""Training hyperparameters, importable without TensorFlow: the Dagster config of the training asset is built
from these fields (RUN_KNOBS, their types and defaults), so the two never drift apart. Also SCORE_TERMS, the
fixed part of the vectors' layout, which the ideas read without TensorFlow."""

from __future__ import annotations

from dataclasses import dataclass

from teamu_assets.contract import HISTORY_LENGTH
from teamu_assets.evaluation.metrics import GATE_K

# The last three of the embedding_dim dimensions carry the additive terms of the score: freshness, quality and
# the new users' popularity prior (see towers.QueryTower.call).
SCORE_TERMS = 3

# The training batch sizes tried when TrainParams.batch_size is None: each trains a model, and a smaller one is
# kept only where it ranks validation better by the paired interval (train._keep_best_batch_size). The batch sets
# both the in-batch negatives and how many optimizer steps an epoch takes, and which matters more depends on the
# data: the demo (27 batches of 1,024 an epoch) keeps 256, the public data sets 1,024 (docs/BENCHMARKS.md, "The
# batch size chosen on validation").
BATCH_SIZES: tuple[int, ...] = (256, 1024)


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 30
    # None: each of BATCH_SIZES trained, one kept on validation (see BATCH_SIZES); a number: that one only.
    batch_size: int | None = None
    embedding_dim: int = 512
    temperature: float = 0.1
    learning_rate: float = 0.002
    seed: int = 42
    history_length: int = HISTORY_LENGTH
    patience: int = 5
    feature_dim: int = 64
    hidden_units: int = 256
    history_decay: float = 0.95
    id_dropout: float = 0.1
    history_dropout: float = 0.5
    use_id_features: bool = True
    use_time_terms: bool = True
    # Width of the item-item block (model/itemitem.py); 0: none.
    itemitem_rank: int = 64
    max_text_tokens: int = 20_000
    max_passions: int = 8
    shuffle_buffer: int = 10_000
    validation_k: int = GATE_K


# The fields a Dagster run may override (the training asset's TrainConfig is built from them, with these types and
# defaults); the rest are the model's design.
RUN_KNOBS: tuple[str, ...] = (
    "epochs",
    "batch_size",
    "embedding_dim",
    "temperature",
    "learning_rate",
    "patience",
    "seed",
)
