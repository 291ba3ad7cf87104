"""Small stand-ins for the committed sources: written as ``<file>.xz`` into a folder, with the
registry (``clp_utils.sources.SOURCES``) patched to their checksums for one test."""

from __future__ import annotations

import dataclasses
import hashlib
import lzma
from pathlib import Path

from clp_utils import sources


def fixture_sources(monkeypatch, tmp_path: Path, files: dict[str, bytes]) -> Path:
    """Write ``{source name: original bytes}`` as the registry's files (xz) under
    ``tmp_path / "sources"`` and register their sha256 and size; returns the folder.
    Sources not named keep their real entry (and are absent from the folder)."""
    root = tmp_path / "sources"
    root.mkdir(exist_ok=True)
    patched = dict(sources.SOURCES)
    for name, blob in files.items():
        src = sources.SOURCES[name]
        (root / f"{src.file}.xz").write_bytes(lzma.compress(blob))
        patched[name] = dataclasses.replace(src, sha256=hashlib.sha256(blob).hexdigest(),
                                            size=len(blob))
    monkeypatch.setattr(sources, "SOURCES", patched)
    return root
