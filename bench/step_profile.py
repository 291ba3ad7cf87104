"""Where a training step's time goes, on the device at hand (a CPU here, a GPU elsewhere).

Builds real training batches of a study profile's ANCE + CLP row (mined groups, the profile's
lengths and negatives, the precision ``"auto"`` picks on this device) and times each phase of
a plain PyTorch training step (the loop the study trained with before it moved to
sentence-transformers' trainer; ``bench/trainer_step.py`` compares the two) separately,
synchronising the device between phases:

- ``tokenize``: ``model.preprocess`` of the batch's passages and queries (host side);
- ``forward``: the embeddings and the loss;
- ``backward``;
- ``optimizer``: AdamW step and zero_grad;
- ``log sync``: the one host synchronisation the loop makes per step (the logged values).

Prints the median seconds of each phase and its share of the step, and
``step overhead ratio=<whole step / (forward + backward)>``: how much of a step is spent
outside the model's arithmetic (1.0 would be none). With ``--float32-baseline`` the same
batches run first in float32 (the named baseline) and then in the precision ``"auto"`` picks,
in this process; the last line is then ``step ratio float32/auto=<ratio>`` (above 1: the
automatic choice is faster here).

    python bench/step_profile.py [--profile cpu] [--steps 5] [--device cuda] [--float32-baseline]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from clp_utils.base.precision import autocast, decide, training_attention
from clp_utils.batching import to_examples, training_records
from clp_utils.losses import clp_loss
from clp_utils.profiles import CLP
from clp_utils.study import config_of
from clp_utils.training import make_batches, prepare_model


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--float32-baseline", action="store_true",
                        help="time float32 first, then the automatic precision, same batches")
    args = parser.parse_args()

    config = config_of(args.profile, CLP)
    examples, _ = to_examples(training_records(config), config.mining.num_negatives, 1)
    batches = make_batches(examples, config, 0)[: args.steps + 1]
    choices = [decide(False, args.device)] if args.float32_baseline else []
    choices.append(decide(config.bf16, args.device))
    steps = []
    for precision in choices:
        print(f"profile {args.profile}: batch {config.batch_size}, "
              f"{config.mining.num_negatives} negatives, "
              f"{config.max_passage_len} passage tokens, {precision.describe()}")
        steps.append(profile_steps(config, examples, batches, precision, args.device))
    if args.float32_baseline:
        t_base, t_auto = steps
        print(f"float32 step {t_base * 1000:.1f} ms; {choices[1].describe()}: "
              f"{t_auto * 1000:.1f} ms")
        print(f"step ratio float32/auto={t_base / t_auto:.3f}")


def profile_steps(config, examples, batches, precision, device: str) -> float:
    """Time each phase of the training step on ``batches`` (the first is a warm-up) with a
    freshly loaded model; print the table and return the median whole-step seconds."""
    model, _ = prepare_model(config, device)
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=config.lr,
                                  weight_decay=config.weight_decay, fused=True)
    phases: dict[str, list[float]] = {k: [] for k in ("tokenize", "forward", "backward",
                                                       "optimizer", "log sync")}
    for step, idx in enumerate(batches):
        batch = [examples[i] for i in idx]
        b, k = len(batch), len(batch[0].negs)
        t = [time.perf_counter()]
        model.max_seq_length = config.max_passage_len
        docs_f = model.preprocess([e.pos for e in batch] + [n for e in batch for n in e.negs],
                                  prompt=None)
        model.max_seq_length = config.max_query_len
        own = [t_ for e in batch for slots in e.neg_qs for t_ in slots]
        q_f = model.preprocess([e.query for e in batch] + own, prompt=None)
        docs_f = {key: v.to(device) for key, v in docs_f.items()
                  if isinstance(v, torch.Tensor)}
        q_f = {key: v.to(device) for key, v in q_f.items() if isinstance(v, torch.Tensor)}
        _sync(device)
        t.append(time.perf_counter())
        with autocast(precision), training_attention(precision):
            docs = model(docs_f)["sentence_embedding"]
            emb = model(q_f)["sentence_embedding"]
            q, nq = emb[:b], emb[b:].reshape(b, k, 1, -1)
            mask = torch.tensor([e.mask for e in batch], device=q.device)
            out = clp_loss(q, docs[:b], docs[b:].reshape(b, k, -1), nq, mask, lam=config.lam,
                           tau=config.tau, in_batch=config.in_batch)
        _sync(device)
        t.append(time.perf_counter())
        out.total.backward()
        _sync(device)
        t.append(time.perf_counter())
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        t.append(time.perf_counter())
        torch.stack([out.total.detach(), out.contrastive.detach(), out.penalty.detach()]).tolist()
        t.append(time.perf_counter())
        if step == 0:
            continue  # warm-up: kernel selection, allocator
        for name, a, z in zip(phases, t[:-1], t[1:], strict=True):
            phases[name].append(z - a)
    med = {name: statistics.median(v) for name, v in phases.items()}
    total = sum(med.values())
    for name, sec in med.items():
        print(f"{name:>10}: {sec * 1000:8.1f} ms  {sec / total:6.1%}")
    print(f"{'step':>10}: {total * 1000:8.1f} ms")
    print(f"step overhead ratio={total / (med['forward'] + med['backward']):.3f}")
    return total


if __name__ == "__main__":
    from clp_utils.base.paths import configure, from_environment

    configure(**from_environment())  # the command line's edge: $CLP_CACHE, $CLP_BF16
    main()
