"""A Stack Exchange site dump (Users.xml, Posts.xml, Comments.xml, Votes.xml) as a RealDataset.

Mapping: users -> users (bio = AboutMe without HTML; Location is free text, so no coordinates); questions ->
posts (description = body text plus the tags as words); answers -> comments on their question; comments on a
question or on one of its answers -> comments on the question; favourites (VoteTypeId 5, the only votes with a
voter) -> upvotes. Up/down votes carry no voter id and are left out.

A user engages with a question by answering it, commenting on it or on one of its answers, or favouriting it;
activity on one's own question is kept in the tables but is no engagement (the product never recommends one's own
posts), and every engagement is also a "Post Viewed" at its time. Rows without a (known) user are skipped, as is
the Community bot (Id -1). Post ids are offset by POST_ID_OFFSET, like the synthetic data's, so a join on the wrong
id finds nothing.
"""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from teamu_assets.realdata.dataset import (
    RealDataset,
    contract_frame,
    engagements_from,
    pair_hash,
    views_at,
)
from teamu_assets.synthetic.generator import POST_ID_OFFSET

QUESTION, ANSWER = "1", "2"
FAVOURITE = "5"
# Seeds the placement of day-only favourite times inside their day.
FAVOURITE_TIME_SEED = 5
_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
_TAG_NAMES = re.compile(r"[^<>|]+")


def strip_html(text: object) -> str:
    """Text of an HTML fragment: tags dropped, entities decoded, whitespace collapsed ("" for a missing one)."""
    if not isinstance(text, str):
        return ""
    return _SPACE.sub(" ", html.unescape(_TAG.sub(" ", text))).strip()


def tag_words(tags: object) -> str:
    """'<quantum-gate><qiskit>' (or '|quantum-gate|qiskit|') -> 'quantum gate qiskit'."""
    names = _TAG_NAMES.findall(tags) if isinstance(tags, str) else []
    return " ".join(name.replace("-", " ") for name in names if name.strip())


def _rows(path: Path) -> Iterator[dict[str, str]]:
    for _, element in ET.iterparse(path, events=("end",)):
        if element.tag == "row":
            yield dict(element.attrib)
            element.clear()


def _times(values: pd.Series) -> pd.Series:
    """Stack Exchange times are UTC without a zone."""
    return pd.to_datetime(values, format="ISO8601").dt.tz_localize("UTC")


def _user_ids(values: pd.Series) -> pd.Series:
    return pd.to_numeric(values, errors="coerce").astype("Int64")


def read_stackexchange(site_dir: Path | str, name: str) -> RealDataset:
    """The site dump under site_dir as a RealDataset called name (see the module docstring for the mapping)."""
    site_dir = Path(site_dir)
    users = pd.DataFrame(_rows(site_dir / "Users.xml"), columns=["Id", "DisplayName", "AboutMe", "CreationDate"])
    users["user_id"] = _user_ids(users["Id"])
    users = users.loc[users["user_id"] > 0].sort_values("user_id")
    known_users = set(users["user_id"].tolist())

    posts = pd.DataFrame(
        _rows(site_dir / "Posts.xml"),
        columns=["Id", "PostTypeId", "ParentId", "OwnerUserId", "CreationDate", "Title", "Body", "Tags"],
    )
    posts["id"] = pd.to_numeric(posts["Id"]).astype("int64")
    posts["owner"] = _user_ids(posts["OwnerUserId"])
    posts["created_at"] = _times(posts["CreationDate"])
    posts["known_owner"] = posts["owner"].isin(known_users).to_numpy(dtype=bool)
    questions = posts.loc[(posts["PostTypeId"] == QUESTION) & posts["known_owner"]].sort_values("id")
    question_owner = dict(zip(questions["id"].tolist(), questions["owner"].tolist(), strict=True))
    question_created = questions.set_index("id")["created_at"]
    every_answer = posts.loc[posts["PostTypeId"] == ANSWER].copy()
    every_answer["question"] = pd.to_numeric(every_answer["ParentId"]).astype("int64")
    # Comments on an answer belong to its question, even when the answer itself is skipped (no known owner).
    question_of_post = {
        **dict(zip(every_answer["id"].tolist(), every_answer["question"].tolist(), strict=True)),
        **{question: question for question in question_owner},
    }
    answers = every_answer.loc[every_answer["known_owner"] & every_answer["question"].isin(question_owner)]

    comments = pd.DataFrame(
        _rows(site_dir / "Comments.xml"), columns=["Id", "PostId", "UserId", "CreationDate", "Text"]
    )
    comments["user_id"] = _user_ids(comments["UserId"])
    comments["question"] = pd.to_numeric(comments["PostId"]).map(question_of_post)
    comments = comments.loc[comments["user_id"].isin(known_users) & comments["question"].isin(question_owner)]

    votes = pd.DataFrame(
        _rows(site_dir / "Votes.xml"), columns=["Id", "PostId", "VoteTypeId", "UserId", "CreationDate"]
    )
    votes["user_id"] = _user_ids(votes["UserId"])
    votes["question"] = pd.to_numeric(votes["PostId"])
    favourites = votes.loc[
        (votes["VoteTypeId"] == FAVOURITE) & votes["user_id"].isin(known_users) & votes["question"].isin(question_owner)
    ].copy()
    favourites["question"] = favourites["question"].astype("int64")
    favourites["created_at"] = _favourite_times(favourites, question_created)

    # Answers first, then comments: within one time, the order the site shows them.
    comment_rows = pd.concat(
        [
            pd.DataFrame(
                {
                    "question": answers["question"].to_numpy(),
                    "user_id": answers["owner"].astype("int64").to_numpy(),
                    "body": answers["Body"].map(strip_html).to_numpy(),
                    "created_at": answers["created_at"].to_numpy(),
                    "source": 0,
                    "source_id": answers["id"].to_numpy(),
                }
            ),
            pd.DataFrame(
                {
                    "question": comments["question"].astype("int64").to_numpy(),
                    "user_id": comments["user_id"].astype("int64").to_numpy(),
                    "body": comments["Text"].map(strip_html).to_numpy(),
                    "created_at": _times(comments["CreationDate"]).to_numpy(),
                    "source": 1,
                    "source_id": pd.to_numeric(comments["Id"]).to_numpy(),
                }
            ),
        ],
        ignore_index=True,
    ).sort_values(["created_at", "source", "source_id"], kind="stable")

    engagement_events = pd.concat(
        [
            comment_rows[["user_id", "question", "created_at"]],
            favourites[["user_id", "question", "created_at"]].astype({"user_id": "int64"}),
        ],
        ignore_index=True,
    ).rename(columns={"question": "post_id", "created_at": "occurred_at"})
    engagement_events["post_id"] = engagement_events["post_id"] + POST_ID_OFFSET
    owner_of_post = {question + POST_ID_OFFSET: owner for question, owner in question_owner.items()}
    engagement_events = engagement_events.loc[
        engagement_events["post_id"].map(owner_of_post).to_numpy() != engagement_events["user_id"].to_numpy()
    ]

    user_created = _times(users["CreationDate"])
    return RealDataset(
        name=name,
        users=contract_frame(
            "users",
            {
                "user_id": users["user_id"].astype("int64"),
                "username": [
                    display or f"user{user_id}"
                    for display, user_id in zip(users["DisplayName"], users["user_id"], strict=True)
                ],
                "bio": users["AboutMe"].map(strip_html),
                "passions": [[] for _ in range(len(users))],
                "latitude": np.nan,
                "longitude": np.nan,
                "created_at": user_created,
                "updated_at": user_created,
            },
        ),
        projects=contract_frame("projects", {"project_id": [], "user_id": [], "title": [], "created_at": []}),
        posts=contract_frame(
            "posts",
            {
                "post_id": questions["id"] + POST_ID_OFFSET,
                "user_id": questions["owner"].astype("int64"),
                "title": questions["Title"].fillna(""),
                "description": [
                    " ".join(part for part in (strip_html(body), tag_words(tags)) if part)
                    for body, tags in zip(questions["Body"], questions["Tags"], strict=True)
                ],
                "is_local": False,
                "latitude": np.nan,
                "longitude": np.nan,
                # Edits and later activity would date a post by what happens after the split: creation only.
                "created_at": questions["created_at"],
                "updated_at": questions["created_at"],
            },
        ),
        comments=contract_frame(
            "comments",
            {
                "comment_id": np.arange(1, len(comment_rows) + 1),
                "post_id": comment_rows["question"] + POST_ID_OFFSET,
                "user_id": comment_rows["user_id"],
                "body": comment_rows["body"],
                "created_at": comment_rows["created_at"],
            },
        ),
        votes=contract_frame(
            "votes",
            {
                "vote_id": pd.to_numeric(favourites["Id"]),
                "post_id": favourites["question"] + POST_ID_OFFSET,
                "user_id": favourites["user_id"].astype("int64"),
                "value": 1,
                "created_at": favourites["created_at"],
            },
        ),
        views=views_at(engagement_events),
        engagements=engagements_from(engagement_events),
    )


def _favourite_times(favourites: pd.DataFrame, question_created: pd.Series) -> pd.Series:
    """Favourites carry their day only: each gets a seeded time inside its day (a hash of user and question),
    never before the question was posted, so a user's favourites of one day are ordered and apart."""
    day_start = _times(favourites["CreationDate"]).dt.floor("D")
    posted = question_created.reindex(favourites["question"].to_numpy()).set_axis(favourites.index)
    after_posting = posted + pd.Timedelta(seconds=1)
    earliest = day_start.where(day_start >= after_posting, after_posting).dt.ceil("s")
    room = ((day_start + pd.Timedelta(days=1)) - earliest).dt.total_seconds().clip(lower=1).astype("int64")
    offset = pair_hash(favourites["user_id"].to_numpy(), favourites["question"].to_numpy(), FAVOURITE_TIME_SEED)
    return earliest + pd.to_timedelta((offset % room.to_numpy().astype(np.uint64)).astype(np.int64), unit="s")
