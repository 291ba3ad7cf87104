"""Our ANCE mining vs sentence-transformers' ``mine_hard_negatives``, same queries, same model.

Both mine the same reddit training queries against the same train passages with the same
all-MiniLM-L6-v2, with comparable settings: the top 4 negatives among the 30 best ranked
passages, NV-Retriever's TopK-PercPos filter (relative margin 0.05), exact faiss search,
batch size 64, no answer filter (theirs has none). Both timings include embedding: ours runs
with ``model_id=None`` so neither side reads an embedding cache. Runs alternate (ABBA) after
a warm-up, and each side's time is its median.

The window differs by one convention: ours counts ranks over the full ranking (the positive
takes a rank, ranks 1..30 hold 29 or 30 candidates), theirs over the ranking without the
positive (30 candidates); with 4 negatives out of ~29 this rarely matters.

Prints the overlap of the chosen negatives, the two wall times, and last
``mining ratio=X target<=1.0`` (our wall time over theirs).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/mining.py --n-queries 500
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from clp_utils.data import load_squadshifts  # noqa: E402
from clp_utils.mining import MiningConfig, mine  # noqa: E402
from clp_utils.models import load_model  # noqa: E402


def pick_queries(train, n: int, seed: int) -> list[str]:
    """``n`` training queries with distinct texts (theirs merges queries by text)."""
    seen, qids = set(), []
    for q in np.random.default_rng(seed).permutation(sorted(train.queries)):
        text = train.queries[q]["text"]
        if text not in seen and len(train.relevant(q)) == 1:
            seen.add(text)
            qids.append(str(q))
        if len(qids) == n:
            break
    return qids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--split", default="reddit")
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--n-queries", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2, help="ABBA rounds")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    train = load_squadshifts(args.split).train()
    qids = pick_queries(train, args.n_queries, args.seed)
    model = load_model(args.model)
    docids = list(train.corpus)
    corpus = [train.passage_text(d) for d in docids]
    by_text = {t: d for d, t in zip(docids, corpus, strict=True)}
    cfg = MiningConfig(
        strategy="ance",
        num_negatives=4,
        rank_min=1,
        rank_max=30,
        pick="top",
        rel_margin=0.05,
        answer_filter=False,
        neg_queries="all",
    )
    print(
        f"{args.split}: {len(qids)} training queries, {len(corpus)} train passages, "
        f"model {args.model}, {cfg}"
    )

    def ours():
        return mine(
            model,
            train,
            cfg,
            model_id=None,
            query_ids=qids,
            cache_dir=None,
            progress=False,
            batch_size=args.batch_size,
            embedding_cache_dir=None,
        )

    def theirs():
        pos = [train.passage_text(next(iter(train.relevant(q)))) for q in qids]
        data = Dataset.from_dict(
            {"query": [train.queries[q]["text"] for q in qids], "positive": pos}
        )
        return mine_hard_negatives(
            data,
            model,
            corpus=corpus,
            range_min=0,
            range_max=30,
            relative_margin=0.05,
            num_negatives=4,
            sampling_strategy="top",
            batch_size=args.batch_size,
            use_faiss=True,
            output_format="labeled-list",
            verbose=False,
        )

    model.encode(corpus[:64], batch_size=args.batch_size)  # warm-up: threads, kernels
    times: dict[str, list[float]] = {"ours": [], "theirs": []}
    # CPU seconds of this process too: on a shared machine, wall time mostly measures the
    # neighbours, CPU time what each side actually computed.
    cpu: dict[str, list[float]] = {"ours": [], "theirs": []}
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("ours", ours), ("theirs", theirs), ("theirs", theirs), ("ours", ours)):
            t0, c0 = time.perf_counter(), time.process_time()
            results[name] = fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)

    mined = {r["qid"]: r["neg_ids"] for r in results["ours"].records}
    text_to_qid = {train.queries[q]["text"]: q for q in qids}
    st = {q: [] for q in qids}
    for row in results["theirs"]:
        st[text_to_qid[row["query"]]] = [by_text[t] for t in row["positive"][1:]]
    # |ours & theirs| / max(|ours|, |theirs|): a query short on both sides is not penalised
    overlap = [
        len(set(mined[q]) & set(st[q])) / max(len(mined[q]), len(st[q]))
        if mined[q] or st[q]
        else 1.0
        for q in qids
    ]
    same_list = np.mean([mined[q] == st[q] for q in qids])
    short_ours = sum(len(mined[q]) < cfg.num_negatives for q in qids)
    short_theirs = sum(len(st[q]) < cfg.num_negatives for q in qids)
    print(f"short queries: ours {short_ours}, theirs {short_theirs}")
    print(
        f"overlap of chosen negatives: {np.mean(overlap):.4f} "
        f"(identical lists for {same_list:.1%} of queries)"
    )
    summ = results["ours"].summary
    print(
        f"ours: false-negative rate (answer check) among negatives "
        f"{summ['fn_rate_negatives']:.3f}, dropped {summ['dropped']}"
    )
    t_ours, t_theirs = statistics.median(times["ours"]), statistics.median(times["theirs"])
    print(
        f"wall time (median of {len(times['ours'])}, embedding included): "
        f"ours {t_ours:.2f} s ({', '.join(f'{t:.2f}' for t in times['ours'])}), "
        f"theirs {t_theirs:.2f} s ({', '.join(f'{t:.2f}' for t in times['theirs'])})"
    )
    c_ours, c_theirs = statistics.median(cpu["ours"]), statistics.median(cpu["theirs"])
    print(
        f"cpu time (median): ours {c_ours:.2f} s, theirs {c_theirs:.2f} s, "
        f"ratio {c_ours / c_theirs:.3f}",
        flush=True,
    )
    print(f"mining ratio={t_ours / t_theirs:.3f} target<=1.0", flush=True)


if __name__ == "__main__":
    from clp_utils.base.paths import configure, from_environment

    configure(**from_environment())  # the command line's edge: $CLP_CACHE, $CLP_BF16
    main()
