"""Writing post ideas from a context, behind one small interface (IdeaGenerator.generate(context, count)).

ChatCompletionsGenerator asks an OpenAI-compatible chat-completions endpoint (TEAMU_LLM_URL, TEAMU_LLM_MODEL,
TEAMU_LLM_API_KEY) through the standard library's HTTP client; OfflineGenerator, used when nothing is
configured, recombines the context's themes into title + description drafts, deterministically.
Whatever writes them, ideas that repeat one of the team's posts or a post shown as an example are dropped
(drop_repeats), and so are repeats among the ideas.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import unicodedata
import urllib.error
import urllib.request
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from teamu_assets.ideas.context import IdeaContext
from teamu_assets.settings import LanguageModelSettings

# Ideas asked for or drafted per idea kept: ranking picks the best of them.
CANDIDATES_PER_IDEA = 3
MAX_TITLE_CHARS = 200
MAX_DESCRIPTION_CHARS = 1_000
# Two titles repeat each other when their word sets overlap this much (Jaccard), or are equal once normalised.
REPEAT_JACCARD = 0.8
# Attempts at the endpoint for one generation: a timeout, a connection error, HTTP 429 or 5xx, or an answer
# without parseable ideas is tried again after RETRY_BACKOFF_SECONDS x the attempt number.
ATTEMPTS = 3
# The largest answer read: a completion of a few dozen ideas is a few kilobytes; a server streaming more (a proxy's
# error page gone wrong, a runaway generation) is cut off there instead of filling the asset's memory.
MAX_RESPONSE_BYTES = 1 << 22
# The most of an error's body read for its message.
MAX_ERROR_BYTES = 1 << 16
# Bytes read from the answer at a time, each read checked against the deadline.
READ_CHUNK_BYTES = 1 << 16
RETRY_BACKOFF_SECONDS = 1.0
PROMPT_EXISTING_POSTS = 20
# Words too common, or too much a post's frame rather than its subject, to be a theme.
STOP_WORDS = frozenset(
    (  # noqa: SIM905 - a list literal of these words would take a hundred lines
        "a an and are as at be by for from has have i in into is it its my of on or our so that the their this to "
        "up us we what who why with you your about all any anyone how just new next out ask me more than some "
        "after also been but can did do does even first get got here if like make meets most much not now one only "
        "over part really should then there these they want was were when where which will would year "
        "building built group help needed lessons looking meetup project projects session show started tell "
        "teammates thoughts tips weekend welcome working learned sharing feedback "
        # Adjectives and times: they read as a subject in no draft ("a twist of fast", "bringing in night").
        "fast quick easy hard good great best big small tiny little simple open free old real local nearby "
        "night tonight today week month day evening morning"
    ).split()
)


class IdeaGenerationError(RuntimeError):
    """The language model gave no usable ideas (after the retries); the message says why, never the key."""


@dataclass(frozen=True)
class Idea:
    title: str
    description: str


class IdeaGenerator(Protocol):
    name: str

    def generate(self, context: IdeaContext, count: int) -> list[Idea]:
        """About `count` ideas for the context's team (more is fine: ranking keeps the best)."""
        ...


def words(text: str) -> list[str]:
    """The words of a title as repeats compare them: Unicode-normalised, case-folded, any script, an apostrophe
    or hyphen inside a word dropped ("Beginner's" = "Beginners", "E-mail" = "email", "3-D" = "3D")."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    return re.findall(r"\w+", re.sub(r"(?<=\w)['\u2019-](?=\w)", "", folded))


def _title_key(title: str) -> frozenset[str]:
    return frozenset(words(title))


def repeats(title: str, other: str) -> bool:
    a, b = _title_key(title), _title_key(other)
    if not a or not b:
        return False
    return a == b or len(a & b) / len(a | b) >= REPEAT_JACCARD


def drop_repeats(ideas: Iterable[Idea], existing: Iterable[str]) -> tuple[list[Idea], list[Idea]]:
    """(kept, dropped): an idea is dropped when its title repeats an existing title or a kept idea's, or when it
    has no title."""
    kept: list[Idea] = []
    dropped: list[Idea] = []
    existing = [title for title in existing if title]
    for idea in ideas:
        seen = [*existing, *(k.title for k in kept)]
        if not idea.title.strip() or any(repeats(idea.title, other) for other in seen):
            dropped.append(idea)
        else:
            kept.append(idea)
    return kept, dropped


def _clip(text: str, limit: int) -> str:
    return " ".join(str(text).split())[:limit]


# --- offline -------------------------------------------------------------------------------------------------------


def _subject_words(text: str) -> set[str]:
    """The words of a text that can be a theme: lower-case where written (names of people and places are
    capitalised, so a city doesn't become a theme), not stop words, at least three letters, and no past tense
    ("ended", "shared": a verb reads as no subject; "seed" and "feed" stay)."""
    found = re.findall(r"\b[a-z][a-z0-9]*\b", text)
    return {
        word
        for word in found
        if word not in STOP_WORDS and len(word) > 2 and not (word.endswith("ed") and not word.endswith("eed"))
    }


@dataclass(frozen=True)
class Angle:
    """One kind of post a team writes (a guide, a question, a call for help...): ways to title it and to open and
    close its description. {a} is one of the team's own themes, {b} one its audience responds to ({A}: {a}
    capitalised)."""

    name: str
    titles: tuple[str, ...]
    openings: tuple[str, ...]
    closings: tuple[str, ...]


ANGLES: tuple[Angle, ...] = (
    Angle(
        "guide",
        (
            "A beginner's guide to {a}",
            "How we got started with {a}, step by step",
            "{A} from scratch: the first steps that worked for us",
        ),
        (
            "We wrote down the steps that took us from zero to our first working {a} setup.",
            "Starting with {a} looked daunting, so we kept notes on what actually helped.",
        ),
        ("Questions welcome: we'll answer every one.", "Tell us which step you'd like us to explain in more detail."),
    ),
    Angle(
        "show and tell",
        (
            "What happens when {a} meets {b}",
            "Our {a} build, now with a bit of {b}",
            "We mixed {a} and {b}: here's the result",
        ),
        (
            "We've been combining {a} with {b} and the result surprised us.",
            "A look at the {a} work we've been doing lately, and where {b} came into it.",
        ),
        ("We'd love your feedback before the next round.", "Have a look and tell us what you'd change."),
    ),
    Angle(
        "question",
        ("What got you into {a}?", "{A} or {b}: where would you start?", "How do you fit {b} into {a}?"),
        (
            "We keep debating this within the team and want to hear from people outside it.",
            "Everyone seems to come to {a} by a different road, and we're curious about yours.",
        ),
        ("Share your story in the comments.", "Reply with your take: we'll collect the best answers in a follow-up."),
    ),
    Angle(
        "call for collaborators",
        ("Looking for a hand with {a} and {b}", "Wanted: people who love {a}", "Join us: {a} with a side of {b}"),
        (
            "Our next step needs more hands than we have, especially people who know {a}.",
            "We're opening up the team to anyone curious about {a}, beginners included.",
        ),
        ("Drop a comment if you want in.", "Message any of us and we'll set up a call."),
    ),
    Angle(
        "lessons",
        (
            "Three things {a} taught us",
            "What a month of {a} taught our team",
            "Mistakes we made with {a}, so you don't have to",
        ),
        (
            "Not everything went to plan when we took on {a}.",
            "After a few weeks of {a} we've collected more lessons than we expected.",
        ),
        ("What would you add to the list?", "Tell us which lesson you learned the hard way too."),
    ),
    Angle(
        "challenge",
        ("A one-week {a} challenge, with a twist of {b}", "Can you build something with {a} in a weekend?"),
        (
            "We're setting ourselves a small challenge and inviting everyone to take part.",
            "Small, time-boxed projects are the best way we know to get better at {a}.",
        ),
        ("Post what you make and we'll share our favourites.", "Comment to join and we'll send the rules on Monday."),
    ),
)
# Only for a local team, whose audience lives nearby: something to meet at.
LOCAL_ANGLE = Angle(
    "meetup",
    ("{A} meetup nearby this weekend", "Anyone nearby into {a}? Let's meet up", "An evening of {a} and {b}, near you"),
    (
        "We're getting together in person to work on {a} and would love some new faces.",
        "Nothing beats meeting the people around here who are into {a}.",
    ),
    ("Comment if you're coming so we can plan the space.", "Bring a friend, no experience needed."),
)
# How a draft ties itself to the team's project and to a post its audience liked: its words are the audience's,
# and the candidate tower reads them.
PROJECT_LINES: tuple[str, ...] = (
    'It grew out of our work on "{project}", with {b} never far away.',
    'It\'s the next chapter of "{project}", this time bringing in {b}.',
    'It ties into "{project}" and what we\'ve picked up about {b} there.',
)
EXAMPLE_LINES: tuple[str, ...] = (
    'If you enjoyed "{example}", you\'ll feel at home here.',
    'It picks up where "{example}" left off.',
    'People who liked "{example}" asked us for more like it.',
)


def _capitalised(text: str) -> str:
    return text[:1].upper() + text[1:]


def _pick(options: tuple[str, ...], *key: object) -> str:
    """One of options, by a stable hash of the key (crc32, not hash(): the same on every run and machine)."""
    return options[zlib.crc32(repr(key).encode()) % len(options)]


def theme_pairs(context: IdeaContext, limit: int = 12) -> list[tuple[str, str]]:
    """(team theme, audience theme) pairs, the most telling first: the members' passions and project words
    each with a word the successful posts and local trends share, so a draft speaks both for the team and to its
    audience. With only one kind of theme, pairs of it; with one theme, that theme twice."""
    audience = _audience_words(context)
    team = list(dict.fromkeys([p for p, _ in context.passions] + _project_words(context)))
    pairs: list[tuple[str, str]] = []
    if team and audience:
        # Diagonals of the team x audience grid: the best of each first, then each with the other's next best.
        for rank in range(len(team) + len(audience)):
            pairs += [
                (team[i], audience[rank - i]) for i in range(rank + 1) if i < len(team) and rank - i < len(audience)
            ]
    else:
        found = team or audience or ["our project"]
        pairs = [(a, b) for i, a in enumerate(found) for b in found[i + 1 :]] or [(found[0], found[0])]
    return [(a, b) for a, b in pairs if a != b or len(pairs) == 1][:limit]


def _audience_words(context: IdeaContext) -> list[str]:
    """The themes of the successful posts and local trends, most engaged first (each post a word is in weighs
    1 + its engagement). A word that mostly comes with the same next one, in more than one post, is that pair
    ("deep learning", "food truck"): a theme reads as its posts wrote it, not as half of it."""
    words_seen: Counter[str] = Counter()
    pairs_seen: Counter[tuple[str, str]] = Counter()
    pair_posts: Counter[tuple[str, str]] = Counter()
    for post in (*context.successful_posts, *context.local_trends):
        words: set[str] = set()
        pairs: set[tuple[str, str]] = set()
        for text in (post.title, post.description):
            subject = [t if t in _subject_words(t) else None for t in re.findall(r"[A-Za-z0-9]+", text)]
            words |= {t for t in subject if t}
            pairs |= {(a, b) for a, b in zip(subject, subject[1:], strict=False) if a and b}
        for word in words:
            words_seen[word] += 1 + post.engagement
        for pair in pairs:
            pairs_seen[pair] += 1 + post.engagement
            pair_posts[pair] += 1
    theme_of = {word: word for word in words_seen}
    for (first, second), seen in sorted(pairs_seen.items(), key=lambda item: (-item[1], item[0])):
        if pair_posts[first, second] > 1 and 2 * seen >= max(words_seen[first], words_seen[second]):
            for word in (first, second):
                if " " not in theme_of[word]:
                    theme_of[word] = f"{first} {second}"
    ranked = sorted(words_seen.items(), key=lambda item: (-item[1], item[0]))
    return list(dict.fromkeys(theme_of[word] for word, _ in ranked))


def _project_words(context: IdeaContext) -> list[str]:
    return [word for project in context.projects for word in sorted(_subject_words(project.lower()))]


class OfflineGenerator:
    """Drafts that recombine the context's themes, deterministically: each pairs one of the team's themes with
    one its audience responds to, written from a different angle (a guide, a question, a call for help, a
    meetup for a local team...) with its wording picked by a stable hash of the team and the themes, so the
    same context gives the same drafts and different teams read differently. Each description ties the draft to
    the team's project or to a post the audience liked, whose words the candidate tower reads."""

    name = "offline"

    def generate(self, context: IdeaContext, count: int) -> list[Idea]:
        pairs = theme_pairs(context)
        team = context.team
        project = team.title or (context.projects[0] if context.projects else "our project")
        angles = ((LOCAL_ANGLE,) if team.is_local else ()) + ANGLES
        examples = [post.title for post in (*context.successful_posts, *context.local_trends) if post.title]
        ideas: list[Idea] = []
        for index in range(min(count * CANDIDATES_PER_IDEA, len(pairs) * len(angles))):
            # Consecutive drafts change both their themes and their angle; a pair comes back under other angles
            # only once every pair has been used.
            a, b = pairs[index % len(pairs)]
            angle = angles[(index + index // len(pairs)) % len(angles)]
            key = (team.project_id, a, b, angle.name)
            values = {"a": a, "b": b, "A": _capitalised(a), "project": project}
            if examples and index % 2:
                link = _pick(EXAMPLE_LINES, *key).format(example=examples[index // 2 % len(examples)])
            else:
                link = _pick(PROJECT_LINES, *key).format(**values)
            description = " ".join(
                (_pick(angle.openings, *key).format(**values), link, _pick(angle.closings, *key).format(**values))
            )
            title = _capitalised(_pick(angle.titles, *key).format(**values))
            ideas.append(Idea(_clip(title, MAX_TITLE_CHARS), _clip(description, MAX_DESCRIPTION_CHARS)))
        return ideas


# --- chat completions ----------------------------------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You write post ideas for a team on Teamu, a social network where people share project ideas and find "
    "collaborators. Each idea is a post the team could publish: a short title and a description of two or three "
    "sentences, in the team's voice. Write for the audience described, build on what did well with it, and never "
    "repeat a post the team already wrote. Answer with JSON only: "
    '{"ideas": [{"title": "...", "description": "..."}]}'
)


def build_prompt(context: IdeaContext, count: int) -> str:
    """The user message: the chosen context, as plain text. Nothing else goes to the endpoint."""
    team = context.team
    lines = [
        f"Team: {team.title or 'untitled project'} ({len(team.members)} members"
        + (", a local team: its audience lives nearby)" if team.is_local else ")"),
        "Members' passions: " + (", ".join(f"{p} ({n})" for p, n in context.passions) or "none given"),
        "Their projects: " + ("; ".join(context.projects) or "none"),
        f"Audience: {len(context.audience.user_ids)} people whose interests sit nearest the team's"
        + (f", {int(context.audience.is_local.sum())} of them nearby" if team.is_local else ""),
        "",
        "Posts that did well with this audience (views, upvotes, comments):",
    ]
    lines += [
        f"- {post.title} ({post.views}, {post.upvotes}, {post.comments}): {_clip(post.description, 200)}"
        for post in context.successful_posts
    ] or ["- none yet"]
    if context.local_trends:
        lines += ["", "Trending nearby (interactions in the last two weeks):"]
        lines += [f"- {post.title} ({post.recent_engagements})" for post in context.local_trends]
    lines += ["", "The team already posted (do not repeat these):"]
    lines += [f"- {title}" for title in context.existing_titles[:PROMPT_EXISTING_POSTS]] or ["- nothing yet"]
    lines += ["", f"Write {count} new post ideas for this team."]
    return "\n".join(lines)


def _endpoint(url: str) -> str:
    """The chat-completions URL from a base URL (https://host/v1) or the full one."""
    url = url.rstrip("/")
    return url if url.endswith("/chat/completions") else url + "/chat/completions"


def parse_ideas(content: str) -> list[Idea]:
    """Ideas from the model's message: a JSON object with "ideas", or a bare list, possibly inside a ```json fence
    or surrounded by prose. Raises ValueError when there are none."""
    # From the first opening bracket to the last closing one (what a greedy regex would match, in linear time:
    # the regex backtracked from every opening bracket, minutes on an answer of 100,000 of them).
    openings = [index for index in (content.find("["), content.find("{")) if index >= 0]
    end = max(content.rfind("]"), content.rfind("}"))
    if not openings or end < min(openings):
        raise ValueError("the answer holds no JSON")
    try:
        payload = json.loads(content[min(openings) : end + 1])
    except json.JSONDecodeError as exc:
        raise ValueError(f"the answer's JSON is malformed ({exc.msg})") from None
    except RecursionError:
        raise ValueError("the answer's JSON is nested too deeply") from None
    items = payload.get("ideas") if isinstance(payload, dict) else payload
    if not isinstance(items, list):
        raise ValueError('the answer has no "ideas" list')
    ideas = [
        Idea(_clip(item["title"], MAX_TITLE_CHARS), _clip(item.get("description") or "", MAX_DESCRIPTION_CHARS))
        for item in items
        if isinstance(item, dict) and isinstance(item.get("title"), str) and item["title"].strip()
    ]
    if not ideas:
        raise ValueError("the answer lists no idea with a title")
    return ideas


class _Retry(Exception):
    """A failure worth another attempt."""


class ChatCompletionsGenerator:
    """POST {url}/chat/completions as OpenAI's API takes it (model, messages), Bearer key when one is set.
    Retries timeouts, connection errors, 429/5xx and unusable answers (ATTEMPTS in all), then raises
    IdeaGenerationError; other HTTP errors (a wrong key or model) raise at once. Messages never hold the key."""

    name = "chat-completions"

    def __init__(
        self,
        settings: LanguageModelSettings,
        *,
        attempts: int = ATTEMPTS,
        backoff_seconds: float = RETRY_BACKOFF_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._settings = settings
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._sleep = sleep
        self.name = f"chat-completions ({settings.model})"

    def __repr__(self) -> str:
        return f"ChatCompletionsGenerator({self._settings!r})"

    def generate(self, context: IdeaContext, count: int) -> list[Idea]:
        body = {
            "model": self._settings.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": build_prompt(context, count * CANDIDATES_PER_IDEA)},
            ],
            "temperature": 0.7,
        }
        failures: list[str] = []
        for attempt in range(1, self._attempts + 1):
            try:
                return parse_ideas(self._complete(body))
            except _Retry as exc:
                failures.append(str(exc))
            except ValueError as exc:
                failures.append(f"unusable answer: {exc}")
            if attempt < self._attempts:
                self._sleep(self._backoff * attempt)
        raise IdeaGenerationError(
            f"{_endpoint(self._settings.url)} gave no usable ideas in {self._attempts} attempts: " + "; ".join(failures)
        )

    def _read_body(self, response: http.client.HTTPResponse, deadline: float) -> bytes:
        """The answer's body, read a chunk at a time: at most MAX_RESPONSE_BYTES, and cut off once the timeout
        has passed since the request (the socket's timeout bounds each read only, and a server sending a byte now
        and then would hold the asset forever; a read under way may still take one timeout more)."""
        chunks: list[bytes] = []
        size = 0
        while chunk := response.read1(READ_CHUNK_BYTES):
            size += len(chunk)
            if size > MAX_RESPONSE_BYTES:
                raise _Retry(f"the answer is larger than {MAX_RESPONSE_BYTES} bytes")
            if time.monotonic() > deadline:
                raise _Retry(f"no complete answer within {self._settings.timeout_seconds:g} s")
            chunks.append(chunk)
        # read1 ends at the connection's close without an error when fewer bytes came than Content-Length
        # promised (read() raised IncompleteRead): the bytes still expected are in `length`.
        if getattr(response, "length", None):
            raise _Retry("the answer was cut short")
        return b"".join(chunks)

    def _complete(self, body: dict[str, Any]) -> str:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._settings.api_key:
            headers["Authorization"] = f"Bearer {self._settings.api_key}"
        request = urllib.request.Request(
            _endpoint(self._settings.url), data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            deadline = time.monotonic() + self._settings.timeout_seconds
            with urllib.request.urlopen(request, timeout=self._settings.timeout_seconds) as response:
                raw = self._read_body(response, deadline)
        except urllib.error.HTTPError as exc:
            detail = _error_detail(exc, self._settings.api_key)
            if exc.code == 429 or exc.code >= 500:
                raise _Retry(f"HTTP {exc.code}{detail}") from None
            raise IdeaGenerationError(
                f"{_endpoint(self._settings.url)} refused the request: HTTP {exc.code}{detail}"
                + (" (check TEAMU_LLM_API_KEY)" if exc.code in (401, 403) else "")
            ) from None
        except TimeoutError:
            raise _Retry(f"no answer within {self._settings.timeout_seconds:g} s") from None
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, TimeoutError):
                raise _Retry(f"no answer within {self._settings.timeout_seconds:g} s") from None
            raise _Retry(f"connection failed: {exc.reason}") from None
        except (ConnectionError, OSError, http.client.HTTPException) as exc:
            # HTTPException: a body cut short (IncompleteRead), a garbled status line.
            raise _Retry(f"connection failed: {type(exc).__name__}: {exc}") from None
        try:
            payload = json.loads(raw)
            message = payload["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError, RecursionError):
            raise _Retry("the response is not a chat completion (no choices[0].message.content)") from None
        if not isinstance(message, str):
            raise _Retry("the completion's content is not text")
        return message


def _error_detail(error: urllib.error.HTTPError, api_key: str | None) -> str:
    """The error message an OpenAI-compatible server puts in its body ({"error": {"message": ...}}), cut short,
    the key masked should the server quote it."""
    try:
        payload = json.loads(error.read(MAX_ERROR_BYTES) or b"{}")
    except (ValueError, OSError, RecursionError, http.client.HTTPException):
        return ""
    message = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(message, dict):
        message = message.get("message")
    if not isinstance(message, str) or not message:
        return ""
    if api_key:
        message = message.replace(api_key, "***")
    return f": {_clip(message, 200)}"


def generator_from_settings(settings: LanguageModelSettings | None) -> IdeaGenerator:
    """The endpoint's generator when TEAMU_LLM_URL is configured, else the offline one."""
    return OfflineGenerator() if settings is None else ChatCompletionsGenerator(settings)
