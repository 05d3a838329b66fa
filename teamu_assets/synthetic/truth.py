"""The generator's engagement model, shared by the simulation (which samples from it) and the ground truth
(which integrates it), so the oracle scores are exactly the propensities the interactions were drawn from.

A view by user u at time t picks a topic k with probability affinity[u, k], then a post p of topic k created
by t with probability proportional to

    exp(quality_scale * quality_p) * exp(-(t - created_p) / tau) * locality(u, p)

where locality is 1 for a non-local post, local_boost for a local post in the user's city and 0 for a local
post elsewhere. Users view at a constant rate (views a day) from the time they are active until the end of the
period; a view of one's own post does not happen.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

SECONDS_PER_DAY = 86400
# Step of the grid the expected view counts are integrated on: an hour is fine next to a half-life of days.
GRID_SECONDS = 3600
USER_CHUNK = 512


def static_post_weights(
    quality: np.ndarray, created: np.ndarray, end: int, tau_seconds: float, quality_scale: float
) -> np.ndarray:
    """The time-dependent weight factorises into a per-post weight times exp(-t/tau); the per-post part,
    scaled to the end of the period so it never overflows, is all the sampling needs."""
    return np.exp(quality_scale * quality + (created - end) / tau_seconds)


class PostPool:
    """Posts grouped by (topic, non-local) and (topic, city, local), each group sorted by creation time with
    the running sum of its static weights: "the posts of a group created by t" is a prefix (bisection).
    """

    def __init__(
        self,
        *,
        topic: np.ndarray,
        city: np.ndarray,
        is_local: np.ndarray,
        created: np.ndarray,
        weight: np.ndarray,
        n_topics: int,
        n_cities: int,
        origin: int,
        end: int,
    ) -> None:
        self.n_topics = n_topics
        self.n_cities = n_cities
        self.n_groups = n_topics * (1 + n_cities)
        self.origin = origin
        self.span = max(end, int(created.max(initial=origin))) - origin + 2
        group = np.where(is_local, self.local_group(topic, city), topic)
        self.order = np.lexsort((created, group))
        group_sorted = group[self.order]
        self.key = group_sorted * self.span + (created[self.order] - origin)
        groups = np.arange(self.n_groups)
        self.group_start = np.searchsorted(group_sorted, groups, side="left")
        self.group_stop = np.searchsorted(group_sorted, groups, side="right")
        weight_sorted = weight[self.order]
        # A running sum per group (not across groups): a small group after a heavy one keeps its precision.
        self.cumulative = np.empty_like(weight_sorted)
        for start, stop in zip(self.group_start, self.group_stop, strict=True):
            self.cumulative[start:stop] = np.cumsum(weight_sorted[start:stop])

    def local_group(self, topic: np.ndarray, city: np.ndarray) -> np.ndarray:
        return self.n_topics + topic * self.n_cities + city

    def _prefix_stop(self, groups: np.ndarray, times: np.ndarray) -> np.ndarray:
        offsets = np.clip(times - self.origin, -1, self.span - 1)
        return np.searchsorted(self.key, groups * self.span + offsets, side="right")

    def mass(self, groups: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Summed static weight of the posts of each group created at or before each time."""
        stop = self._prefix_stop(groups, times)
        present = stop > self.group_start[groups]
        return np.where(present, self.cumulative[np.maximum(stop - 1, 0)], 0.0)

    def sample(self, groups: np.ndarray, times: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """One post index per query, drawn proportionally to static weight among the group's posts created by
        the time; -1 where the group has none yet."""
        chosen = np.full(len(groups), -1, dtype=np.int64)
        masses = self.mass(groups, times)
        targets = uniforms * masses
        by_group = np.argsort(groups, kind="stable")
        sorted_groups = groups[by_group]
        bounds = np.flatnonzero(np.diff(sorted_groups)) + 1
        for queries in np.split(by_group, bounds):
            if len(queries) == 0:
                continue
            group = groups[queries[0]]
            start, stop = self.group_start[group], self.group_stop[group]
            if start == stop:
                continue
            positions = start + np.searchsorted(self.cumulative[start:stop], targets[queries], side="right")
            # A target a rounding error above the prefix's sum must not step past the prefix.
            positions = np.minimum(positions, self._prefix_stop(groups[queries], times[queries]) - 1)
            has_post = masses[queries] > 0
            chosen[queries[has_post]] = self.order[positions[has_post]]
        return chosen


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """What the generator knows and a model has to learn. Times are epoch seconds (UTC)."""

    user_ids: np.ndarray  # int64, ascending
    post_ids: np.ndarray  # int64, ascending
    topic_names: np.ndarray  # str, one per topic
    affinity: np.ndarray  # float64 (users, topics): probability a view of the user is about each topic
    post_topic: np.ndarray  # int64 (posts,)
    post_quality: np.ndarray  # float64 (posts,): latent quality, standard normal
    post_user_ids: np.ndarray  # int64 (posts,): the author
    post_is_local: np.ndarray  # bool (posts,)
    post_city: np.ndarray  # int64 (posts,): index into vocabulary.CITIES
    post_created: np.ndarray  # int64 (posts,)
    user_city: np.ndarray  # int64 (users,)
    user_activity: np.ndarray  # float64 (users,): views a day while active
    user_active_from: np.ndarray  # int64 (users,): when the user starts viewing
    start: int
    cutoff: int  # the holdout window [cutoff, end) holds the cold-start users and the new posts
    end: int
    recency_tau_seconds: float
    quality_scale: float
    local_boost: float

    def expected_scores(
        self,
        user_ids: np.ndarray,
        post_ids: np.ndarray,
        *,
        window_start: int | None = None,
        window_end: int | None = None,
    ) -> np.ndarray:
        """Expected number of views of each post by each user within [window_start, window_end) (epoch
        seconds; default: the holdout window [cutoff, end)), as a (len(user_ids), len(post_ids)) float64
        matrix.

        This is the generator's true engagement propensity: votes and comments only follow views, so ranking a
        user's row by it is the oracle ranking. A user's own posts score 0."""
        window_start = self.cutoff if window_start is None else int(window_start)
        window_end = self.end if window_end is None else int(window_end)
        users = _positions(self.user_ids, np.asarray(user_ids, dtype=np.int64), "user")
        posts = _positions(self.post_ids, np.asarray(post_ids, dtype=np.int64), "post")
        scores = np.zeros((len(users), len(posts)))
        if window_end <= window_start or len(users) == 0 or len(posts) == 0:
            return scores

        pool = self._pool()
        edges = np.append(np.arange(window_start, window_end, GRID_SECONDS), window_end)
        midpoints = (edges[:-1] + edges[1:]) // 2
        widths_days = np.diff(edges) / SECONDS_PER_DAY
        # inverse_mass[k, c, i]: 1 / (total eligible weight for a view about topic k by a user of city c at
        # grid point i); the probability of a post is its weight times that.
        n_topics, n_cities = self.affinity.shape[1], pool.n_cities
        topic_grid, city_grid, time_grid = np.meshgrid(
            np.arange(n_topics), np.arange(n_cities), midpoints, indexing="ij"
        )
        total = pool.mass(topic_grid, time_grid) + self.local_boost * pool.mass(
            pool.local_group(topic_grid, city_grid), time_grid
        )
        inverse_mass = np.divide(1.0, total, out=np.zeros_like(total), where=total > 0)
        # Suffix sums over the grid: the integral from grid point i to the window's end, zero past the end.
        suffix = np.concatenate(
            [
                np.cumsum((inverse_mass * widths_days)[..., ::-1], axis=-1)[..., ::-1],
                np.zeros((n_topics, n_cities, 1)),
            ],
            axis=-1,
        )

        weight = static_post_weights(
            self.post_quality, self.post_created, self.end, self.recency_tau_seconds, self.quality_scale
        )[posts]
        topic, created, city = self.post_topic[posts], self.post_created[posts], self.post_city[posts]
        is_local, author = self.post_is_local[posts], self.post_user_ids[posts]
        for chunk_start in range(0, len(users), USER_CHUNK):
            chunk = users[chunk_start : chunk_start + USER_CHUNK]
            user_city = self.user_city[chunk][:, None]
            nearby_boost = np.where(city[None, :] == user_city, self.local_boost, 0.0)
            locality = np.where(is_local[None, :], nearby_boost, 1.0)
            locality[self.user_ids[chunk][:, None] == author[None, :]] = 0.0
            from_time = np.maximum(created[None, :], self.user_active_from[chunk][:, None])
            grid_position = np.searchsorted(midpoints, from_time, side="left")
            integral = suffix[topic[None, :], user_city, grid_position]
            scores[chunk_start : chunk_start + len(chunk)] = (
                self.user_activity[chunk][:, None]
                * self.affinity[chunk][:, topic]
                * locality
                * weight[None, :]
                * integral
            )
        return scores

    def _pool(self) -> PostPool:
        return PostPool(
            topic=self.post_topic,
            city=self.post_city,
            is_local=self.post_is_local,
            created=self.post_created,
            weight=static_post_weights(
                self.post_quality, self.post_created, self.end, self.recency_tau_seconds, self.quality_scale
            ),
            n_topics=self.affinity.shape[1],
            n_cities=int(max(self.user_city.max(initial=0), self.post_city.max(initial=0))) + 1,
            origin=self.start,
            end=self.end,
        )


def _positions(known_ids: np.ndarray, ids: np.ndarray, kind: str) -> np.ndarray:
    positions = np.minimum(np.searchsorted(known_ids, ids), max(len(known_ids) - 1, 0))
    unknown = ids[known_ids[positions] != ids] if len(known_ids) else ids
    if len(unknown):
        raise KeyError(f"unknown {kind} ids in the ground truth: {unknown[:5].tolist()}")
    return positions


def save_truth(truth: GroundTruth, path: Path) -> Path:
    """Write the ground truth as one .npz (no pickles); returns the path written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {field.name: np.asarray(getattr(truth, field.name)) for field in fields(truth)}
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)
    return path


def load_truth(path: Path) -> GroundTruth:
    with np.load(Path(path), allow_pickle=False) as archive:
        values = {}
        for field in fields(GroundTruth):
            array = archive[field.name]
            values[field.name] = array.item() if array.ndim == 0 else array
    return GroundTruth(**values)
