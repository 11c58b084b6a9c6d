"""Noun phrases (mu-VLA §3.3.2) and scene graphs (UNIMO §2.1) of texts, from a spaCy dependency parse.

Pure functions over spaCy ``Doc``/``Token`` objects; spaCy itself is imported only to load a model.

Noun phrases: spaCy's noun chunks with their root and character offsets, less those rooted in a pronoun
("it", "who") or in the noun of a multi-word preposition ("front" of "in front of"): neither names a thing
a region could show.

Scene-graph conventions (the scene-graph rewriting stage replaces nodes by them):

- objects: one per head noun (NOUN or PROPN), in text order. ``name`` is the noun lower-cased;
  ``start``/``end`` are the noun's character span (``text[start:end]`` is the word to replace). Not objects:
  pronouns, nouns that modify another noun (compounds: "a tennis racket" is object ``racket`` with
  attribute ``tennis``), colour words before a noun, the noun of a multi-word preposition.
- attributes: the modifier words of an object, lower-cased, in text order, each a whole word of the text
  (find it case-insensitively): adjectival modifiers and their conjuncts ("a red and white bus"),
  compounds, numerals ("two dogs"), colour words before the noun whatever spaCy labels them, predicative
  adjectives ("the ball is red", "the kite is red and blue"). Degree adverbs ("very") are not kept.
- relations: (subject, relation, object), indices into objects; ``relation`` is lower-cased words of the text:
  - a verb with a subject and a direct object: "a dog chases a ball" -> (dog, chases, ball); the subject
    of a participle or relative clause is the noun it modifies: "a man riding a horse" -> (man, riding,
    horse), "a man who is riding a horse" -> the same; a particle stays with its verb ("picks up");
  - a passive agent: "a ball held by a man" -> (man, held, ball);
  - a preposition on a noun: "a ball on the grass" -> (ball, on, grass);
  - a preposition on a verb: the verb's subject, verb + preposition: "a dog sitting on a bench" -> (dog,
    sitting on, bench); on a copula the preposition alone: "the dog is on the grass", "there is a ball
    on the grass" -> (ball, on, grass);
  - multi-word prepositions: "next to", "close to", "in front of", "on top of", "in the middle of", "to the
    left of";
  - conjunctions: every conjunct of a subject or object takes part ("a dog and a cat are playing on the
    grass", "a man holding a bat and a ball"). A preposition after a conjunct stays with the noun spaCy
    attaches it to ("two dogs and a cat in front of a tent": the cat only).
  Not covered: pronoun subjects ("he rides a horse": no object, no relation), negation, clausal
  complements, and whatever the model mis-parses (en_core_web_sm reads "a fire hydrant close to a car"
  with "fire" as the head).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

from pipelines.sidecar_tables import ShardInput, sample_texts
from schemas.config_build import what_goes_in
from schemas.config_errors import ConfigError
from schemas.records import Reason, Reject

MODEL_KEY_NAME = "annotate.parse.model"
UNUSED_COMPONENTS = ("ner", "lemmatizer")  # not attribute_ruler: without it noun chunks come back empty

NOUNS = frozenset({"NOUN", "PROPN"})
COLOURS = frozenset({
    "red", "orange", "yellow", "green", "blue", "purple", "violet", "pink", "brown", "black", "white", "gray",
    "grey", "silver", "gold", "golden", "beige", "tan", "maroon", "navy", "turquoise", "teal",
})
COPULAS = frozenset({"is", "are", "was", "were", "be", "been", "being", "am", "'s", "'re", "'m"})
RELATIVE_PRONOUNS = frozenset({"that", "which", "who", "whom"})
# the noun of a multi-word preposition "P (the) NOUN of": in front of, on top of, in the middle of, ...
RELATIONAL_NOUNS = frozenset({"front", "top", "middle", "back", "side", "left", "right", "edge", "center", "centre",
                              "bottom", "rear"})
# the head word of "WORD to" prepositions: next to, close to, ...
PREPOSITION_HEADS = frozenset({"next", "close", "adjacent", "near"})
SUBJECTS = ("nsubj", "nsubjpass")


# --- model ------------------------------------------------------------------------------------------


def check_model(model: str) -> None:
    """Fail early, naming the key, unless ``model`` is an installed spaCy package or a model folder."""
    import spacy

    if not model or not (os.path.isdir(model) or spacy.util.is_package(model)):
        from schemas.stages import ParseConfig

        raise ConfigError(f"{MODEL_KEY_NAME}: {model!r} is neither an installed spaCy model package nor a model "
                          f"folder; {what_goes_in(ParseConfig, 'model')}")


def model_version(model: str) -> str:
    """The model's own version (a package's, or a folder's meta.json): part of the stage's parameters."""
    import spacy

    if os.path.isdir(model):
        return str(spacy.util.load_meta(os.path.join(model, "meta.json")).get("version", ""))
    return spacy.util.get_package_version(model) or ""


@lru_cache(maxsize=2)
def load_pipeline(model: str):
    """The spaCy pipeline without the components nothing here reads (named entities, lemmas); once per
    process (the stage runs a pipeline per source)."""
    import spacy

    check_model(model)
    spacy.prefer_gpu()
    return spacy.load(model, exclude=list(UNUSED_COMPONENTS))


# --- noun phrases -----------------------------------------------------------------------------------


def noun_phrases(doc) -> list[dict]:
    """spaCy noun chunks (mu-VLA §3.3.2) as ``{text, root, start, end}`` (character offsets)."""
    return [{"text": chunk.text, "root": chunk.root.text, "start": chunk.start_char, "end": chunk.end_char}
            for chunk in doc.noun_chunks
            if chunk.root.pos_ != "PRON" and not _in_multiword_preposition(chunk.root)]


# --- scene graph ------------------------------------------------------------------------------------


def scene_graph(doc) -> dict:
    """Objects with attributes and subject-relation-object triples (UNIMO §2.1); conventions above."""
    objects = [token for token in doc if _is_object(token)]
    index = {token.i: i for i, token in enumerate(objects)}
    attributes: dict[int, list] = {token.i: _modifiers(token) for token in objects}
    triples: set[tuple[int, int, str, int]] = set()  # (anchor token, subject, relation, object)
    for token in doc:
        if token.pos_ in ("VERB", "AUX"):
            for subject in _subjects(token, passive=True):
                if subject.i in attributes:
                    attributes[subject.i] += _predicative(token)
            triples |= {(token.i, s.i, rel, o.i) for s, rel, o in _verb_relations(token)}
        elif token.dep_ == "prep":
            triples |= {(token.i, s.i, rel, o.i) for s, rel, o in _preposition_relations(token)}
    relations = sorted((anchor, index[s], rel, index[o]) for anchor, s, rel, o in triples
                       if s in index and o in index and s != o)
    return {
        "objects": [{"name": token.lower_, "attributes": _words(attributes[token.i]), "start": token.idx,
                     "end": token.idx + len(token.text)} for token in objects],
        "relations": [{"subject": s, "relation": rel, "object": o} for _, s, rel, o in relations],
    }


def _is_object(token) -> bool:
    if token.pos_ not in NOUNS or _in_multiword_preposition(token):
        return False
    modifies_noun = token.head is not token and token.head.pos_ in NOUNS
    return not (modifies_noun and (token.dep_ == "compound" or _is_colour_modifier(token)))


def _is_colour_modifier(token) -> bool:
    return token.lower_ in COLOURS and token.i < token.head.i and token.dep_ not in ("det", "conj", "cc", "punct")


def _in_multiword_preposition(token) -> bool:
    """"front" in "in front of": a relational noun governed by a preposition and governing "of"."""
    return (token.lower_ in RELATIONAL_NOUNS and token.dep_ == "pobj" and token.head.dep_ == "prep"
            and _of(token) is not None)


def _of(token):
    return next((c for c in token.children if c.dep_ == "prep" and c.lower_ == "of"), None)


def _modifiers(noun) -> list:
    words = []
    for child in noun.children:
        if child.dep_ in ("amod", "nummod"):
            words += _with_conjuncts(child)
        elif child.dep_ == "compound" or _is_colour_modifier(child):
            words.append(child)
    return words


def _predicative(verb) -> list:
    """"the ball is red (and blue)": adjectival complements of the verb."""
    return [word for child in verb.children if child.dep_ == "acomp" for word in _with_conjuncts(child)
            if word.pos_ == "ADJ" or word.lower_ in COLOURS]


def _words(tokens) -> list[str]:
    seen: dict[int, str] = {token.i: token.lower_ for token in tokens}
    return [seen[i] for i in sorted(seen)]


def _with_conjuncts(token) -> list:
    """``token`` and its conjuncts ("a dog and a cat", "red and white"), in text order."""
    found = [token]
    for child in token.children:
        if child.dep_ == "conj" and child.pos_ == token.pos_:
            found += _with_conjuncts(child)
    return sorted(found, key=lambda t: t.i)


def _subjects(verb, passive: bool = False) -> list:
    """The nouns a verb is about: its subject (with conjuncts), the noun a participle or relative clause
    modifies, or the subject of the verb it is coordinated with; "there is X": X."""
    deps = SUBJECTS if passive else ("nsubj",)
    subjects = [c for c in verb.children if c.dep_ in deps]
    if any(s.dep_ == "nsubj" and s.pos_ == "PRON" and s.lower_ in RELATIVE_PRONOUNS for s in subjects) \
            and verb.dep_ == "relcl":
        return [verb.head]
    if any(c.dep_ == "expl" for c in verb.children):
        return [word for c in verb.children if c.dep_ == "attr" for word in _with_conjuncts(c)]
    if subjects:
        return [word for s in subjects for word in _with_conjuncts(s)]
    if verb.dep_ in ("acl", "relcl"):
        return [verb.head]
    if verb.dep_ in ("conj", "xcomp") and verb.head.pos_ in ("VERB", "AUX"):
        return _subjects(verb.head, passive)
    return []


def _verb_phrase(verb) -> str:
    return " ".join(t.lower_ for t in sorted([verb, *(c for c in verb.children if c.dep_ == "prt")],
                                             key=lambda t: t.i))


def _verb_relations(verb):
    """(subject, verb, direct object) and (agent, verb, passive subject) triples of one verb."""
    phrase = _verb_phrase(verb)
    objects = [word for c in verb.children if c.dep_ == "dobj" for word in _with_conjuncts(c)]
    for subject in _subjects(verb):
        for obj in objects:
            yield subject, phrase, obj
    agents = [word for c in verb.children if c.dep_ == "agent"
              for p in c.children if p.dep_ == "pobj" for word in _with_conjuncts(p)]
    patients = [c for c in verb.children if c.dep_ == "nsubjpass"] or ([verb.head] if verb.dep_ == "acl" else [])
    for agent in agents:
        for patient in patients:
            yield agent, phrase, patient


def _preposition_relations(prep):
    """(head, preposition, object) triples of one preposition; multi-word prepositions as one relation."""
    pobjs = [c for c in prep.children if c.dep_ == "pobj"]
    if not pobjs or (prep.lower_ == "of" and _in_multiword_preposition(prep.head)):
        return
    words, objects = [prep.lower_], [w for p in pobjs for w in _with_conjuncts(p)]
    if _in_multiword_preposition(pobjs[0]):  # in (the) front of X
        of = _of(pobjs[0])
        words = [t.lower_ for t in prep.doc[prep.i:of.i + 1]]
        objects = [w for c in of.children if c.dep_ == "pobj" for w in _with_conjuncts(c)]
    head = prep.head
    if head.lower_ in PREPOSITION_HEADS and head.dep_ in ("advmod", "amod", "prep") and prep.lower_ == "to":
        words, head = [head.lower_, *words], head.head  # next to X
    if head.pos_ in NOUNS:
        subjects = [head]
    elif head.pos_ in ("VERB", "AUX"):
        subjects = _subjects(head, passive=True)
        if head.lower_ not in COPULAS:
            words = [_verb_phrase(head), *words]
    else:
        return
    relation = " ".join(words)
    for subject in subjects:
        for obj in objects:
            yield subject, relation, obj


# --- rows and rejects -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """One text of a sample (``sidecar.sample_texts``): a caption or a sentence."""

    key: str
    index: int
    text: str


def text_problem(text: str, max_chars: int, where: str) -> tuple[Reason, str] | None:
    """Why a text is not used: empty, or longer than ``max_chars`` (the config key ``where``): refused, not cut."""
    if not text.strip():
        return Reason.EMPTY_TEXT, "empty or whitespace-only text"
    if len(text) > max_chars:
        return Reason.OVERLONG_TEXT, f"{len(text)} characters > {where} {max_chars}"
    return None


def location(text: Text) -> str:
    return f"{text.key}#text_index={text.index}"


def split_texts(
    shard: ShardInput, modalities: frozenset[str], max_chars: int, where: str
) -> tuple[list[Text], list[Reject]]:
    """The texts (``sample_texts``) of the shard's samples of ``modalities``: good ones, and rejects of the others."""
    good, rejects = [], []
    for row in shard.rows:
        if row["modality"] not in modalities:
            continue
        for index, text in sample_texts(row):
            item = Text(row["key"], index, text)
            problem = text_problem(text, max_chars, where)
            if problem:
                rejects.append(Reject(shard.source, location(item), problem[0], problem[1], item.key))
            else:
                good.append(item)
    return good, rejects


def parse_rows(nlp, source: str, texts: list[Text], batch_size: int) -> list[dict]:
    """ANN_PARSE rows of ``texts``, parsed in one ``nlp.pipe``."""
    return [{"key": text.key, "source": source, "text_index": text.index, "text": text.text,
             "noun_phrases": noun_phrases(doc), **scene_graph(doc)}
            for text, doc in zip(texts, nlp.pipe((t.text for t in texts), batch_size=batch_size), strict=True)]
