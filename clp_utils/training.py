"""Train one configured run: mine, fine-tune with ``SentenceTransformerTrainer``, evaluate.

``train(config)`` is the study's single entry point (also ``python -m clp_utils.training``, and
``torchrun --nproc_per_node N -m clp_utils.training ...`` on several processes). Every run
trains through sentence-transformers' trainer with the package's loss classes (``CLPLoss``,
``InfoNCELoss``) or the ecosystem's (``MultipleNegativesRankingLoss``, ``GISTEmbedLoss``);
the study comes in through the trainer's extension points: a ``datasets.Dataset`` with one
column per text, ``NoDuplicatesBatchSampler`` comparing passage ids, a collator giving
queries and passages their own lengths and prompts, ``StudyLog`` (a ``TrainerCallback``)
writing ``log.csv``, and ``TrainingArguments`` for precision, schedule, checkpoints and
resume. A run lives in the run store (``clp_utils.runstore``): a finished run is reused, an
interrupted one resumes from its last checkpoint.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd
import torch
import torch.distributed as dist
from datasets import Dataset
from sentence_transformers import (
    SentenceTransformerTrainer,
    SentenceTransformerTrainingArguments,
)
from sentence_transformers.base.sampler import DefaultBatchSampler, NoDuplicatesBatchSampler
from sentence_transformers.sentence_transformer import losses as st_losses
from sentence_transformers.sentence_transformer.data_collator import (
    SentenceTransformerDataCollator,
)
from torch.utils.data import RandomSampler
from tqdm.auto import tqdm
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback
from transformers.trainer_utils import get_last_checkpoint

from clp_utils.base.paths import configure, from_environment
from clp_utils.base.precision import Precision, decide, enable_tf32, training_attention
from clp_utils.batching import (
    Example,
    load_training_data,
    mined_groups,
    queries_per_negative,
    to_examples,
    training_records,
)
from clp_utils.batching import false_in_batch_negatives as batch_statistics
from clp_utils.data import RetrievalDataset
from clp_utils.evaluation import evaluate_run
from clp_utils.losses import CLPLoss, InfoNCELoss, clp_column_names
from clp_utils.models import check_model_name, load_model
from clp_utils.moe import (
    moe_balance_loss,
    moe_layers,
    reset_routing_stats,
    routing_stats,
    transformer_module,
)
from clp_utils.policies import apply_policy, count_parameters, merge_lora
from clp_utils.retrieval import PROMPT_NAMES, prompt_name, retrieve
from clp_utils.runstore import (
    RunResult,
    check_same_config,
    data_checksum,
    evaluate_into,
    finished,
    load_run,
    read_log,
    run_id,
    runs_root,
    save_model,
    write_info,
    write_log,
)
from clp_utils.train_config import TrainConfig

CHECKPOINTS = "checkpoints"


# --------------------------------------------------------------------------- texts -> features


def embed(model, texts: list[str], max_len: int, kind: str = "query") -> torch.Tensor:
    """Sentence embeddings with gradients of ``texts`` as training sees a column of ``kind``
    (``"query"`` or ``"passage"``): the trainer's collator, truncated to ``max_len`` tokens."""
    batch = collator(model, max_len, max_len, [kind])([{kind: t} for t in texts])
    features = {k[len(kind) + 1:]: v.to(model.device) for k, v in batch.items()
                if isinstance(v, torch.Tensor)}
    return model(features)["sentence_embedding"]


def collator(model, max_query_len: int, max_passage_len: int,
             columns: list[str]) -> SentenceTransformerDataCollator:
    """sentence-transformers' collator with the study's per-column lengths and prompts.

    A column named ``query`` or ``neg_q_*`` is a query (``max_query_len`` tokens, the model's
    query prompt, e.g. mE5's "query: "); every other text column is a passage. Each column is
    padded on its own, so no query is padded to passage length.
    """
    prompt = {side: model.prompts[name] if (name := prompt_name(model, side)) else ""
              for side in PROMPT_NAMES}
    tasks = {c: "query" if c == "query" or c.startswith("neg_q_") else "document"
             for c in columns}
    return SentenceTransformerDataCollator(
        preprocess_fn=model.preprocess, router_mapping=tasks,
        prompts={c: prompt[task] for c, task in tasks.items() if prompt[task]},
        max_length={"query": max_query_len, "document": max_passage_len})


# --------------------------------------------------------------------------- training set


def training_dataset(examples: list[Example], config: TrainConfig, m: int) -> Dataset:
    """The training groups as the trainer reads them: one column per text, in the order the
    run's loss expects (``clp_column_names``: query, positive, negatives and, for CLP only,
    the negatives' own queries with the ``label`` mask of empty slots)."""
    clp = config.loss == "clp"
    names = clp_column_names(len(examples[0].negs), m if clp else 0)
    rows = [[e.query, e.pos, *e.negs, *(t for slots in e.neg_qs for t in slots if clp)]
            for e in examples]
    data = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    if clp:
        data["label"] = [e.mask for e in examples]
    return Dataset.from_dict(data)


class PassageIdBatchSampler(NoDuplicatesBatchSampler):
    """sentence-transformers' ``NoDuplicatesBatchSampler``, comparing each group's passage ids
    (positive and negatives) instead of its column texts, in one pass.
    Why: with in-batch negatives a passage in a batch twice is scored as a negative of the
    query it answers (a false in-batch negative); SQuADShifts has ~5 questions per passage."""

    def __init__(self, dataset, batch_size: int, drop_last: bool, passage_ids=(), **kwargs):
        super().__init__(dataset, batch_size, drop_last, **kwargs)
        self.passage_ids = list(passage_ids)

    def __iter__(self):
        if self.generator is not None and self.seed is not None:
            self.generator.manual_seed(self.seed + self.epoch)
        yield from self._iter_one_pass(lambda i: self.passage_ids[i],
                                       lambda ids, used: not ids.isdisjoint(used))


def _sampler(dataset, batch_size, drop_last, valid_label_columns=None, generator=None, seed=0,
             passage_ids=None, run_seed=0):
    generator = torch.Generator().manual_seed(run_seed * 1000)
    kwargs = dict(valid_label_columns=valid_label_columns, seed=run_seed * 1000,
                  generator=generator)
    if passage_ids is None:
        return DefaultBatchSampler(RandomSampler(dataset, generator=generator),
                                   batch_size=batch_size, drop_last=True, **kwargs)
    return PassageIdBatchSampler(dataset, batch_size, True, passage_ids=passage_ids, **kwargs)


def batch_sampler(examples: list[Example], config: TrainConfig):
    """The trainer's ``batch_sampler`` argument: ``PassageIdBatchSampler`` when in-batch
    negatives are on (and ``config.no_duplicates``), sentence-transformers' plain one otherwise
    (without in-batch negatives nothing collides); seeded with the run's seed and the epoch."""
    dedup = config.no_duplicates and config.in_batch
    return functools.partial(_sampler, run_seed=config.seed,
                             passage_ids=[e.passage_ids for e in examples] if dedup else None)


def make_batches(examples: list[Example], config: TrainConfig, epoch: int = 0) -> list[list[int]]:
    """The batches of ``epoch`` (global batch size) exactly as the trainer draws them."""
    rows = Dataset.from_dict({"group": list(range(len(examples)))})
    sampler = batch_sampler(examples, config)(rows, config.batch_size, True)
    sampler.set_epoch(epoch)
    return list(sampler)


def batch_report(config: TrainConfig) -> pd.DataFrame:
    """False in-batch negatives (``false_in_batch_negatives``) of the config's first-epoch
    batches, sentence-transformers' plain ones vs ``PassageIdBatchSampler``'s, same seed."""
    examples, _ = to_examples(training_records(config), config.mining.num_negatives, 1)
    plain = make_batches(examples, replace(config, no_duplicates=False))
    dedup = make_batches(examples, replace(config, no_duplicates=True, in_batch=True))
    return pd.DataFrame({"plain shuffled batches": batch_statistics(examples, plain),
                         "no-duplicate batches (used)": batch_statistics(examples, dedup)}).T


# --------------------------------------------------------------------------- the loss


class MoEBalance(torch.nn.Module):
    """A loss plus the MoE gate's load-balancing term (``balance_coef * loss``, recorded on
    each forward pass, ``clp_utils.moe``) as a separate component, which
    ``SentenceTransformerTrainer`` sums and logs: ``{"retrieval": ..., "balance": ...}``."""

    def __init__(self, loss: torch.nn.Module) -> None:
        super().__init__()
        self.loss, self.model = loss, loss.model

    def forward(self, sentence_features, labels=None) -> dict[str, torch.Tensor]:
        return {"retrieval": self.loss(sentence_features, labels),
                "balance": moe_balance_loss(self.model)}


def study_loss(model, config: TrainConfig, m: int = 1, gather: bool = False) -> torch.nn.Module:
    """The run's loss module, a sentence-transformers loss:

    - ``clp``: ``CLPLoss`` (k negatives, m own-query slots each, lambda, tau, variant);
    - ``infonce``: ``InfoNCELoss`` (tau; with or without in-batch negatives);
    - ``infonce_symmetric``: ``MultipleNegativesRankingLoss`` (scale 1/tau) in both directions,
      adding the standard passage-to-query term, the kind of term CLP's penalty is;
    - ``mnrl_hardness``: ``MultipleNegativesRankingLoss`` with EmbeddingGemma's hardness
      weighting of the hard negatives (``hardness_strength * stop_grad(cos)`` on their logits);
    - ``gist``: ``GISTEmbedLoss`` guided by the frozen zero-shot model (a candidate it scores
      above the query's own positive is masked as a likely false negative).

    With a learned MoE gate and ``moe_balance > 0`` the balance term is added (``MoEBalance``).
    """
    c = config
    if c.loss == "clp":
        loss = CLPLoss(model, num_negatives=c.mining.num_negatives, queries_per_negative=m,
                       lam=c.lam, temperature=c.tau, variant=c.variant,
                       in_batch_negatives=c.in_batch, gather_across_devices=gather)
    elif c.loss == "infonce":
        loss = InfoNCELoss(model, temperature=c.tau, in_batch_negatives=c.in_batch,
                           gather_across_devices=gather)
    elif c.loss == "infonce_symmetric":
        loss = st_losses.MultipleNegativesRankingLoss(
            model, scale=1.0 / c.tau, directions=("query_to_doc", "doc_to_query"),
            partition_mode="per_direction", gather_across_devices=gather)
    elif c.loss == "mnrl_hardness":
        loss = st_losses.MultipleNegativesRankingLoss(
            model, scale=1.0 / c.tau, hardness_mode="hard_negatives",
            hardness_strength=c.hardness_strength, gather_across_devices=gather)
    else:
        guide = load_model(c.model, device=str(model.device))
        guide.eval()
        guide.requires_grad_(False)
        loss = st_losses.GISTEmbedLoss(model, guide, temperature=c.tau,
                                       gather_across_devices=gather)
    return MoEBalance(loss) if c.policy == "moe" and c.moe_balance > 0 else loss


def step_loss(model, batch: list[Example], config: TrainConfig, m: int = 1, gather: bool = False,
              st_loss: torch.nn.Module | None = None) -> dict[str, torch.Tensor]:
    """One batch through the run's collator and loss, as a trainer step computes it.

    Returns ``loss`` and its parts ``contrastive`` and ``penalty`` (CLP's unweighted terms; the
    loss and 0 for the others) and ``balance`` (a learned MoE gate), as tensors with gradients.
    For measurements (step costs, precision checks) and tests; ``st_loss`` reuses a loss module.
    """
    loss = st_loss if st_loss is not None else study_loss(model, config, m, gather)
    data = training_dataset(batch, config, m)
    inputs = collator(model, config.max_query_len, config.max_passage_len,
                      data.column_names)(list(data))
    inputs = {k: v.to(model.device) if isinstance(v, torch.Tensor) else v
              for k, v in inputs.items()}
    # the trainer's own split of collated columns into features (it reads no trainer state)
    out = loss(*SentenceTransformerTrainer.collect_features(None, inputs))
    out, balance = (out["retrieval"], out["balance"]) if isinstance(out, dict) else (out, None)
    inner = loss.loss if isinstance(loss, MoEBalance) else loss
    if isinstance(inner, CLPLoss):
        parts = {"loss": out, "contrastive": inner.last_output.contrastive,
                 "penalty": inner.last_output.penalty}
    else:
        parts = {"loss": out, "contrastive": out, "penalty": torch.zeros_like(out)}
    if balance is not None:
        parts.update(loss=out + balance, balance=balance)
    return parts


# --------------------------------------------------------------------------- the model


def prepare_model(config: TrainConfig, device: str | None = None):
    """Load the base model and apply the parameter policy, frozen embeddings, attention
    dropout and dropout of ``config``; returns (model, parameter counts)."""
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
        # on a CPU attention dropout keeps scaled-dot-product attention off its fused kernel
        # (``make design`` scores the setting; the saved model's config is not touched)
        attention = [m.dropout for m in model.modules()
                     if type(m).__name__.endswith(("SelfAttention", "CrossAttention"))
                     and isinstance(getattr(m, "dropout", None), torch.nn.Dropout)]
        if not attention:
            raise ValueError("attention_dropout is set but the model has no attention dropout "
                             "to change")
        for drop in attention:
            drop.p = config.attention_dropout
    if not config.dropout:  # the same as training in eval mode, whatever calls model.train()
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return model, counts


# --------------------------------------------------------------------------- the log


class StudyLog(TrainerCallback):
    """``log.csv``, one row per optimizer step: step, epoch, learning rate, seconds, the loss
    and its parts (CLP's unweighted contrastive term and penalty, the MoE balance term), MoE
    routing (expert load and its entropy per layer) and, at ``config.val_at``, validation
    nDCG@10 and recall@100; written by process 0 with every checkpoint and at the end, a
    resumed run's rows continuing the checkpoint's. ``stop_after`` raises
    ``KeyboardInterrupt`` once that many steps are checkpointed in this call (the resume
    test's simulated kill). With ``progress``, a progress bar shows the loss."""

    def __init__(self, run_dir: Path, model, loss, config: TrainConfig, ds: RetrievalDataset,
                 eval_len: int, precision: Precision, stop_after: int | None = None,
                 progress: bool = False) -> None:
        self.run_dir, self.model, self.config, self.ds = run_dir, model, config, ds
        inner = loss.loss if isinstance(loss, MoEBalance) else loss
        self.clp = inner if isinstance(inner, CLPLoss) else None
        self.eval_len, self.precision, self.stop_after = eval_len, precision, stop_after
        self.moe = bool(moe_layers(model))
        self.rows: list[dict] = []
        self.t0, self.first_step, self.progress, self.bar = 0.0, 0, progress, None

    def on_train_begin(self, args, state, control, **kwargs):
        # a resumed run starts at its checkpoint's step: keep the rows written up to it
        self.first_step = state.global_step
        if state.global_step:
            self.rows = [{k: v for k, v in r.items() if v == v}
                         for r in read_log(self.run_dir).to_dict("records")
                         if r["step"] <= state.global_step]
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, leave=False,
                        desc=self.run_dir.name, disable=not self.progress)

    def on_train_end(self, args, state, control, **kwargs):
        self.bar.close()

    def on_step_begin(self, args, state, control, **kwargs):
        if self.moe:
            reset_routing_stats(self.model)
            transformer_module(self.model).moe_context.record = True
        self.t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        row = {"step": state.global_step, "epoch": math.ceil(state.epoch) - 1,
               "lr": kwargs["lr_scheduler"].get_last_lr()[0],
               "seconds": round(time.perf_counter() - self.t0, 3)}
        if self.clp is not None:
            parts = torch.tensor([self.clp.last_parts[k]
                                  for k in ("total", "contrastive", "penalty")])
            if dist.is_initialized() and dist.get_world_size() > 1:
                dist.all_reduce(parts)  # the global batch's parts, not this rank's share
                parts /= dist.get_world_size()
            row.update(zip(("loss", "contrastive", "penalty"), parts.tolist(), strict=True))
        if self.moe:
            transformer_module(self.model).moe_context.record = False
            for i, s in enumerate(routing_stats(self.model)):
                row[f"L{i}_expert0_load"] = s.load[0] if s.load else float("nan")
                row[f"L{i}_load_entropy"] = s.load_entropy
        if state.global_step in self.config.val_at and state.is_world_process_zero:
            row.update(_validation_point(self.model, self.ds, self.eval_len, self.precision))
            self.model.train()
        self.rows.append(row)

    def on_log(self, args, state, control, logs=None, **kwargs):
        row = self.rows[-1] if self.rows else None
        if row is None or row["step"] != state.global_step or "loss" not in (logs or {}):
            return
        if self.clp is None:
            row["loss"] = logs["loss"]
            row["contrastive"] = logs.get("retrieval", logs["loss"])
            row["penalty"] = 0.0
        if "balance" in logs:
            row["balance"] = logs["balance"]
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{row['loss']:.4f}")

    def on_save(self, args, state, control, **kwargs):
        # with each checkpoint: a resumed run redoes the steps after it, and their rows
        if state.is_world_process_zero:
            write_log(self.run_dir, self.rows)
        done = state.global_step - self.first_step
        if self.stop_after is not None and done >= self.stop_after < state.max_steps:
            raise KeyboardInterrupt(f"stopped after {done} steps (simulated kill)")


def _validation_point(model, ds: RetrievalDataset, eval_len: int, precision: Precision) -> dict:
    """Validation nDCG@10 (and recall@100) of the model as it is now, for learning curves."""
    model.eval()
    train_len, model.max_seq_length = model.max_seq_length, eval_len
    val = ds.validation()
    run = retrieve(model, val, progress=False, bf16=precision.bf16)
    model.max_seq_length = train_len
    mean = evaluate_run(run, val.qrels).mean
    return {"val_ndcg_cut_10": mean["ndcg_cut_10"], "val_recall_100": mean["recall_100"]}


# --------------------------------------------------------------------------- the run


def _distributed() -> tuple[int, int]:
    """(rank, world size); initialises the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if world > 1:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def study_trainer(model, config: TrainConfig, examples: list[Example], m: int,
                  loss: torch.nn.Module, out_dir: Path, precision: Precision, steps: int,
                  callbacks: list[TrainerCallback], world: int = 1,
                  device: str | None = None) -> SentenceTransformerTrainer:
    """The run's ``SentenceTransformerTrainer``: the groups as dataset columns, the study's
    collator, batch sampler (global batches, split across processes), loss and ``callbacks``
    (the trainer's printer removed: ``StudyLog`` shows progress), and its arguments: fused
    AdamW at ``config.lr`` with its weight decay (one pass over the parameters, where the
    per-tensor loop cost a noticeable share of a short CPU step), warmup then linear decay
    (or constant), bf16 autocast of the forward where ``precision`` says the machine computes
    it natively, a checkpoint every ``config.checkpoint_every`` steps (the last one kept), no
    gradient clipping, no reporting."""
    data = training_dataset(examples, config, m)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir), per_device_train_batch_size=config.batch_size,
        num_train_epochs=config.epochs, max_steps=steps, learning_rate=config.lr,
        weight_decay=config.weight_decay, warmup_steps=config.warmup_ratio,
        lr_scheduler_type="linear" if config.schedule == "linear" else "constant_with_warmup",
        optim="adamw_torch_fused", max_grad_norm=0.0,
        bf16=precision.bf16, use_cpu=device == "cpu" or not torch.cuda.is_available(),
        seed=config.seed, dataloader_drop_last=True, logging_steps=1, report_to="none",
        save_strategy="steps", save_steps=config.checkpoint_every, save_total_limit=1,
        batch_sampler=batch_sampler(examples, config), disable_tqdm=True,
        accelerator_config={"split_batches": world > 1},
        ddp_backend="gloo" if world > 1 and not torch.cuda.is_available() else None)
    trainer = SentenceTransformerTrainer(
        model=model, args=args, train_dataset=data, loss=loss, callbacks=callbacks,
        data_collator=collator(model, config.max_query_len, config.max_passage_len,
                               data.column_names))
    trainer.remove_callback(PrinterCallback)
    return trainer


def train(
    config: TrainConfig,
    root: Path | None = None,
    progress: bool = True,
    stop_after_steps: int | None = None,
    device: str | None = None,
) -> RunResult:
    """Mine, fine-tune with ``SentenceTransformerTrainer`` and evaluate ``config``; reuse the
    run if it already finished, resume it from its last checkpoint if it was interrupted.

    Args:
        config: the run.
        root: folder of runs (default ``results/runs``).
        progress: progress bars.
        stop_after_steps: raise ``KeyboardInterrupt`` once this many optimizer steps of this
            call are checkpointed (the resume test's simulated kill).
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
    if finished(run_dir):
        done = load_run(run_dir)
        check_same_config(done.config, config, run_dir)
        return done
    torch.manual_seed(config.seed)
    model, counts = prepare_model(config, device)
    eval_len = model.max_seq_length
    # Every policy leaves the model equal to the base model at step 0 (MoE experts are copies,
    # LoRA's B is zero), so the base model's cached embeddings serve the mining.
    mined = mined_groups(config, ds, model, progress and rank == 0)
    m = queries_per_negative(config, mined.records)
    examples, short = to_examples(mined.records, config.mining.num_negatives, m)
    if len(examples) < config.batch_size:
        raise ValueError(f"no full batch of {config.batch_size} from {len(examples)} usable "
                         "training groups")
    steps = (len(examples) // config.batch_size) * config.epochs
    loss = study_loss(model, config, m, gather=world > 1)
    if rank == 0:
        write_info(run_dir, {
            "run_id": rid, "label": config.label, "config": asdict(config),
            "data_checksum": ds.checksum, "data_counts": ds.counts(), "params": asdict(counts),
            "mining": mined.summary, "usable_groups": len(examples),
            "skipped_short_groups": short, "queries_per_negative": m, "steps": steps,
            "world_size": world, "precision": precision.record(),
            "batches": batch_statistics(examples, make_batches(examples, config))})
    log = StudyLog(run_dir, model, loss, config, ds, eval_len, precision, stop_after_steps,
                   progress and rank == 0)
    trainer = study_trainer(model, config, examples, m, loss, run_dir / CHECKPOINTS, precision,
                            steps, [log], world, device)
    last = get_last_checkpoint(str(run_dir / CHECKPOINTS)) if (run_dir / CHECKPOINTS).exists() \
        else None
    if last:
        print(f"resuming {rid} from {Path(last).name}")
    with training_attention(precision):
        trainer.train(resume_from_checkpoint=last)
    model.eval()
    model.max_seq_length = eval_len
    if config.policy == "lora":
        merge_lora(model)
    if rank != 0:
        dist.barrier()
        return None  # type: ignore[return-value]
    write_log(run_dir, log.rows)
    save_model(run_dir, model)
    result = evaluate_into(model, rid, run_dir, ds, ood, progress, precision,
                           test=config.test_eval)
    shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
    if world > 1:
        dist.barrier()
    return RunResult(rid, run_dir, config, *result)


def main(argv: list[str] | None = None) -> None:
    """``python -m clp_utils.training --config run.json [--set key=value ...]``."""
    parser = argparse.ArgumentParser(prog="python -m clp_utils.training",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, help="JSON file with TrainConfig fields")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override fields (values parsed as JSON when they parse)")
    parser.add_argument("--root", type=Path, default=None)
    args = parser.parse_args(argv)
    configure(**from_environment())  # the command line's edge: $CLP_RESULTS_DIR
    d = json.loads(args.config.read_text()) if args.config else {}
    for key, _, value in (item.partition("=") for item in args.set):
        try:
            d[key] = json.loads(value)
        except json.JSONDecodeError:
            d[key] = value
    try:
        config = TrainConfig.from_dict(d)
        problem = check_model_name(config.model)
    except (TypeError, ValueError) as err:
        problem = err
    if problem:
        print(f"{parser.prog}: error: {problem}", file=sys.stderr)
        raise SystemExit(2)
    result = train(config, root=args.root)
    if result is not None:
        print(json.dumps({"run_id": result.run_id, "metrics": result.metrics}, indent=2))


if __name__ == "__main__":
    main()


__all__ = ["TrainConfig", "RunResult", "train", "load_run", "run_id"]
