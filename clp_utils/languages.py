"""Hindi and Persian retrieval sets from the bigbench sdist, in the study's BEIR layout.

Two reading-comprehension tasks of the ``bigbench==1.0.0`` sdist (the one SQuADShifts comes
from) become retrieval sets the same way SQuADShifts does: identical passages merge, every
question keeps its answer strings, the split is by passage (``data.split_by_passage``) and
``load(name)`` returns a ``RetrievalDataset``::

    data/<name>/corpus.jsonl, queries.jsonl, qrels/{train,test}.tsv, manifest.json

- ``hindi``: ``hindi_question_answering/task.json``, 6,610 ``{"input", "target"}`` whose
  input is the context and the question joined in one string. ``split_question`` cuts it at
  the last sentence end before the question (the rule is in its docstring); inputs with no
  sentence end before the question are skipped and counted (``manifest["skipped"]``).
- ``persian``: ``parsinlu_reading_comprehension/task.json``, 518 inputs of the form
  ``passage: '...' question: '...'`` with a list of answers.

Passages embed their text alone (no titles). Neither task file states a licence; see
``data/README.md``.

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
import hashlib
import json
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from clp_utils.base.io import DataError, sha256_file, write_json
from clp_utils.base.paths import DATA_DIR
from clp_utils.data import (
    BIGBENCH,
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    SQUADSHIFTS,
    TASKS,
    RetrievalDataset,
    fetch_sdist,
    load_beir,
    read_members,
    split_by_passage,
    write_beir,
)

#: Bumped when the conversion rules change, so that a built set is rebuilt.
BUILDER_VERSION = 1

Converted = tuple[dict[str, dict], dict[str, dict], dict[str, dict[str, int]], int]


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


# --------------------------------------------------------------------------- Hindi

# A danda (U+0964), a double danda (U+0965) or an ASCII "|" typed as a danda ends a sentence
# wherever it stands; "?", "!" and "." only before whitespace (so "1.411", "U.S" and
# "रहेंगे.हालांकि" are no ends). Closing quotes/brackets and wiki citation marks ("[8]") that
# follow the mark belong to the sentence that ends.
_AFTER = r"[.…\"'”’»)\]]*(?:\[[^\[\]\s]{1,12}\])*"
_SENTENCE_END = re.compile(rf"(?:[।॥|]|[?!.](?={_AFTER}\s)){_AFTER}")
_TRAILING = set("।॥|?!.\"'”’») \t\r\n")
# What may precede a question but is not part of it: citation marks ("[26]", "[citation
# needed]", "[उद्धरण वांछित]", a broken "[64"), a literal "\n", a quote or bracket standing alone.
_LEADING = re.compile(r"^(?:\[[^\[\]]{1,30}\]|\[\d*(?=\s)|\\n|[\"'](?=\s)|[\s.,;:|)*])+")
#: Tokens after which "." abbreviates instead of ending a sentence: Latin letter names as
#: Hindi spells them (initials such as "ली एच. हैमिल्टन") and common titles. "आई" (the
#: letter I) is left out: it is also a verb ("came") that often ends a sentence.
ABBREVIATIONS = frozenset(
    "ए बी सी डी ई एफ जी एच जे के एल एम एन ओ पी क्यू आर एस टी यू वी डब्ल्यू एक्स वाई जेड ज़ेड "
    "डॉ मि श्री सं पृ पू सेंट प्रो Mr Mrs Ms Dr St Jr Sr vs".split()
)


def _is_letter(ch: str) -> bool:
    """A letter or a combining mark (a Devanagari vowel sign is part of its word)."""
    return ch.isalpha() or unicodedata.category(ch) in ("Mn", "Mc")


def _abbreviates(text: str, dot: int) -> bool:
    """True when the "." at ``dot`` is no sentence end: an ellipsis or an abbreviation.

    Abbreviations: a single Latin letter ("J."), one of ``ABBREVIATIONS`` ("एच.", "डॉ."), or
    a dotted run of short parts ("ई.पू.", "पी.एम.", "U.S."). A "." after a closing bracket
    ends a sentence, and so does one after a dotted token with a long part
    ("marthastewartflowers.com.") or digits ("88.7.").
    """
    if "." in (text[dot - 1 : dot], text[dot + 1 : dot + 2]):
        return True
    before = text[:dot].split()
    token = before[-1].lstrip("(\"'“‘[") if before else ""
    if not token or not _is_letter(token[-1]):
        return False

    def short(part: str) -> bool:
        return part in ABBREVIATIONS or (0 < len(part) <= 3 and all(map(_is_letter, part)))

    if "." in token:
        return all(short(p) for p in token.split("."))
    return (len(token) == 1 and token.isascii()) or token in ABBREVIATIONS


def split_question(text: str) -> tuple[str, str] | None:
    """Split a context-plus-question string into ``(passage, question)``, or ``None``.

    The rule (hindi_question_answering joins each context and its question in one string):

    1. The input's own end (trailing "?", "।", ".", closing quotes and spaces) is set aside, so
       the question's terminator is never taken for the boundary.
    2. A sentence ends at a danda "।", a double danda "॥" or a "|" used as a danda; or at "?",
       "!" or "." followed by whitespace (optionally after closing quotes or brackets and
       wiki citation marks such as "[8]"). A "." does not end a sentence in an ellipsis or
       after an abbreviation: a dotted run of short parts (ई.पू, U.S), a single Latin letter,
       or one of ``ABBREVIATIONS`` (Latin letters spelled in Devanagari, titles such as डॉ).
    3. The question is the text after the LAST sentence end (leading citation marks and
       stray punctuation removed); the passage is everything before, stripped.

    Returns ``None`` (the caller skips and counts the input) when no sentence ends before
    the question or either side would be empty.

    Example:
        >>> split_question("भारत की राजधानी नई दिल्ली है। भारत की राजधानी क्या है?")
        ('भारत की राजधानी नई दिल्ली है।', 'भारत की राजधानी क्या है?')
    """
    text = text.strip()
    end = len(text)
    while end and text[end - 1] in _TRAILING:
        end -= 1
    cut = None
    for m in _SENTENCE_END.finditer(text, 0, end):
        if text[m.start()] == "." and _abbreviates(text, m.start()):
            continue
        cut = m.end()
    if cut is None:
        return None
    passage = text[:cut].strip()
    question = _LEADING.sub("", text[cut:]).strip()
    if not passage or not question:
        return None
    return passage, question


def _add(corpus: dict, by_text: dict, passage: str) -> str:
    """The id of ``passage``, adding it to the corpus on first sight (identical ones merge)."""
    docid = by_text.get(passage)
    if docid is None:
        docid = by_text[passage] = f"p{len(corpus):05d}"
        corpus[docid] = {"title": "", "text": passage}
    return docid


def _answers(target) -> list[str]:
    targets = [target] if isinstance(target, str) else list(target or [])
    return list(dict.fromkeys(t.strip() for t in targets if isinstance(t, str) and t.strip()))


def _to_beir(task: dict, prefix: str, parse: Callable[[str], tuple[str, str] | None],
             source: str, failure: str) -> Converted:
    """(corpus, queries, qrels, skipped) from a task's examples: ``parse`` turns an input into
    (passage, question) or None (skipped and counted); identical passages merge."""
    corpus: dict[str, dict] = {}
    by_text: dict[str, str] = {}
    queries: dict[str, dict] = {}
    qrels: dict[str, dict[str, int]] = {}
    skipped = 0
    for i, ex in enumerate(task["examples"]):
        parts = parse(ex["input"])
        if parts is None:
            skipped += 1
            continue
        passage, question = parts
        qid = f"{prefix}{i:05d}"
        queries[qid] = {"text": question, "answers": _answers(ex.get("target"))}
        qrels[qid] = {_add(corpus, by_text, passage): 1}
    if not queries:
        raise DataError(f"{source}: {failure}")
    return corpus, queries, qrels, skipped


def hindi_to_beir(task: dict, source: str) -> Converted:
    """``hindi_question_answering`` -> (corpus, queries, qrels, skipped).

    Query ids are ``hi<index in task.json>``; passage ids ``p00000``... in order of first
    appearance. ``skipped`` counts the inputs ``split_question`` could not split.
    """
    return _to_beir(task, "hi", split_question, source,
                    "no input could be split into passage and question")


# --------------------------------------------------------------------------- Persian

_PARSINLU = re.compile(r"^passage: '(?P<passage>.*)' question: '(?P<question>.*)'$", re.S)


def _parse_parsinlu(text: str) -> tuple[str, str] | None:
    m = _PARSINLU.match(text.strip())
    passage, question = (m["passage"].strip(), m["question"].strip()) if m else ("", "")
    return (passage, question) if passage and question else None


def persian_to_beir(task: dict, source: str) -> Converted:
    """``parsinlu_reading_comprehension`` -> (corpus, queries, qrels, skipped).

    Inputs read ``passage: '<text>' question: '<text>'``; one that does not parse is
    skipped and counted. Query ids are ``fa<index in task.json>``.
    """
    return _to_beir(task, "fa", _parse_parsinlu, source,
                    "no input parsed as \"passage: '...' question: '...'\"")


# --------------------------------------------------------------------------- the sets


@dataclass(frozen=True)
class Source:
    """One task of the sdist and how it becomes a retrieval set."""

    member: str  # path inside the sdist
    convert: Callable[[dict, str], Converted]
    language: str  # Snowball (PyStemmer) name, for BM25
    licence: str  # as the task files state it


DATASETS = {
    "hindi": Source(
        f"{TASKS}/hindi_question_answering/task.json", hindi_to_beir, "hindi", "not stated"
    ),
    "persian": Source(
        f"{TASKS}/parsinlu_reading_comprehension/task.json",
        persian_to_beir,
        "persian",
        "not stated",
    ),
}


def build(
    names: Iterable[str] = ("hindi", "persian"),
    out: Path = DATA_DIR,
    seed: int = DEFAULT_SEED,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    sdist_path: Path | None = None,
    force: bool = False,
) -> dict[str, dict]:
    """Build the named sets into ``<out>/<name>/``; idempotent (a finished set is kept).

    Returns ``{name: manifest entry}``, each entry shaped like SQuADShifts' (``source``,
    ``source_sha256``, ``params``, ``counts``, ``files``: sha256 of every written file,
    relative to ``out``) plus ``skipped`` (inputs that could not be converted) and
    ``builder_version``. Each entry is also written to ``<out>/<name>/manifest.json`` as
    ``{name: entry}``.
    """
    names = list(names)
    unknown = set(names) - set(DATASETS)
    if unknown:
        raise ValueError(f"unknown multilingual sets {sorted(unknown)}; known: {list(DATASETS)}")
    out = Path(out)
    params = {"seed": seed, "test_fraction": test_fraction, "sdist": BIGBENCH.sha256}
    manifest = {n: _read_manifest(out, n) for n in names}
    todo = [
        n
        for n in names
        if force
        or manifest[n].get("params") != params
        or manifest[n].get("builder_version") != BUILDER_VERSION
        or not (out / n / "corpus.jsonl").exists()
    ]
    if todo:
        tarball = sdist_path or fetch_sdist()
        members = read_members(tarball, [DATASETS[n].member for n in todo])
        for n in todo:
            src = DATASETS[n]
            raw = members[src.member]
            corpus, queries, qrels, skipped = src.convert(json.loads(raw), src.member)
            write_beir(
                out / n, corpus, queries, split_by_passage(corpus, qrels, seed, test_fraction)
            )
            ds = load_beir(out / n, name=n)
            files = sorted(p for p in (out / n).rglob("*") if p.is_file())
            manifest[n] = {
                "source": f"{BIGBENCH.filename}:{src.member}",
                "source_sha256": hashlib.sha256(raw).hexdigest(),
                "params": params,
                "counts": ds.counts(),
                "files": {str(p.relative_to(out)): sha256_file(p) for p in files},
                "skipped": skipped,
                "builder_version": BUILDER_VERSION,
            }
            write_json(out / n / "manifest.json", {n: manifest[n]})
            print(f"built {out / n}: {ds.counts()}, skipped {skipped} inputs")
    return manifest


def _read_manifest(out: Path, name: str) -> dict:
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
    json.dump(
        {n: e["counts"] | {"skipped": e["skipped"]} for n, e in manifest.items()},
        sys.stdout,
        indent=2,
    )
    print()


if __name__ == "__main__":
    main()
