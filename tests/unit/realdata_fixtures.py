"""Tiny handcrafted Stack Exchange and Last.fm files, in the real dumps' formats, for the realdata tests."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import quoteattr

SE_USERS = [
    {"Id": "-1", "DisplayName": "Community", "AboutMe": "<p>bot</p>", "CreationDate": "2019-12-01T00:00:00.000"},
    {
        "Id": "1",
        "DisplayName": "alice",
        "AboutMe": "<p>Quantum &amp; <b>optics</b></p>\n<p>Berlin</p>",
        "Location": "Berlin, Germany",
        "CreationDate": "2019-12-02T08:00:00.000",
    },
    {"Id": "2", "DisplayName": "bob", "CreationDate": "2019-12-03T08:00:00.000"},
    {"Id": "3", "DisplayName": "carol", "CreationDate": "2019-12-04T08:00:00.000"},
    {"Id": "4", "DisplayName": "dave", "CreationDate": "2019-12-05T08:00:00.000"},
]
SE_POSTS = [
    {
        "Id": "10",
        "PostTypeId": "1",
        "OwnerUserId": "1",
        "CreationDate": "2020-01-01T10:00:00.000",
        "Title": "What is a qubit?",
        "Body": "<p>What is a <b>qubit</b>, really?</p>",
        "Tags": "<quantum-gate><qubit>",
    },
    {
        "Id": "11",
        "PostTypeId": "1",
        "OwnerUserId": "2",
        "CreationDate": "2020-01-02T10:00:00.000",
        "Title": "Noise",
        "Body": "<p>Why noise?</p>",
        "Tags": "|noise|",
    },
    {
        "Id": "12",
        "PostTypeId": "1",
        "OwnerUserId": "3",
        "CreationDate": "2020-01-03T10:00:00.000",
        "Title": "Gates",
        "Body": "<p>Which gates?</p>",
        "Tags": "<gates>",
    },
    # A question of a deleted user: skipped, and so is the answer to it.
    {"Id": "13", "PostTypeId": "1", "CreationDate": "2020-01-03T11:00:00.000", "Title": "Orphan", "Body": "x"},
    {"Id": "20", "PostTypeId": "2", "ParentId": "10", "OwnerUserId": "2", "CreationDate": "2020-01-01T11:00:00.000",
     "Body": "<p>A <i>two-level</i> system.</p>"},
    # The asker answers her own question: a comment row, no engagement.
    {"Id": "21", "PostTypeId": "2", "ParentId": "10", "OwnerUserId": "1", "CreationDate": "2020-01-01T12:00:00.000",
     "Body": "<p>Thanks, got it.</p>"},
    {"Id": "22", "PostTypeId": "2", "ParentId": "13", "OwnerUserId": "3", "CreationDate": "2020-01-03T12:00:00.000",
     "Body": "orphan answer"},
]  # fmt: skip
SE_COMMENTS = [
    # alice on bob's answer to her own question: still her own question.
    {"Id": "1", "PostId": "20", "UserId": "1", "CreationDate": "2020-01-01T11:30:00.000", "Text": "Nice &amp; clear"},
    # carol on alice's answer: an engagement of carol with question 10.
    {"Id": "2", "PostId": "21", "UserId": "3", "CreationDate": "2020-01-01T13:00:00.000", "Text": "agreed"},
    {"Id": "3", "PostId": "11", "UserId": "3", "CreationDate": "2020-01-02T12:00:00.000", "Text": "which noise?"},
    {"Id": "4", "PostId": "11", "CreationDate": "2020-01-02T12:30:00.000", "Text": "from a deleted user"},
    {"Id": "5", "PostId": "12", "UserId": "2", "CreationDate": "2020-01-03T15:00:00.000", "Text": "CNOT"},
]
SE_VOTES = [
    {"Id": "1", "PostId": "11", "VoteTypeId": "2", "CreationDate": "2020-01-02T00:00:00.000"},
    {"Id": "2", "PostId": "11", "VoteTypeId": "3", "CreationDate": "2020-01-02T00:00:00.000"},
    # carol favourites her own question: a vote row, no engagement.
    {"Id": "3", "PostId": "12", "VoteTypeId": "5", "UserId": "3", "CreationDate": "2020-01-03T00:00:00.000"},
    # dave favourites question 12 on the day it was posted (10:00): its time lands after the posting.
    {"Id": "4", "PostId": "12", "VoteTypeId": "5", "UserId": "4", "CreationDate": "2020-01-03T00:00:00.000"},
    # carol favourites question 10 after commenting on it: her first engagement stays the comment.
    {"Id": "5", "PostId": "10", "VoteTypeId": "5", "UserId": "3", "CreationDate": "2020-01-05T00:00:00.000"},
]


def _write_rows(path: Path, root: str, rows: list[dict[str, str]]) -> None:
    lines = [f"  <row {' '.join(f'{key}={quoteattr(value)}' for key, value in row.items())} />" for row in rows]
    # The dumps start with a byte order mark.
    text = "\ufeff" + '<?xml version="1.0" encoding="utf-8"?>\n' + f"<{root}>\n" + "\n".join(lines) + f"\n</{root}>\n"
    path.write_text(text, encoding="utf-8")


def write_stackexchange_site(site_dir: Path) -> Path:
    site_dir.mkdir(parents=True, exist_ok=True)
    _write_rows(site_dir / "Users.xml", "users", SE_USERS)
    _write_rows(site_dir / "Posts.xml", "posts", SE_POSTS)
    _write_rows(site_dir / "Comments.xml", "comments", SE_COMMENTS)
    _write_rows(site_dir / "Votes.xml", "votes", SE_VOTES)
    return site_dir


LASTFM_ARTISTS = [("1", 'The "One"'), ("2", "Beta"), ("3", "Gamma")]
LASTFM_TAGS = [("1", "rock"), ("2", "rock français"), ("3", "jazz"), ("4", "bebop")]
# userID, artistID, tagID, day, month, year
LASTFM_TAGGINGS = [
    (2, 1, 1, 1, 4, 2009),
    (2, 1, 2, 1, 4, 2009),
    (2, 2, 1, 1, 4, 2009),
    (2, 3, 4, 1, 6, 2009),  # user 2's last artist: held out, so "bebop" must not describe Gamma in training
    (2, 2, 3, 1, 7, 2009),  # a second month with Beta: no new engagement
    (3, 1, 1, 1, 5, 2009),
    (3, 2, 2, 1, 5, 2009),
    (4, 1, 1, 1, 1, 1956),  # a clock error: skipped
    (4, 99, 1, 1, 1, 2010),  # an artist missing from artists.dat: skipped
    (4, 3, 3, 1, 1, 2010),
]


def write_lastfm(data_dir: Path) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    artists = ["id\tname\turl\tpictureURL"] + [f"{i}\t{name}\thttp://x/{i}\thttp://y/{i}" for i, name in LASTFM_ARTISTS]
    (data_dir / "artists.dat").write_text("\n".join(artists) + "\n", encoding="utf-8")
    tags = ["tagID\ttagValue"] + [f"{i}\t{name}" for i, name in LASTFM_TAGS]
    (data_dir / "tags.dat").write_text("\n".join(tags) + "\n", encoding="latin-1")
    rows = ["userID\tartistID\ttagID\tday\tmonth\tyear"] + ["\t".join(map(str, row)) for row in LASTFM_TAGGINGS]
    (data_dir / "user_taggedartists.dat").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return data_dir
