"""Time one training step (forward, backward, AdamW) of MiniLM: CLP vs MultipleNegativesRankingLoss.

Same batch for both: B queries x (1 positive + k negatives) of synthetic English-like text,
plus, for CLP, one own query per negative (k*B extra short texts: CLP's expected cost). Both
losses use tau = 0.02 (MNRL scale 50) and in-batch negatives; steps alternate between the two
losses so that machine noise hits both alike. Prints the median step times and, last,
``clp-step ratio=X target<=1.5``.

    .venv/bin/python bench/loss_step.py [--batch 16] [--negatives 4] [--steps 3]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

import torch
from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

from clp_utils.losses import CLPLoss
from clp_utils.models import load_model

WORDS = (
    "the river city north council built bridge century trade market school museum war king "
    "river song album band record released during early later first second team season "
    "league player coach match won lost final cup island coast population census village "
    "church bishop temple law court judge state federal election party vote member minister "
    "company founded bank oil gas energy plant station railway line route airport flight "
    "species bird forest tree plant animal water climate winter summer rain snow mountain "
    "valley lake science theory physics chemical element atom energy light star planet moon"
).split()


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


def make_batch(batch: int, negatives: int, seed: int = 0) -> dict[str, list[str]]:
    """Columns query, pos, neg_j, neg_q_j_0: queries ~10 words, passages ~120 words."""
    rng = random.Random(seed)
    cols: dict[str, list[str]] = {"query": [_text(rng, 10) for _ in range(batch)]}
    cols["pos"] = [_text(rng, 120) for _ in range(batch)]
    for j in range(negatives):
        cols[f"neg_{j}"] = [_text(rng, 120) for _ in range(batch)]
    for j in range(negatives):
        cols[f"neg_q_{j}_0"] = [_text(rng, 10) for _ in range(batch)]
    return cols


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--negatives", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="minilm", help="short name or local folder")
    parser.add_argument("--bf16", action="store_true", help="forward under bf16 autocast")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)

    model = load_model(args.model, device=args.device).float()  # fp32 whatever was stored
    model.max_seq_length = args.seq_len
    model.train()
    k = args.negatives
    cols = make_batch(args.batch, k)
    names = ["query", "pos", *[f"neg_{j}" for j in range(k)]]

    def features(columns: list[str]) -> list[dict[str, torch.Tensor]]:
        out = []
        for c in columns:
            f = model.preprocess(cols[c])
            out.append(
                {key: v.to(args.device) for key, v in f.items() if isinstance(v, torch.Tensor)}
            )
        return out

    mnrl_features = features(names)
    clp_features = features(names + [f"neg_q_{j}_0" for j in range(k)])
    losses = {
        "mnrl": (MultipleNegativesRankingLoss(model, scale=50.0), mnrl_features),
        "clp": (CLPLoss(model, num_negatives=k, queries_per_negative=1), clp_features),
    }
    optimizers = {name: torch.optim.AdamW(model.parameters(), lr=1e-5) for name in losses}

    def step(name: str) -> float:
        loss_fn, feats = losses[name]
        _sync(args.device)
        start = time.perf_counter()
        optimizers[name].zero_grad(set_to_none=True)
        with torch.autocast(args.device.split(":")[0], torch.bfloat16, enabled=args.bf16):
            loss = loss_fn(feats, None)
        loss.backward()
        optimizers[name].step()
        _sync(args.device)
        return time.perf_counter() - start

    print(
        f"model={args.model} device={args.device} threads={torch.get_num_threads()} "
        f"batch={args.batch} negatives={k} seq_len={args.seq_len} bf16={args.bf16} "
        f"texts/step: mnrl={args.batch * (2 + k)} "
        f"clp={args.batch * (2 + 2 * k)}"
    )
    for _ in range(args.warmup):
        for name in losses:
            step(name)
    times: dict[str, list[float]] = {name: [] for name in losses}
    for _ in range(args.steps):
        for name in losses:
            times[name].append(step(name))
    for name, ts in times.items():
        print(
            f"{name}: median {statistics.median(ts):.3f} s/step  "
            f"({', '.join(f'{t:.3f}' for t in ts)})"
        )
    ratio = statistics.median(times["clp"]) / statistics.median(times["mnrl"])
    print(f"clp-step ratio={ratio:.2f} target<=1.5")


if __name__ == "__main__":
    from clp_utils.base.paths import configure, from_environment

    configure(**from_environment())  # the command line's edge: $CLP_CACHE, $CLP_BF16
    main()
