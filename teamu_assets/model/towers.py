"""The two towers and the TFRS retrieval model (tf.keras on legacy Keras, as TFRS requires).

The score of a (user, post) pair is additive, as engagement is in log space: content match (a cosine over D-3
L2-normalized dimensions, divided by a temperature) + the user's appetite for fresh posts times the post's
freshness at its age + the post's quality (what its popularity says about it). Each tower writes its terms into
one D-dimensional vector, user [content / temperature, appetite, 1, new-user prior] and post [content,
freshness, quality, log view count / 10], so the inner product that pgvector ranks by is exactly the trained score.
(A first version kept the vectors unit-norm with recency folded into the cosine, which made recency and content
compete for one norm.) The last pair is 0 in training: a user without any history gets the popularity prior
chosen for new users instead of the one chosen for everyone else (the difference, on their side).

Posts have learned id embeddings, and a user is placed by the learned, position-weighted pool of the same
vectors over their history (PostIdSpace, HistoryPooling): item-item structure, which real data rewards. Cold start
still works: the content MLPs (text, passions, location, counts) sit beside the ids, a share of training posts is
fed as the out-of-vocabulary id (id dropout) so a post without interactions is placed by its content, and a user
without history by the profile. The freshness terms and a popularity prior are chosen on validation after
training (train._choose_serving_terms): kept only where they help.

The first itemitem_rank dimensions hold the item-item block (model/itemitem.py: EASE fitted on the training
interactions, factorized), fitted after training and weighted by what validation chooses, the weight split
evenly between the sides: user [sqrt(weight) x the sum of the history's factors, ...], post [sqrt(weight) x its
factors, ...]. Their inner product is weight x the block score either way, but pgvector's HNSW graph is built
from the post vectors alone: there the block weighs as much as it does in the score, and nothing where the
weight is 0. Until it is fitted (and where it is not kept) it is zero on both sides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from teamu_assets.model.features import (
    ACTIVITY_COUNT_COLUMNS,
    H3_RESOLUTIONS,
    POST_NUMERIC_FEATURES,
    VIEW_COUNT_INDEX,
    post_h3_feature,
    user_h3_feature,
)
from teamu_assets.model.itemitem import ItemItemFactors
from teamu_assets.model.params import SCORE_TERMS

TITLE_TOKENS = 16
TEXT_TOKENS = 64


def user_input_signature() -> dict[str, tf.TensorSpec]:
    """The query tower's inputs. History and passions have a free width: the tower pools whatever it gets."""
    signature = {
        "user_id": tf.TensorSpec([None], tf.int64),
        "history": tf.TensorSpec([None, None], tf.int64),
        "passions": tf.TensorSpec([None, None], tf.string),
        "profile_text": tf.TensorSpec([None], tf.string),
        "activity_counts": tf.TensorSpec([None, len(ACTIVITY_COUNT_COLUMNS)], tf.float32),
    }
    signature.update({user_h3_feature(res): tf.TensorSpec([None], tf.string) for res in H3_RESOLUTIONS})
    return signature


def post_input_signature() -> dict[str, tf.TensorSpec]:
    signature = {
        "post_id": tf.TensorSpec([None], tf.int64),
        "title": tf.TensorSpec([None], tf.string),
        "description": tf.TensorSpec([None], tf.string),
        "comments": tf.TensorSpec([None], tf.string),
        "post_numeric": tf.TensorSpec([None, len(POST_NUMERIC_FEATURES)], tf.float32),
        "post_age_days": tf.TensorSpec([None], tf.float32),
    }
    signature.update({post_h3_feature(res): tf.TensorSpec([None], tf.string) for res in H3_RESOLUTIONS})
    return signature


@dataclass(frozen=True)
class Vocabularies:
    """Everything the lookup layers are built from; saved as text files next to the model."""

    text: list[str]
    passions: list[str]
    h3_cells: dict[int, list[str]]
    post_ids: list[int]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "text.txt").write_text("\n".join(self.text))
        (directory / "passions.txt").write_text("\n".join(self.passions))
        for res, cells in self.h3_cells.items():
            (directory / f"h3_res{res}.txt").write_text("\n".join(cells))
        (directory / "post_ids.txt").write_text("\n".join(str(i) for i in self.post_ids))


@dataclass(frozen=True)
class TowerConfig:
    embedding_dim: int
    feature_dim: int
    hidden_units: int
    history_decay: float
    history_length: int
    use_id_features: bool
    use_time_terms: bool
    # Width of the item-item block at the front of both vectors (0: none), and its weight in the served score
    # (chosen on validation after training; 0 where it does not help).
    itemitem_rank: int
    itemitem_weight: float
    # Weight of the post's log view count added to its quality when serving (never in training): a popularity
    # prior chosen on validation after training, 0 where it does not help.
    popularity_weight: float
    # The prior's weight for a user without any history (chosen on validation with the histories hidden): what
    # ranks a new user's feed when the profile says little. Serving adds the difference on the user's side.
    new_user_popularity_weight: float
    temperature: float
    user_count_mean: list[float]
    user_count_variance: list[float]
    post_numeric_mean: list[float]
    post_numeric_variance: list[float]


# The post side of the new users' prior carries this share of the log view count, the user side the weight over
# it: the same product, but pgvector builds its HNSW graph from the post vectors alone, and a full log view count
# (up to 5 on Last.fm, beside the content's unit vector) made the graph cluster posts by popularity: on one
# Last.fm model the served top 50 of users with history held 0.69 of the exact one, 0.84 at a tenth and at a
# fiftieth alike; new users' 1.00 at every scale.
NEW_USER_PRIOR_SCALE = 0.1


def _has_history(history: tf.Tensor) -> tf.Tensor:
    """[n, 1] float: 1 for a user whose history holds any post (padding ids are negative), else 0."""
    return tf.cast(tf.reduce_any(history >= 0, axis=1, keepdims=True), tf.float32)


def _masked_mean(embeddings: tf.Tensor, mask: tf.Tensor) -> tf.Tensor:
    weights = tf.cast(mask, embeddings.dtype)[..., tf.newaxis]
    return tf.reduce_sum(embeddings * weights, axis=1) / tf.maximum(tf.reduce_sum(weights, axis=1), 1.0)


class _TextEncoder(tf.keras.layers.Layer):
    """TextVectorization + embedding + mean over the real tokens (padding masked out)."""

    def __init__(self, vocabulary: list[str], tokens: int, embedding: tf.keras.layers.Embedding, **kwargs) -> None:
        super().__init__(**kwargs)
        self.vectorize = tf.keras.layers.TextVectorization(
            vocabulary=vocabulary or ["[none]"], output_sequence_length=tokens
        )
        self.embedding = embedding

    def call(self, texts: tf.Tensor) -> tf.Tensor:
        token_ids = self.vectorize(texts)
        return _masked_mean(self.embedding(token_ids), token_ids > 0)


def _text_embedding(vocabulary: list[str], dim: int) -> tf.keras.layers.Embedding:
    # +2: the padding and out-of-vocabulary tokens TextVectorization puts in front.
    return tf.keras.layers.Embedding(len(vocabulary or ["[none]"]) + 2, dim)


class _H3Encoder(tf.keras.layers.Layer):
    """One embedding per resolution, concatenated: coarse cells generalize, fine cells separate."""

    def __init__(self, cells: dict[int, list[str]], dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lookups = [tf.keras.layers.StringLookup(vocabulary=cells[res] or ["unknown"]) for res in H3_RESOLUTIONS]
        self.embeddings = [tf.keras.layers.Embedding(len(cells[res] or ["unknown"]) + 1, dim) for res in H3_RESOLUTIONS]

    def call(self, cells_by_resolution: list[tf.Tensor]) -> tf.Tensor:
        return tf.concat(
            [
                embedding(lookup(cells))
                for lookup, embedding, cells in zip(self.lookups, self.embeddings, cells_by_resolution, strict=True)
            ],
            axis=1,
        )


def content_dim(config: TowerConfig) -> int:
    """Dimensions of the content part: what the item-item block and the score terms leave."""
    return config.embedding_dim - SCORE_TERMS - config.itemitem_rank


def _projection_head(config: TowerConfig) -> tf.keras.Sequential:
    return tf.keras.Sequential(
        [
            tf.keras.layers.Dense(config.hidden_units, activation="relu"),
            tf.keras.layers.Dense(content_dim(config)),
        ]
    )


class ItemItemBlock(tf.keras.layers.Layer):
    """The fitted item-item factors (model/itemitem.py) as lookup tables: `history` sums the history side over
    a user's posts, `posts` looks up the post side; posts the factors do not cover (and padding) add zeros. The
    tables are padded with zero columns to the block's width."""

    def __init__(self, factors: ItemItemFactors, width: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lookup = tf.keras.layers.IntegerLookup(vocabulary=factors.post_ids.tolist())

        def table(name: str, values: np.ndarray) -> tf.Variable:
            padded = np.zeros((len(values) + 1, width), np.float32)
            padded[1:, : values.shape[1]] = values  # row 0: the out-of-vocabulary id
            return self.add_weight(
                name=name, shape=padded.shape, initializer=tf.keras.initializers.Constant(padded), trainable=False
            )

        self.history_table = table("history_factors", factors.history_factors)
        self.post_table = table("post_factors", factors.post_factors)

    def history(self, post_ids: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(tf.gather(self.history_table, self.lookup(post_ids)), axis=1)

    def posts(self, post_ids: tf.Tensor) -> tf.Tensor:
        return tf.gather(self.post_table, self.lookup(post_ids))


def _age_features(age_days: tf.Tensor) -> tf.Tensor:
    """A few fixed shapes of decay over days to weeks; freshness is a learned mix of them (cheap enough to
    evaluate for every (example, post) pair of a batch)."""
    age = tf.maximum(tf.cast(age_days, tf.float32), 0.0)[..., tf.newaxis]
    return tf.concat([tf.math.log1p(age), age / 30.0, tf.exp(-age / 3.0), tf.exp(-age / 10.0)], axis=-1)


class PostIdSpace(tf.keras.layers.Layer):
    """Learned post-id embeddings projected into the content space, shared by both towers: a post is placed by
    its own id in the candidate tower and by the same vector inside a user's history pool, so what the model
    learns about a post from one side serves the other (item-item structure, as EASE or item-kNN find it).
    Index 0 is the out-of-vocabulary id: posts without training interactions (and history padding) share it."""

    def __init__(self, post_ids: list[int], feature_dim: int, output_dim: int, **kwargs) -> None:
        super().__init__(**kwargs)
        self.lookup = tf.keras.layers.IntegerLookup(vocabulary=post_ids or [0])
        self.embedding = tf.keras.layers.Embedding(len(post_ids or [0]) + 1, feature_dim)
        self.projection = tf.keras.layers.Dense(output_dim, use_bias=False)

    def call(self, post_ids: tf.Tensor) -> tf.Tensor:
        return self.projection(self.embed(post_ids))

    def embed(self, post_ids: tf.Tensor) -> tf.Tensor:
        """The unprojected id embeddings ([..., feature_dim]): pool these, then project (the projection is
        linear, so that equals pooling projected vectors at a fraction of the cost)."""
        return self.embedding(self.lookup(post_ids))


class HistoryPooling(tf.keras.layers.Layer):
    """A weighted mean of the history's post vectors, with one learned weight per position (newest first),
    initialised to a geometric decay: how much an older engagement counts is learned from the data."""

    def __init__(self, history_length: int, initial_decay: float, **kwargs) -> None:
        super().__init__(**kwargs)
        self.history_length = history_length
        self.initial_decay = initial_decay

    def build(self, input_shape: tf.TensorShape) -> None:
        steps = tf.range(self.history_length, dtype=tf.float32)
        self.position_logits = self.add_weight(
            name="position_logits",
            shape=[self.history_length],
            initializer=tf.keras.initializers.Constant((steps * tf.math.log(self.initial_decay)).numpy()),
        )

    def call(self, vectors: tf.Tensor, engaged: tf.Tensor) -> tf.Tensor:
        """vectors [n, h, d], engaged [n, h] (False for padding) -> [n, d]; zeros for an empty history."""
        width = tf.minimum(tf.shape(vectors)[1], self.history_length)
        vectors, engaged = vectors[:, :width], engaged[:, :width]
        weights = tf.exp(self.position_logits[:width])[tf.newaxis, :] * tf.cast(engaged, tf.float32)
        total = tf.maximum(tf.reduce_sum(weights, axis=1, keepdims=True), 1e-9)
        return tf.reduce_sum(vectors * (weights / total)[..., tf.newaxis], axis=1)


class QueryTower(tf.keras.Model):
    """User tower: an MLP over the profile (passions, H3 cells, profile text, activity counts) plus the learned
    pool of the history's post-id vectors, shared with the candidate tower."""

    def __init__(self, config: TowerConfig, vocabularies: Vocabularies, post_ids: PostIdSpace, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        # Set by train.py once the item-item factors are fitted (shared with the candidate tower).
        self.itemitem: ItemItemBlock | None = None
        dim = config.feature_dim
        self.post_ids = post_ids
        self.history_pooling = HistoryPooling(config.history_length, config.history_decay)
        self.passion_lookup = tf.keras.layers.StringLookup(
            vocabulary=vocabularies.passions or ["[none]"], mask_token=""
        )
        self.passion_embedding = tf.keras.layers.Embedding(len(vocabularies.passions or ["[none]"]) + 2, dim)
        self.location = _H3Encoder(vocabularies.h3_cells, dim)
        self.profile = _TextEncoder(vocabularies.text, TEXT_TOKENS, _text_embedding(vocabularies.text, dim))
        self.count_normalization = tf.keras.layers.Normalization(
            mean=config.user_count_mean, variance=config.user_count_variance
        )
        self.head = _projection_head(config)
        # How strongly this user prefers fresh posts; starts at 1 so both recency factors get gradients.
        self.recency_appetite = tf.keras.layers.Dense(1, bias_initializer=tf.keras.initializers.Constant(1.0))

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        """[content / temperature, appetite, 1, new-user prior]: its inner product with a post's [content,
        freshness, quality, log view count x NEW_USER_PRIOR_SCALE] is the training score (see TwoTowerModel)
        plus, for a user without history, the new users' popularity prior in place of everyone's."""
        content, appetite = self.parts(inputs, training=training)
        column = appetite[:, tf.newaxis]
        block = tf.zeros([tf.shape(content)[0], self.config.itemitem_rank])
        if self.itemitem is not None:
            block = math.sqrt(self.config.itemitem_weight) * self.itemitem.history(inputs["history"])
        new_user_weight = self.config.new_user_popularity_weight - self.config.popularity_weight
        new_user_prior = new_user_weight / NEW_USER_PRIOR_SCALE * (1.0 - _has_history(inputs["history"]))
        return tf.concat(
            [block, content / self.config.temperature, column, tf.ones_like(column), new_user_prior], axis=1
        )

    def parts(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """(unit content vector [n, D-1], recency appetite in (-1, 1) [n])."""
        history = inputs["history"]
        engaged = history >= 0

        passions = inputs["passions"]
        passion_bag = _masked_mean(self.passion_embedding(self.passion_lookup(passions)), passions != "")

        parts = [
            _has_history(history),
            passion_bag,
            self.location([inputs[user_h3_feature(res)] for res in H3_RESOLUTIONS]),
            self.profile(inputs["profile_text"]),
            self.count_normalization(inputs["activity_counts"]),
        ]
        features = tf.concat(parts, axis=1)
        content = self.head(features)
        if self.config.use_id_features:
            # The history's own post vectors, in the space the candidate tower places those posts: the user is
            # where the posts they engaged with are. (A per-user id embedding, or a second history embedding fed
            # through the MLP head, overfit on every real data set tried: they memorise the training period.)
            content += self.post_ids.projection(self.history_pooling(self.post_ids.embed(history), engaged))
        return tf.math.l2_normalize(content, axis=1), self._appetite(features)

    def _appetite(self, features: tf.Tensor) -> tf.Tensor:
        if not self.config.use_time_terms:
            return tf.zeros_like(features[:, 0])
        return self.recency_appetite(features)[:, 0]


class CandidateTower(tf.keras.Model):
    """Post tower: title, description and comments text, length, local flag, H3 cells, popularity, post id."""

    def __init__(self, config: TowerConfig, vocabularies: Vocabularies, post_ids: PostIdSpace, **kwargs) -> None:
        super().__init__(**kwargs)
        self.config = config
        dim = config.feature_dim
        self.post_ids = post_ids
        self.itemitem: ItemItemBlock | None = None  # see QueryTower
        shared_text_embedding = _text_embedding(vocabularies.text, dim)
        self.title = _TextEncoder(vocabularies.text, TITLE_TOKENS, shared_text_embedding)
        self.description = _TextEncoder(vocabularies.text, TEXT_TOKENS, shared_text_embedding)
        self.comments = _TextEncoder(vocabularies.text, TEXT_TOKENS, shared_text_embedding)
        self.location = _H3Encoder(vocabularies.h3_cells, dim)
        self.numeric_normalization = tf.keras.layers.Normalization(
            mean=config.post_numeric_mean, variance=config.post_numeric_variance
        )
        self.head = _projection_head(config)
        # Freshness of a post as a function of its age only, so that training can score every post in a batch
        # at each example's moment (see TwoTowerModel).
        self.freshness_net = tf.keras.layers.Dense(1)
        # A post's appeal to everyone (its quality, as its popularity shows it), added to every user's score.
        self.quality = tf.keras.layers.Dense(1)

    def freshness(self, age_days: tf.Tensor) -> tf.Tensor:
        """Freshness of posts of the given ages in days (any shape); 0 without time terms."""
        if not self.config.use_time_terms:
            return tf.zeros_like(tf.cast(age_days, tf.float32))
        return self.freshness_net(_age_features(age_days))[..., 0]

    def call(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        content, quality = self.parts(inputs, training=training)
        log_views = inputs["post_numeric"][:, VIEW_COUNT_INDEX]
        quality += self.config.popularity_weight * log_views
        freshness = self.freshness(inputs["post_age_days"])
        block = tf.zeros([tf.shape(content)[0], self.config.itemitem_rank])
        if self.itemitem is not None:
            # The weight split evenly between the sides (see the module docstring).
            block = math.sqrt(self.config.itemitem_weight) * self.itemitem.posts(inputs["post_id"])
        terms = [freshness[:, tf.newaxis], quality[:, tf.newaxis], NEW_USER_PRIOR_SCALE * log_views[:, tf.newaxis]]
        return tf.concat([block, content, *terms], axis=1)

    def parts(self, inputs: dict[str, tf.Tensor], training: bool = False) -> tuple[tf.Tensor, tf.Tensor]:
        """Unit content vector [n, D-1]: everything but the post's age."""
        parts = [
            self.title(inputs["title"]),
            self.description(inputs["description"]),
            self.comments(inputs["comments"]),
            self.location([inputs[post_h3_feature(res)] for res in H3_RESOLUTIONS]),
            self.numeric_normalization(inputs["post_numeric"]),
        ]
        features = tf.concat(parts, axis=1)
        content = self.head(features)
        if self.config.use_id_features:
            content += self.post_ids(inputs["post_id"])
        return tf.math.l2_normalize(content, axis=1), self.quality(features)[:, 0]


class TwoTowerModel(tfrs.Model):
    """In-batch softmax retrieval with logQ correction and accidental-hit removal.

    Each example is scored against every post of the batch as that post was at the example's moment: its age
    then (query_day - post_created_day), and posts created after that moment are no candidates at all. This is
    what teaches recency: a user at time t prefers posts that are fresh at t."""

    def __init__(self, query_tower: QueryTower, candidate_tower: CandidateTower, temperature: float) -> None:
        super().__init__()
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.temperature = temperature
        self.batch_loss = tf.keras.metrics.Mean(name="batch_loss")

    def compute_loss(self, features: dict[str, tf.Tensor], training: bool = False) -> tf.Tensor:
        queries, appetite = self.query_tower.parts(features, training=training)
        candidates, quality = self.candidate_tower.parts(features, training=training)
        age = features["query_day"][:, tf.newaxis] - features["post_created_day"][tf.newaxis, :]
        freshness = self.candidate_tower.freshness(age)
        scores = tf.linalg.matmul(queries, candidates, transpose_b=True) / self.temperature
        scores += appetite[:, tf.newaxis] * freshness + quality[tf.newaxis, :]
        scores -= tf.math.log(tf.maximum(features["sampling_probability"], 1e-12))[tf.newaxis, :]
        ids = features["candidate_id"]
        diagonal = tf.eye(tf.shape(ids)[0], dtype=tf.bool)
        excluded = (ids[:, tf.newaxis] == ids[tf.newaxis, :]) | (age < 0)
        scores = tf.where(excluded & ~diagonal, tf.cast(-1e9, scores.dtype), scores)
        labels = tf.eye(tf.shape(ids)[0], dtype=scores.dtype)
        loss = tf.reduce_sum(tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=scores))
        self.batch_loss.update_state(loss)
        return loss


class ServingTower(tf.Module):
    """A tower behind a fixed input signature, for tf.saved_model.save: reloads without any Python class."""

    def __init__(self, tower: tf.keras.Model, signature: dict[str, tf.TensorSpec]) -> None:
        super().__init__()
        self.tower = tower
        self.serve = tf.function(lambda features: self.tower(features, training=False), input_signature=[signature])
