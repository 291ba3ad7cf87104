"""Where a run lives and how it is read: the run store.

A run is ``results/runs/<run-id>/`` (``run_id``: a hash of what determines its numbers), so a
finished run is reused and a changed parameter never reuses a stale one. It holds
``config.json`` (config, label, data checksum, parameter counts, mining summary), ``log.csv``
(per step), ``checkpoints/`` (while training), ``model/`` (a plain sentence-transformers
model) and the test (``run.trec``, ``metrics.json``, ``per_query.csv``), ``val/`` and
``ood/`` evaluations. Nothing outside this module opens those files by path: ``RunResult``
is the accessor, ``load_run`` reads one back, ``locate``/``is_finished`` find one.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import pandas as pd
import torch

from clp_utils.base.io import atomic_dir, atomic_write, slug, stable_hash, write_json
from clp_utils.base.paths import REPO_ROOT, results_dir
from clp_utils.base.precision import Precision, decide
from clp_utils.batching import load_training_data
from clp_utils.data import DATA_DIR, RetrievalDataset, read_qrels
from clp_utils.evaluation import (
    RetrievalResult,
    committed_dir,
    evaluate_model,
    read_evaluation,
    save_evaluation,
)
from clp_utils.models import load_model
from clp_utils.retrieval import retrieve_splits
from clp_utils.train_config import TrainConfig, science

RUNS_DIR_NAME = "runs"


def runs_root(root: Path | None = None) -> Path:
    """The folder of runs (``results/runs`` unless ``root`` says otherwise)."""
    return Path(root or results_dir() / RUNS_DIR_NAME)


def run_id(config: TrainConfig, data_checksum: str, precision: Precision | None = None) -> str:
    """``<loss>-<hash>``: the hash of ``science(config)`` (every field but the bookkeeping
    ones, defaults included: editing a default of ``TrainConfig`` or ``MiningConfig`` gives
    every affected run a new id; renaming a row or checkpointing more often reuses it), the
    data checksum and, with ``precision``, the precision that ran rather than the setting
    (``bf16="auto"`` and ``True`` on a bf16 machine are one run). The attention kernel and
    thread count are left out: they move a result by float rounding only."""
    bf16 = precision.bf16 if precision is not None else config.bf16
    return f"{slug(config.loss)}-{stable_hash([science(config) | {'bf16': bf16}, data_checksum])}"


def check_same_config(stored: TrainConfig, wanted: TrainConfig, run_dir: Path) -> None:
    """Refuse to reuse a run folder whose stored config differs from the one asked for in
    what determines its numbers (``science``): a finished run is never read back for another
    config."""
    a, b = science(stored), science(wanted)
    if a != b:
        diff = sorted(k for k in a if a[k] != b.get(k))
        raise RuntimeError(f"{run_dir / 'config.json'}: the run stored here was trained with "
                           f"other values of {diff} than the config asked for; delete the "
                           "folder to retrain it")


def data_checksum(ds: RetrievalDataset, ood: RetrievalDataset | None) -> str:
    """What the run id holds of a run's data: the in-domain and out-of-domain checksums."""
    return ds.checksum + (ood.checksum if ood else "")


def locate(config: TrainConfig, root: Path | None = None, device: str | None = None) -> Path:
    """The folder ``config``'s run has (or will have) on this machine."""
    ds, ood = load_training_data(config)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return runs_root(root) / run_id(config, data_checksum(ds, ood), decide(config.bf16, dev))


def is_finished(config: TrainConfig, root: Path | None = None) -> bool:
    """Whether ``config``'s run has finished here."""
    return finished(locate(config, root))


def finished(run_dir: Path) -> bool:
    """Whether the run in ``run_dir`` has finished (its ``metrics.json`` exists)."""
    return (run_dir / "metrics.json").exists()


def committed_run(config: TrainConfig) -> Path | None:
    """``config``'s run among the committed results (``evaluation.committed_dir() / "runs"``)
    in whichever precision it ran (a laptop without bf16 reads the runs a bf16 machine
    committed), or None. Its folder holds no model and no run files."""
    ds, ood = load_training_data(config)
    for bf16 in (True, False):  # the precision that ran is part of the id (``run_id``)
        found = committed_dir() / RUNS_DIR_NAME / run_id(replace(config, bf16=bf16),
                                                          data_checksum(ds, ood))
        if finished(found):
            return found
    return None


@dataclass
class RunResult:
    """A run in the store: where it lives, its config and its evaluations (test, validation,
    out-of-domain); the accessor of everything in its folder."""

    run_id: str
    run_dir: Path
    config: TrainConfig
    in_domain: RetrievalResult | None  # None for a validation-only run (test_eval=False)
    ood: RetrievalResult | None
    val: RetrievalResult | None = None

    @property
    def metrics(self) -> dict[str, float]:
        """Test metrics (empty for a validation-only run)."""
        return self.in_domain.metrics if self.in_domain is not None else {}

    @cached_property
    def info(self) -> dict:
        """``config.json``: config, data counts, parameter counts, mining summary, steps,
        precision, batch statistics."""
        return json.loads((self.run_dir / "config.json").read_text(encoding="utf-8"))

    @property
    def log(self) -> pd.DataFrame:
        """``log.csv``: one row per optimizer step."""
        return read_log(self.run_dir)

    @property
    def model_path(self) -> Path:
        """The fine-tuned model's folder (a plain sentence-transformers model)."""
        return self.run_dir / "model"

    def load_model(self, device: str | None = None):
        """The fine-tuned model (``models.load_model`` on ``model_path``)."""
        return load_model(str(self.model_path), device=device)


def load_run(run_dir: Path) -> RunResult:
    """Read a finished run back (no model is loaded)."""
    run_dir = Path(run_dir)
    info = json.loads((run_dir / "config.json").read_text(encoding="utf-8"))
    config = TrainConfig.from_dict(info["config"])

    def read(d: Path) -> RetrievalResult | None:
        path = d / "metrics.json"
        meta = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        if meta.get("run") is None:  # none, or a validation-only run's (no test evaluation)
            return None
        # qrels written beside the run are read from where the run is now (a committed copy)
        qrels_path = Path(meta["qrels"])
        if (d / qrels_path.name).exists():
            qrels_path = d / qrels_path.name
        elif not qrels_path.is_absolute():
            qrels_path = REPO_ROOT / qrels_path
        return read_evaluation(d, read_qrels(qrels_path))

    return RunResult(info["run_id"], run_dir, config, read(run_dir), read(run_dir / "ood"),
                     read(run_dir / "val"))


def save_model(run_dir: Path, model) -> None:
    """Write the fine-tuned model to ``model/`` (atomically: a folder appears whole or not)."""
    with atomic_dir(run_dir / "model") as tmp:
        model.save(str(tmp))


def write_info(run_dir: Path, info: dict) -> None:
    """Write ``config.json`` (atomically)."""
    write_json(run_dir / "config.json", info)


def read_log(run_dir: Path) -> pd.DataFrame:
    """The run's ``log.csv`` (``write_log``); empty where none was written yet."""
    path = run_dir / "log.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame(columns=["step"])


def write_log(run_dir: Path, log: list[dict]) -> None:
    """Write ``log.csv`` (atomically): every step so far, columns in order of appearance."""
    columns = list(dict.fromkeys(k for row in log for k in row))
    with atomic_write(run_dir / "log.csv") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(log)


def evaluate_into(model, rid: str, run_dir: Path, ds: RetrievalDataset,
                  ood: RetrievalDataset | None, progress: bool = True,
                  precision: Precision | None = None, test: bool = True):
    """Evaluate test (``run_dir``), validation (``run_dir/val``) and out-of-domain
    (``run_dir/ood``); metrics files last, so a finished run is one with ``metrics.json``.

    Test and validation share one encoding of the corpus (validation searches its non-test
    part). Returns ``(test, ood, val)`` results (``None`` where a side does not exist).
    With ``test=False`` only validation is scored (no test or out-of-domain query is even
    embedded) and ``metrics.json`` in ``run_dir`` only marks the run as finished.
    """
    bf16 = precision.bf16 if precision is not None else "auto"

    def qrels_file(d: RetrievalDataset) -> Path | None:
        path = DATA_DIR / "squadshifts" / d.name / "qrels" / "test.tsv"
        return path if path.exists() else None  # a subset writes its own qrels

    if not test and not ds.has_validation:
        raise ValueError("test_eval=False needs a validation side (val_fraction > 0)")
    ood_res = None
    if ood is not None and test:
        ood_res = evaluate_model(model, ood.test(), run_dir / "ood", rid,
                                 qrels_path=qrels_file(ood), progress=progress, bf16=bf16)
    sides = {"test": ds.test()} if test else {}
    if ds.has_validation:
        sides["val"] = ds.validation()
    # model_id=rid caches the corpus embeddings: chapter 05 reuses them (own-query retrieval)
    runs = retrieve_splits(model, sides, model_id=rid if test else None, progress=progress,
                           bf16=bf16)
    val_res = None
    if "val" in runs:
        val_res = save_evaluation(runs["val"], sides["val"], run_dir / "val", rid)
    if not test:
        write_json(run_dir / "metrics.json", {"run": None, "qrels": None, "metrics": {},
                                              "validation_only": True})
        return None, None, val_res
    in_res = save_evaluation(runs["test"], sides["test"], run_dir, rid, qrels_file(ds))
    return in_res, ood_res, val_res
