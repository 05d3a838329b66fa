"""HetRec 2011 Last.fm 2K (artists.dat, tags.dat, user_taggedartists.dat) as a RealDataset.

Mapping: users -> users (no profile); tagged artists -> posts, all authored by one extra catalogue account,
title = artist name, description = the artist's most used tags (recomputed from the training rows by
per_user_holdout), created_at = the artist's first tagging; each tag assignment -> a comment (body = the tag) at
its time; each user's first tagging of an artist -> the engagement, a "Post Viewed" and an upvote at that time.
Play counts (user_artists.dat) have no dates and friends are no interactions: both are left out.

Dates have month resolution. A user's (artist, month) taggings get seeded, distinct times inside the month (a
hash of user and artist orders them), so each user's history is totally ordered and the same on every read.
Tag assignments of artists missing from artists.dat (no name) and those dated before 2005 (clock errors; the
data set covers 2005-2011) are skipped.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from teamu_assets.realdata.dataset import (
    RealDataset,
    contract_frame,
    engagements_from,
    pair_hash,
    tag_descriptions,
    views_at,
)
from teamu_assets.synthetic.generator import POST_ID_OFFSET

FIRST_YEAR = 2005
# Seeds the placement of taggings inside their month.
MONTH_TIME_SEED = 2011
CATALOGUE_USERNAME = "last.fm catalogue"


def _table(path: Path, encoding: str) -> pd.DataFrame:
    # Artist names hold quotes: no quoting at all, tabs only.
    return pd.read_csv(path, sep="\t", encoding=encoding, quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)


def month_slot_times(user_ids: np.ndarray, artist_ids: np.ndarray, month_starts: pd.Series) -> pd.Series:
    """A time for each distinct (user, artist, month): the month is cut into as many equal whole-second slots as
    the user has artists that month, the artists take the slots in the order of a seeded hash of (user,
    artist), each at a hashed second inside its slot. Distinct per user by construction. Aligned with
    month_starts."""
    slots = pd.DataFrame(
        {
            "user_id": user_ids,
            "artist_id": artist_ids,
            "month": month_starts.to_numpy(),
            "hash": pair_hash(user_ids, artist_ids, MONTH_TIME_SEED),
        },
        index=month_starts.index,
    )
    slots = slots.sort_values(["user_id", "month", "hash", "artist_id"], kind="stable")
    group = slots.groupby(["user_id", "month"], sort=False)
    rank = group.cumcount().to_numpy()
    size = group["artist_id"].transform("size").to_numpy()
    month = pd.Series(slots["month"].to_numpy())
    month_seconds = month.dt.days_in_month.to_numpy().astype(np.int64) * 86_400
    width = month_seconds // size
    offset = rank * width + (slots["hash"].to_numpy() % width.astype(np.uint64)).astype(np.int64)
    times = month + pd.to_timedelta(offset, unit="s")
    return pd.Series(times.to_numpy(), index=slots.index).sort_index()


def read_lastfm(data_dir: Path | str, name: str = "lastfm") -> RealDataset:
    """The HetRec Last.fm 2K files under data_dir as a RealDataset (see the module docstring for the mapping)."""
    data_dir = Path(data_dir)
    artists = _table(data_dir / "artists.dat", "utf-8")
    artist_names = dict(zip(pd.to_numeric(artists["id"]).tolist(), artists["name"].tolist(), strict=True))
    # tags.dat is Latin-1 (e.g. "rock fran\xe7ais"), unlike the other files.
    tags = _table(data_dir / "tags.dat", "latin-1")
    tag_names = dict(zip(pd.to_numeric(tags["tagID"]).tolist(), tags["tagValue"].tolist(), strict=True))

    assignments = _table(data_dir / "user_taggedartists.dat", "utf-8").apply(pd.to_numeric)
    assignments = assignments.loc[assignments["artistID"].isin(artist_names) & (assignments["year"] >= FIRST_YEAR)]
    assignments = assignments.rename(columns={"userID": "user_id", "artistID": "artist_id"}).reset_index(drop=True)
    assignments["month"] = pd.to_datetime(
        pd.DataFrame({"year": assignments["year"], "month": assignments["month"], "day": 1})
    ).dt.tz_localize("UTC")

    pairs = assignments.drop_duplicates(["user_id", "artist_id", "month"])[["user_id", "artist_id", "month"]]
    pairs = pairs.assign(
        occurred_at=month_slot_times(pairs["user_id"].to_numpy(), pairs["artist_id"].to_numpy(), pairs["month"])
    )
    assignments = assignments.merge(pairs, on=["user_id", "artist_id", "month"], how="left")
    assignments = assignments.sort_values(["occurred_at", "user_id", "artist_id", "tagID"], kind="stable")
    assignments["post_id"] = assignments["artist_id"] + POST_ID_OFFSET

    engagement_events = assignments[["user_id", "post_id", "occurred_at"]]
    engagements = engagements_from(engagement_events)
    user_ids = np.sort(assignments["user_id"].unique())
    catalogue_id = int(user_ids.max()) + 1
    first_seen = engagements.groupby("user_id")["occurred_at"].min().reindex(user_ids)
    first_tagged = engagements.groupby("post_id")["occurred_at"].min().sort_index()
    # The catalogue account exists before anything is tagged.
    catalogue_created = first_tagged.min() - pd.Timedelta(days=1)

    comments = contract_frame(
        "comments",
        {
            "comment_id": np.arange(1, len(assignments) + 1),
            "post_id": assignments["post_id"],
            "user_id": assignments["user_id"],
            "body": assignments["tagID"].map(tag_names),
            "created_at": assignments["occurred_at"],
        },
    )
    upvotes = engagements.sort_values(["occurred_at", "user_id", "post_id"], kind="stable")
    post_ids = first_tagged.index.to_numpy()
    posts = contract_frame(
        "posts",
        {
            "post_id": post_ids,
            "user_id": catalogue_id,
            "title": [artist_names[post_id - POST_ID_OFFSET] for post_id in post_ids.tolist()],
            "description": "",
            "is_local": False,
            "latitude": np.nan,
            "longitude": np.nan,
            "created_at": first_tagged.to_numpy(),
            "updated_at": first_tagged.to_numpy(),
        },
    )
    return RealDataset(
        name=name,
        users=contract_frame(
            "users",
            {
                "user_id": np.append(user_ids, catalogue_id),
                "username": [f"lastfm{user_id}" for user_id in user_ids.tolist()] + [CATALOGUE_USERNAME],
                "bio": None,
                "passions": [[] for _ in range(len(user_ids) + 1)],
                "latitude": np.nan,
                "longitude": np.nan,
                "created_at": np.append(first_seen.to_numpy(), catalogue_created),
                "updated_at": np.append(first_seen.to_numpy(), catalogue_created),
            },
        ),
        projects=contract_frame("projects", {"project_id": [], "user_id": [], "title": [], "created_at": []}),
        posts=posts.assign(description=tag_descriptions(posts, comments)),
        comments=comments,
        votes=contract_frame(
            "votes",
            {
                "vote_id": np.arange(1, len(upvotes) + 1),
                "post_id": upvotes["post_id"],
                "user_id": upvotes["user_id"],
                "value": 1,
                "created_at": upvotes["occurred_at"],
            },
        ),
        views=views_at(engagements),
        engagements=engagements,
        descriptions_from_tags=True,
    )
