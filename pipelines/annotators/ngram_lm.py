"""A trigram language model of the corpus captions, to rank rewrites by fluency (UNIMO App. A "Data
Augmentations": rewritten captions are ranked by linguistic fluency, the top 100 kept).

Interpolated Kneser-Ney (Chen & Goodman 1998, fixed discount) over lowercased word tokens. Training is a
count of trigrams in buckets, in two keyed passes (``ngram_counts``: by context pair, then by middle word):
the rewrite stage merges each bucket in a worker of its own, which writes the bucket's arrays
(``write_part``); one step then appends the parts, one at a time, to the model's arrays, a file each
(``write_model``), and every rewrite worker memory-maps those: no process holds the counts or the model,
whatever the corpus' size. ``train`` does the same in memory, for
tests and small corpora. The probabilities are the same floats however the counts were bucketed (the same
operations in the same order as the formulas computed one at a time).
"""

from __future__ import annotations

import io
import json
import math
import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np

from pipelines.annotators.ngram_counts import (
    BITS,
    EOS,
    UNK,
    BigramPart,
    BigramShare,
    BucketCounts,
    Summing,
    TrigramPart,
    UnigramTotals,
    bigram_part,
    buckets_of,
    count_texts,
    pair_keys,
    trigram_part,
    trigrams,
    vocabulary_of,
    word_hash,
)

DISCOUNT = 0.75
MODEL_FILE, WORDS_FILE, PARTS = "model.v2.json", "words.npz", "parts"  # the model file is written last: the proof
OLD_MODEL_FILE = "model.json"  # a v1 model's proof (context pairs keyed by hash): not read; the model is built again
SECTIONS = TrigramPart.SECTIONS + BigramPart.SECTIONS  # the model's arrays, a file each; all int64 but the pairs'
_DTYPES = {name: np.uint64 if name == "pairs" else np.int64 for name in SECTIONS}


def train(texts: Iterable[str], discount: float = DISCOUNT, bits: int = BITS) -> NgramLM:
    """The model of ``texts`` without Beam (tests, notebooks, small corpora)."""
    combiner = Summing(BucketCounts)
    return model_of({b: combiner.extract_output(counts) for b, counts in count_texts(texts, bits).items()},
                    discount, bits)


def model_of(buckets: dict[int, BucketCounts], discount: float = DISCOUNT, bits: int = BITS) -> NgramLM:
    """The model of merged pair-bucket counts, in memory: both passes in a loop."""
    vocabulary = vocabulary_of(b.word_hashes() for b in buckets.values())
    trigram_parts, shares = {}, {}
    for bucket, counts in buckets.items():
        trigram_parts[bucket], mine = trigram_part(counts, vocabulary, bucket, bits)
        for middle, share in mine.items():
            shares.setdefault(middle, BigramShare()).absorb(share)
    shares = {middle: share.finish() for middle, share in shares.items()}
    bigram_parts = {middle: bigram_part(share, vocabulary, middle, bits) for middle, share in shares.items()}
    totals = UnigramTotals()
    for middle, part in bigram_parts.items():
        totals.add(middle, part.unigram_ids, part.unigram_cont, shares[middle].trigram_buckets)
    chunks: dict[str, list[np.ndarray]] = {name: [] for name in SECTIONS}
    for chunk in _chunks(totals, trigram_parts.__getitem__, bigram_parts.__getitem__, vocabulary, bits):
        for name, values in chunk.items():
            chunks[name].append(values)
    arrays = {name: np.concatenate([np.zeros(0, _DTYPES[name]), *found]).astype(_DTYPES[name], copy=False)
              for name, found in chunks.items()}
    return NgramLM(vocabulary, totals.dense(len(vocabulary)), arrays, discount, bits)


def _chunks(totals: UnigramTotals, trigram: Callable[[int], TrigramPart], bigram: Callable[[int], BigramPart],
            vocabulary: np.ndarray, bits: int) -> Iterator[dict[str, np.ndarray]]:
    """The model's arrays a bucket at a time, in bucket order (concatenated, each is sorted: a bucket is a
    range of pair hashes, of middle-word ids): the pair buckets' sections, trigram keys renumbered to the whole
    model's pairs; then the middle-word buckets', per-word counts zero for a bucket without a part (``<s>``
    or ``</s>`` alone)."""
    size, pairs_before = len(vocabulary), 0
    for bucket in sorted(totals.trigram_buckets):
        part = trigram(bucket)
        chunk = {name: getattr(part, name) for name in TrigramPart.SECTIONS}
        chunk["trigram_keys"] = chunk["trigram_keys"] + pairs_before * size
        pairs_before += len(part.pairs)
        yield chunk
    bounds = np.searchsorted(buckets_of(vocabulary, bits), np.arange((1 << bits) + 1)).tolist()
    for bucket in range(1 << bits):
        if bucket in totals.buckets:
            part = bigram(bucket)
            yield {name: getattr(part, name) for name in BigramPart.SECTIONS}
        else:
            words = np.zeros(bounds[bucket + 1] - bounds[bucket], dtype=np.int64)
            yield {"context2": words, "followers2": words}


class NgramLM:
    """Interpolated Kneser-Ney trigram model. The vocabulary is every word seen, ``</s>`` and ``<unk>``;
    for any context, ``prob`` sums to 1 over it. The lowest order interpolates the continuation
    distribution with the uniform one, so an unseen word gets a small, non-zero probability.

    Words are 64-bit hashes (``vocabulary_hashes``: sorted, a word's id its position); the counts are
    sorted numpy arrays (``Part.SECTIONS``, the buckets' concatenated; in memory or mapped from the
    stage's files) looked up by binary search."""

    def __init__(self, vocabulary: np.ndarray, unigram_cont: np.ndarray, arrays: dict[str, np.ndarray],
                 discount: float = DISCOUNT, bits: int = BITS):
        if not 0 < discount < 1:
            raise ValueError(f"discount: expected 0 < d < 1, got {discount}")
        self.vocabulary_hashes, self.unigram_cont, self.discount = vocabulary, unigram_cont, discount
        self.bits = bits  # of the pair buckets, in the pair keys
        for name in SECTIONS:
            setattr(self, name, arrays[name])
        self.eos, self.unk = (int(np.searchsorted(vocabulary, word_hash(w))) for w in (EOS, UNK))
        self.bigram_types = len(self.bigrams)
        self.seen_words = int(np.count_nonzero(unigram_cont))
        self.vocabulary_size = self.seen_words + int(unigram_cont[self.eos] == 0) + int(unigram_cont[self.unk] == 0)

    @classmethod
    def load(cls, folder: str, cache: str | None = None) -> NgramLM:
        """The model the stage wrote to ``folder`` (local or a URL: a remote one is copied once into
        ``cache``, as an index is), its arrays memory-mapped."""
        from retrieval import files

        proof = files.read_proof(folder, MODEL_FILE, "the n-gram model is built by `unicorpus annotate rewrite` "
                                                     "(its corpus statistics)")
        local = files.local_copy(folder, [*(f"{name}.bin" for name in SECTIONS), WORDS_FILE, MODEL_FILE], cache,
                                 proof)
        with np.load(os.path.join(local, WORDS_FILE)) as words:
            vocabulary, unigram_cont = words["vocabulary"], words["unigram_cont"]
        arrays = {name: files.mapped(os.path.join(local, f"{name}.bin"), _DTYPES[name]) for name in SECTIONS}
        meta = json.loads(proof)
        return cls(vocabulary, unigram_cont, arrays, meta["discount"], meta["bits"])

    def _ids(self, words: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(each word's hash, its id or -1)."""
        hashes = np.array([word_hash(word) for word in words], dtype=np.uint64)
        at = np.minimum(np.searchsorted(self.vocabulary_hashes, hashes), len(self.vocabulary_hashes) - 1)
        return hashes, np.where(self.vocabulary_hashes[at] == hashes, at, -1).astype(np.int64)

    def _p1(self, w: np.ndarray) -> np.ndarray:
        if not self.bigram_types:
            return np.full(len(w), 1.0 / self.vocabulary_size)
        d, total = self.discount, self.bigram_types
        seen = np.maximum(self.unigram_cont[w] - d, 0.0) / total
        return seen + d * self.seen_words / total / self.vocabulary_size

    def _p2(self, w: np.ndarray, v: np.ndarray) -> np.ndarray:
        known = v >= 0
        total = np.where(known, self.context2[np.maximum(v, 0)], 0)
        d, lower = self.discount, self._p1(w)
        size = len(self.vocabulary_hashes)
        seen = np.maximum(_found(self.bigrams, np.where(known, v * size + w, -1), self.bigram_cont) - d, 0.0) / \
            np.maximum(total, 1)
        interpolated = seen + d * self.followers2[np.maximum(v, 0)] / np.maximum(total, 1) * lower
        return np.where(total > 0, interpolated, lower)

    def probs(self, w: list[str], u: list[str], v: list[str]) -> np.ndarray:
        """P(w[i] | u[i] v[i]) for each i; words outside the vocabulary are ``<unk>``."""
        size = len(self.vocabulary_hashes)
        _, w_id = self._ids(w)
        w_id = np.where((w_id >= 0) & ((self.unigram_cont[np.maximum(w_id, 0)] > 0) | (w_id == self.eos)),
                        w_id, self.unk)
        (u_hash, u_id), (v_hash, v_id) = self._ids(u), self._ids(v)
        known = (u_id >= 0) & (v_id >= 0)
        keys = pair_keys(u_hash, v_hash, np.maximum(u_id, 0), np.maximum(v_id, 0), size, self.bits)
        at = np.where(known, _position(self.pairs, keys), -1)
        total = _take(self.context3, at)
        d, lower = self.discount, self._p2(w_id, v_id)
        seen = np.maximum(_found(self.trigram_keys, np.where(at >= 0, at * size + w_id, -1),
                                 self.trigram_counts) - d, 0.0) / np.maximum(total, 1)
        interpolated = seen + d * _take(self.followers3, at) / np.maximum(total, 1) * lower
        return np.where(total > 0, interpolated, lower)

    def prob(self, w: str, u: str, v: str) -> float:
        """P(w | u v); words outside the vocabulary are ``<unk>``."""
        return float(self.probs([w], [u], [v])[0])

    def score(self, text: str) -> float:
        """Average natural-log probability per token (words and ``</s>``): comparable across lengths."""
        return self.score_many([text])[0]

    def score_many(self, texts: list[str]) -> list[float]:
        """``score`` of each text, their trigrams' probabilities looked up together."""
        grams = [list(trigrams(text)) for text in texts]
        flat = [gram for each in grams for gram in each]
        probs = self.probs([g[2] for g in flat], [g[0] for g in flat], [g[1] for g in flat]).tolist()
        out, start = [], 0
        for each in grams:
            out.append(sum(math.log(p) for p in probs[start:start + len(each)]) / len(each))
            start += len(each)
        return out


# --- on disk: a part per bucket of each pass (written by the worker that merged it), then the model's arrays --


def _part_path(folder: str, kind: str, bucket: int) -> str:
    from pipelines import storage

    return storage.join(folder, PARTS, f"{kind}{bucket:05d}.bin")


def write_part(folder: str, bucket: int, part: TrigramPart | BigramPart) -> None:
    """One bucket's arrays as one file of 8-byte numbers under ``folder/parts``: a header (a bigram part's
    first word id, each section's length), then the sections."""
    from pipelines import storage

    sections = [getattr(part, name).view(np.int64) for name in part.SECTIONS]
    header = np.array([getattr(part, "first", 0), *map(len, sections)], dtype=np.int64)
    kind = "t" if isinstance(part, TrigramPart) else "b"
    storage.write_whole(_part_path(folder, kind, bucket), np.concatenate([header, *sections]).tobytes())


def _read_part(folder: str, bucket: int, cls: type) -> TrigramPart | BigramPart:
    from pipelines import storage

    data = np.frombuffer(storage.read_bytes(_part_path(folder, "t" if cls is TrigramPart else "b", bucket)),
                         dtype=np.int64)
    start, sections = 1 + len(cls.SECTIONS), {}
    for name, length in zip(cls.SECTIONS, data[1:start].tolist(), strict=True):
        sections[name], start = data[start:start + length].view(_DTYPES[name]), start + length
    if cls is TrigramPart:
        return TrigramPart(**sections)
    return BigramPart(first=int(data[0]), unigram_ids=data[:0], unigram_cont=data[:0], **sections)


def write_model(folder: str, vocabulary: np.ndarray, totals: UnigramTotals, discount: float, bits: int) -> None:
    """The model's arrays, a file each, appended to a part at a time (one part in memory), then the words'
    arrays, then the model file (last: a reader trusts the files it finds with it); the parts are removed."""
    from pipelines import storage

    targets = [storage.join(folder, f"{name}.bin") for name in SECTIONS]
    temporaries = [f"{target}.tmp-{uuid.uuid4().hex}" for target in targets]
    streams = dict(zip(SECTIONS, map(storage.create, temporaries), strict=True))
    try:
        for chunk in _chunks(totals, lambda b: _read_part(folder, b, TrigramPart),
                             lambda b: _read_part(folder, b, BigramPart), vocabulary, bits):
            for name, values in chunk.items():
                streams[name].write(values.astype(_DTYPES[name], copy=False).tobytes())
    finally:
        for stream in streams.values():
            stream.close()
    for tmp, target in zip(temporaries, targets, strict=True):
        storage.rename(tmp, target)
    buffer = io.BytesIO()
    np.savez(buffer, vocabulary=vocabulary, unigram_cont=totals.dense(len(vocabulary)))
    storage.write_whole(storage.join(folder, WORDS_FILE), buffer.getvalue())
    meta = {"discount": discount, "bits": bits, "build": uuid.uuid4().hex}
    storage.write_whole(storage.join(folder, MODEL_FILE), json.dumps(meta).encode())
    storage.delete(storage.glob(storage.join(folder, PARTS, "*")))


def _position(keys: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index of each ``wanted`` in sorted ``keys``, -1 where absent."""
    if not len(keys):
        return np.full(len(wanted), -1, dtype=np.int64)
    at = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return np.where(keys[at] == wanted, at, -1)


def _take(values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``values[at]``, 0 where ``at`` is -1."""
    return np.where(at >= 0, values[np.maximum(at, 0)], 0) if len(values) else np.zeros(len(at), dtype=np.int64)


def _found(keys: np.ndarray, wanted: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` at each ``wanted`` key of sorted ``keys``, 0 where absent."""
    return _take(values, _position(keys, wanted))
