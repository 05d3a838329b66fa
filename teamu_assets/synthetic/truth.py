"""The generator's engagement model, shared by the simulation (which samples from it) and the ground truth
(which integrates it), so the oracle scores are exactly the propensities the interactions were drawn from.

A view by user u at time t picks a topic k with probability affinity[u, k] and a latent taste s with
probability taste[u, s], then a post p of topic k created by t with probability proportional to

    exp(quality_scale * quality_p + appeal_p + taste_appeal[p, s]) * exp(-(t - created_p) / tau) * locality(u, p)

where locality is 1 for a non-local post, local_boost for a local post in the user's city and 0 for a local
post elsewhere. quality_p also drives votes and view time; appeal_p (the heavy-tailed popularity) and
taste_appeal[p, s] are drawn independently of the post's topic, text and place, and the tastes independently of
the user's profile: no content feature explains them, only who viewed what does. Users view at a constant rate
(views a day) while they are active, [active_from, active_until); a view of one's own post does not happen.

Weights are kept on the log scale (running log-sum-exp sums), so posts years older than the end of a multi-year
period keep their relative weights instead of underflowing to zero.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

SECONDS_PER_DAY = 86400
# Step of the grid the expected view counts are integrated on: an hour is fine next to a half-life of days. A
# window longer than MAX_GRID_POINTS hours gets a coarser step, so memory stays bounded over years.
GRID_SECONDS = 3600
MAX_GRID_POINTS = 4096
# Users x posts cells scored at a time.
CHUNK_CELLS = 1 << 20


def post_log_weights(
    quality: np.ndarray,
    appeal: np.ndarray,
    taste_appeal: np.ndarray,
    created: np.ndarray,
    end: int,
    tau_seconds: float,
    quality_scale: float,
) -> np.ndarray:
    """The time-dependent weight factorises into a per-post weight times exp(-t/tau); the log of the per-post
    part, referred to the end of the period, as a (posts, tastes) matrix, is all the sampling needs."""
    per_post = quality_scale * quality + appeal + (created - end) / tau_seconds
    return per_post[:, None] + taste_appeal


class PostPool:
    """Posts grouped by (topic, non-local) and (topic, city, local), once per latent taste (a post's weight
    depends on the taste of the view), each group sorted by creation time with the running log-sum-exp of its
    log weights: "the posts of a group created by t" is a prefix (bisection).
    """

    def __init__(
        self,
        *,
        topic: np.ndarray,
        city: np.ndarray,
        is_local: np.ndarray,
        created: np.ndarray,
        log_weight: np.ndarray,
        n_topics: int,
        n_cities: int,
        origin: int,
        end: int,
    ) -> None:
        self.n_topics = n_topics
        self.n_cities = n_cities
        self.n_tastes = log_weight.shape[1]
        self.n_groups = n_topics * (1 + n_cities)
        self.origin = origin
        self.span = max(end, int(created.max(initial=origin))) - origin + 2
        group = np.where(is_local, self.local_group(topic, city), topic)
        # One slot per (group, taste): every post sits in n_tastes slots, with its weight for that taste.
        slot = (group[:, None] * self.n_tastes + np.arange(self.n_tastes)[None, :]).ravel()
        entry_created = np.repeat(created, self.n_tastes)
        order = np.lexsort((entry_created, slot))
        self.post = order // self.n_tastes
        slot_sorted = slot[order]
        self.key = slot_sorted * self.span + (entry_created[order] - origin)
        slots = np.arange(self.n_groups * self.n_tastes)
        self.slot_start = np.searchsorted(slot_sorted, slots, side="left")
        self.slot_stop = np.searchsorted(slot_sorted, slots, side="right")
        weight_sorted = log_weight.ravel()[order]
        # A running sum per slot (not across slots): a small group after a heavy one keeps its precision.
        self.log_cumulative = np.empty_like(weight_sorted)
        for start, stop in zip(self.slot_start, self.slot_stop, strict=True):
            self.log_cumulative[start:stop] = np.logaddexp.accumulate(weight_sorted[start:stop])

    def local_group(self, topic: np.ndarray | int, city: np.ndarray) -> np.ndarray:
        return self.n_topics + topic * self.n_cities + city

    def _prefix_stop(self, slots: np.ndarray, times: np.ndarray) -> np.ndarray:
        offsets = np.clip(times - self.origin, -1, self.span - 1)
        return np.searchsorted(self.key, slots * self.span + offsets, side="right")

    def log_mass(self, groups: np.ndarray, tastes: np.ndarray, times: np.ndarray) -> np.ndarray:
        """Log of the summed weight, for views of each taste, of the posts of each group created at or before
        each time; -inf where there are none."""
        slots = groups * self.n_tastes + tastes
        stop = self._prefix_stop(slots, times)
        present = stop > self.slot_start[slots]
        return np.where(present, self.log_cumulative[np.maximum(stop - 1, 0)], -np.inf)

    def sample(self, groups: np.ndarray, tastes: np.ndarray, times: np.ndarray, uniforms: np.ndarray) -> np.ndarray:
        """One post index per query, drawn proportionally to its weight for the query's taste among the group's
        posts created by the time; -1 where the group has none yet."""
        chosen = np.full(len(groups), -1, dtype=np.int64)
        slots = groups * self.n_tastes + tastes
        log_masses = self.log_mass(groups, tastes, times)
        with np.errstate(divide="ignore"):  # a uniform of exactly 0 targets the first post
            targets = np.log(uniforms) + log_masses
        by_slot = np.argsort(slots, kind="stable")
        bounds = np.flatnonzero(np.diff(slots[by_slot])) + 1
        for queries in np.split(by_slot, bounds):
            if len(queries) == 0:
                continue
            slot = slots[queries[0]]
            start, stop = self.slot_start[slot], self.slot_stop[slot]
            if start == stop:
                continue
            positions = start + np.searchsorted(self.log_cumulative[start:stop], targets[queries], side="right")
            # A target a rounding error above the prefix's sum must not step past the prefix.
            positions = np.minimum(positions, self._prefix_stop(slots[queries], times[queries]) - 1)
            has_post = log_masses[queries] > -np.inf
            chosen[queries[has_post]] = self.post[positions[has_post]]
        return chosen


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """What the generator knows and a model has to learn. Times are epoch seconds (UTC)."""

    user_ids: np.ndarray  # int64, ascending
    post_ids: np.ndarray  # int64, ascending
    topic_names: np.ndarray  # str, one per topic
    affinity: np.ndarray  # float64 (users, topics): probability a view of the user is about each topic
    user_taste: np.ndarray  # float64 (users, tastes): probability a view of the user is of each latent taste
    post_topic: np.ndarray  # int64 (posts,)
    post_quality: np.ndarray  # float64 (posts,): latent quality, standard normal
    post_appeal: np.ndarray  # float64 (posts,): latent log-appeal, normal with spread popularity_tail
    post_taste_appeal: np.ndarray  # float64 (posts, tastes): latent log-appeal to each taste
    post_user_ids: np.ndarray  # int64 (posts,): the author
    post_is_local: np.ndarray  # bool (posts,)
    post_city: np.ndarray  # int64 (posts,): index into vocabulary.CITIES
    post_created: np.ndarray  # int64 (posts,)
    user_city: np.ndarray  # int64 (users,)
    user_activity: np.ndarray  # float64 (users,): views a day while active
    user_active_from: np.ndarray  # int64 (users,): when the user starts viewing
    user_active_until: np.ndarray  # int64 (users,): when the user stops viewing (at most end)
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

        This is the generator's true engagement propensity, latent appeal and tastes included: votes and
        comments only follow views, so ranking a user's row by it is the oracle ranking. A user's own posts
        score 0. So do users and posts the generator never made (added to the database after seeding, by the app,
        a test or the online updater): it expects no views of or by them, and the evaluation of the oracle baseline
        must not fail on them."""
        user_ids, post_ids = np.asarray(user_ids, dtype=np.int64), np.asarray(post_ids, dtype=np.int64)
        known_users, known_posts = np.isin(user_ids, self.user_ids), np.isin(post_ids, self.post_ids)
        if not (known_users.all() and known_posts.all()):
            scores = np.zeros((len(user_ids), len(post_ids)))
            scores[np.ix_(known_users, known_posts)] = self.expected_scores(
                user_ids[known_users], post_ids[known_posts], window_start=window_start, window_end=window_end
            )
            return scores
        window_start = self.cutoff if window_start is None else int(window_start)
        window_end = self.end if window_end is None else int(window_end)
        users, posts = np.searchsorted(self.user_ids, user_ids), np.searchsorted(self.post_ids, post_ids)
        scores = np.zeros((len(users), len(posts)))
        if window_end <= window_start or len(users) == 0 or len(posts) == 0:
            return scores

        pool = self._pool()
        step = max(GRID_SECONDS, -(-(window_end - window_start) // MAX_GRID_POINTS))
        edges = np.append(np.arange(window_start, window_end, step), window_end)
        midpoints = (edges[:-1] + edges[1:]) // 2
        log_widths_days = np.log(np.diff(edges) / SECONDS_PER_DAY)
        # log_suffix[k, c, s, i]: log of the integral, from grid point i to the window's end, of 1 / (total
        # eligible weight for a view about topic k of taste s by a user of city c); the probability of a post
        # is its weight times that. The last point is the empty integral (-inf).
        n_topics, n_cities, n_tastes = self.affinity.shape[1], pool.n_cities, pool.n_tastes
        log_suffix = np.full((n_topics, n_cities, n_tastes, len(midpoints) + 1), -np.inf)
        city_grid, taste_grid, time_grid = np.meshgrid(
            np.arange(n_cities), np.arange(n_tastes), midpoints, indexing="ij"
        )
        for topic in range(n_topics):  # a topic at a time keeps long windows' grids small
            log_total = np.logaddexp(
                pool.log_mass(np.full_like(city_grid, topic), taste_grid, time_grid),
                np.log(self.local_boost) + pool.log_mass(pool.local_group(topic, city_grid), taste_grid, time_grid),
            )
            # No post to view yet: that view does not happen, and adds nothing.
            terms = np.where(np.isfinite(log_total), log_widths_days - log_total, -np.inf)
            log_suffix[topic, ..., :-1] = np.logaddexp.accumulate(terms[..., ::-1], axis=-1)[..., ::-1]

        log_weight = self._log_weights()[posts]
        topic, created, city = self.post_topic[posts], self.post_created[posts], self.post_city[posts]
        is_local, author = self.post_is_local[posts], self.post_user_ids[posts]
        width = len(midpoints) + 1
        flat_suffix = log_suffix.ravel()
        chunk_size = max(1, CHUNK_CELLS // len(posts))
        for chunk_start in range(0, len(users), chunk_size):
            chunk = users[chunk_start : chunk_start + chunk_size]
            user_city = self.user_city[chunk][:, None]
            nearby_boost = np.where(city[None, :] == user_city, self.local_boost, 0.0)
            locality = np.where(is_local[None, :], nearby_boost, 1.0)
            locality[self.user_ids[chunk][:, None] == author[None, :]] = 0.0
            # The integral over the user's active time once the post exists: suffix(from) - suffix(until), each
            # times the post's weight. Both products are at most the window's days when the post is among the
            # posts the user's views choose from and from <= until; other pairs point at the empty integral
            # (the last grid point), where the weight over a mass without the post could overflow.
            from_position = np.searchsorted(
                midpoints, np.maximum(created[None, :], self.user_active_from[chunk][:, None]), side="left"
            )
            until_position = np.searchsorted(midpoints, self.user_active_until[chunk], side="left")[:, None]
            counted = (locality > 0) & (until_position > from_position)
            from_position = np.where(counted, from_position, len(midpoints))
            until_position = np.where(counted, until_position, len(midpoints))
            row = (topic[None, :] * n_cities + user_city) * n_tastes * width
            leaves = bool((until_position < len(midpoints)).any())  # someone stops viewing within the window
            tasted = np.zeros((len(chunk), len(posts)))
            for taste in range(n_tastes):
                offset = row + taste * width
                integral = np.exp(log_weight[None, :, taste] + flat_suffix[offset + from_position])
                if leaves:
                    integral -= np.exp(log_weight[None, :, taste] + flat_suffix[offset + until_position])
                tasted += self.user_taste[chunk, taste][:, None] * integral
            scores[chunk_start : chunk_start + len(chunk)] = (
                self.user_activity[chunk][:, None] * self.affinity[chunk][:, topic] * locality * tasted
            )
        return scores

    def known_at(self, time: int) -> GroundTruth:
        """The truth as a model frozen at `time` could at best know it: the posts created at or after `time` get
        their latent quality, appeal and taste appeal replaced by what the earlier posts say to expect (each
        part's log of the mean of its exp, so a new post's expected weight is the average post's, not the
        median's); everything else stays, the users' hidden interests and tastes, the earlier posts' latent
        parts and when the later posts appear included. Its expected scores are the ceiling of a ranking made
        at `time`, where the plain oracle also knows how each post nobody has seen yet will do."""
        later = self.post_created >= time
        earlier = ~later
        if not later.any() or not earlier.any():
            return self
        quality = self.post_quality.copy()
        appeal = self.post_appeal.copy()
        taste_appeal = self.post_taste_appeal.copy()
        if self.quality_scale:
            quality[later] = _log_mean_exp(self.quality_scale * quality[earlier]) / self.quality_scale
        appeal[later] = _log_mean_exp(appeal[earlier])
        taste_appeal[later] = _log_mean_exp(taste_appeal[earlier])
        return replace(self, post_quality=quality, post_appeal=appeal, post_taste_appeal=taste_appeal)

    def _log_weights(self) -> np.ndarray:
        return post_log_weights(
            self.post_quality,
            self.post_appeal,
            self.post_taste_appeal,
            self.post_created,
            self.end,
            self.recency_tau_seconds,
            self.quality_scale,
        )

    def _pool(self) -> PostPool:
        return PostPool(
            topic=self.post_topic,
            city=self.post_city,
            is_local=self.post_is_local,
            created=self.post_created,
            log_weight=self._log_weights(),
            n_topics=self.affinity.shape[1],
            n_cities=int(max(self.user_city.max(initial=0), self.post_city.max(initial=0))) + 1,
            origin=self.start,
            end=self.end,
        )


def _log_mean_exp(values: np.ndarray) -> np.ndarray | float:
    """log(mean(exp(values))) over the first axis."""
    return np.logaddexp.reduce(values, axis=0) - np.log(len(values))


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
        missing = [field.name for field in fields(GroundTruth) if field.name not in archive.files]
        if missing:
            raise ValueError(f"{path} lacks {', '.join(missing)}: an older generator wrote it; run `teamu seed`")
        values = {}
        for field in fields(GroundTruth):
            array = archive[field.name]
            values[field.name] = array.item() if array.ndim == 0 else array
    return GroundTruth(**values)
