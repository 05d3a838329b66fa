"""The fixed vocabulary of the synthetic world: latent topics, the passions that point at them, the words
their texts are made of, and the real cities users cluster around."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    passions: tuple[str, ...]  # the profile passions a user interested in this topic picks from
    words: tuple[str, ...]  # what titles, descriptions, bios and comments of this topic talk about


@dataclass(frozen=True)
class City:
    name: str
    latitude: float
    longitude: float


TOPICS: tuple[Topic, ...] = (
    Topic(
        "technology",
        ("robotics", "ai", "coding", "electronics"),
        (
            "robot",
            "arduino",
            "sensor",
            "neural network",
            "python",
            "drone",
            "circuit",
            "firmware",
            "3d printer",
            "machine learning",
            "raspberry pi",
            "automation",
        ),
    ),
    Topic(
        "climate",
        ("climate", "sustainability", "gardening", "recycling"),
        (
            "solar panel",
            "compost",
            "carbon",
            "rainwater",
            "urban garden",
            "tree planting",
            "upcycling",
            "bike lane",
            "zero waste",
            "seed library",
            "wind turbine",
            "beach cleanup",
        ),
    ),
    Topic(
        "music",
        ("music", "guitar", "singing", "djing"),
        (
            "album",
            "synth",
            "chord",
            "vinyl",
            "choir",
            "beat",
            "melody",
            "jam session",
            "open mic",
            "drum kit",
            "songwriting",
            "playlist",
        ),
    ),
    Topic(
        "visual arts",
        ("painting", "drawing", "photography", "design"),
        (
            "canvas",
            "sketchbook",
            "watercolor",
            "mural",
            "portrait",
            "typography",
            "film camera",
            "gallery",
            "illustration",
            "poster",
            "darkroom",
            "ceramics",
        ),
    ),
    Topic(
        "sports",
        ("football", "basketball", "running", "cycling"),
        (
            "marathon",
            "pickup game",
            "training plan",
            "league",
            "sprint",
            "road bike",
            "tournament",
            "coach",
            "5k",
            "court",
            "stadium",
            "team jersey",
        ),
    ),
    Topic(
        "food",
        ("cooking", "baking", "vegan food", "coffee"),
        (
            "sourdough",
            "recipe",
            "espresso",
            "kimchi",
            "pasta",
            "farmers market",
            "spice",
            "pop-up dinner",
            "cookbook",
            "fermentation",
            "pastry",
            "food truck",
        ),
    ),
    Topic(
        "entrepreneurship",
        ("startups", "entrepreneurship", "marketing", "investing"),
        (
            "pitch deck",
            "cofounder",
            "mvp",
            "customer interview",
            "landing page",
            "seed round",
            "growth",
            "pricing",
            "side hustle",
            "business plan",
            "newsletter",
            "demo day",
        ),
    ),
    Topic(
        "gaming",
        ("gaming", "esports", "game design", "board games"),
        (
            "speedrun",
            "level editor",
            "pixel art",
            "tabletop",
            "lan party",
            "indie game",
            "controller",
            "dungeon",
            "game jam",
            "leaderboard",
            "mod",
            "dice",
        ),
    ),
    Topic(
        "writing",
        ("writing", "poetry", "books", "journalism"),
        (
            "short story",
            "novel",
            "zine",
            "book club",
            "haiku",
            "interview",
            "manuscript",
            "essay",
            "library",
            "fanfiction",
            "chapter",
            "reading list",
        ),
    ),
    Topic(
        "science",
        ("astronomy", "biology", "physics", "chemistry"),
        (
            "telescope",
            "microscope",
            "experiment",
            "lab notebook",
            "black hole",
            "dna",
            "particle",
            "meteor shower",
            "hypothesis",
            "fossil",
            "periodic table",
            "research poster",
        ),
    ),
    Topic(
        "community",
        ("volunteering", "education", "mentoring", "activism"),
        (
            "food bank",
            "tutoring",
            "fundraiser",
            "workshop",
            "petition",
            "neighborhood",
            "youth club",
            "clothing drive",
            "study group",
            "town hall",
            "mentor",
            "shelter",
        ),
    ),
    Topic(
        "film",
        ("film", "podcasting", "video editing", "theatre"),
        (
            "short film",
            "screenplay",
            "podcast episode",
            "storyboard",
            "rehearsal",
            "documentary",
            "microphone",
            "editing timeline",
            "casting call",
            "premiere",
            "stage",
            "vlog",
        ),
    ),
    Topic(
        "outdoors",
        ("hiking", "travel", "camping", "climbing"),
        (
            "trail",
            "backpack",
            "summit",
            "tent",
            "bouldering",
            "road trip",
            "national park",
            "kayak",
            "campfire",
            "hostel",
            "map",
            "sunrise hike",
        ),
    ),
    Topic(
        "wellness",
        ("fitness", "yoga", "meditation", "nutrition"),
        (
            "workout",
            "mindfulness",
            "stretching",
            "meal prep",
            "breathwork",
            "gym",
            "sleep",
            "journal",
            "retreat",
            "smoothie",
            "pilates",
            "habit tracker",
        ),
    ),
)

# Far enough apart that "within ~50 km" and "same city" mean the same thing.
CITIES: tuple[City, ...] = (
    City("San Francisco", 37.7749, -122.4194),
    City("New York", 40.7128, -74.0060),
    City("London", 51.5074, -0.1278),
    City("Berlin", 52.5200, 13.4050),
    City("Lagos", 6.5244, 3.3792),
    City("Bangalore", 12.9716, 77.5946),
    City("Sao Paulo", -23.5505, -46.6333),
    City("Sydney", -33.8688, 151.2093),
    City("Toronto", 43.6532, -79.3832),
    City("Nairobi", -1.2921, 36.8219),
)

TITLE_TEMPLATES: tuple[str, ...] = (
    "Building a {a} with a {b}",
    "Looking for teammates for a {a} project",
    "My first {a}",
    "Thoughts on {a} and {b}",
    "Show and tell: {a}",
    "Who wants to start a {a} group?",
    "Lessons from a year of {a}",
    "Help needed: {a} meets {b}",
)
LOCAL_TITLE_TEMPLATES: tuple[str, ...] = (
    "{a} meetup in {city} this weekend",
    "Anyone in {city} into {a}?",
    "{city} {a} session, all welcome",
)
DESCRIPTION_TEMPLATES: tuple[str, ...] = (
    "I have been working on a {a} and want feedback on the {b}.",
    "We are a small group into {a}; next up is a {b}.",
    "Sharing what I learned about {a}, {b} and {c}.",
    "Started with a {a}, ended up deep into {b}. Ask me anything about {c}.",
)
BIO_TEMPLATES: tuple[str, ...] = (
    "Into {p} and anything with a {a}.",
    "{p} person. Currently obsessed with {a} and {b}.",
    "Student who loves {p}; ask me about {a}.",
    "Weekends are for {p} and the occasional {a}.",
)
PROJECT_TEMPLATES: tuple[str, ...] = (
    "Open {a} kit",
    "{a} for beginners",
    "Community {a} map",
    "The {a} and {b} lab",
    "Tiny {a} project",
)
COMMENT_TEMPLATES: tuple[str, ...] = (
    "Love this {a}!",
    "How did you get started with the {a}?",
    "Count me in, I have a {a} too.",
    "Great post, the {a} part was really useful.",
    "Have you tried a {b} for this?",
)
USERNAME_WORDS: tuple[str, ...] = (
    "maker",
    "dreamer",
    "builder",
    "curious",
    "pixel",
    "river",
    "nova",
    "atlas",
    "echo",
    "maple",
    "orbit",
    "spark",
)
