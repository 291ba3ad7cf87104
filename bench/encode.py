"""Encoding throughput of the evaluation path vs plain ``SentenceTransformer.encode``.

Same model, same 2,000 passages (reddit corpus), same process, same batch size; each path runs
twice after a warm-up batch and the faster time counts. The on-disk embedding cache is off for
the measurement (it would make the evaluation path look infinitely fast on a second run).
Prints the wall time of one split's end-to-end evaluation above the ratio line.

    python bench/encode.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from clp_utils.data import load_squadshifts
from clp_utils.evaluation import evaluate_model
from clp_utils.models import load_model
from clp_utils.retrieval import encode_passages

N, BATCH = 2000, 64


def best_of(fn, repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    model = load_model("minilm")
    ds = load_squadshifts("reddit")
    texts = [ds.corpus[d]["text"] for d in list(ds.corpus)[:N]]
    model.encode(texts[:BATCH], batch_size=BATCH)  # warm-up
    plain = best_of(lambda: model.encode(texts, batch_size=BATCH, normalize_embeddings=True))
    ours = best_of(lambda: encode_passages(model, texts, BATCH, progress=False, cache_dir=None))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = evaluate_model(model, ds.test(), Path(tmp) / "run", "bench", progress=False)
        e2e = time.perf_counter() - t0
    print(f"plain SentenceTransformer.encode: {N / plain:.1f} passages/s ({plain:.1f} s)")
    print(f"evaluation encode path:           {N / ours:.1f} passages/s ({ours:.1f} s)")
    print(f"end-to-end evaluation of reddit ({len(ds.corpus)} passages, {len(ds.test().queries)} "
          f"test queries, exact search, run.trec + metrics.json): {e2e:.1f} s, "
          f"nDCG@10 {res.metrics['ndcg_cut_10']:.4f}")
    print(f"encode ratio={plain / ours:.3f} target>=0.95")


if __name__ == "__main__":
    from clp_utils.base.paths import configure, from_environment

    configure(**from_environment())  # the command line's edge: $CLP_CACHE, $CLP_BF16
    main()
