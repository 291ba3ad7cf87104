"""Train one configured run: mine, fine-tune, evaluate; resumable, reusable, torchrun-ready.

``train(config)`` is the study's single entry point (``python -m clp_utils.training`` is the
same from the shell, and ``torchrun --nproc_per_node N -m clp_utils.training ...`` runs it on
several processes). A run lives in ``results/runs/<run-id>/``, where the run id is a hash of
the config and the data checksum, so a finished run is reused and a changed parameter never
reuses a stale one:

    config.json     the config, the data checksum, parameter counts, mining summary
    log.csv         per step: loss, its two parts, learning rate, MoE routing statistics
    checkpoint.pt   the latest state (model, optimizer, scheduler, RNG, log), while training
    model/          the fine-tuned model (reloads with plain ``SentenceTransformer(path)``)
    run.trec, metrics.json, per_query.csv          in-domain test evaluation
    ood/run.trec, ood/metrics.json, ...            out-of-domain (forgetting) evaluation

The loop is plain PyTorch rather than ``SentenceTransformerTrainer``: it has to re-mine
between epochs, log routing statistics per step and resume bit-for-bit after a kill, and each
of those is a few lines here. The losses are the sentence-transformers losses of
``clp_utils.losses``' functional core, so the same objective also drops into the trainer.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from clp_utils.data import DATA_DIR, RetrievalDataset
from clp_utils.evaluation import RetrievalResult, evaluate_model, evaluate_run, read_trec
from clp_utils.io import atomic_dir, atomic_write, stable_hash, write_json
from clp_utils.losses import clp_loss, info_nce
from clp_utils.mining import MiningConfig, mine
from clp_utils.models import load_model
from clp_utils.paths import RESULTS_DIR
from clp_utils.policies import apply_policy, merge_lora


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a run. ``label`` names it for people and is not hashed."""

    label: str = ""
    model: str = "minilm"
    split: str = "reddit"
    passages: int | None = None  # keep a subset of the split's passages (smoke profile)
    train_queries: int | None = 336  # training queries sampled with the seed; None = all
    mining: MiningConfig = field(default_factory=MiningConfig)
    loss: str = "clp"  # "infonce" | "clp"
    variant: str = "paper"  # CLP penalty: "paper" (mean) | "sum" (published formula)
    lam: float = 0.1
    tau: float = 0.05
    in_batch: bool = True
    policy: str = "full"  # "full" | "intermediate" | "moe" | "lora"
    moe_experts: int = 2
    moe_top_k: int = 1
    moe_routing: str = "paper"  # "paper" | "learned"
    moe_balance: float = 0.0
    lora_rank: int = 8
    seed: int = 0
    epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_query_len: int = 64
    max_passage_len: int = 256
    bf16: bool = False  # torch.autocast bf16 for the training forward passes
    remine_each_epoch: bool = False  # ANCE rounds: re-mine with the current model
    checkpoint_every: int = 10
    dropout: bool = True  # False trains in eval mode (used to compare 1 vs N processes exactly)
    freeze_embeddings: bool = False  # word embeddings stay fixed (saves memory with big vocabularies)
    ood_split: str | None = "new_wiki"
    ood_passages: int | None = None

    def __post_init__(self) -> None:
        if self.loss not in ("infonce", "clp"):
            raise ValueError(f"loss must be 'infonce' or 'clp', got {self.loss!r}")
        if self.policy not in ("full", "intermediate", "moe", "lora"):
            raise ValueError(f"unknown policy {self.policy!r}")
        if isinstance(self.mining, dict):
            object.__setattr__(self, "mining", MiningConfig(**self.mining))

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of ``dataclasses.asdict`` (unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        return cls(**d)


@dataclass
class RunResult:
    """A finished run: where it lives and its evaluations."""

    run_id: str
    run_dir: Path
    config: TrainConfig
    in_domain: RetrievalResult
    ood: RetrievalResult | None

    @property
    def metrics(self) -> dict[str, float]:
        return self.in_domain.metrics


# --------------------------------------------------------------------------- data


def load_training_data(config: TrainConfig) -> tuple[RetrievalDataset, RetrievalDataset | None]:
    """The in-domain dataset (subset as configured) and the out-of-domain one."""
    from clp_utils.data import load_named

    ds = load_named(config.split)
    if config.passages is not None and config.passages < len(ds.corpus):
        ds = ds.subset(config.passages, seed=0)
    ood = None
    if config.ood_split:
        ood = load_named(config.ood_split)
        if config.ood_passages is not None and config.ood_passages < len(ood.corpus):
            ood = ood.subset(config.ood_passages, seed=0)
    return ds, ood


def run_id(config: TrainConfig, data_checksum: str) -> str:
    """``<label>-<hash of config and data>``; the label is not part of the hash."""
    key = asdict(config)
    key.pop("label")
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in (config.label or config.loss))
    return f"{slug}-{stable_hash([key, data_checksum])}"


def select_queries(train_qids: list[str], n: int | None, seed: int) -> list[str]:
    """``n`` training queries sampled with ``seed`` (all, in sorted order, when ``n`` is None)."""
    qids = sorted(train_qids)
    if n is None or n >= len(qids):
        return qids
    rng = np.random.default_rng(seed)
    return [qids[i] for i in sorted(rng.choice(len(qids), n, replace=False))]


@dataclass
class Example:
    """One training group: a query, its positive, k negatives, each with m own-query slots."""

    query: str
    pos: str
    negs: list[str]
    neg_qs: list[list[str]]  # k lists of m texts ("" where masked)
    mask: list[float]  # k*m, j-major


def to_examples(records: list[dict], k: int, m: int) -> tuple[list[Example], int]:
    """Training groups from mined records; records with fewer than k negatives are skipped."""
    out, short = [], 0
    for r in records:
        if len(r["neg"]) < k:
            short += 1
            continue
        neg_qs, mask = [], []
        for qs in r["neg_q"][:k]:
            slots = list(qs[:m]) + [""] * (m - len(qs[:m]))
            neg_qs.append(slots)
            mask += [1.0 if t else 0.0 for t in slots]
        out.append(Example(r["query"], r["pos"], list(r["neg"][:k]), neg_qs, mask))
    return out, short


def queries_per_negative(config: TrainConfig, records: list[dict]) -> int:
    """m: 1 for the paper's variant, else the configured H* size (or the largest found)."""
    if config.variant == "paper":
        return 1
    if isinstance(config.mining.neg_queries, int):
        return config.mining.neg_queries
    return max((len(qs) for r in records for qs in r["neg_q"]), default=1)


def training_records(config: TrainConfig, model=None, progress: bool = False) -> list[dict]:
    """The mined records a run trained on (first round), from the mining cache when present."""
    ds, _ = load_training_data(config)
    train_split = ds.train()
    qids = select_queries(list(train_split.queries), config.train_queries, config.seed)
    model = model or load_model(config.model)
    return mine(model, train_split, config.mining, model_id=config.model, data_checksum=ds.checksum,
                query_ids=qids, progress=progress).records


# --------------------------------------------------------------------------- the step


def embed(model, texts: list[str], max_len: int, kind: str = "query") -> torch.Tensor:
    """Sentence embeddings with gradients, truncated to ``max_len`` tokens.

    ``kind`` picks the model's own prompt (``"query"`` or ``"passage"``/``"document"``), so a
    model like multilingual-e5 trains with the same "query: "/"passage: " prefixes it is
    evaluated with.
    """
    prompts = getattr(model, "prompts", None) or {}
    names = ("query",) if kind == "query" else ("passage", "document")
    prefix = next((prompts[n] for n in names if prompts.get(n)), "")
    model.max_seq_length = max_len
    # preprocess(prompt=...) is what encode(prompt_name=...) does, so training sees the exact
    # inputs evaluation sees.
    features = model.preprocess(texts, prompt=prefix or None)
    features = {k: v.to(model.device) for k, v in features.items() if isinstance(v, torch.Tensor)}
    return model(features)["sentence_embedding"]


def step_loss(model, batch: list[Example], config: TrainConfig, m: int, gather: bool) -> dict[str, torch.Tensor]:
    """Forward passes of one (local) batch and the configured loss with its parts."""
    b, k = len(batch), len(batch[0].negs)
    passages = [e.pos for e in batch] + [n for e in batch for n in e.negs]
    docs = embed(model, passages, config.max_passage_len, kind="passage")
    pos, negs = docs[:b], docs[b:].reshape(b, k, -1)
    queries = [e.query for e in batch]
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
        contrastive = info_nce(q, pos, negs, tau=config.tau, in_batch=config.in_batch, gather=gather)
        parts = {"loss": contrastive, "contrastive": contrastive, "penalty": torch.zeros(())}
    if config.policy == "moe" and config.moe_balance > 0:
        from clp_utils.moe import moe_balance_loss

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
        from clp_utils.moe import transformer_module
        from clp_utils.policies import count_parameters

        transformer_module(model).auto_model.get_input_embeddings().requires_grad_(False)
        counts = count_parameters(model, config.policy + "+frozen-embeddings")
    return model, counts


def _routing_columns(model) -> dict[str, float]:
    from clp_utils.moe import routing_stats

    row = {}
    for i, s in enumerate(routing_stats(model)):
        row[f"L{i}_expert0_load"] = s.load[0] if s.load else float("nan")
        row[f"L{i}_load_entropy"] = s.load_entropy
    return row


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
    root = Path(root or RESULTS_DIR / "runs")
    ds, ood = load_training_data(config)
    rid = run_id(config, ds.checksum + (ood.checksum if ood else ""))
    run_dir = root / rid
    if (run_dir / "metrics.json").exists():
        return load_run(run_dir)

    torch.manual_seed(config.seed)
    model, counts = prepare_model(config, device)
    eval_len = model.max_seq_length
    train_split = ds.train()
    qids = select_queries(list(train_split.queries), config.train_queries, config.seed)
    # Every policy leaves the model equal to the base model at step 0 (MoE experts are copies,
    # LoRA's B is zero), so the base model's cached embeddings serve the first mining round.
    mined = mine(model, train_split, config.mining, model_id=config.model, data_checksum=ds.checksum,
                 query_ids=qids, progress=progress and rank == 0)
    m = queries_per_negative(config, mined.records)
    examples, short = to_examples(mined.records, config.mining.num_negatives, m)
    steps_per_epoch = len(examples) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(examples)} usable training groups < batch size {config.batch_size}")
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} is not divisible by {world} processes")
    total_steps = steps_per_epoch * config.epochs

    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(
        optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)

    info = {"run_id": rid, "config": asdict(config), "data_checksum": ds.checksum,
            "params": asdict(counts), "mining": mined.summary, "usable_groups": len(examples),
            "skipped_short_groups": short, "queries_per_negative": m,
            "steps": total_steps, "world_size": world}
    if rank == 0:
        write_json(run_dir / "config.json", info)

    step, log = 0, []
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        step, log, examples = state["step"], state["log"], [Example(**e) for e in state["examples"]]
        print(f"resuming {rid} at step {step}/{total_steps}")

    from clp_utils.moe import moe_layers, record_routing

    has_moe = bool(moe_layers(model))
    autocast = torch.autocast(model.device.type, dtype=torch.bfloat16) if config.bf16 else nullcontext()
    model.train(config.dropout)
    done_this_call = 0
    bar = tqdm(total=total_steps, initial=step, desc=rid, disable=not progress or rank != 0)
    for epoch in range(step // steps_per_epoch, config.epochs):
        if config.remine_each_epoch and epoch > 0 and step == epoch * steps_per_epoch:
            # ANCE round: negatives from the model as it is now (not cached: in-memory weights).
            model.max_seq_length = eval_len
            fresh = mine(model, train_split, config.mining, model_id=None, query_ids=qids,
                         cache_dir=None, progress=False)
            examples, _ = to_examples(fresh.records, config.mining.num_negatives, m)
            model.train(config.dropout)
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        for b in range(steps_per_epoch):
            if epoch * steps_per_epoch + b < step:
                continue  # done before the resume
            idx = order[b * config.batch_size:(b + 1) * config.batch_size].tolist()
            local = config.batch_size // world
            batch = [examples[i] for i in idx[rank * local:(rank + 1) * local]]
            t0 = time.perf_counter()
            with record_routing(model) if has_moe else nullcontext(), autocast:
                parts = step_loss(model, batch, config, m, gather=world > 1)
            optimizer.zero_grad(set_to_none=True)
            parts["loss"].backward()
            if world > 1:
                for p in params:
                    if p.grad is None:
                        p.grad = torch.zeros_like(p)
                    dist.all_reduce(p.grad)
                    p.grad /= world
            optimizer.step()
            scheduler.step()
            step += 1
            values = torch.stack([v.detach().float() for v in parts.values()])
            if world > 1:
                dist.all_reduce(values)  # log the global batch's loss, not this rank's share
                values /= world
            row = {"step": step, "epoch": epoch, "lr": scheduler.get_last_lr()[0],
                   "seconds": round(time.perf_counter() - t0, 3),
                   **dict(zip(parts, values.tolist(), strict=True))}
            if has_moe:
                row.update(_routing_columns(model))
            log.append(row)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
            done_this_call += 1
            if rank == 0:
                _write_log(run_dir / "log.csv", log)
                if step % config.checkpoint_every == 0 or step == total_steps:
                    _save_checkpoint(ckpt, model, optimizer, scheduler, step, log, examples)
            if stop_after_steps is not None and done_this_call >= stop_after_steps and step < total_steps:
                bar.close()
                raise KeyboardInterrupt(f"stopped after {done_this_call} steps (simulated kill)")
    bar.close()

    model.eval()
    model.max_seq_length = eval_len
    if config.policy == "lora":
        merge_lora(model)
    if rank != 0:
        dist.barrier()
        return None  # type: ignore[return-value]
    with atomic_dir(run_dir / "model") as tmp:
        model.save(str(tmp))
    result = evaluate_run_dirs(model, rid, run_dir, ds, ood, progress)
    ckpt.unlink(missing_ok=True)
    if world > 1:
        dist.barrier()
    return RunResult(rid, run_dir, config, *result)


def evaluate_run_dirs(model, rid: str, run_dir: Path, ds: RetrievalDataset,
                      ood: RetrievalDataset | None, progress: bool = True):
    """Evaluate in-domain (``run_dir``) and out-of-domain (``run_dir/ood``); metrics last."""
    def qrels_file(d: RetrievalDataset) -> Path | None:
        path = DATA_DIR / "squadshifts" / d.name / "qrels" / "test.tsv"
        return path if path.exists() else None  # a subset writes its own qrels

    ood_res = None
    if ood is not None:
        ood_res = evaluate_model(model, ood.test(), run_dir / "ood", rid, qrels_path=qrels_file(ood),
                                 progress=progress)
    in_res = evaluate_model(model, ds.test(), run_dir, rid, qrels_path=qrels_file(ds), progress=progress)
    return in_res, ood_res


def _write_log(path: Path, log: list[dict]) -> None:
    columns = list(dict.fromkeys(k for row in log for k in row))
    with atomic_write(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(log)


def _save_checkpoint(path: Path, model, optimizer, scheduler, step, log, examples) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "step": step,
             "log": log, "examples": [asdict(e) for e in examples]}
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)


def load_run(run_dir: Path) -> RunResult:
    """Read a finished run back (no model is loaded)."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "config.json").read_text())
    config = TrainConfig.from_dict(info["config"])

    def read(d: Path) -> RetrievalResult | None:
        if not (d / "metrics.json").exists():
            return None
        meta = json.loads((d / "metrics.json").read_text())
        qrels_path = Path(meta["qrels"])
        if not qrels_path.is_absolute():
            from clp_utils.paths import REPO_ROOT

            qrels_path = REPO_ROOT / qrels_path
        qrels = _read_qrels_any(qrels_path)
        run = read_trec(d / "run.trec")
        return RetrievalResult(d, run, evaluate_run(run, qrels))

    return RunResult(info["run_id"], run_dir, config, read(run_dir), read(run_dir / "ood"))


def _read_qrels_any(path: Path) -> dict[str, dict[str, int]]:
    """Read BEIR (``qid docid score`` with header) or TREC (``qid 0 docid rel``) qrels."""
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if not parts or parts[0] == "query-id":
            continue
        qid, docid, rel = (parts[0], parts[2], parts[3]) if len(parts) == 4 else parts
        qrels.setdefault(qid, {})[docid] = int(rel)
    return qrels


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> None:
    """``python -m clp_utils.training --config run.json [--set key=value ...]``."""
    parser = argparse.ArgumentParser(prog="python -m clp_utils.training", description=__doc__.split("\n")[0])
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
    config = TrainConfig.from_dict(d)
    result = train(config, root=args.root)
    if result is not None:
        print(json.dumps({"run_id": result.run_id, "metrics": result.metrics}, indent=2))


if __name__ == "__main__":
    main()


__all__ = ["TrainConfig", "RunResult", "train", "load_run", "run_id", "replace"]
