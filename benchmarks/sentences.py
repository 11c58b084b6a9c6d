"""The prose sentence splitters on a hand-split gold set, and their throughput (docs/BENCHMARKS.md).

Gold: ``tests/data/sentences_gold.txt`` (paragraphs of the papers in ../shared/papers with abbreviations,
initials, decimals, "et al.", "Fig. 1", "e.g.", plus constructed general prose). A boundary is the offset
of a sentence end inside its whitespace-normalised paragraph; precision and recall are over all of them.
Throughput: every prose paragraph of the papers, split by each splitter in interleaved rounds.

    python -m benchmarks.sentences [--repeat 5] [--copies 4]
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

GOLD = Path(__file__).resolve().parents[1] / "tests" / "data" / "sentences_gold.txt"
PAPERS = Path(__file__).resolve().parents[2] / "shared" / "papers"  # ../shared/papers of the checkout
Split = Callable[[str], list[str]]


def read_gold(path: str | Path = GOLD) -> list[list[str]]:
    """Paragraphs as lists of sentences: blank lines separate paragraphs, ``#`` lines are comments."""
    paragraphs, current = [], []
    for line in Path(path).read_text(encoding="utf-8").splitlines() + [""]:
        if line.startswith("#"):
            continue
        if line.strip():
            current.append(line.strip())
        elif current:
            paragraphs.append(current)
            current = []
    return paragraphs


def boundaries(text: str, sentences: list[str]) -> set[int]:
    """End offsets in ``text`` of every sentence but the last (``sentences`` are its pieces, in order)."""
    ends, position = set(), 0
    for sentence in sentences:
        start = text.find(sentence, position)
        if start < 0:
            raise ValueError(f"splitter output {sentence[:60]!r} is not in the paragraph")
        position = start + len(sentence)
        ends.add(position)
    ends.discard(position)
    return ends


def score(split: Split, paragraphs: list[list[str]]) -> dict[str, float]:
    """Boundary precision, recall and F1 of ``split`` against the gold ``paragraphs``."""
    found = correct = expected = 0
    for gold in paragraphs:
        text = " ".join(gold)
        want, got = boundaries(text, gold), boundaries(text, split(text))
        found, correct, expected = found + len(got), correct + len(got & want), expected + len(want)
    precision, recall = correct / max(found, 1), correct / max(expected, 1)
    return {"precision": precision, "recall": recall, "f1": 2 * precision * recall / max(precision + recall, 1e-12),
            "boundaries": expected, "found": found, "correct": correct}


def errors(split: Split, paragraphs: list[list[str]], context: int = 30) -> list[str]:
    """Each wrong or missed boundary with the text around it, to read."""
    shown = []
    for gold in paragraphs:
        text = " ".join(gold)
        want, got = boundaries(text, gold), boundaries(text, split(text))
        for offset in sorted(want ^ got):
            kind = "false split" if offset in got else "missed"
            shown.append(f"{kind:>11}: {text[max(0, offset - context):offset]!r} | {text[offset:offset + 20]!r}")
    return shown


def splitters(folder: str) -> dict[str, Split]:
    from pipelines.sources.sentences import PunktSplitter, split_sentences

    return {"rules": split_sentences,
            "punkt (nltk english)": PunktSplitter(folder, abbreviations=(), join_lower=False),
            "punkt (project default)": PunktSplitter(folder)}


def prose(papers: Path = PAPERS) -> list[str]:
    """The prose paragraphs of the papers (lines of 200+ characters that are not tables)."""
    lines = [line.strip() for path in sorted(glob.glob(str(papers / "*.txt")))
             for line in Path(path).read_text(encoding="utf-8").splitlines()]
    return [line for line in lines if len(line) >= 200 and line.count("|") <= 2]


def throughput(contenders: dict[str, Split], texts: list[str], repeat: int) -> dict[str, tuple[float, int]]:
    """Median MB/s over ``repeat`` interleaved rounds, and the sentences found, per splitter."""
    size = sum(len(t.encode()) for t in texts)
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    counts: dict[str, int] = {}
    for split in contenders.values():
        split(texts[0])  # load the model outside the timing
    for _ in range(repeat):
        for name, split in contenders.items():
            started = time.perf_counter()
            counts[name] = sum(len(split(t)) for t in texts)
            rates[name].append(size / 1e6 / (time.perf_counter() - started))
    return {name: (statistics.median(r), counts[name]) for name, r in rates.items()}


def main(argv: list[str] | None = None) -> None:
    from pipelines.nltk_data import data_dir

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--copies", type=int, default=4, help="the papers' prose this many times per round")
    parser.add_argument("--papers", default=str(PAPERS), help="folder of the papers' text (throughput input)")
    parser.add_argument("--show-errors", action="store_true")
    args = parser.parse_args(argv)
    texts = prose(Path(args.papers)) * args.copies
    if not texts:
        parser.error(f"--papers {args.papers}: no prose paragraphs (*.txt) there")
    gold = read_gold()
    contenders = splitters(data_dir())
    print(f"gold: {len(gold)} paragraphs, {sum(map(len, gold))} sentences; machine: {os.cpu_count()} cores")
    print(f"{'splitter':<26}{'precision':>10}{'recall':>8}{'F1':>7}{'found':>7}{'correct':>9}")
    for name, split in contenders.items():
        s = score(split, gold)
        print(f"{name:<26}{s['precision']:>10.3f}{s['recall']:>8.3f}{s['f1']:>7.3f}{s['found']:>7}{s['correct']:>9}"
              f"  (of {s['boundaries']})")
        if args.show_errors:
            print("\n".join("    " + line for line in errors(split, gold)))
    print(f"throughput: {len(texts)} paragraphs, {sum(len(t.encode()) for t in texts) / 1e6:.2f} MB per round, "
          f"median of {args.repeat} interleaved rounds")
    results = throughput(contenders, texts, args.repeat)
    base = results["rules"][0]
    for name, (rate, sentences) in results.items():
        print(f"{name:<26}{rate:>8.2f} MB/s  {rate / base:>5.2f}x rules  {sentences} sentences")


if __name__ == "__main__":
    main()
