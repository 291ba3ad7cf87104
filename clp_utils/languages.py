"""Hindi and Persian retrieval sets from the committed sources, in the study's BEIR layout.

Two reading-comprehension releases become retrieval sets under ``data/<name>/`` as SQuADShifts
does (identical passages merge, answers kept, split by passage, passages without titles):

- ``hindi``: XQuAD's Hindi part (240 passages, 1,190 questions translated from SQuAD v1.1
  dev), a fifth of the BIG-bench set the study read before (MLQA Hindi could not be obtained).
- ``persian``: ParsiNLU reading comprehension, eval split (570 questions on 555 passages).

Python's ``\\w`` splits Devanagari words at every vowel sign and virama (Unicode Mn/Mc), so
BM25 on these sets cuts words with ``TOKEN_PATTERN`` instead.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable
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
    load_built,
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
    """Words of ``text`` by ``TOKEN_PATTERN``: ``words("हिन्दी भाषा, 2 kg")`` is
    ``['हिन्दी', 'भाषा', 'kg']`` (Devanagari words stay whole)."""
    return re.findall(TOKEN_PATTERN, text)


# --------------------------------------------------------------------------- the sets


def hindi_to_beir(raw: bytes, source: str) -> BeirTriple:
    """XQuAD Hindi (SQuAD JSON) -> (corpus, queries, qrels); query ids are XQuAD's (SQuAD's)."""
    return squad_to_beir(json.loads(raw), source, keep_titles=False)


def persian_to_beir(raw: bytes, source: str) -> BeirTriple:
    """ParsiNLU reading comprehension (JSONL: ``{"question", "passage", "answers": [[start,
    text], ...]}``) -> (corpus, queries, qrels), query ids ``fa<line index>``; a line without a
    passage, a question or an answer is a ``DataError`` naming the file and line."""
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


#: How each set's source becomes a retrieval set; a set's name is also its Snowball
#: (PyStemmer) language, for BM25.
DATASETS: dict[str, Converter] = {"hindi": hindi_to_beir, "persian": persian_to_beir}


def build(names: Iterable[str] = ("hindi", "persian"), out: Path = DATA_DIR,
          seed: int = DEFAULT_SEED, test_fraction: float = DEFAULT_TEST_FRACTION,
          sources_root: Path | None = None, force: bool = False) -> dict[str, dict]:
    """Build the named sets into ``<out>/<name>/``; returns ``{name: manifest entry}``, each
    also written to ``<out>/<name>/manifest.json`` as ``{name: entry}``."""
    names = list(names)
    unknown = set(names) - set(DATASETS)
    if unknown:
        raise ValueError(f"unknown multilingual sets {sorted(unknown)}; known: {list(DATASETS)}")
    out = Path(out)
    params = {"seed": seed, "test_fraction": test_fraction}
    manifest = {n: read_manifest(out, n) for n in names}
    for n in names:
        entry = build_one(n, DATASETS[n], out, params, manifest[n], sources_root, force)
        if entry is not None:
            manifest[n] = entry
            write_json(out / n / "manifest.json", {n: entry})
    return manifest


def read_manifest(out: Path, name: str) -> dict:
    """The last build's manifest entry of set ``name`` under ``out`` (empty when unbuilt)."""
    path = out / name / "manifest.json"
    return json.loads(path.read_text()).get(name, {}) if path.exists() else {}


def load(name: str, root: Path = DATA_DIR) -> RetrievalDataset:
    """Load a built multilingual set; an unknown name is a ``ValueError`` listing every name
    the configs know, an unbuilt set a ``FileNotFoundError``."""
    if name not in DATASETS:
        raise ValueError(
            f"unknown dataset {name!r}; known: SQuADShifts {list(SQUADSHIFTS)}, "
            f"multilingual {list(DATASETS)}, or 'miracl-<lang>' (hub)"
        )
    return load_built(Path(root) / name, name)

