"""bf16 or float32 on THIS machine: the measured speed ratio, and whether bf16 moves a metric.

The study decides bf16 from the machine at hand (``clp_utils.base.precision.decide("auto")``):
bf16 autocast only where the CPU computes bf16 natively (AVX512-BF16 or AMX), confirmed by
a timed matmul. This script measures, in one process, on this machine:

1. a matmul in float32 and in bf16 (GFLOP/s);
2. MiniLM forward + backward on a training-sized batch, float32 vs bf16 autocast;
3. evaluation encoding (passages per second), float32 vs bf16 autocast;
4. zero-shot validation nDCG@10 and recall@100 on reddit with each precision (does bf16
   encoding change a metric beyond the 3rd decimal?);
5. with ``--train``: ANCE + InfoNCE and ANCE + CLP trained briefly in both precisions
   (same seed and data), their validation nDCG@10 and whether CLP - InfoNCE keeps its sign.

Where "auto" picks float32 (no native bf16), only 1-2 run, on a batch of ``SLOW_BATCH``
passages: the emulated bf16 is too slow for the rest, and the study never uses it there.

Last line: ``bf16 ratio=<float32 time / bf16 time, forward+backward> decision=<what "auto"
picks here> capability=<CPU capability>``; a ratio above 1 means bf16 is faster here.

    python bench/bf16_check.py [--train]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from clp_utils.base.precision import (
    autocast,
    cpu_hardware,
    decide,
    time_matmul,
    training_attention,
)
from clp_utils.data import load_squadshifts
from clp_utils.evaluation import evaluate_run
from clp_utils.models import load_model
from clp_utils.retrieval import encode_passages, retrieve

FP32, BF16 = decide(False), decide(True)
#: Passages per forward+backward where bf16 is emulated (the training-sized batch takes minutes).
SLOW_BATCH = 8


def forward_backward(model, texts: list[str], max_len: int, precision, repeats: int = 3) -> float:
    """Median seconds of one forward + backward pass over ``texts`` (training mode)."""
    model.train()
    model.max_seq_length = max_len
    features = model.preprocess(texts)
    features = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
    times = []
    for _ in range(repeats + 1):  # the first call warms up kernels
        t0 = time.perf_counter()
        with autocast(precision), training_attention(precision):
            out = model(features)["sentence_embedding"]
        out.float().pow(2).sum().backward()
        model.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
    model.eval()
    return statistics.median(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", action="store_true", help="also train InfoNCE and CLP briefly")
    parser.add_argument("--batch", type=int, default=32, help="passages per forward+backward")
    parser.add_argument("--max-len", type=int, default=128, help="tokens per passage")
    args = parser.parse_args()

    hw = cpu_hardware()
    auto = decide("auto", "cpu")
    print(f"CPU {hw['cpu']}: capability {hw['capability']}, avx512_bf16 {hw['avx512_bf16']}, "
          f"amx {hw['amx']}, {hw['threads']} threads, torch {hw['torch']}")
    print(f"auto decision: {auto.name} ({auto.reason})")
    gf32, gf16 = time_matmul(torch.float32, 256), time_matmul(torch.bfloat16, 256)
    print(f"matmul 256^3: float32 {gf32:.1f} GFLOP/s, bf16 {gf16:.1f} GFLOP/s")

    ds = load_squadshifts("reddit").with_validation(0.1, seed=0)
    val = ds.validation()
    texts = [val.passage_text(d) for d in list(val.corpus)[:256]]
    model = load_model("minilm")
    # Where bf16 is not native, its autocast is emulated and one training-sized batch can
    # take minutes: time a small batch once, and skip the bf16 checks the study never runs.
    batch, repeats = (args.batch, 3) if auto.bf16 else (min(args.batch, SLOW_BATCH), 1)
    t32 = forward_backward(model, texts[:batch], args.max_len, FP32, repeats)
    print(f"forward+backward {batch} x {args.max_len} tokens: float32 {t32:.2f} s", flush=True)
    t16 = forward_backward(model, texts[:batch], args.max_len, BF16, repeats)
    print(f"forward+backward {batch} x {args.max_len} tokens: bf16 {t16:.2f} s", flush=True)
    last = f"bf16 ratio={t32 / t16:.2f} decision={auto.name} capability={hw['capability']}"
    if not auto.bf16:
        print("bf16 is not used on this machine, so its encoding, metric and training checks "
              "are skipped (each would run the emulated bf16 for minutes).")
        print(last)
        return

    model.max_seq_length = 256
    emb = {}
    for p in (FP32, BF16):
        t0 = time.perf_counter()
        emb[p.name] = encode_passages(model, texts, progress=False, bf16=p.bf16)
        print(f"encode {len(texts)} passages, {p.name}: "
              f"{len(texts) / (time.perf_counter() - t0):.1f} passages/s", flush=True)
    cos = (emb["float32"] * emb["bf16"]).sum(1)
    print(f"embedding cosine float32 vs bf16: min {cos.min():.5f}, mean {cos.mean():.5f}")

    metrics = {}
    for p in (FP32, BF16):
        run = retrieve(model, val, progress=False, bf16=p.bf16)
        metrics[p.name] = evaluate_run(run, val.qrels).mean
    for m in ("ndcg_cut_10", "recall_100"):
        a, b = metrics["float32"][m], metrics["bf16"][m]
        print(f"zero-shot validation {m}: float32 {a:.4f}, bf16 {b:.4f}, diff {b - a:+.4f}")

    if args.train:
        from clp_utils.mining import MiningConfig
        from clp_utils.training import TrainConfig, train

        base = TrainConfig(split="reddit", train_queries=320, batch_size=16, max_passage_len=128,
                           ood_split=None, attention_dropout=0.0,
                           mining=MiningConfig(num_negatives=1))
        root = Path(tempfile.mkdtemp(prefix="bf16-check-"))
        out = {}
        for p in (FP32, BF16):
            for loss in ("infonce", "clp"):
                res = train(replace(base, loss=loss, bf16=p.bf16, label=f"{loss}-{p.name}"),
                            root=root, progress=False)
                out[(loss, p.name)] = res.val.metrics["ndcg_cut_10"]
                print(f"{loss} {p.name}: validation nDCG@10 {out[(loss, p.name)]:.4f}", flush=True)
        d32 = out[("clp", "float32")] - out[("infonce", "float32")]
        d16 = out[("clp", "bf16")] - out[("infonce", "bf16")]
        print(f"CLP - InfoNCE validation nDCG@10: float32 {d32:+.4f}, bf16 {d16:+.4f}")

    print(last)


if __name__ == "__main__":
    from clp_utils.base.paths import configure, from_environment

    configure(**from_environment())  # the command line's edge: $CLP_CACHE, $CLP_BF16
    np.set_printoptions(precision=4)
    main()
