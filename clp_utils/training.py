"""Train one configured run: mine, fine-tune, evaluate; resumable, reusable, torchrun-ready.

``train(config)`` is the study's single entry point (``python -m clp_utils.training`` is the
same from the shell, and ``torchrun --nproc_per_node N -m clp_utils.training ...`` runs it on
several processes). A run lives in the run store (``clp_utils.runstore``): a
finished run is reused, an interrupted one resumes from its checkpoint, and a changed
parameter never reuses a stale one. This module is the step and the loop; the config is
``clp_utils.train_config``, the batches ``clp_utils.batching``.

The loop is plain PyTorch rather than ``SentenceTransformerTrainer``: it has to re-mine
between epochs, log routing statistics per step and resume bit-for-bit after a kill, and each
of those is a few lines here. The losses are the sentence-transformers losses of
``clp_utils.losses``' functional core, so the same objective also drops into the trainer.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.distributed as dist
from sentence_transformers.sentence_transformer import losses as st_losses
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from clp_utils.base.precision import (
    Precision,
    autocast,
    decide,
    enable_tf32,
    training_attention,
)
from clp_utils.batching import (
    Example,
    load_training_data,
    make_batches,
    queries_per_negative,
    select_queries,
    to_examples,
)
from clp_utils.batching import false_in_batch_negatives as batch_statistics
from clp_utils.data import RetrievalDataset
from clp_utils.evaluation import evaluate_run
from clp_utils.losses import clp_loss, info_nce
from clp_utils.mining import mine
from clp_utils.models import check_model_name, load_model
from clp_utils.moe import (
    moe_balance_loss,
    moe_layers,
    record_routing,
    routing_stats,
    transformer_module,
)
from clp_utils.policies import apply_policy, count_parameters, merge_lora
from clp_utils.retrieval import retrieve
from clp_utils.runstore import (
    RunResult,
    check_same_config,
    data_checksum,
    drop_checkpoint,
    evaluate_into,
    load_checkpoint,
    load_run,
    run_id,
    runs_root,
    save_checkpoint,
    save_model,
    write_info,
    write_log,
)
from clp_utils.train_config import TrainConfig


def embed(model, texts: list[str], max_len: int, kind: str = "query") -> torch.Tensor:
    """Sentence embeddings with gradients, truncated to ``max_len`` tokens.

    ``kind`` picks the model's own prompt (``"query"`` or ``"passage"``/``"document"``), so a
    model like multilingual-e5 trains with the same "query: "/"passage: " prefixes it is
    evaluated with.
    """
    return model(features(model, texts, max_len, kind))["sentence_embedding"]


def features(model, texts: list[str], max_len: int, kind: str = "query") -> dict[str, torch.Tensor]:
    """Tokenised inputs on the model's device, with the model's own prompt for ``kind``."""
    prompts = getattr(model, "prompts", None) or {}
    names = ("query",) if kind == "query" else ("passage", "document")
    prefix = next((prompts[n] for n in names if prompts.get(n)), "")
    model.max_seq_length = max_len
    # preprocess(prompt=...) is what encode(prompt_name=...) does, so training sees the exact
    # inputs evaluation sees.
    out = model.preprocess(texts, prompt=prefix or None)
    return {k: v.to(model.device) for k, v in out.items() if isinstance(v, torch.Tensor)}


def ecosystem_loss(model, config: TrainConfig, gather: bool = False):
    """The sentence-transformers loss behind ``loss="infonce_symmetric"``, ``"gist"`` or
    ``"mnrl_hardness"`` (else None).

    - ``infonce_symmetric``: ``MultipleNegativesRankingLoss`` (scale ``1/tau``) with
      ``directions=("query_to_doc", "doc_to_query")`` and ``partition_mode="per_direction"``:
      InfoNCE from each query over the batch's passages plus InfoNCE from each positive
      passage over the batch's queries, averaged. The passage-to-query term is the field's
      standard way to pull passages toward their queries, the kind of term CLP's penalty is.

    - ``gist``: ``GISTEmbedLoss`` with the zero-shot model as guide (frozen): an in-batch
      candidate the guide scores above the query's own positive is masked as a likely false
      negative. Temperature ``tau``; otherwise sentence-transformers' defaults.
    - ``mnrl_hardness``: ``MultipleNegativesRankingLoss`` (scale ``1/tau``) with hardness
      weighting of the explicit hard negatives, ``hardness_strength * stop_grad(cos)`` added to
      their logits (EmbeddingGemma's ``hard_negatives`` mode).
    Both answer the problem CLP answers (hard negatives that are not really negative) with
    the ecosystem's tools, so they run beside CLP at the same budget.
    """
    if config.loss == "infonce_symmetric":
        return st_losses.MultipleNegativesRankingLoss(
            model, scale=1.0 / config.tau, directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction", gather_across_devices=gather)
    if config.loss == "mnrl_hardness":
        return st_losses.MultipleNegativesRankingLoss(
            model, scale=1.0 / config.tau, hardness_mode="hard_negatives",
            hardness_strength=config.hardness_strength, gather_across_devices=gather)
    if config.loss == "gist":
        guide = load_model(config.model, device=str(model.device))
        guide.eval()
        guide.requires_grad_(False)
        return st_losses.GISTEmbedLoss(model, guide, temperature=config.tau,
                                       gather_across_devices=gather)
    return None


def step_loss(model, batch: list[Example], config: TrainConfig, m: int, gather: bool,
              st_loss=None) -> dict[str, torch.Tensor]:
    """Forward passes of one (local) batch and the configured loss with its parts.

    ``st_loss`` is the run's ``ecosystem_loss`` (built once per run) for the
    sentence-transformers losses.
    """
    b, k = len(batch), len(batch[0].negs)
    queries = [e.query for e in batch]
    if config.loss == "gist":
        # GISTEmbedLoss embeds each column itself (model and guide): anchor, positive, negative.
        cols = [features(model, queries, config.max_query_len),
                features(model, [e.pos for e in batch], config.max_passage_len, "passage"),
                features(model, [e.negs[0] for e in batch], config.max_passage_len, "passage")]
        contrastive = st_loss(cols, None)
        return {"loss": contrastive, "contrastive": contrastive,
                "penalty": torch.zeros((), device=contrastive.device, dtype=contrastive.dtype)}
    passages = [e.pos for e in batch] + [n for e in batch for n in e.negs]
    docs = embed(model, passages, config.max_passage_len, kind="passage")
    pos, negs = docs[:b], docs[b:].reshape(b, k, -1)
    if config.loss == "clp":
        # Queries and the negatives' own queries are short: one forward pass for both.
        own = [t for e in batch for slots in e.neg_qs for t in slots]
        emb = embed(model, queries + own, config.max_query_len)
        q, nq = emb[:b], emb[b:].reshape(b, k, m, -1)
        mask = torch.tensor([e.mask for e in batch], device=q.device)
        out = clp_loss(q, pos, negs, nq, mask, lam=config.lam, tau=config.tau,
                       variant=config.variant, in_batch=config.in_batch, gather=gather)
        parts = {"loss": out.total, "contrastive": out.contrastive, "penalty": out.penalty}
    else:
        q = embed(model, queries, config.max_query_len)
        if config.loss in ("mnrl_hardness", "infonce_symmetric"):
            # the columns as the trainer passes them: query, positive, negative 1..k
            contrastive = st_loss.compute_loss_from_embeddings([q, pos, *negs.unbind(1)], None)
        else:
            contrastive = info_nce(q, pos, negs, tau=config.tau, in_batch=config.in_batch,
                                   gather=gather)
        # The penalty is logged as 0 on the loss's device and dtype (a CPU zero broke
        # torch.stack of the logged parts on CUDA).
        parts = {"loss": contrastive, "contrastive": contrastive,
                 "penalty": torch.zeros((), device=contrastive.device, dtype=contrastive.dtype)}
    if config.policy == "moe" and config.moe_balance > 0:
        balance = moe_balance_loss(model)
        parts["loss"] = parts["loss"] + balance
        parts["balance"] = balance
    return parts


# --------------------------------------------------------------------------- the loop


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if world > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def prepare_model(config: TrainConfig, device: str | None = None):
    """Load the base model and apply the parameter policy; returns (model, counts)."""
    model = load_model(config.model, device=device)
    kwargs = {}
    if config.policy == "moe":
        kwargs = dict(num_experts=config.moe_experts, top_k=config.moe_top_k,
                      routing=config.moe_routing, seed=config.seed, balance_coef=config.moe_balance)
    elif config.policy == "lora":
        kwargs = dict(r=config.lora_rank)
    counts = apply_policy(model, config.policy, **kwargs)
    if config.freeze_embeddings:
        transformer_module(model).auto_model.get_input_embeddings().requires_grad_(False)
        counts = count_parameters(model, config.policy + "+frozen-embeddings")
    if config.attention_dropout is not None:
        set_attention_dropout(model, config.attention_dropout)
    return model, counts


def set_attention_dropout(model, p: float) -> int:
    """Set the dropout on attention probabilities of every self-attention module to ``p``.

    Why it matters on a CPU: with attention dropout, scaled-dot-product attention cannot use
    its fused (flash) kernel and falls back to the math path, which materialises and masks
    the full attention matrix, the more so the longer the passages (``make design`` scores
    the setting on validation queries; ``bench/step_profile.py`` shows where a step goes).
    Returns the number of modules changed. The saved model's config is not touched.
    """
    changed = 0
    for module in model.modules():
        name = type(module).__name__
        drop = getattr(module, "dropout", None)
        attention = name.endswith(("SelfAttention", "CrossAttention"))
        if attention and isinstance(drop, torch.nn.Dropout):
            drop.p = p
            changed += 1
    if not changed:
        raise ValueError("attention_dropout is set but the model has no attention dropout "
                         "to change")
    return changed


def make_optimizer(params: list[torch.nn.Parameter], config: TrainConfig,
                   device: torch.device | str) -> torch.optim.AdamW:
    """The run's AdamW (``config.lr``, ``config.weight_decay``) over the trainable ``params``.

    Fused where it can be (float32 parameters on a CPU or CUDA device): the same update in
    one pass over the parameters; the per-tensor loop cost a noticeable share of a short CPU
    step.
    """
    fused = (torch.device(device).type in ("cpu", "cuda")
             and all(p.dtype == torch.float32 for p in params))
    return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay,
                             fused=fused or None)


def train_step(model, batch: list[Example], config: TrainConfig, m: int,
               optimizer: torch.optim.Optimizer, precision: Precision, st_loss=None,
               world: int = 1) -> dict[str, torch.Tensor]:
    """One optimizer step of a (local) batch: the loss in the run's precision and attention
    kernel, backward, gradients averaged over ``world`` processes, the update. Returns the
    loss's parts (not yet synchronised to the host). ``clp_utils.machinery.budget`` times this."""
    with autocast(precision), training_attention(precision):
        parts = step_loss(model, batch, config, m, gather=world > 1, st_loss=st_loss)
    optimizer.zero_grad(set_to_none=True)
    parts["loss"].backward()
    if world > 1:
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
                dist.all_reduce(p.grad)
                p.grad /= world
    optimizer.step()
    return parts


def _routing_columns(model) -> dict[str, float]:
    row = {}
    for i, s in enumerate(routing_stats(model)):
        row[f"L{i}_expert0_load"] = s.load[0] if s.load else float("nan")
        row[f"L{i}_load_entropy"] = s.load_entropy
    return row


@dataclass
class _Run:
    """Everything one training call holds between its set-up and its evaluation."""

    rid: str
    run_dir: Path
    ds: RetrievalDataset
    ood: RetrievalDataset | None
    precision: Precision
    model: object
    eval_len: int
    qids: list[str]
    examples: list[Example]
    m: int
    steps_per_epoch: int
    first_batches: list[list[int]]
    optimizer: torch.optim.Optimizer
    scheduler: object
    step: int = 0
    log: list = None  # type: ignore[assignment]


def _setup(config: TrainConfig, rid: str, run_dir: Path, ds, ood, precision: Precision,
           device: str | None, rank: int, world: int, progress: bool) -> _Run:
    """Model, mined groups, batches, optimizer and schedule; ``config.json`` written."""
    torch.manual_seed(config.seed)
    model, counts = prepare_model(config, device)
    train_split = ds.train()
    qids = select_queries(list(train_split.queries), config.train_queries, config.seed)
    # Every policy leaves the model equal to the base model at step 0 (MoE experts are copies,
    # LoRA's B is zero), so the base model's cached embeddings serve the first mining round.
    mined = mine(model, train_split, config.mining, model_id=config.model,
                 data_checksum=ds.checksum, query_ids=qids, progress=progress and rank == 0)
    m = queries_per_negative(config, mined.records)
    examples, short = to_examples(mined.records, config.mining.num_negatives, m)
    first_batches = make_batches(examples, config, 0)
    if not first_batches:
        raise ValueError(f"no full batch of {config.batch_size} from {len(examples)} usable "
                         f"training groups (no_duplicates={config.no_duplicates})")
    total_steps = len(first_batches) * config.epochs
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], config,
                               model.device)
    warmup = math.ceil(config.warmup_ratio * total_steps)
    scheduler = (get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
                 if config.schedule == "linear"
                 else get_constant_schedule_with_warmup(optimizer, warmup))
    if rank == 0:
        write_info(run_dir, {
            "run_id": rid, "config": asdict(config), "data_checksum": ds.checksum,
            "data_counts": ds.counts(), "params": asdict(counts), "mining": mined.summary,
            "usable_groups": len(examples), "skipped_short_groups": short,
            "queries_per_negative": m, "steps": total_steps, "world_size": world,
            "precision": precision.record(),
            "batches": batch_statistics(examples, first_batches)})
    return _Run(rid, run_dir, ds, ood, precision, model, model.max_seq_length, qids, examples, m,
                len(first_batches), first_batches, optimizer, scheduler, 0, [])


def _resume(run: _Run) -> None:
    """Continue from the checkpoint, if one exists: weights, optimizer, schedule, RNG, log."""
    state = load_checkpoint(run.run_dir)
    if state is None:
        return
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"])
    run.step, run.log = state["step"], state["log"]
    run.examples = [Example(**e) for e in state["examples"]]
    print(f"resuming {run.rid} at step {run.step}")


def _checkpoint(run: _Run) -> None:
    save_checkpoint(run.run_dir, {
        "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(), "rng": torch.get_rng_state(),
        "step": run.step, "log": run.log, "examples": [asdict(e) for e in run.examples]})


def _epoch_batches(run: _Run, config: TrainConfig, epoch: int) -> list[list[int]]:
    """The epoch's batches; an ANCE round (``remine_each_epoch``) re-mines first, with the
    model as it is now (not cached: in-memory weights)."""
    if config.remine_each_epoch and epoch > 0 and run.step == epoch * run.steps_per_epoch:
        run.model.max_seq_length = run.eval_len
        with autocast(run.precision):
            fresh = mine(run.model, run.ds.train(), config.mining, model_id=None,
                         query_ids=run.qids, cache_dir=None, progress=False)
        run.examples, _ = to_examples(fresh.records, config.mining.num_negatives, run.m)
        run.model.train(config.dropout)
    batches = run.first_batches if epoch == 0 else make_batches(run.examples, config, epoch)
    return batches[:run.steps_per_epoch]


def _log_row(run: _Run, config: TrainConfig, parts: dict, epoch: int, seconds: float,
             world: int, rank: int, has_moe: bool) -> dict:
    # The one host synchronisation per step: the logged values.
    values = torch.stack([v.detach().float() for v in parts.values()])
    if world > 1:
        dist.all_reduce(values)  # log the global batch's loss, not this rank's share
        values /= world
    row = {"step": run.step, "epoch": epoch, "lr": run.scheduler.get_last_lr()[0],
           "seconds": round(seconds, 3), **dict(zip(parts, values.tolist(), strict=True))}
    if has_moe:
        row.update(_routing_columns(run.model))
    if run.step in config.val_at and rank == 0:
        row.update(_validation_point(run.model, run.ds, run.eval_len, run.precision))
        run.model.train(config.dropout)
    return row


def _train_loop(run: _Run, config: TrainConfig, rank: int, world: int, progress: bool,
                stop_after_steps: int | None) -> None:
    """The optimizer steps from ``run.step`` to the end; a checkpoint every
    ``config.checkpoint_every`` steps and at the end."""
    has_moe = bool(moe_layers(run.model))
    st_loss = ecosystem_loss(run.model, config, gather=world > 1)
    run.model.train(config.dropout)
    total = run.steps_per_epoch * config.epochs
    done_this_call = 0
    bar = tqdm(total=total, initial=run.step, desc=run.rid, disable=not progress or rank != 0)
    local = config.batch_size // world
    for epoch in range(run.step // run.steps_per_epoch, config.epochs):
        for b, idx in enumerate(_epoch_batches(run, config, epoch)):
            if epoch * run.steps_per_epoch + b < run.step:
                continue  # done before the resume
            batch = [run.examples[i] for i in idx[rank * local:(rank + 1) * local]]
            t0 = time.perf_counter()
            with record_routing(run.model) if has_moe else nullcontext():
                parts = train_step(run.model, batch, config, run.m, run.optimizer, run.precision,
                                   st_loss, world)
            run.scheduler.step()
            run.step += 1
            row = _log_row(run, config, parts, epoch, time.perf_counter() - t0, world, rank,
                           has_moe)
            run.log.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            done_this_call += 1
            if rank == 0:
                write_log(run.run_dir, run.log)
                if run.step % config.checkpoint_every == 0 or run.step == total:
                    _checkpoint(run)
            if (stop_after_steps is not None and done_this_call >= stop_after_steps
                    and run.step < total):
                bar.close()
                raise KeyboardInterrupt(f"stopped after {done_this_call} steps (simulated kill)")
    bar.close()


def train(
    config: TrainConfig,
    root: Path | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
    device: str | None = None,
) -> RunResult:
    """Mine, fine-tune and evaluate ``config``; reuse the run if it already finished.

    Args:
        config: the run.
        root: folder of runs (default ``results/runs``).
        progress: progress bars.
        stop_after_steps: raise ``KeyboardInterrupt`` after this many optimizer steps in this
            call (used by the resume test to simulate a kill); the checkpoint survives.
        device: torch device (default: sentence-transformers' choice).
    """
    rank, world = _distributed()
    ds, ood = load_training_data(config)
    if device is None and world > 1 and torch.cuda.is_available():
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    precision = decide(config.bf16, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    enable_tf32()
    rid = run_id(config, data_checksum(ds, ood), precision)
    run_dir = runs_root(root) / rid
    if (run_dir / "metrics.json").exists():
        done = load_run(run_dir)
        check_same_config(done.config, config, run_dir)
        return done
    run = _setup(config, rid, run_dir, ds, ood, precision, device, rank, world, progress)
    _resume(run)
    _train_loop(run, config, rank, world, progress, stop_after_steps)
    model = run.model
    model.eval()
    model.max_seq_length = run.eval_len
    if config.policy == "lora":
        merge_lora(model)
    if rank != 0:
        dist.barrier()
        return None  # type: ignore[return-value]
    save_model(run_dir, model)
    result = evaluate_into(model, rid, run_dir, ds, ood, progress, precision,
                           test=config.test_eval)
    drop_checkpoint(run_dir)
    if world > 1:
        dist.barrier()
    return RunResult(rid, run_dir, config, *result)


def _validation_point(model, ds: RetrievalDataset, eval_len: int, precision: Precision) -> dict:
    """Validation nDCG@10 (and recall@100) of the model as it is now, for learning curves."""
    model.eval()
    train_len, model.max_seq_length = model.max_seq_length, eval_len
    val = ds.validation()
    run = retrieve(model, val, progress=False, bf16=precision.bf16)
    model.max_seq_length = train_len
    mean = evaluate_run(run, val.qrels).mean
    return {"val_ndcg_cut_10": mean["ndcg_cut_10"], "val_recall_100": mean["recall_100"]}


def main(argv: list[str] | None = None) -> None:
    """``python -m clp_utils.training --config run.json [--set key=value ...]``."""
    parser = argparse.ArgumentParser(prog="python -m clp_utils.training",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="JSON file with TrainConfig fields")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override fields (values parsed as JSON when they parse)")
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args(argv)
    d = json.loads(args.config.read_text()) if args.config else {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            d[key] = json.loads(value)
        except json.JSONDecodeError:
            d[key] = value
    try:
        config = TrainConfig.from_dict(d)
    except (TypeError, ValueError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    problem = check_model_name(config.model)
    if problem:
        print(f"{parser.prog}: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    result = train(config, root=args.root)
    if result is not None:
        print(json.dumps({"run_id": result.run_id, "metrics": result.metrics}, indent=2))


if __name__ == "__main__":
    main()


__all__ = ["TrainConfig", "RunResult", "train", "load_run", "run_id", "replace"]
