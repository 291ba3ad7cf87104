"""Hindi and Persian retrieval sets from the committed sources, in the study's BEIR layout.

Two reading-comprehension releases in ``data/sources/`` (``clp_utils.sources``) become
retrieval sets the same way SQuADShifts does: identical passages merge, every question keeps
its answer strings, the split is by passage (``data.split_by_passage``) and ``load(name)``
returns a ``RetrievalDataset``::

    data/<name>/corpus.jsonl, queries.jsonl, qrels/{train,test}.tsv, manifest.json

- ``hindi``: XQuAD's Hindi part (``xquad.hi.json``, SQuAD JSON: 240 passages, 1,190
  questions, professional translations of SQuAD v1.1 dev paragraphs). The study read
  BIG-bench's ``hindi_question_answering`` before (6,610 questions, MLQA Hindi included); MLQA
  Hindi could not be obtained, so this set is a fifth of that size.
- ``persian``: ParsiNLU reading comprehension, eval split (``eval.jsonl``: one
  ``{"question", "url", "passage", "answers": [[start, text], ...]}`` per line, 570
  questions on 555 distinct passages).

Passages embed their text alone (no titles).

Python's ``\\w`` is not a word character class for Devanagari: vowel signs and the virama
(Unicode categories Mn/Mc) are not ``\\w``, so ``re.findall(r"\\w+", "हिन्दी")`` cuts the
word into pieces. Nothing here splits on ``\\w``; ``TOKEN_PATTERN`` is a word pattern that
keeps combining marks inside words, and BM25 on these sets uses it
(``evaluation.bm25(..., token_pattern=TOKEN_PATTERN)``; bm25s' default ``\\b\\w\\w+\\b`` would
reduce Hindi words to fragments).

``python -m clp_utils.languages build`` builds both sets (``make data`` does it too). This is
the data layer: it imports no experiment module.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from clp_utils.base.io import DataError, write_json
from clp_utils.base.paths import DATA_DIR
from clp_utils.data import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    SQUADSHIFTS,
    BeirTriple,
    Converter,
    RetrievalDataset,
    build_one,
    load_beir,
    squad_to_beir,
)

# --------------------------------------------------------------------------- words

# Every combining mark of the Basic Multilingual Plane: Devanagari vowel signs, virama,
# nukta, anusvara; Arabic harakat.
_MARKS = "".join(
    chr(c) for c in range(0x300, 0x10000) if unicodedata.category(chr(c)) in ("Mn", "Mc", "Me")
)
#: A word: a letter or digit, then letters, digits, combining marks or ZWJ (two or more code
#: points, as bm25s' default keeps words of two or more characters). ZWJ (U+200D) stays
#: inside: it shapes Devanagari conjuncts. The zero-width NON-joiner (U+200C) splits, as in
#: bm25s' default, because in Persian it separates morphemes (the verbal prefix mi-, the
#: plural -ha) that should match on their own.
TOKEN_PATTERN = f"[^\\W_](?:[^\\W_]|[{_MARKS}\u200d])+"


def words(text: str) -> list[str]:
    """Words of ``text`` by ``TOKEN_PATTERN`` (Devanagari words stay whole).

    Example:
        >>> words("हिन्दी भाषा, 2 kg")
        ['हिन्दी', 'भाषा', 'kg']
    """
    return re.findall(TOKEN_PATTERN, text)


# --------------------------------------------------------------------------- the sets


def hindi_to_beir(raw: bytes, source: str) -> BeirTriple:
    """XQuAD Hindi (SQuAD JSON) -> (corpus, queries, qrels); query ids are XQuAD's (SQuAD's)."""
    return squad_to_beir(json.loads(raw), source, keep_titles=False)


def persian_to_beir(raw: bytes, source: str) -> BeirTriple:
    """ParsiNLU reading comprehension (JSONL) -> (corpus, queries, qrels).

    Each line becomes one SQuAD paragraph with its one question (id ``fa<line index>``), and
    ``squad_to_beir`` does the rest (identical passages merge, answers deduplicated). A line
    without a passage, a question or an answer is a ``DataError`` naming the file and line.
    """
    paragraphs = []
    for i, line in enumerate(raw.decode("utf-8").splitlines()):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            passage, question = row["passage"].strip(), row["question"].strip()
            answers = [a[1].strip() for a in row["answers"] if a[1].strip()]
        except (json.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as err:
            raise DataError(f"{source}:{i + 1}: not a ParsiNLU row ({err!r})") from None
        if not (passage and question and answers):
            raise DataError(f"{source}:{i + 1}: empty passage, question or answers")
        paragraphs.append({"context": passage, "qas": [
            {"id": f"fa{i:05d}", "question": question, "answers": [{"text": t} for t in answers]}]})
    return squad_to_beir({"data": [{"title": "", "paragraphs": paragraphs}]}, source,
                         keep_titles=False)


@dataclass(frozen=True)
class Language:
    """One multilingual set: how its source becomes a retrieval set, and its BM25 stemmer."""

    convert: Converter
    language: str  # Snowball (PyStemmer) name, for BM25


DATASETS = {"hindi": Language(hindi_to_beir, "hindi"),
            "persian": Language(persian_to_beir, "persian")}


def build(
    names: Iterable[str] = ("hindi", "persian"),
    out: Path = DATA_DIR,
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    sources_root: Path | None = None,
    force: bool = False,
) -> dict[str, dict]:
    """Build the named sets into ``<out>/<name>/`` from the committed sources; idempotent.

    Returns ``{name: manifest entry}``, each shaped like SQuADShifts' (``source``,
    ``source_sha256``, ``params``, ``builder_version``, ``counts``, ``files``: sha256 of every
    written file, relative to ``out``). Each entry is also written to
    ``<out>/<name>/manifest.json`` as ``{name: entry}``.
    """
    names = list(names)
    unknown = set(names) - set(DATASETS)
    if unknown:
        raise ValueError(f"unknown multilingual sets {sorted(unknown)}; known: {list(DATASETS)}")
    out = Path(out)
    params = {"seed": seed, "test_fraction": test_fraction}
    manifest = {n: read_manifest(out, n) for n in names}
    for n in names:
        entry = build_one(n, DATASETS[n].convert, out, params, manifest[n], sources_root, force)
        if entry is not None:
            manifest[n] = entry
            write_json(out / n / "manifest.json", {n: entry})
    return manifest


def read_manifest(out: Path, name: str) -> dict:
    """The last build's manifest entry of set ``name`` under ``out`` (empty when unbuilt)."""
    path = out / name / "manifest.json"
    return json.loads(path.read_text()).get(name, {}) if path.exists() else {}


def load(name: str, root: Path = DATA_DIR) -> RetrievalDataset:
    """Load a built multilingual set (``hindi`` or ``persian``).

    Raises ``ValueError`` listing every dataset name the configs know for an unknown name,
    and ``FileNotFoundError`` naming the build command when the set is not built.
    """
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; known: SQuADShifts {list(SQUADSHIFTS)}, "
            f"multilingual {list(DATASETS)}, or 'miracl-<lang>' (hub)"
        )
    folder = Path(root) / name
    if not (folder / "corpus.jsonl").exists():
        raise FileNotFoundError(
            f"{folder} is not built yet: run `python -m clp_utils.catalog build` "
            "(or `python -m clp_utils.languages build`)"
        )
    return load_beir(folder, name=name, title_in_text=False)


def language(name: str) -> str:
    """The Snowball (PyStemmer) language of a multilingual set, for BM25."""
    return DATASETS[name].language


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    """``python -m clp_utils.languages build [--names hindi persian] [--force]``."""
    parser = argparse.ArgumentParser(
        prog="python -m clp_utils.languages", description=__doc__.split("\n")[0]
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build the Hindi and Persian sets in BEIR layout")
    b.add_argument("--names", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    b.add_argument("--out", type=Path, default=DATA_DIR)
    b.add_argument("--seed", type=int, default=DEFAULT_SEED)
    b.add_argument("--test-fraction", type=float, default=DEFAULT_TEST_FRACTION)
    b.add_argument("--force", action="store_true", help="rebuild even when up to date")
    args = parser.parse_args(argv)
    manifest = build(args.names, args.out, args.seed, args.test_fraction, force=args.force)
    json.dump({n: e["counts"] for n, e in manifest.items()}, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
