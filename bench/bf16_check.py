"""Does bf16 autocast change any conclusion? A small InfoNCE-vs-CLP comparison in both precisions.

The cpu profile trains under ``torch.autocast("cpu", dtype=torch.bfloat16)`` (about 1.5x faster
on this CPU, see STUDY.md). Before relying on it, this script trains ANCE + InfoNCE and
ANCE + CLP on the same small reddit subset in float32 and in bf16 (same seed, same data) and
prints: the largest difference of the per-step losses, each run's test nDCG@10, and whether
the sign of CLP - InfoNCE is the same in both precisions. Last line:
``bf16 ratio=<bf16 step time / fp32 step time> same_conclusion=<True|False>``.

    python bench/bf16_check.py
"""

from __future__ import annotations

import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd

from clp_utils.mining import MiningConfig
from clp_utils.training import TrainConfig, train


def main() -> None:
    base = TrainConfig(split="reddit", passages=600, train_queries=160, batch_size=16,
                       max_passage_len=128, ood_split=None, mining=MiningConfig())
    root = Path(tempfile.mkdtemp(prefix="bf16-check-"))
    out = {}
    for bf16 in (False, True):
        for loss in ("infonce", "clp"):
            cfg = replace(base, loss=loss, bf16=bf16, label=f"{loss}-{'bf16' if bf16 else 'fp32'}")
            res = train(cfg, root=root, progress=False)
            log = pd.read_csv(res.run_dir / "log.csv")
            out[(loss, bf16)] = (res.metrics["ndcg_cut_10"], log)
            print(f"{cfg.label}: nDCG@10 {res.metrics['ndcg_cut_10']:.4f}, "
                  f"median step {log['seconds'].median():.2f} s")
    for loss in ("infonce", "clp"):
        diff = (out[(loss, True)][1]["loss"] - out[(loss, False)][1]["loss"]).abs().max()
        print(f"{loss}: largest per-step loss difference bf16 vs fp32 = {diff:.4f}")
    d32 = out[("clp", False)][0] - out[("infonce", False)][0]
    d16 = out[("clp", True)][0] - out[("infonce", True)][0]
    print(f"CLP - InfoNCE nDCG@10: fp32 {d32:+.4f}, bf16 {d16:+.4f}")
    t32 = pd.concat([out[(x, False)][1]["seconds"] for x in ("infonce", "clp")]).median()
    t16 = pd.concat([out[(x, True)][1]["seconds"] for x in ("infonce", "clp")]).median()
    same = (d32 > 0) == (d16 > 0) or max(abs(d32), abs(d16)) < 0.005
    print(f"bf16 ratio={t16 / t32:.3f} same_conclusion={same}")


if __name__ == "__main__":
    main()
