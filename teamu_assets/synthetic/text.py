"""Texts drawn from a topic's vocabulary, so titles, bios, project names and comments carry the topic signal.

Each function takes its random draws as arrays (made by the caller in one vectorised call) and formats."""

from __future__ import annotations

import numpy as np

from teamu_assets.synthetic.vocabulary import (
    BIO_TEMPLATES,
    CITIES,
    COMMENT_TEMPLATES,
    DESCRIPTION_TEMPLATES,
    LOCAL_TITLE_TEMPLATES,
    PROJECT_TEMPLATES,
    TITLE_TEMPLATES,
    TOPICS,
    USERNAME_WORDS,
)

# Draws each text needs: a template choice and three word choices, all uniform in [0, 1).
DRAWS_PER_TEXT = 4


def _pick(options: tuple[str, ...], draw: float) -> str:
    return options[int(draw * len(options))]


def _words(topic: int, draws: list[float]) -> dict[str, str]:
    words = TOPICS[topic].words
    return {name: _pick(words, draw) for name, draw in zip(("a", "b", "c"), draws, strict=True)}


def post_titles(topics: np.ndarray, is_local: np.ndarray, cities: np.ndarray, draws: np.ndarray) -> list[str]:
    titles = []
    for topic, local, city, row in zip(
        topics.tolist(), is_local.tolist(), cities.tolist(), draws.tolist(), strict=True
    ):
        words = _words(topic, row[1:])
        if local:
            title = _pick(LOCAL_TITLE_TEMPLATES, row[0]).format(city=CITIES[city].name, **words)
        else:
            title = _pick(TITLE_TEMPLATES, row[0]).format(**words)
        titles.append(title[0].upper() + title[1:])
    return titles


def post_descriptions(topics: np.ndarray, draws: np.ndarray) -> list[str]:
    return [
        _pick(DESCRIPTION_TEMPLATES, row[0]).format(**_words(topic, row[1:]))
        for topic, row in zip(topics.tolist(), draws.tolist(), strict=True)
    ]


def bios(passions: list[list[str]], topics: np.ndarray, draws: np.ndarray) -> list[str]:
    texts = []
    for user_passions, topic, row in zip(passions, topics.tolist(), draws.tolist(), strict=True):
        passions_named = " and ".join(user_passions[:2])
        text = _pick(BIO_TEMPLATES, row[0]).format(p=passions_named, **_words(topic, row[1:]))
        texts.append(text[0].upper() + text[1:])
    return texts


def project_titles(topics: np.ndarray, draws: np.ndarray) -> list[str]:
    titles = []
    for topic, row in zip(topics.tolist(), draws.tolist(), strict=True):
        title = _pick(PROJECT_TEMPLATES, row[0]).format(**_words(topic, row[1:]))
        titles.append(title[0].upper() + title[1:])
    return titles


def comment_bodies(topics: np.ndarray, draws: np.ndarray) -> list[str]:
    return [
        _pick(COMMENT_TEMPLATES, row[0]).format(**_words(topic, row[1:]))
        for topic, row in zip(topics.tolist(), draws.tolist(), strict=True)
    ]


def usernames(user_ids: np.ndarray, draws: np.ndarray) -> list[str]:
    """Unique because the id is part of the name."""
    return [
        f"{_pick(USERNAME_WORDS, draw)}_{user_id}"
        for user_id, draw in zip(user_ids.tolist(), draws.tolist(), strict=True)
    ]
