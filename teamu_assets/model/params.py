"""Training hyperparameters, importable without TensorFlow: the Dagster config of the training asset takes its
defaults from here, so the two never drift apart."""

from __future__ import annotations

from dataclasses import dataclass

from teamu_assets.contract import HISTORY_LENGTH
from teamu_assets.evaluation.metrics import GATE_K


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 30
    batch_size: int = 1024
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
    max_text_tokens: int = 20_000
    max_passions: int = 8
    shuffle_buffer: int = 10_000
    validation_k: int = GATE_K
