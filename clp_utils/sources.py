"""The study's raw sources: files committed under ``data/sources/``, each checked by sha256.

Every dataset is built from a file in this repository (no network): the original release as
its authors published it (one reconstruction, named as such), stored as ``<file>.xz`` or as
is, checked by the sha256 of the original bytes (upstream's and the ``datasets`` library's).
``SOURCES`` is the registry the datasheet (``data/README.md``) prints. A source marked
``required=False`` may be absent (SQuADShifts NYT, which could not be obtained): the builder
skips it and says why; dropping the file into ``data/sources/`` adds it.
"""

from __future__ import annotations

import hashlib
import lzma
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from clp_utils.base.io import DataError, atomic_write
from clp_utils.base.paths import DATA_DIR

SOURCES_DIR = DATA_DIR / "sources"
#: The checksum list that came with the files (every page of the SQuAD explorer included).
SHA256SUMS = SOURCES_DIR / "SHA256SUMS"

_SQUADSHIFTS_COMMIT = "b7cc4d50af791c36c49417fb94dd739d6a9e7bef"
_PARSINLU_COMMIT = "a3b08d0b93ca84e0017e2f490a2aa3ab36c79885"


class ChecksumError(DataError):
    """A source file does not match its registered sha256 (it is not used)."""


class SourceMissing(DataError):
    """A source file is not in ``data/sources/``."""


@dataclass(frozen=True)
class Source:
    """One raw file of the study, identified by the sha256 of its original bytes."""

    file: str  # the original file name; stored as ``<file>.xz`` or ``<file>``
    sha256: str
    size: int
    kind: str  # "original release", "reconstruction", ...
    origin: str  # public repository @ commit, path
    url: str  # where ``refresh`` downloads it from
    licence: str
    attribution: str
    note: str = ""  # how it differs from the copy the study read before (BIG-bench's)
    required: bool = True

    def path(self, root: Path | None = None) -> Path | None:
        """The committed file (``.xz`` first, then the plain original), or None."""
        root = root or SOURCES_DIR
        return next((p for p in (root / f"{self.file}.xz", root / self.file) if p.exists()), None)


def _squadshifts(file: str, sha256: str, size: int, note: str, kind: str = "original release",
                 required: bool = True) -> Source:
    """A SQuADShifts file as its authors publish it (``datasets/<file>`` of their site)."""
    return Source(
        file=file, sha256=sha256, size=size, kind=kind,
        origin=f"modestyachts/squadshifts-website @ {_SQUADSHIFTS_COMMIT}, datasets/{file}",
        url=("https://raw.githubusercontent.com/modestyachts/squadshifts-website/"
             f"{_SQUADSHIFTS_COMMIT}/datasets/{file}"),
        licence="CC BY 4.0 (as the datasets library's squadshifts metadata states)",
        attribution="Miller, Krauth, Recht, Schmidt, 'The Effect of Natural Distribution Shift "
                    "on Question Answering Models', ICML 2020",
        note=note, required=required)


def _parsinlu(split: str, sha256: str, size: int, note: str = "",
              kind: str = "original release (kept for reference, not read)") -> Source:
    """A ParsiNLU reading-comprehension split (``data/reading_comprehension/<split>.jsonl``)."""
    return Source(
        file=f"parsinlu_reading_comprehension_{split}.jsonl", sha256=sha256, size=size, kind=kind,
        origin=(f"persiannlp/parsinlu @ {_PARSINLU_COMMIT}, "
                f"data/reading_comprehension/{split}.jsonl"),
        url=("https://raw.githubusercontent.com/persiannlp/parsinlu/"
             f"{_PARSINLU_COMMIT}/data/reading_comprehension/{split}.jsonl"),
        licence="CC BY-NC-SA 4.0 (repository LICENSE)",
        attribution="Khashabi et al., 'ParsiNLU: A Suite of Language Understanding Challenges "
                    "for Persian', TACL 2021",
        note=note)


SOURCES: dict[str, Source] = {
    "squaddev": Source(
        file="squad_dev-v1.1_reconstructed_from_squad_explorer.json",
        sha256="7b183b54c600c0d8c8f100d1020b6734ef2719215d86dd6a70a610a004f48e79", size=4_853_870,
        kind="reconstruction", url="", licence="CC BY-SA 4.0 (SQuAD site); site code MIT",
        origin="rajpurkar/SQuAD-explorer @ e0c66cfec263165fb3c15cb76a22175e371b71d7 (gh-pages), "
               "explore/1.1/dev/*.html (rendered from dataset/dev-v1.1.json)",
        attribution="Rajpurkar, Zhang, Lopyrev, Liang, 'SQuAD: 100,000+ Questions for Machine "
                    "Comprehension of Text', EMNLP 2016",
        note="SQuAD v1.1 dev rebuilt from the SQuAD authors' explorer pages (kept in "
             "squad_explorer_1.1_dev_html.tar.xz): 48 articles, 2,067 paragraphs, 10,570 "
             "questions as in the canonical file; contexts, questions, ids and answer texts "
             "verified, answer_start re-derived; BIG-bench's copy dropped 5 questions"),
    "new_wiki": _squadshifts(
        "new_wiki_v1.0.json", "1d50a0ca4cdab88d038b52ea8a2d0510af6038d7f41a0a256b9659237769d0ee",
        3_607_393, "BIG-bench's copy dropped 2 questions"),
    "nyt": _squadshifts(
        "nyt_v1.0.json", "fd55ae252cc735a695fab4473d4cd605b154183ac3b3eb63068f53cfc86f36d6",
        4_550_058, "no copy could be obtained when the sources were committed (2026-12)",
        kind="original release (not obtained)", required=False),
    "reddit": _squadshifts(
        "reddit_v1.0.json", "b4ac346dbf1816fdec80fdcf91d06a4b754fa51e47960fa8614a94f37ea42a4b",
        4_170_330, "BIG-bench's copy dropped 36 questions (test side 1,995 questions, was "
                   "1,986; train side 7,808, was 7,781; same passages)"),
    "amazon": _squadshifts(
        "amazon_reviews_v1.0.json",
        "9db7bdee84a91f0fb80b9e74f365042fbbb217cb8e0a7e73bb071245472589b6",
        4_177_842, "BIG-bench's copy dropped 8 questions"),
    "hindi": Source(
        file="xquad.hi.json", kind="original release (partial substitute)", size=1_680_538,
        sha256="df2cce3532b37e9beb8979704b5c9a4bf874358f105395a298b89427b43b9d24",
        origin="deepmind/xquad @ 60cac411649156efb6aab9dd4c9cde787a2c0345, xquad.hi.json",
        url="https://raw.githubusercontent.com/deepmind/xquad/"
            "60cac411649156efb6aab9dd4c9cde787a2c0345/xquad.hi.json",
        licence="CC BY-SA 4.0 (repository README)",
        attribution="Artetxe, Ruder, Yogatama, 'On the Cross-lingual Transferability of "
                    "Monolingual Representations', ACL 2020",
        note="XQuAD Hindi (240 passages, 1,190 questions) only: the BIG-bench task's 6,610 "
             "questions also held MLQA Hindi (5,425), which could not be obtained"),
    "persian": _parsinlu(
        "eval", "2ebe5e6631de84d213e332ce16c984dd8df6183d9b43d209cc89af2e09c72f3b", 1_747_851,
        note="the whole eval split (570 questions); BIG-bench kept 518 of them (which 52 it "
             "removed as sensitive is not known)", kind="original release"),
    "persian-train": _parsinlu(
        "train", "488fa21f303d880b82b8ba590e0c5a5b61dfb1442a96aa2db19f487a16f5e480", 1_933_004),
    "persian-dev": _parsinlu(
        "dev", "6ce2aed6d8ace6ed7f9ef4db9baba3b5efdfa9f99d605dccb494ce39cd63c9c6", 424_640),
}
#: The 49 SQuAD explorer pages the squaddev reconstruction was made from, as found (a tar of
#: the folder ``squad_explorer_1.1_dev_html/``; each page's sha256 is in ``SHA256SUMS``).
EXPLORER_PAGES = "squad_explorer_1.1_dev_html.tar.xz"


def available(name: str, root: Path | None = None) -> bool:
    """Whether source ``name``'s file is in ``data/sources/`` (its checksum is not read)."""
    return SOURCES[name].path(root) is not None


def missing_line(name: str) -> str:
    """One sentence saying that source ``name`` is absent, why, and how to add it."""
    src = SOURCES[name]
    return (f"{name}: not in this repository ({src.note}); to add it, drop {src.file} "
            f"(sha256 {src.sha256[:12]}…, from {src.origin}) into data/sources/ and run "
            "`make data`")


def read_source(name: str, root: Path | None = None) -> bytes:
    """The original bytes of source ``name``; ``SourceMissing`` when it is absent,
    ``ChecksumError`` (naming the file and both sha256) when it does not match."""
    src = SOURCES[name]
    path = src.path(root)
    if path is None:
        raise SourceMissing(f"{(root or SOURCES_DIR) / src.file}[.xz]: not found. "
                            + missing_line(name))
    try:
        blob = lzma.decompress(path.read_bytes()) if path.suffix == ".xz" else path.read_bytes()
    except lzma.LZMAError as err:
        raise ChecksumError(f"{path}: not a readable xz file ({err})") from None
    return _checked(blob, name, path, "the file is not used")


def _checked(blob: bytes, name: str, where: object, consequence: str) -> bytes:
    """``blob`` when its sha256 is source ``name``'s, else a ``ChecksumError`` naming both."""
    found, expected = hashlib.sha256(blob).hexdigest(), SOURCES[name].sha256
    if found != expected:
        raise ChecksumError(f"{where}: sha256 mismatch for source {name!r}: expected "
                            f"{expected}, found {found}; {consequence}")
    return blob


def verify(root: Path | None = None, echo=print) -> bool:
    """Check every registered source and every explorer page, one line per file; True when
    every present file matches and every required one is present."""
    ok, root = True, root or SOURCES_DIR
    for name, src in SOURCES.items():
        path = src.path(root)
        if path is None:
            ok &= not src.required
            echo(f"MISSING {src.file}: required" if src.required
                 else f"ABSENT  {src.file}: optional, {src.note}")
            continue
        try:
            blob = read_source(name, root)
            echo(f"OK      {path.name}: {len(blob):,} bytes, sha256 {src.sha256[:16]}… "
                 f"({src.kind})")
        except ChecksumError as err:
            ok = False
            echo(f"BAD     {path.name}: {err}")
    pages, sums = explorer_page_sums(root), root / SHA256SUMS.name
    rows = (line.split(maxsplit=1) for line in
            (sums.read_text().splitlines() if sums.exists() else []) if line.strip())
    for page, digest in sorted((n.strip(), d) for d, n in rows if n.startswith("squad_explorer_")):
        good = pages.get(page) == digest
        ok &= good
        echo(f"{'OK     ' if good else 'BAD    '} {EXPLORER_PAGES}:{page}")
    return ok


def explorer_page_sums(root: Path | None = None) -> dict[str, str]:
    """``{path inside the archive: sha256}`` of the SQuAD explorer pages (empty if absent)."""
    path = (root or SOURCES_DIR) / EXPLORER_PAGES
    if not path.exists():
        return {}
    with tarfile.open(path, "r:xz") as tar:
        return {info.name: hashlib.sha256(tar.extractfile(info).read()).hexdigest()
                for info in tar if info.isfile()}


def refresh(name: str, url: str | None = None, root: Path | None = None) -> Path:
    """Download source ``name`` again (from its origin, or ``url``) and store it as ``.xz``;
    a sha256 mismatch raises ``ChecksumError`` before anything is written."""
    src = SOURCES[name]
    url = url or src.url
    if not url:
        raise DataError(f"{name}: no download address ({src.kind}: {src.origin}); "
                        "pass --url to refresh it from a copy")
    from tqdm.auto import tqdm

    with (urllib.request.urlopen(url, timeout=60) as resp,
          tqdm.wrapattr(resp, "read", total=src.size, desc=src.file) as fh):
        blob = _checked(b"".join(iter(lambda: fh.read(1 << 20), b"")), name, url,
                        "nothing was written")
    path = (root or SOURCES_DIR) / f"{src.file}.xz"
    with atomic_write(path, "wb") as fh:
        fh.write(lzma.compress(blob, preset=9 | lzma.PRESET_EXTREME))
    return path
