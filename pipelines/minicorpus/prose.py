"""Plain English sentences from templates over the scene vocabulary.

Every sentence starts with a capital letter and ends with ``.``, ``!`` or ``?``; inside a sentence
the only ``". "`` follows a title abbreviation (``Dr.``, ``Mr.``, ``Mrs.``) and other dots are decimals
(``3.5``), so any splitter that knows those abbreviations finds exactly the generated sentences: the
expected counts of the text sources are the number of sentences written. No sentence ends in a
single letter or a number (initials and ordinals are where splitters legitimately differ). Given the
set of sentences written so far, ``sentence`` draws until it has a new one, so that text samples repeat
only where a copy is planted (exact text dedup).
"""

from __future__ import annotations

import random
import re

from pipelines.minicorpus.scenes import KIND_COLORS, KINDS, NUMBER_WORDS, article, plural

NAMES = ("Lee", "Patel", "Garcia", "Novak", "Okafor", "Smith", "Jensen", "Moreau", "Tanaka", "Rossi")
PLACES = ("the park", "the beach", "the village", "the old harbour", "the hill", "the market square",
          "the school yard", "the campsite")
TOWNS = ("Millbrook", "Ashford", "Cedar Falls", "Port Ellen", "Kingsbridge", "Oakridge", "Lowmoor")
WEATHER = ("sunny", "cloudy", "windy", "cold", "warm", "quiet")

# Templates with a title abbreviation; left out of the tokenised (lines) layout.
ABBREVIATED = (
    "Dr. {name} said that the {k1} was about {dec} meters tall.",
    "Mr. {name} painted the old {k1} {c1} before the winter came.",
    "Mrs. {name} counted {n} {k1s} and wrote the number in her notebook.",
    "Later that day Dr. {name} and Mr. {name2} carried the {k1} back to {place}.",
)
PLAIN = (
    "The {c1} {k1} stood next to the {c2} {k2} near {place}.",
    "Have you ever seen {a_c1} {k1} near {place}?",
    "What a lovely {k1} that was!",
    "Every morning the children walked past {nw} {k1s} on the way to {place}.",
    "In {year} the town of {town} bought a new {k1} for {dec} dollars.",
    "The weather was {weather}, so everyone stayed close to the {k1}.",
    "It was {dec} kilometers from the {k1} to {place}, and the road was quiet.",
    "Nobody knew why the {c1} {k1} had been left next to the {k2}.",
    "She smiled when the {c1} {k1} finally appeared behind the {k2}!",
    "Why would anyone put {a_c1} {k1} on top of {a_c2} {k2}?",
    "The {k1} near {place} is {dec} times larger than the one in {town}.",
    "The café near {place} sold {a_c1} {k1} to a tourist from {town}.",
    "Between {year} and {year2} the {k1s} of {town} were painted {c1}.",
    "A small {k1} can weigh as little as {dec} kilograms.",
)
TEMPLATES = PLAIN + ABBREVIATED


def _fill(rng: random.Random, template: str) -> str:
    k1, k2 = rng.sample(KINDS, 2)
    c1, c2 = rng.choice(KIND_COLORS[k1]), rng.choice(KIND_COLORS[k2])
    year = rng.randint(1890, 2020)
    values = {
        "k1": k1, "k2": k2, "c1": c1, "c2": c2, "k1s": plural(k1),
        "a_c1": f"{article(c1)} {c1}", "a_c2": f"{article(c2)} {c2}",
        "name": rng.choice(NAMES), "name2": rng.choice(NAMES), "place": rng.choice(PLACES),
        "town": rng.choice(TOWNS), "weather": rng.choice(WEATHER),
        "dec": f"{rng.randint(1, 40)}.{rng.randint(1, 9)}", "n": str(rng.randint(2, 99)),
        "nw": rng.choice(NUMBER_WORDS[2:]), "year": str(year), "year2": str(year + rng.randint(1, 30)),
    }
    return template.format(**values)


def normalise(text: str) -> str:
    """A sentence as exact text dedup compares it: stripped, white space collapsed, casefolded."""
    return " ".join(text.split()).casefold()


def sentence(rng: random.Random, abbreviations: bool = True, seen: set[str] | None = None) -> str:
    """A sentence from the templates; with ``seen`` (normalised sentences so far, updated), a new one."""
    for _ in range(_TRIES):
        text = _fill(rng, rng.choice(TEMPLATES if abbreviations else PLAIN))
        if seen is None:
            return text
        if normalise(text) not in seen:
            seen.add(normalise(text))
            return text
    raise RuntimeError(f"no new sentence in {_TRIES} draws: the templates are exhausted")


_TRIES = 1000


def paragraph(rng: random.Random, low: int = 1, high: int = 4, seen: set[str] | None = None) -> list[str]:
    """The sentences of one paragraph (join them with a space to write it)."""
    return [sentence(rng, seen=seen) for _ in range(rng.randint(low, high))]


def title(rng: random.Random) -> str:
    kind = rng.choice(KINDS)
    return f"{rng.choice(KIND_COLORS[kind]).capitalize()} {kind} of {rng.choice(TOWNS)}"


_PUNCT = re.compile(r"([,!?]|\.$)")


def tokenised(text: str) -> str:
    """BookCorpus ``books_large_p*.txt`` style: lower case, punctuation split off by spaces."""
    return " ".join(_PUNCT.sub(r" \1 ", text.lower()).split())
