"""The WordNet filter of scene-graph hard negatives on the hand-labelled pairs (docs/BENCHMARKS.md).

Labelled set: ``tests/data/wordnet_pairs.tsv`` (kind, original, replacement, label). Without the filter
every replacement passes; with it, the share of each label that still passes is reported (goal: no
synonym passes, at most 5% of true negatives refused), per ``max_depth``. With ``--corpus`` (a built
corpus with ``ann/rewrite/_stats``), the same counts over its vocabulary's embedding neighbours.

Cost: ``--vocabulary N`` checks N WordNet nouns against 20 random others each (every word's profile
computed once, as in the stage), cold.

    python -m benchmarks.wordnet_filter [--depths 1 2 4 8 12] [--corpus demo-out/corpus] [--vocabulary 2000]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter
from pathlib import Path

from schemas import layout

PAIRS = Path(__file__).resolve().parents[1] / "tests" / "data" / "wordnet_pairs.tsv"
HELD_OUT = PAIRS.with_name("wordnet_pairs_heldout.tsv")  # labelled after the rules were settled on PAIRS
LABELS = ("negative", "synonym", "hypernym", "hyponym", "morphological")


def read_pairs(path: str | Path = PAIRS) -> list[tuple[str, str, str, str]]:
    """(kind, original, replacement, label) rows; ``#`` lines are comments."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip() and not line.startswith("#"):
            fields = line.split("\t")
            if len(fields) != 4 or fields[3] not in LABELS:
                raise ValueError(f"{path}:{number}: expected kind<TAB>original<TAB>replacement<TAB>label, got {line!r}")
            rows.append((fields[0], fields[1], fields[2], fields[3]))
    return rows


def evaluate(refuse, pairs) -> dict[str, dict[str, int]]:
    """Per label: how many pairs, and how many ``refuse(kind, original, replacement)`` let pass (None)."""
    table = {label: {"pairs": 0, "passed": 0} for label in LABELS}
    for kind, original, replacement, label in pairs:
        table[label]["pairs"] += 1
        table[label]["passed"] += refuse(kind, original, replacement) is None
    return table


def mistakes(refuse, pairs) -> list[str]:
    """Related pairs that pass and true negatives refused, to read."""
    shown = []
    for kind, original, replacement, label in pairs:
        reason = refuse(kind, original, replacement)
        if (label == "negative") != (reason is None):
            shown.append(f"{kind:<9} {original} -> {replacement}: labelled {label}, filter says {reason or 'pass'}")
    return shown


def corpus_counts(root: str) -> tuple[int, Counter]:
    """Neighbour pairs in a built corpus' similar-nodes statistic, and the filter's refusals by reason."""
    import glob
    import pickle

    from pipelines.annotators.scene_graph_rewrite import SimilarNodes

    pattern = f"{layout.stats(layout.ann('rewrite'))}/similar-*.pkl"
    paths = sorted(glob.glob(f"{root}/{pattern}"), key=os.path.getmtime)  # the last run's
    if not paths:
        raise SystemExit(f"{root}: no {pattern}; run `unicorpus annotate rewrite` first")
    with open(paths[-1], "rb") as f:
        nodes: SimilarNodes = pickle.load(f)
    refused = Counter(reason for by_entry in nodes.refused.values() for pairs in by_entry.values()
                      for _, reason in pairs)
    kept = sum(len(c) for by_entry in nodes.similar.values() for c in by_entry.values())
    return kept + sum(refused.values()), refused


def main(argv: list[str] | None = None) -> None:
    from pipelines.annotators.wordnet_filter import WordNetFilter
    from pipelines.nltk_data import data_dir, wordnet
    from schemas.stages import WordNetFilterConfig

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4, 8, 12])
    parser.add_argument("--vocabulary", type=int, default=0, help="time the filter on this many nouns x 20")
    parser.add_argument("--min-sense-share", type=float, default=WordNetFilterConfig.min_sense_share)
    parser.add_argument("--corpus", help="a built corpus folder, to count refusals among its neighbours")
    parser.add_argument("--pairs", default=str(PAIRS), help="labelled pairs (default: the tuning set; "
                        f"{HELD_OUT.name}: the held-out one)")
    parser.add_argument("--show-mistakes", action="store_true")
    args = parser.parse_args(argv)
    pairs = read_pairs(args.pairs)
    wn = wordnet(data_dir())
    counts = Counter(label for *_, label in pairs)
    print(f"{len(pairs)} labelled pairs: " + ", ".join(f"{label} {counts[label]}" for label in LABELS))
    print(f"{'filter':<22}" + "".join(f"{label + ' pass':>19}" for label in LABELS) + f"{'pairs/s':>10}")
    print(f"{'none':<22}" + "".join(f"{'100.0%':>19}" for _ in LABELS))
    for depth in args.depths:
        config = WordNetFilterConfig(max_depth=depth, min_sense_share=args.min_sense_share)
        refuse = WordNetFilter(wn, config).refusal
        started = time.perf_counter()
        table = evaluate(refuse, pairs)
        rate = len(pairs) / (time.perf_counter() - started)  # cold: every pair once, nothing cached yet
        cells = "".join(f"{t['passed'] / max(t['pairs'], 1):>12.1%} ({t['passed']:>3})" for t in table.values())
        print(f"{f'max_depth {depth}':<22}{cells}{rate:>10.0f}")
        if args.show_mistakes:
            print("\n".join("    " + line for line in mistakes(refuse, pairs)))
    if args.vocabulary:
        import random

        rng = random.Random(0)
        nouns = sorted({name for synset in wn.all_synsets("n") for name in synset.lemma_names()
                        if "_" not in name and name.islower()})
        words = rng.sample(nouns, args.vocabulary)
        checks = [(word, rng.choice(words)) for word in words for _ in range(20)]
        refuse = WordNetFilter(wn, WordNetFilterConfig(min_sense_share=args.min_sense_share)).refusal
        started = time.perf_counter()
        refused = sum(refuse("object", a, b) is not None for a, b in checks)
        seconds = time.perf_counter() - started
        print(f"{len(checks)} neighbour pairs of {len(words)} nouns: {seconds:.1f} s, {len(checks) / seconds:.0f} "
              f"pairs/s, {len(words) / seconds:.0f} words/s, {refused} refused")
    if args.corpus:
        total, refused = corpus_counts(args.corpus)
        print(f"{args.corpus}: {total} neighbour pairs examined, {sum(refused.values())} refused "
              f"({', '.join(f'{r} {n}' for r, n in sorted(refused.items())) or 'none'})")


if __name__ == "__main__":
    main()
