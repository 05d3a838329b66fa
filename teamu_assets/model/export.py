"""The serving export: the query tower plus a factorized top-k index over all posts, as one SavedModel.

Semantics are the TFRS tutorial's: `scores, post_ids = index(user_inputs)`, with user_inputs the query tower's
feature dict (see towers.user_input_signature; features.UserFeatureTable.serving_inputs builds it).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import tensorflow as tf
import tensorflow_recommenders as tfrs

from teamu_assets.model.towers import user_input_signature
from teamu_assets.model.train import CANDIDATE_TOWER_DIR, QUERY_TOWER_DIR, embed_posts, load_tower

IndexKind = Literal["brute_force", "scann"]


class RetrievalIndex(tf.Module):
    """Query tower + top-k layer behind one signature, so the export reloads without Python classes."""

    def __init__(self, query_tower: tf.Module, top_k: tfrs.layers.factorized_top_k.TopK) -> None:
        super().__init__()
        self.query_tower = query_tower
        self.top_k = top_k

    @tf.function(input_signature=[user_input_signature()])
    def __call__(self, user_inputs: dict[str, tf.Tensor]) -> tuple[tf.Tensor, tf.Tensor]:
        return self.top_k(self.query_tower.serve(user_inputs))


def scann_available() -> bool:
    try:
        import scann  # noqa: F401
    except ImportError:
        return False
    return True


# Below this many posts ScaNN's authors advise brute-force scoring: a partition tree saves little there, and its
# leaves are chosen by k-means on the post vectors, which ranks leaves poorly for queries whose weight sits in
# other dimensions (a heavily weighted item-item block: model/itemitem.py).
SCANN_TREE_MIN_POSTS = 20_000


def top_k_layer(kind: IndexKind, k: int, posts: int) -> tfrs.layers.factorized_top_k.TopK:
    if kind == "brute_force":
        return tfrs.layers.factorized_top_k.BruteForce(k=k)
    if posts < SCANN_TREE_MIN_POSTS:
        # One leaf searched whole: asymmetric hashing scores every post, the exact reordering fixes the top k.
        leaves, leaves_to_search = 1, 1
    else:
        # About sqrt(n) leaves is ScaNN's rule of thumb. Searching half of them keeps recall near exact: a user's
        # top k mixes topics (fresh posts of several interests), so it spans more leaves than one topic's cluster.
        leaves = min(2000, round(math.sqrt(posts)))
        leaves_to_search = leaves // 2
    return tfrs.layers.factorized_top_k.ScaNN(
        k=k,
        num_leaves=leaves,
        num_leaves_to_search=leaves_to_search,
        num_reordering_candidates=max(100, 4 * k),
    )


def export_retrieval_index(
    model_dir: Path,
    post_features: pd.DataFrame,
    out_dir: Path,
    *,
    k: int = 20,
    kind: IndexKind = "brute_force",
) -> Path:
    """Indexes every post of post_features with the saved candidate tower and saves query tower + index to
    out_dir. k is capped at the number of posts. Returns out_dir."""
    post_ids, post_vectors = embed_posts(model_dir, post_features)
    if len(post_ids) == 0:
        raise ValueError("cannot build a retrieval index over no posts")
    top_k = top_k_layer(kind, min(k, len(post_ids)), len(post_ids))
    top_k.index(tf.constant(post_vectors), tf.constant(post_ids))
    index = RetrievalIndex(load_tower(model_dir, QUERY_TOWER_DIR), top_k)
    # ScaNN's searcher is a resource of custom ops in the "Scann" namespace, which SavedModel must be told of.
    options = tf.saved_model.SaveOptions(namespace_whitelist=["Scann"]) if kind == "scann" else None
    out_dir = Path(out_dir)
    tf.saved_model.save(index, str(out_dir), options=options)
    return out_dir


def export_serving_indexes(
    model_dir: Path, post_features: pd.DataFrame, out_dir: Path, *, k: int = 20
) -> dict[str, Path]:
    """BruteForce always (out_dir/brute_force), ScaNN where the scann package imports (out_dir/scann)."""
    kinds: list[IndexKind] = ["brute_force", "scann"] if scann_available() else ["brute_force"]
    return {
        kind: export_retrieval_index(model_dir, post_features, Path(out_dir) / kind, k=k, kind=kind) for kind in kinds
    }


def load_retrieval_index(index_dir: Path) -> tf.Module:
    """A saved index; `scores, post_ids = index(user_inputs)`. Importing TFRS first registers ScaNN's ops."""
    return tf.saved_model.load(str(index_dir))


# Vertex AI's prebuilt TensorFlow prediction containers serve the SavedModel in the artifact directory (the one
# holding saved_model.pb) through TF Serving: the `serve` tag and the `serving_default` signature, which takes
# the request's {"instances": [...]} rows (one object per user or post, named like the signature's inputs) and
# answers {"predictions": [...]}, one entry per row (with the one output, TF Serving gives its value alone).
VERTEX_TOWER_DIRS: dict[str, str] = {"query": QUERY_TOWER_DIR, "candidate": CANDIDATE_TOWER_DIR}
VERTEX_OUTPUT = "embedding"


class _VertexTower(tf.Module):
    """A saved tower behind named inputs: TF Serving maps each instance's keys to the signature's input names,
    which are the TensorSpec names, so every spec carries its feature's name."""

    def __init__(self, tower: tf.Module) -> None:
        super().__init__()
        self.tower = tower
        # The tower's own input signature (towers saved before post age was an input keep theirs).
        saved = tower.serve.concrete_functions[0].structured_input_signature[0][0]
        named = {name: tf.TensorSpec(spec.shape, spec.dtype, name=name) for name, spec in saved.items()}
        self.serving_default = tf.function(
            lambda features: {VERTEX_OUTPUT: self.tower.serve(features)}, input_signature=[named]
        )


def export_vertex_towers(model_dir: Path, out_dir: Path) -> dict[str, Path]:
    """Both towers of a trained model, each as a SavedModel Vertex AI's prebuilt TensorFlow container loads:
    out_dir/query_tower (a user's features -> the user's embedding) and out_dir/candidate_tower (a post's ->
    the post's), each answering {"instances": [...]} with {"predictions": [[D floats], ...]}.
    Upload each directory (gs://.../query_tower) as one Vertex model's artifact_uri."""
    exported = {}
    for name, tower_dir in VERTEX_TOWER_DIRS.items():
        module = _VertexTower(load_tower(model_dir, tower_dir))
        path = Path(out_dir) / tower_dir
        tf.saved_model.save(module, str(path), signatures={"serving_default": module.serving_default})
        exported[name] = path
    return exported


def vertex_instances(inputs: dict[str, np.ndarray]) -> list[dict[str, object]]:
    """The rows of a Vertex prediction request ({"instances": rows}) for tower inputs as the feature tables
    build them (UserFeatureTable.serving_inputs, PostFeatureTable.serving_inputs): one JSON object per user or
    post. History and passions are padded lists (-1 and ""), as TF Serving stacks the rows of one request
    into tensors and needs each key's lists to be of one length."""
    rows = len(next(iter(inputs.values())))
    return [{name: _json_value(values[i]) for name, values in inputs.items()} for i in range(rows)]


def _json_value(value: np.ndarray | np.generic) -> object:
    if isinstance(value, np.ndarray):
        return [_json_value(item) for item in value]
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value
