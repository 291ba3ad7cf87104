"""A tiny MIRACL-layout folder for the offline tests of ``clp_utils.data.load_miracl``."""

from __future__ import annotations

import gzip
import io
import json
from pathlib import Path


def write_miracl_fixture(
    root: Path,
    lang: str,
    docs: list[dict],
    topics: dict[str, str],
    qrels: list[tuple[str, str, int]],
    split: str = "dev",
) -> None:
    """Write a tiny MIRACL-layout folder: topics, qrels and one gzipped corpus shard."""
    base = root / f"miracl-v1.0-{lang}"
    (base / "topics").mkdir(parents=True, exist_ok=True)
    (base / "qrels").mkdir(parents=True, exist_ok=True)
    (base / "topics" / f"topics.miracl-v1.0-{lang}-{split}.tsv").write_text(
        "".join(f"{q}\t{t}\n" for q, t in topics.items()), encoding="utf-8"
    )
    (base / "qrels" / f"qrels.miracl-v1.0-{lang}-{split}.tsv").write_text(
        "".join(f"{q} Q0 {d} {r}\n" for q, d, r in qrels), encoding="utf-8"
    )
    corpus_dir = root / f"miracl-corpus-v1.0-{lang}"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with gzip.GzipFile(fileobj=buf, mode="wb") as gz:
        for doc in docs:
            gz.write((json.dumps(doc, ensure_ascii=False) + "\n").encode())
    (corpus_dir / "docs-0.jsonl.gz").write_bytes(buf.getvalue())
