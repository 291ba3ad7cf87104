"""What a Mixture of Experts costs at encode time, and what freezing saves at train time.

Encodes the same passages with dense all-MiniLM-L6-v2 and with its MoE version (2 experts,
top-1, ``paper`` routing) in one process, then times a contrastive training step under the
``full`` and ``intermediate`` policies. Encoding alternates between the two models batch by
batch, and training steps alternate between the policies (best of each kept), so load from
other processes on the machine hits both variants alike.

The passages are synthetic (seeded random English words, 50-150 words each, so most fill the
128-token window and batches carry some padding): speed depends on token counts, not content.

Usage:
    .venv/bin/python bench/moe_forward.py [--passages 1000] [--repeats 2]

The last line reads ``moe-forward ratio=X target<=1.15``: MoE over dense encode wall time, each
the sum over batches of the best of ``--repeats`` passes (the ratio over all passes is printed
above it).
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import time

import torch
import torch.nn.functional as F

from clp_utils.models import load_model
from clp_utils.moe import apply_moe, record_routing, routing_stats
from clp_utils.policies import apply_policy

WORDS = (
    "the of and to in is was for on that with as by at from his her an are were which be this "
    "it had not or have but first one their its new after who they two has been also would "
    "more other all into than when during time over most only some such between about may "
    "city world year state war school team river music film century government university "
    "country system water language church company people history population album season "
    "series game family house station court power village member island force period player "
    "energy market theory species record church building light science health region design"
).split()


def synthetic_passages(n: int, seed: int = 0) -> list[str]:
    """``n`` passages of 50-150 random common words with sentence punctuation."""
    rng = random.Random(seed)
    passages = []
    for _ in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(50, 150))]
        for i in range(rng.randint(8, 14), len(words), rng.randint(8, 14)):
            words[i - 1] += "."
        passages.append(" ".join(words).capitalize() + ".")
    return passages


def time_encode(models: dict, passages: list[str], batch_size: int, repeats: int) -> dict:
    """Per model: wall seconds of each batch in each pass, passes and models interleaved.

    Returns ``{name: [[seconds of batch b in pass r for b] for r]}``. Models alternate batch by
    batch (order alternating too), so a burst of load from another process hits both.
    """
    times = {name: [] for name in models}
    batches = [passages[i : i + batch_size] for i in range(0, len(passages), batch_size)]
    for r in range(repeats):
        for name in models:
            times[name].append([])
        for b, batch in enumerate(batches):
            names = list(models) if (r + b) % 2 == 0 else list(models)[::-1]
            for name in names:
                start = time.perf_counter()
                models[name].encode(batch, batch_size=batch_size)
                times[name][-1].append(time.perf_counter() - start)
    return times


def time_step(model, optimizer, queries: list[str], docs: list[str]) -> float:
    """Wall time of one in-batch-negatives contrastive step (forward, backward, update)."""
    start = time.perf_counter()
    q = model(model.preprocess(queries))["sentence_embedding"]
    d = model(model.preprocess(docs))["sentence_embedding"]
    loss = F.cross_entropy(q @ d.T / 0.05, torch.arange(len(queries)))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--passages", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--step-pairs", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)

    passages = synthetic_passages(args.passages)
    dense = load_model("minilm", device="cpu")
    dense.max_seq_length = args.max_seq_length
    moe = apply_moe(copy.deepcopy(dense), num_experts=2, top_k=1, routing="paper", seed=0)
    lengths = [
        len(ids) for ids in dense.tokenizer(passages, truncation=True, max_length=128)["input_ids"]
    ]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; {len(passages)} passages, "
        f"mean {sum(lengths) / len(lengths):.0f} tokens (max_seq_length {args.max_seq_length}), "
        f"batch {args.batch_size}"
    )

    models = {"dense": dense, "moe": moe}
    time_encode(models, passages[: 2 * args.batch_size], args.batch_size, 1)  # warm-up
    times = time_encode(models, passages, args.batch_size, args.repeats)
    # Best of the passes, batch by batch: the run least disturbed by other processes.
    best = {name: sum(map(min, zip(*runs, strict=True))) for name, runs in times.items()}
    for name, runs in times.items():
        passes = ", ".join(f"{sum(run):.2f}" for run in runs)
        print(
            f"{name} encode: passes {passes} s; best per batch {best[name]:.2f} s "
            f"({len(passages) / best[name]:.0f} passages/s)"
        )
    mean_ratio = sum(map(sum, times["moe"])) / sum(map(sum, times["dense"]))
    print(f"moe/dense wall-time ratio over all passes: {mean_ratio:.3f}")
    ratio = best["moe"] / best["dense"]
    with record_routing(moe):  # untimed: the load the timed passes saw
        moe.encode(passages[: 2 * args.batch_size], batch_size=args.batch_size)
    loads = " ".join("/".join(f"{x:.2f}" for x in s.load) for s in routing_stats(moe))
    print(f"moe expert load per layer (first {2 * args.batch_size} passages): {loads}")

    # Step time: frozen weights need no weight gradients and no optimizer state.
    queries = [" ".join(p.split()[:12]) + "?" for p in passages[: args.step_pairs]]
    docs = passages[args.step_pairs : 2 * args.step_pairs]
    steps = {}
    for policy in ("full", "intermediate"):
        model = copy.deepcopy(dense)
        counts = apply_policy(model, policy)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        steps[policy] = (model, torch.optim.AdamW(params, lr=1e-5), counts)
        time_step(model, steps[policy][1], queries, docs)  # warm-up, creates optimizer state
    step_times = {policy: [] for policy in steps}
    for _ in range(args.steps):
        for policy, (model, optimizer, _) in steps.items():
            step_times[policy].append(time_step(model, optimizer, queries, docs))
    for policy, (_, _, counts) in steps.items():
        print(f"step {policy:12s}: {min(step_times[policy]):.2f} s best of {args.steps} ({counts})")
    step_ratio = min(step_times["intermediate"]) / min(step_times["full"])
    print(
        f"intermediate-vs-full step ratio={step_ratio:.3f} "
        f"({args.step_pairs} pairs x {args.max_seq_length} tokens)"
    )
    print(f"moe-forward ratio={ratio:.3f} target<=1.15")


if __name__ == "__main__":
    from clp_utils.base.paths import configure, from_environment

    configure(**from_environment())  # the command line's edge: $CLP_CACHE, $CLP_BF16
    main()
