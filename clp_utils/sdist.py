"""The data's source: the ``bigbench==1.0.0`` sdist on PyPI, downloaded once and checked.

The sdist carries SQuAD v1.1 dev, the four SQuADShifts test sets and the Hindi and Persian
tasks. It is downloaded from PyPI's file host (never installed: it would pull TensorFlow)
into the user cache, its size and sha256 checked, and its members read straight from the
tarball. ``$CLP_SDIST_URL`` points at a mirror; ``$PIP_INDEX_URL`` is honoured for finding
the file on a PEP 503 simple index.
"""

from __future__ import annotations

import os
import re
import tarfile
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from clp_utils.base.io import DataError, atomic_write, sha256_file
from clp_utils.base.paths import cache_dir


@dataclass(frozen=True)
class Sdist:
    """A source distribution on PyPI that carries data, identified by size and checksum."""

    name: str
    version: str
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name}-{self.version}.tar.gz"


BIGBENCH = Sdist(
    name="bigbench",
    version="1.0.0",
    size=358_249_635,
    sha256="1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
)
class ChecksumError(RuntimeError):
    """A downloaded file does not match its expected checksum (it is not used)."""


# --------------------------------------------------------------------------- the sdist


def fetch_sdist(sdist: Sdist = BIGBENCH, cache: Path | None = None) -> Path:
    """Download ``sdist`` into the cache once, verify its sha256 and return its path.

    The file comes straight from the index's file host (its address read from the index's
    simple page, as pip reads it; ``CLP_SDIST_URL`` overrides it, e.g. for a mirror), streamed
    with a progress bar through ``atomic_write``. ``pip download --no-deps`` is not used:
    pip (26.3 here) prepares the sdist's metadata even with ``--no-deps`` and then refuses bigbench,
    whose setup.py declares a ``bleurt @ file://...`` dependency ("Distributions from PyPI
    cannot declare direct URL dependencies"), after downloading all 358 MB.

    A file whose checksum differs is renamed to ``*.bad`` (so it is never used) and
    ``ChecksumError`` says what was expected and what was found.
    """
    folder = (cache or cache_dir()) / "sdist"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / sdist.filename
    if not path.exists():
        url = os.environ.get("CLP_SDIST_URL") or sdist_url(sdist)
        print(f"downloading {sdist.filename} ({sdist.size / 1e6:.0f} MB) from {url} into {folder}")
        download(url, path, sdist.size)
    verify_sdist(path, sdist)
    return path


def sdist_url(sdist: Sdist, index: str | None = None) -> str:
    """The download address of ``sdist`` from a package index's simple page (PEP 503).

    ``index`` defaults to ``$PIP_INDEX_URL`` or ``https://pypi.org/simple``; the page
    ``<index>/<name>/`` lists one link per file, as pip reads it.
    """
    index = (index or os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").rstrip("/")
    page = f"{index}/{sdist.name}/"
    with urllib.request.urlopen(page, timeout=60) as resp:
        html = resp.read().decode("utf-8", "replace")
    links = re.findall(r"""href=["']([^"']+)["']""", html)
    for link in links:
        url = urllib.parse.urljoin(page, link)
        if urllib.parse.urlsplit(url).path.rsplit("/", 1)[-1] == sdist.filename:
            return url.split("#", 1)[0]
    raise DataError(f"{page}: no file named {sdist.filename} among {len(links)} links")


def download(url: str, path: Path, size: int | None = None) -> None:
    """Stream ``url`` to ``path`` with a progress bar; ``path`` appears only when complete."""
    from tqdm.auto import tqdm

    with (
        urllib.request.urlopen(url, timeout=60) as resp,
        atomic_write(path, "wb") as fh,
        tqdm(total=size, unit="B", unit_scale=True, desc=path.name) as bar,
    ):
        while chunk := resp.read(1 << 20):
            fh.write(chunk)
            bar.update(len(chunk))


def verify_sdist(path: Path, sdist: Sdist = BIGBENCH) -> None:
    """Raise ``ChecksumError`` (and move the file aside) if ``path`` is not ``sdist``."""
    found = sha256_file(path)
    if found != sdist.sha256:
        bad = path.with_name(path.name + ".bad")
        path.replace(bad)
        raise ChecksumError(
            f"{path}: sha256 mismatch for {sdist.filename}: expected {sdist.sha256}, "
            f"found {found}; the file was moved to {bad} and not used"
        )


def read_members(tarball: Path, members: Iterable[str]) -> dict[str, bytes]:
    """Read the named members of a .tar.gz in one streaming pass (nothing else extracted)."""
    wanted = set(members)
    out: dict[str, bytes] = {}
    with tarfile.open(tarball, "r|gz") as tar:
        for info in tar:
            if info.name in wanted:
                fh = tar.extractfile(info)
                assert fh is not None
                out[info.name] = fh.read()
                if len(out) == len(wanted):
                    break
    missing = wanted - set(out)
    if missing:
        raise DataError(f"{tarball}: members not found: {sorted(missing)}")
    return out


# --------------------------------------------------------------------------- the dataset
