"""UNIMO related items: the sharded sparse TF-IDF search of ``retrieval.tfidf`` (the collection as shard
files, loaded one at a time, each searched through its inverted index and merged into every query's top k)
vs the obvious baseline, scikit-learn's TfidfVectorizer fitted on the whole collection with brute-force
cosines to every document (a dense row of scores per query, then its top k): what every worker held before.

Two workloads: related images (region labels of an OpenImages-sized 600-class vocabulary, 1-8 regions
per image, Zipf-distributed classes) and the related-texts candidate filter (14-word sentences over a
30k-word Zipf vocabulary less its 100 most frequent words, as stop words are dropped; TF-IDF top 1000).
Beside them, the term-partitioned postings (``retrieval.postings``) the retrieve stage searches, exact and
with each ``--caps`` entry. Reported per collection size: queries/s (median of interleaved rounds), build time,
the peak memory of one worker's setup + search (tracemalloc: what numpy, scipy and Python allocate),
recall@k against brute force, and the entries an exact search scores per query (the document counts of its
terms: how its work grows with the collection). ``--workloads`` runs one of the two alone.

    python -m benchmarks.related --sizes 10000 100000 --shards 16 --queries 300 --repeat 3 --caps none 1000
    python -m benchmarks.related --workloads images --sizes 100000 1000000 --shards 64 --queries 300 --repeat 1
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import pickle
from functools import cached_property

import numpy as np

from benchmarks.rounds import interleaved, median_rate


def zipf_documents(rng: np.random.Generator, count: int, vocabulary: int, low: int, high: int, prefix: str,
                   stop: int = 0) -> list[list[str]]:
    """Documents of ``low``-``high`` Zipf-drawn terms; the ``stop`` most frequent ones dropped afterwards
    (what ``text_terms`` does with English stop words)."""
    weights = 1.0 / np.arange(1, vocabulary + 1) ** 1.1
    weights /= weights.sum()
    sizes = rng.integers(low, high + 1, size=count)
    words = rng.choice(vocabulary, size=int(sizes.sum()), p=weights)
    out, start = [], 0
    for size in sizes:
        out.append([f"{prefix}{w}" for w in words[start:start + size] if w >= stop])
        start += size
    return out


class BruteForce:
    """TfidfVectorizer (the same TF-IDF: raw counts, smooth idf, l2) and dense cosines to every document."""

    def __init__(self, documents: list[list[str]]):
        from sklearn.feature_extraction.text import TfidfVectorizer

        self.vectorizer = TfidfVectorizer(analyzer=lambda terms: terms)
        self.matrix_t = self.vectorizer.fit_transform(documents).T.tocsr()

    def search(self, queries: list[list[str]], top: int, batch: int = 100) -> list[list[tuple[int, float]]]:
        query_matrix = self.vectorizer.transform(queries)
        out = []
        for start in range(0, len(queries), batch):
            scores = (query_matrix[start:start + batch] @ self.matrix_t).toarray()  # one score per document
            for row in scores:
                best = np.argpartition(-row, min(top, len(row) - 1))[:top]
                best = best[row[best] > 0]
                out.append(
                    sorted(zip(best.tolist(), row[best].tolist(), strict=True), key=lambda hit: (-hit[1], hit[0]))
                )
        return out


def recall(found: list[list[tuple[int, float]]], truth: list[list[tuple[int, float]]]) -> float:
    """Of brute force's top k, the share also found (a tie at the k-th score may be either document)."""
    hit = total = 0
    for ours, theirs in zip(found, truth, strict=True):
        cut = theirs[-1][1] if theirs else 0.0
        ids = {i for i, _ in ours}
        hit += sum(i in ids or abs(s - cut) < 1e-12 for i, s in theirs)
        total += len(theirs)
    return hit / max(1, total)


def _terms(document: list[str]) -> list[str]:
    return document


class Sharded:
    """The collection as ``shards`` files under ``folder``, searched one loaded shard at a time."""

    def __init__(self, documents: list[list[str]], shards: int, folder: str):
        from retrieval.tfidf import CollectionShard, document_frequencies, shard_bytes

        self.frequencies = os.path.join(folder, "frequencies.pkl")
        with open(self.frequencies, "wb") as f:
            pickle.dump(document_frequencies(documents, _terms), f)
        self.setup()
        bounds = np.linspace(0, len(documents), shards + 1).astype(int)
        self.paths = [os.path.join(folder, f"{i:05d}.npz") for i in range(shards)]
        for path, (a, b) in zip(self.paths, itertools.pairwise(bounds), strict=True):
            matrix = self.vectorizer.transform(documents[a:b])
            with open(path, "wb") as f:
                f.write(shard_bytes(CollectionShard(matrix, {"position": list(range(a, b))})))

    def setup(self) -> None:
        """What a worker holds for the whole run: the vectorizer (the collection's vocabulary and idf)."""
        from retrieval.tfidf import TfidfVectorizer

        with open(self.frequencies, "rb") as f:
            self.vectorizer = TfidfVectorizer(pickle.load(f), _terms)

    def load(self, position: int):
        from retrieval.tfidf import shard_from_bytes

        with open(self.paths[position], "rb") as f:
            return shard_from_bytes(f.read())

    def search(self, queries: list[list[str]], top: int) -> list[list[tuple[int, float]]]:
        from retrieval.tfidf import gather, search

        found = search(self.vectorizer.transform(queries), (self.load(p) for p in range(len(self.paths))), top)
        gathered = gather(found, self.load)
        return [list(zip(gathered.column("position", hits.ties), hits.scores.tolist(), strict=True))
                for hits in found]


class Postings(Sharded):
    """The same shard files with their term-partitioned postings and row store on disk
    (``retrieval.postings``), ``cap`` entries per term (None: all): a search reads its queries' terms' lists."""

    def __init__(self, documents: list[list[str]], shards: int, folder: str, cap: int | None):
        from retrieval.postings import index_files

        os.makedirs(folder, exist_ok=True)
        super().__init__(documents, shards, folder)
        self.folder, self.cap = folder, cap
        files = index_files([self.load(p) for p in range(len(self.paths))], cap, len(self.vectorizer.vocabulary))
        for name, data in files.items():
            os.makedirs(os.path.dirname(os.path.join(folder, name)), exist_ok=True)
            with open(os.path.join(folder, name), "wb") as f:
                f.write(data)

    def setup(self) -> None:
        super().setup()
        self.__dict__.pop("index", None)  # a fresh worker opens the index again

    @cached_property
    def index(self):
        from retrieval.postings import PostingsIndex

        return PostingsIndex(lambda name: open(os.path.join(self.folder, name), "rb"),
                             lambda position: open(os.path.join(self.folder, f"rows/{position:05d}"), "rb"))

    def search(self, queries: list[list[str]], top: int) -> list[list[tuple[int, float]]]:
        found = self.index.scored(self.vectorizer.transform(queries), top)
        gathered = self.index.gather(found, ["position"])
        return [list(zip(gathered.column("position", hits.ties), hits.scores.tolist(), strict=True))
                for hits in found]


def peak_mb(run) -> float:
    """The peak of what ``run()`` allocates (numpy and scipy buffers included), in MB."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 1e6


def workload(name: str, documents: list[list[str]], queries: list[list[str]], top: int, repeat: int, shards: int,
             work: str, caps: list[int | None]) -> dict:
    """Every side built once (timed apart), then their searches in interleaved rounds; then each worker's
    setup + search once more under tracemalloc (the brute-force worker fits the whole collection; the scan
    reads the frequencies' vocabulary and one shard file at a time; the postings, its queries' terms' lists
    and its hits' rows, for each of ``caps``)."""
    import time

    import sklearn.feature_extraction.text  # noqa: F401  (imported before the build is timed)

    started = time.perf_counter()
    brute = BruteForce(documents)
    brute_build = time.perf_counter() - started
    started = time.perf_counter()
    ours = Sharded(documents, shards, work)
    ours_build = time.perf_counter() - started
    truth = brute.search(queries, top)
    sides = {"brute force (sklearn + dense cosines)": brute,
             f"sharded scan (retrieval.tfidf, {shards} shard files)": ours}
    builds = {"brute force (sklearn + dense cosines)": brute_build, f"sharded scan (retrieval.tfidf, {shards} "
              "shard files)": ours_build}
    for cap in caps:
        started = time.perf_counter()
        label = f"postings (retrieval.postings, {'exact' if cap is None else f'cap {cap}'})"
        sides[label] = Postings(documents, shards, os.path.join(work, f"postings-{cap}"), cap)
        builds[label] = time.perf_counter() - started
    contenders = {label: lambda _, side=side: len(side.search(queries, top)) for label, side in sides.items()}
    rates = {c: median_rate(r) for c, r in interleaved(contenders, repeat, os.path.join(work, "rounds")).items()}
    memory = {label: peak_mb(lambda side=side: (side.setup(), side.search(queries, top)))
              for label, side in sides.items() if side is not brute}
    memory["brute force (sklearn + dense cosines)"] = peak_mb(lambda: BruteForce(documents).search(queries, top))
    first = next(iter(sides))
    query_terms = brute.vectorizer.transform(queries)
    query_terms.data[:] = 1
    entries = query_terms @ np.diff(brute.matrix_t.indptr)  # what an exact search scores: its terms' lists
    return {"workload": name, "documents": len(documents), "queries": len(queries), "top": top,
            "exact_entries_per_query": round(float(entries.mean())),
            f"recall@{top}": {label: round(recall(side.search(queries, top), truth), 4)
                              for label, side in sides.items() if side is not brute},
            "build_s": {c: round(b, 2) for c, b in builds.items()},
            "queries_per_s": {c: round(r, 1) for c, r in rates.items()},
            "peak_mb": {c: round(m, 1) for c, m in memory.items()},
            "ratio_to_brute_force": {c: round(r / rates[first], 2) for c, r in rates.items() if c != first}}


def main(argv: list[str] | None = None) -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000], help="collection sizes")
    parser.add_argument("--shards", type=int, default=16, help="shard files per collection")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stop-words", type=int, default=100, help="most frequent text terms dropped")
    parser.add_argument("--caps", nargs="+", default=["none"], help="postings caps measured (none: exact)")
    parser.add_argument("--workloads", nargs="+", choices=["images", "texts"], default=["images", "texts"])
    args = parser.parse_args(argv)
    report = []
    for size in args.sizes:
        rng = np.random.default_rng(0)
        images = zipf_documents(rng, size, 600, 1, 8, "class")
        texts = zipf_documents(rng, size, 30_000, 14, 14, "w", stop=args.stop_words)
        image_picks = rng.choice(size, size=args.queries, replace=False)
        text_picks = rng.choice(size, size=args.queries, replace=False)
        for kind, name, docs, picks, top in (
                ("images", "related images (top 100)", images, image_picks, 100),
                ("texts", "related texts, TF-IDF filter (top 1000)", texts, text_picks, 1000)):
            if kind not in args.workloads:
                continue
            with tempfile.TemporaryDirectory() as work:
                report.append(workload(name, docs, [docs[i] for i in picks], top, args.repeat, args.shards, work,
                                       [None if cap == "none" else int(cap) for cap in args.caps]))
            print(json.dumps(report[-1]), flush=True)


if __name__ == "__main__":
    main()
