"""UNIMO related items: the sparse inverted-index TF-IDF search of ``retrieval.related`` vs the obvious
baseline, scikit-learn's TfidfVectorizer with brute-force cosines to every document (a dense row of
scores per query, then its top M), on the same queries; both must return the same top lists.

Two workloads: related images (region labels of an OpenImages-sized 600-class vocabulary, 1-8 regions
per image, Zipf-distributed classes) and the related-texts candidate filter (14-word sentences over a
30k-word Zipf vocabulary less its 100 most frequent words, as stop words are dropped; TF-IDF top 1000).

    python -m benchmarks.related --images 100000 --texts 100000 --queries 500 --repeat 3

Build times are reported apart; the rounds time the searches.
"""

from __future__ import annotations

import argparse
import json

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


def same_scores(a, b) -> bool:
    """Equal top lists up to the order of equal scores."""
    return all(len(x) == len(y) and np.allclose([s for _, s in x], [s for _, s in y], atol=1e-9)
               for x, y in zip(a, b, strict=True))


def workload(name: str, documents: list[list[str]], queries: list[list[str]], top: int, repeat: int) -> dict:
    """Both sides built once (timed apart), then their searches in interleaved rounds."""
    import time

    from retrieval.related import TfidfIndex

    started = time.perf_counter()
    brute = BruteForce(documents)
    brute_build = time.perf_counter() - started
    started = time.perf_counter()
    index = TfidfIndex(documents)
    index_build = time.perf_counter() - started
    checked = same_scores(index.search(queries, top), brute.search(queries, top))
    names = ("brute force (sklearn + dense cosines)", "inverted index (retrieval.related)")
    contenders = {names[0]: lambda _: len(brute.search(queries, top)),
                  names[1]: lambda _: len(index.search(queries, top))}
    rates = {c: median_rate(r) for c, r in interleaved(contenders, repeat, "/tmp/unicorpus-bench-related").items()}
    return {"workload": name, "documents": len(documents), "queries": len(queries), "top": top,
            "same_results": checked, "build_s": {names[0]: round(brute_build, 2), names[1]: round(index_build, 2)},
            "queries_per_s": {c: round(r, 1) for c, r in rates.items()},
            "ratio": round(rates[names[1]] / rates[names[0]], 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--texts", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stop-words", type=int, default=100, help="most frequent text terms dropped")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    images = zipf_documents(rng, args.images, 600, 1, 8, "class")
    texts = zipf_documents(rng, args.texts, 30_000, 14, 14, "w", stop=args.stop_words)
    image_picks = rng.choice(args.images, size=args.queries, replace=False)
    text_picks = rng.choice(args.texts, size=args.queries, replace=False)
    report = [workload("related images (top 100)", images, [images[i] for i in image_picks], 100, args.repeat),
              workload("related texts, TF-IDF filter (top 1000)", texts, [texts[i] for i in text_picks], 1000,
                       args.repeat)]
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
