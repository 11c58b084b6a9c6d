"""Weak image-text alignment (mu-VLA): pairs made by retrieval for images and sentences that came unpaired.

- Weak pairs (mu-VLA §3.2, §4.1): an image's query is its object tags as one sequence, embedded with the
  same sentence-BERT model as the candidate sentences; its top K (K = 5; ablation 1 < 5 > 10) sentences
  by cosine similarity, with their scores.
- Phrase-region links (mu-VLA §3.3.2): each noun phrase of a retrieved sentence goes to the image region
  whose tag is most similar, with that similarity as the score (the masking probability of p-MRTC is
  proportional to it). Similarity is the cosine of sentence embeddings of phrase and label: on a hand
  check they matched phrases to tags far better than spaCy's small word vectors (ENVIRONMENT.md).

Pure numpy over ``retrieval.index`` search results: the retrieve stage and the service use it alike.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from retrieval.index import SearchIndex, search_many


def weak_pairs(query_keys: list[str], query_source: str, vectors: np.ndarray, indexes: list[SearchIndex],
               k: int = 5) -> list[list[dict]]:
    """Per query image (its tag-query vector a row of ``vectors``), its top ``k`` sentences over all
    ``indexes`` as LINKS rows, best first; fewer when the indexes hold fewer, none when they are empty."""
    if len(query_keys) != len(vectors):
        raise ValueError(f"{len(query_keys)} query keys for {len(vectors)} vectors")
    if not query_keys:
        return []
    hits = search_many(indexes, np.ascontiguousarray(vectors, dtype=np.float32), k)
    return [[{"query_key": key, "query_source": query_source, "rank": rank, "key": entry["key"],
              "source": entry["source"], "text_index": entry["text_index"], "text": entry["text"],
              "score": float(score), "query_text_index": None}
             for rank, (score, entry) in enumerate(found)]
            for key, found in zip(query_keys, hits, strict=True)]


def phrase_region_links(pairs: list[dict], phrases: Mapping[tuple[str, int], list[dict]],
                        labels: Mapping[str, list[str]],
                        encode: Callable[[list[str]], np.ndarray]) -> list[list[dict]]:
    """Per weak pair (a LINKS row: image ``query_key`` -> sentence ``key``/``text_index``), a PHRASE_REGIONS
    row for each noun phrase of the sentence (``phrases[(key, text_index)]``: ANN_PARSE phrase structs):
    the region (index into ``labels[image key]``, the image's region labels in ann/detect order) whose
    label is most similar, ties to the first; unlabelled regions are never linked. ``encode`` (normalised
    vectors) sees each distinct string once."""
    needed = {(pair["key"], pair["text_index"]) for pair in pairs}
    strings = sorted({p["text"] for ref in needed for p in phrases.get(ref, ())}
                     | {label for pair in pairs for label in labels.get(pair["query_key"], ()) if label})
    vectors = encode(strings) if strings else np.zeros((0, 0), dtype=np.float32)
    vector_of = {text: vectors[i] for i, text in enumerate(strings)}
    out = []
    for pair in pairs:
        image_labels = labels.get(pair["query_key"], [])
        usable = [i for i, label in enumerate(image_labels) if label]
        found = phrases.get((pair["key"], pair["text_index"]), [])
        if not usable or not found:
            out.append([])
            continue
        label_matrix = np.stack([vector_of[image_labels[i]] for i in usable])
        rows = []
        for phrase in found:
            similarity = label_matrix @ vector_of[phrase["text"]]
            best = int(np.argmax(similarity))
            region = usable[best]
            rows.append({"query_key": pair["query_key"], "query_source": pair["query_source"],
                         "key": pair["key"], "text_index": pair["text_index"], "phrase": phrase["text"],
                         "phrase_start": phrase["start"], "region": region, "region_label": image_labels[region],
                         "score": float(similarity[best])})
        out.append(rows)
    return out


class CachedEncoder:
    """``encode`` that remembers its vectors: region labels are a small vocabulary and noun phrases recur
    across a shard's retrieved sentences, so one job embeds each string once (the oldest are dropped beyond
    ``capacity``). Keep one per job: a vector's last bits depend on its batch."""

    def __init__(self, encode: Callable[[list[str]], np.ndarray], capacity: int = 100_000):
        self.encode, self.capacity = encode, capacity
        self.vectors: dict[str, np.ndarray] = {}

    def __call__(self, strings: list[str]) -> np.ndarray:
        if not strings:
            return self.encode([])
        new = list(dict.fromkeys(s for s in strings if s not in self.vectors))
        self.vectors.update(zip(new, self.encode(new), strict=True) if new else ())
        out = np.stack([self.vectors[s] for s in strings])
        while len(self.vectors) > self.capacity:  # oldest first, without listing every key each call
            del self.vectors[next(iter(self.vectors))]
        return out

