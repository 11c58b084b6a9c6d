"""WordNet keeps scene-graph hard negatives negative (UNIMO §2.1 "Text Rewriting", App. A).

Replacements chosen by embedding neighbours include synonyms and near-synonyms ("sofa" -> "couch", "puppy"
-> "dog", "big" -> "large"): a rewrite with one of them still describes the image, so as a hard negative it
teaches the model the wrong thing. ``WordNetFilter.refusal`` says why a replacement is not a negative:

- ``morphological``: a form of the original ("dogs", "holds", "wooden" for "wood"): the same WordNet base
  form, a derivationally related one or pertainym, or the word plus a derivational suffix;
- ``synonym``: the two share a synset in any of their senses (of the parts of speech the node kind has),
  or are listed together in ``SPATIAL_SYNONYMS`` (WordNet has no prepositions: "next to" / "beside");
- ``hypernym`` / ``hyponym``: the replacement is above / below the original within ``max_depth`` steps of
  WordNet's hypernym graph (adjectives: the ``similar_to`` and ``also_see`` links of their clusters); for
  objects and attributes, the same head word with or without modifiers ("young man" / "man"); for
  relations, the same relation without its verb ("sitting on" / "on").

Rare senses would refuse true negatives through the hypernym graph ("dog" is also slang for a man), so
there only a word's common senses count: those whose tagged frequency (WordNet's ``cntlist``) is at least
``min_sense_share`` of its most frequent sense's, the first sense always. Multi-word entries are looked
up whole ("tennis_racket"), else by what differs between the two ("sitting on" / "standing on":
"sitting" / "standing"; "looking at" / "watching": "looking" / "watching"). A gloss's genus counts as a
hypernym for objects and relations, not attributes (colour glosses name other colours). Pure logic over a loaded
WordNet (``pipelines.nltk_data.wordnet``), results cached per pair.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from pipelines.annotators.similar import variant_key
from schemas.stages import WordNetFilterConfig

REASONS = ("synonym", "hypernym", "hyponym", "morphological")
# Parts of speech a node kind is looked up as: objects are nouns, attributes adjectives (colours and
# materials are nouns too), relations verbs (and a few adjectives/adverbs: "near", "inside").
_POS = {"object": ("n",), "attribute": ("a", "n"), "relation": ("v", "r", "a")}  # "a": with satellites
# Spatial relations WordNet does not have (it has no prepositions): groups that say the same thing.
SPATIAL_SYNONYMS = (
    frozenset({"next to", "beside", "alongside", "by"}),
    frozenset({"under", "beneath", "below", "underneath"}),
    frozenset({"on", "on top of", "atop", "upon"}),
    frozenset({"in", "inside", "within", "inside of"}),
    frozenset({"near", "close to", "nearby"}),
    frozenset({"above", "over"}),
    frozenset({"behind", "in back of"}),
)
_SPATIAL = {phrase: group for group in SPATIAL_SYNONYMS for phrase in group}
_PARTICLES = frozenset("at on in to with of over from into onto by for up down off out across along".split())
_SUFFIXES = ("en", "y", "ish", "ed", "ing", "s", "es", "er", "ly", "ness")  # "wood" -> "wooden", "red" -> "reddish"


@dataclass(frozen=True)
class _Word:
    bases: frozenset[str]  # base forms ("holds" -> "hold")
    senses: frozenset  # common synsets
    synonyms: frozenset  # synsets for the synonym test
    derived: frozenset[str]  # lemma names derivationally related to, or pertainyms of, its common senses
    genus: frozenset[str]  # first content words of its common noun and verb senses' glosses
    ancestors: frozenset  # synsets above its common senses, up to max_depth


class WordNetFilter:
    """``refusal(kind, original, replacement)``: a reason of ``REASONS``, or None for a true replacement."""

    def __init__(self, wordnet, config: WordNetFilterConfig):
        self.wn, self.config = wordnet, config
        self.refusal = lru_cache(maxsize=None)(self._refusal)
        self._word = lru_cache(maxsize=None)(self._profile)
        self._bases = lru_cache(maxsize=None)(self._base_forms)
        self._counts: dict[str, int] | None = None

    def _refusal(self, kind: str, original: str, replacement: str) -> str | None:
        a, b = original.lower().split(), replacement.lower().split()
        if not a or not b or a == b:
            return "synonym" if a == b else None
        if variant_key(original) == variant_key(replacement):
            return "morphological"
        group = _SPATIAL.get(" ".join(a))
        if group is not None and " ".join(b) in group:
            return "synonym"
        pos = _POS.get(kind, ("n",))
        genus = kind != "attribute"  # "orange: round yellow to orange fruit", "brown: an orange of low brightness"
        whole = self._related("_".join(a), "_".join(b), pos, genus)
        if whole:
            return whole
        if kind in ("object", "attribute") and a[-1] == b[-1] and (a[-len(b):] == b or b[-len(a):] == a):
            return "hypernym" if len(b) < len(a) else "hyponym"  # the same head, with or without modifiers
        if kind == "relation" and self._verb_added(a, b):
            return "hypernym" if len(b) < len(a) else "hyponym"  # "sitting on" / "on": the verb dropped
        while len(a) > 1 and len(b) > 1 and a[0] == b[0]:  # "sitting on" / "standing on": what differs
            a, b = a[1:], b[1:]
        while len(a) > 1 and len(b) > 1 and a[-1] == b[-1]:
            a, b = a[:-1], b[:-1]
        if kind == "relation":  # "looking at" / "watching": the verbs
            a = a[:-1] if len(a) > 1 and a[-1] in _PARTICLES else a
            b = b[:-1] if len(b) > 1 and b[-1] in _PARTICLES else b
        if len(a) == 1 and len(b) == 1 and (a, b) != (original.lower().split(), replacement.lower().split()):
            return self._related(a[0], b[0], pos, genus)
        return None

    def _verb_added(self, a: list[str], b: list[str]) -> bool:
        """Whether one relation is the other with a verb before it ("on" / "sitting on"; not "of" / "to the
        left of")."""
        short, long = sorted((a, b), key=len)
        return len(long) == len(short) + 1 and long[1:] == short and self.wn.morphy(long[0], "v") is not None

    def _related(self, a: str, b: str, pos: tuple[str, ...], genus: bool = True) -> str | None:
        wa, wb = self._word(a, pos), self._word(b, pos)
        if wa.bases & wb.bases or _suffixed(wa.bases, wb.bases) or _suffixed(wb.bases, wa.bases):
            return "morphological"
        if wa.synonyms & wb.synonyms:
            return "synonym"
        if not wa.senses or not wb.senses:
            return None
        if wa.derived & wb.bases or wb.derived & wa.bases:
            return "morphological"
        if wb.senses & wa.ancestors or genus and wa.genus & wb.bases:
            return "hypernym"
        if wa.senses & wb.ancestors or genus and wb.genus & wa.bases:
            return "hyponym"
        return None

    def _profile(self, word: str, pos: tuple[str, ...]) -> _Word:
        """Everything a pair check needs of one word, computed once per word (a vocabulary has about 100k
        entries, each checked against a few dozen neighbours)."""
        senses = self._common_senses(word, pos)
        synonyms = senses | {s for p in pos if p in ("n", "a") for s in self.wn.synsets(word, pos=p)}
        derived = {other.name().lower() for synset in senses for lemma in synset.lemmas()
                   for other in lemma.derivationally_related_forms() + lemma.pertainyms()}
        genus = {w for synset in senses if synset.pos() in ("n", "v") for w in _genus_words(synset.definition())}
        return _Word(self._bases(word, pos), senses, frozenset(synonyms), frozenset(derived), frozenset(genus),
                     self._ancestors(senses))

    def _base_forms(self, word: str, pos: tuple[str, ...]) -> frozenset[str]:
        """WordNet base forms of ``word`` ("holds" -> "hold"); the word itself when it has none."""
        found = {base for p in pos if (base := self.wn.morphy(word, p))}
        return frozenset(found or {word})

    def _count(self, lemma) -> int:
        """``lemma.count()`` (its tagged frequency) from a table read once: nltk searches the file each time."""
        if self._counts is None:
            with self.wn.open("cntlist.rev") as f:
                self._counts = {key: int(count) for key, _, count in (line.split() for line in f if line.strip())}
        return self._counts.get(lemma.key(), 0)

    def _common_senses(self, word: str, pos: tuple[str, ...]) -> frozenset:
        """The synsets of ``word`` (of ``pos``) that are common enough to count, per part of speech. Every
        sense of a noun or adjective still counts for synonymy ("sea" is "ocean" in its second sense), but
        verbs share rare senses widely ("hold" and "throw" a party), so theirs do not."""
        kept = set()
        forms = self._bases(word, ("n", "v", "a", "r")) | {word}
        for p in pos:
            synsets = self.wn.synsets(word, pos=p)  # adjectives: head and satellite synsets
            if not synsets:
                continue
            counts = [max((self._count(lemma) for lemma in s.lemmas() if lemma.name().lower() in forms), default=0)
                      for s in synsets]
            floor = self.config.min_sense_share * max(counts)
            kept.update(
                s for i, (s, count) in enumerate(zip(synsets, counts, strict=True)) if i == 0 or count >= max(floor, 1)
            )
        return frozenset(kept)

    def _ancestors(self, senses: frozenset) -> frozenset:
        """Synsets up to ``max_depth`` steps above: hypernyms and instance hypernyms; for an adjective its
        cluster's head (a satellite's similar-to) and, one step only, its see-also adjectives."""
        found = {also for s in senses if s.pos() in ("a", "s") for also in s.also_sees()}
        frontier = set(senses)
        for _ in range(self.config.max_depth):
            frontier = {up for s in frontier for up in s.hypernyms() + s.instance_hypernyms()
                        + (s.similar_tos() if s.pos() == "s" else [])} - found
            if not frontier:
                break
            found |= frontier
        return frozenset(found)


def _suffixed(bases: frozenset[str], others: frozenset[str]) -> bool:
    """Whether one of ``others`` is one of ``bases`` plus a derivational suffix ("wood" + "en", "sun" + "ny")."""
    for base in bases:
        for other in others:
            rest = other[len(base):]
            if len(base) >= 3 and other.startswith(base) and (rest in _SUFFIXES or rest[1:] in _SUFFIXES
                                                              and rest[:1] == base[-1:]):
                return True
    return False


_GLOSS_SKIP = frozenset("a an the any of one or some".split())


def _genus_words(definition: str) -> list[str]:
    """The first three content words of a gloss: glosses are genus-and-difference definitions ("kitten:
    young domestic cat", "watch: look attentively"), and the genus is a hypernym the graph does not always
    have. Nouns and verbs only: adjective glosses are not built that way ("closed: not open")."""
    words = [w.strip(",;()").lower() for w in definition.split()]
    return [w for w in words if w not in _GLOSS_SKIP][:3]
