"""Training: reuse by config hash, exact resume after a kill, 1 vs 2 processes (gloo)."""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from clp_utils.batching import load_training_data, select_queries, to_examples
from clp_utils.data import DATA_DIR
from clp_utils.mining import MiningConfig
from clp_utils.runstore import load_run, run_id
from clp_utils.train_config import TrainConfig
from clp_utils.training import train

pytestmark = pytest.mark.slow

TINY = dict(split="reddit", passages=40, train_queries=16, batch_size=4, max_query_len=16,
            max_passage_len=32, ood_split=None, checkpoint_every=1, no_duplicates=False,
            mining=MiningConfig(rank_min=2, rank_max=10, num_negatives=2))


@pytest.fixture(autouse=True)
def _tiny_model(tiny_model_path, monkeypatch):
    """Every run here trains conftest's tiny random BERT: resume, reuse, processes and the
    run store do not depend on trained weights."""
    monkeypatch.setitem(TINY, "model", tiny_model_path)


def need_data():
    if not (DATA_DIR / "squadshifts" / "reddit" / "corpus.jsonl").exists():
        pytest.skip("data not built (make data)")


def weights(run_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(run_dir / "model"), local_files_only=True)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_to_examples_masks_missing_own_queries_and_skips_short_records():
    records = [
        {"query": "q", "pos": "p", "neg": ["a", "b"], "neg_q": [["qa1", "qa2"], []]},
        {"query": "q2", "pos": "p2", "neg": ["a"], "neg_q": [["x"]]},
    ]
    ex, short = to_examples(records, k=2, m=2)
    assert short == 1 and len(ex) == 1
    assert ex[0].neg_qs == [["qa1", "qa2"], ["", ""]] and ex[0].mask == [1, 1, 0, 0]


def test_select_queries_is_seeded_and_sorted():
    qids = [f"q{i}" for i in range(50)]
    a, b = select_queries(qids, 10, 3), select_queries(list(reversed(qids)), 10, 3)
    assert a == b and len(set(a)) == 10 and a != select_queries(qids, 10, 4)


def test_run_id_changes_with_the_science_but_not_the_bookkeeping():
    c = TrainConfig(**TINY)
    for science in (dict(lam=0.2), dict(seed=1), dict(lr=3e-5), dict(policy="moe"),
                    dict(mining=MiningConfig(rank_min=2, rank_max=11, num_negatives=2))):
        assert run_id(c, "x") != run_id(replace(c, **science), "x"), science
    assert run_id(c, "x") != run_id(c, "y")  # data checksum
    # a renamed row or another checkpoint interval is the same run, in the same folder
    assert run_id(c, "x") == run_id(replace(c, label="named", checkpoint_every=7), "x")


def test_run_id_changes_when_a_default_changes(tmp_path):
    """Edit a default in a copy of the package's source, as a maintainer would, and ask a
    fresh interpreter for the id of the default config: a run trained before the edit must
    not be found under the id of the config after it."""
    import inspect
    import re
    import shutil
    import subprocess
    import sys

    import clp_utils

    package = Path(clp_utils.__file__).parent

    def edited_copy(pattern: str | None = None, replacement: str = "",
                    owner: type = TrainConfig) -> Path:
        copy = tmp_path / f"edit{len(list(tmp_path.iterdir()))}"
        shutil.copytree(package, copy / "clp_utils", ignore=shutil.ignore_patterns("__pycache__"))
        if pattern:
            source = Path(inspect.getsourcefile(owner)).relative_to(package)
            path = copy / "clp_utils" / source
            text, n = re.subn(pattern, replacement, path.read_text())
            assert n == 1, f"{pattern!r} not found once in {source}"
            path.write_text(text)
        return copy

    copies = [edited_copy(),
              edited_copy(r"tau: float = [^\n]+", "tau: float = 0.07"),
              edited_copy(r"rank_max: int = \d+", "rank_max: int = 31", MiningConfig),
              edited_copy(r"(label: str = )\"\"", r'\1"renamed"'),
              edited_copy(r"checkpoint_every: int = \d+", "checkpoint_every: int = 3")]
    code = ("from clp_utils.train_config import TrainConfig; "
            "from clp_utils.runstore import run_id; "
            "print(run_id(TrainConfig(), 'data'))")
    # one fresh interpreter per copy, all at once (each spends its time importing torch)
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(c)}, cwd=c) for c in copies]
    unchanged, tau, nested, label, interval = [p.communicate()[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert unchanged == run_id(TrainConfig(), "data")  # the copy is the same code
    assert tau != unchanged
    assert nested != unchanged  # a nested config's default
    # bookkeeping defaults are not hashed: the label, the checkpoint interval
    assert label == unchanged and interval == unchanged


def test_a_finished_run_is_never_reused_for_another_config(tmp_path):
    from clp_utils.runstore import check_same_config

    stored = TrainConfig(**TINY, label="a")
    check_same_config(stored, replace(stored, label="b", checkpoint_every=9), tmp_path)
    with pytest.raises(RuntimeError, match=r"config.json.*\['tau'\]"):
        check_same_config(stored, replace(stored, tau=0.07), tmp_path)


def test_resume_after_kill_equals_uninterrupted_and_finished_runs_are_reused(tmp_path):
    need_data()
    config = TrainConfig(**TINY, loss="clp", epochs=1)
    full = train(config, root=tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(config, root=tmp_path / "b", progress=False, stop_after_steps=2)
    assert list((tmp_path / "b" / full.run_id / "checkpoints").glob("checkpoint-2"))
    resumed = train(config, root=tmp_path / "b", progress=False)
    assert resumed.metrics == full.metrics
    wa, wb = weights(full.run_dir), weights(resumed.run_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    log_a = (full.run_dir / "log.csv").read_text().splitlines()
    log_b = (resumed.run_dir / "log.csv").read_text().splitlines()
    # drop seconds
    strip = [lambda rows: [",".join(r.split(",")[:3] + r.split(",")[4:]) for r in rows]][0]
    assert strip(log_a) == strip(log_b)
    assert not (resumed.run_dir / "checkpoints").exists()
    # finished: reused without training (the model folder's mtime does not change)
    stamp = (full.run_dir / "model").stat().st_mtime_ns
    again = train(config, root=tmp_path / "a", progress=False)
    assert again.metrics == full.metrics and (full.run_dir / "model").stat().st_mtime_ns == stamp
    assert load_run(full.run_dir).metrics == full.metrics


def _worker(rank: int, world: int, port: int, root: str, config: TrainConfig) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    train(config, root=root, progress=False, device="cpu")
    torch.distributed.destroy_process_group()


def test_two_gloo_processes_train_like_one(tmp_path):
    need_data()
    config = TrainConfig(**{**TINY, "train_queries": 8}, loss="clp", dropout=False, bf16=False)
    single = train(config, root=tmp_path / "one", progress=False, device="cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_worker, args=(2, port, str(tmp_path / "two"), config), nprocs=2,
                       join=True, start_method="spawn")
    # Same global loss at every step (the log holds the global batch's loss on every rank count).
    log1 = [r.split(",") for r in (single.run_dir / "log.csv").read_text().splitlines()]
    log2 = [r.split(",")
            for r in (tmp_path / "two" / single.run_id / "log.csv").read_text().splitlines()]
    assert log1[0] == log2[0] and len(log1) == len(log2) == 3
    for r1, r2 in zip(log1[1:], log2[1:], strict=True):
        for col in ("loss", "contrastive", "penalty"):
            i = log1[0].index(col)
            assert float(r2[i]) == pytest.approx(float(r1[i]), abs=2e-5), (col, r1, r2)
    # Same update: Adam amplifies float noise in parameters whose gradient is ~0 (key biases),
    # so compare the whole update direction rather than every element.
    from clp_utils.models import load_model

    base = load_model(config.model).state_dict()
    w1, w2 = weights(single.run_dir), weights(tmp_path / "two" / single.run_id)
    d1 = torch.cat([(w1[k] - base[k]).flatten() for k in w1])
    d2 = torch.cat([(w2[k] - base[k]).flatten() for k in w1])
    assert d1.norm() > 0
    assert torch.nn.functional.cosine_similarity(d1, d2, dim=0) > 0.99


# --------------------------------------------------------------------------- batches


def group(pos, negs, q=None):
    from clp_utils.batching import Example

    return Example(q or f"q-{pos}", f"text {pos}", [f"text {n}" for n in negs], [[""]] * len(negs),
                   [0.0] * len(negs), pos, list(negs))


def test_no_duplicate_batches_never_repeat_a_passage_and_are_seeded():
    """The trainer's sampler (sentence-transformers' NoDuplicatesBatchSampler on passage ids)
    keeps every passage out of a batch twice, is seeded by the run's seed and the epoch, and
    plain batches of the same groups hold false in-batch negatives."""
    from clp_utils.batching import false_in_batch_negatives
    from clp_utils.training import make_batches

    # 5 questions per passage, negatives drawn among the same 40 passages: collisions galore
    rng = torch.Generator().manual_seed(0)
    examples = []
    for i in range(200):
        pos = f"p{i % 40}"
        negs = [f"p{int(j)}" for j in torch.randperm(40, generator=rng)[:3]
                if f"p{int(j)}" != pos][:2]
        examples.append(group(pos, negs, q=f"q{i}"))
    config = TrainConfig(batch_size=8, seed=3)
    batches = make_batches(examples, config)
    assert batches and all(len(b) == 8 for b in batches)
    for b in batches:
        ids = [d for i in b for d in [examples[i].pos_id, *examples[i].neg_ids]]
        assert len(ids) == len(set(ids))
    first_pass = batches[: len({i for b in batches for i in b}) // 8]
    assert len({i for b in first_pass for i in b}) == 8 * len(first_pass)  # no group twice
    assert batches == make_batches(examples, config) != make_batches(examples, config, epoch=1)
    assert batches != make_batches(examples, replace(config, seed=4))
    assert false_in_batch_negatives(examples, batches)["false_negatives_per_batch"] == 0
    plain = false_in_batch_negatives(
        examples, make_batches(examples, replace(config, no_duplicates=False)))
    assert plain["share_of_batches_with_false_negative"] > 0.5


def test_false_in_batch_negatives_counts_by_hand():
    from clp_utils.batching import false_in_batch_negatives

    # q0's positive p0 is q1's hard negative: q0 is affected; q1's positive p1 appears nowhere
    # else; q2 shares its positive p0 with q0: both q0 and q2 are affected.
    examples = [group("p0", ["p5"]), group("p1", ["p0"]), group("p0", ["p6"], q="q2"),
                group("p3", ["p4"])]
    out = false_in_batch_negatives(examples, [[0, 1, 2, 3]])
    assert out["false_negatives_per_batch"] == 2 and out["share_of_queries_affected"] == 0.5
    assert false_in_batch_negatives(examples, [[1, 3]])["false_negatives_per_batch"] == 0


def test_every_logged_part_lives_on_the_losss_device_and_dtype():
    """The InfoNCE rows logged their penalty as a CPU float32 zero (crashed torch.stack on CUDA);
    a float64 model shows the same mismatch on a CPU."""
    from clp_utils.batching import Example
    from clp_utils.training import step_loss

    torch.manual_seed(0)
    model, _ = __import__("clp_utils.training", fromlist=["prepare_model"]).prepare_model(
        TrainConfig(**TINY), device="cpu")
    model.double()
    batch = [Example(f"question {i}", f"passage {i}", [f"other {i}", f"more {i}"],
                     [[f"own {i}"], [f"own2 {i}"]], [1.0, 1.0]) for i in range(3)]
    for loss in ("infonce", "clp"):
        config = TrainConfig(**TINY, loss=loss)
        parts = step_loss(model, batch, config, m=1, gather=False)
        ref = parts["loss"]
        assert ref.dtype == torch.float64
        for name, value in parts.items():
            assert value.device == ref.device and value.dtype == ref.dtype, (loss, name)
        torch.stack([v.detach() for v in parts.values()])


def test_attention_dropout_is_set_on_every_attention_module():
    from clp_utils.training import prepare_model

    model, _ = prepare_model(TrainConfig(**TINY, attention_dropout=0.0), device="cpu")
    attn = [m for m in model.modules() if type(m).__name__.endswith("SelfAttention")]
    layers = model[0].auto_model.config.num_hidden_layers
    assert len(attn) == layers and all(m.dropout.p == 0.0 for m in attn)
    hidden = [m for n, m in model.named_modules() if n.endswith("output.dropout")]
    assert hidden and all(m.p == 0.1 for m in hidden)  # hidden dropout untouched
    model, _ = prepare_model(TrainConfig(**TINY), device="cpu")
    assert all(m.dropout.p == 0.1 for m in model.modules()
               if type(m).__name__.endswith("SelfAttention"))


# --------------------------------------------------------------------------- config checks


@pytest.mark.parametrize("bad, error", [
    (dict(lr="abc"), TypeError), (dict(batch_size=0), ValueError), (dict(tau=0.0), ValueError),
    (dict(lam=1.5), ValueError), (dict(train_queries=-5), ValueError), (dict(epochs=0), ValueError),
    (dict(warmup_ratio=2.0), ValueError), (dict(max_passage_len=0), ValueError),
    (dict(lr=-1e-5), ValueError), (dict(batch_size=2.5), TypeError), (dict(seed=True), TypeError),
    (dict(val_fraction=1.0), ValueError), (dict(attention_dropout=1.0), ValueError),
    (dict(loss="mse"), ValueError), (dict(policy="all"), ValueError),
    (dict(bf16="maybe"), ValueError), (dict(moe_top_k=3), ValueError),
    (dict(val_at=[0]), ValueError), (dict(in_batch="yes"), TypeError),
    (dict(test_eval=False, val_fraction=0.0), ValueError), (dict(lr=float("nan")), ValueError),
])
def test_train_config_rejects_bad_values_at_once(bad, error):
    field = next(iter(bad))
    with pytest.raises(error, match=field.split("_")[0]):
        TrainConfig(**bad)


def test_batch_size_must_divide_by_the_world_size(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(ValueError, match="world size 3"):
        TrainConfig(batch_size=16)
    assert TrainConfig(batch_size=15).batch_size == 15


@pytest.mark.parametrize("arg, words", [
    ("lr=abc", ["lr"]), ("lam=1.5", ["lam"]), ("train_queries=-5", ["train_queries"]),
    ("nope=1", ["nope"]), ("split=nope", ["split", "reddit", "hindi", "miracl-"]),
    ("model=no-such/model-anywhere", ["model", "not a local folder", "minilm", "unreachable"]),
])
def test_cli_names_the_bad_field_in_one_line_and_exits_2(arg, words, monkeypatch, capsys):
    """A bad value stops the command line at once with one line naming the field and the
    choices, never a traceback or a wait on the network (the hub is off here)."""
    from clp_utils.training import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SystemExit) as stop:
        main(["--set", arg])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and "error" in lines[0], lines
    assert all(w in lines[0] for w in words), lines[0]


def test_validation_only_runs_never_score_test_queries(tmp_path):
    need_data()
    config = TrainConfig(**{**TINY, "passages": 80}, loss="infonce", test_eval=False, val_at=(1,))
    res = train(config, root=tmp_path, progress=False)
    assert res.in_domain is None and res.metrics == {} and res.val.metrics["ndcg_cut_10"] >= 0
    assert not (res.run_dir / "run.trec").exists() and (res.run_dir / "val" / "run.trec").exists()
    log = (res.run_dir / "log.csv").read_text().splitlines()
    assert "val_ndcg_cut_10" in log[0] and log[1].split(",")[-2] != ""
    ds, _ = load_training_data(config)
    val_q = set(ds.validation().queries)
    assert {line.split()[0]
            for line in (res.run_dir / "val" / "run.trec").read_text().splitlines()} == val_q
    assert not val_q & set(ds.test().queries)
    again = load_run(res.run_dir)
    assert again.in_domain is None and again.val.metrics == res.val.metrics


def test_parallel_runner_trains_every_run_in_its_own_process(tmp_path, monkeypatch):
    """parallel.train_parallel: one process per run, two at a time, sharing the mining and
    embedding caches; a failing run is named with its log."""
    need_data()
    from clp_utils.machinery import parallel
    from clp_utils.profiles import Cell

    monkeypatch.setenv("CLP_RESULTS_DIR", str(tmp_path / "results"))  # the workers' results
    configs = [TrainConfig(**TINY, loss=loss, seed=seed, label=f"par-{loss}")
               for loss in ("infonce", "clp") for seed in (0, 1)]
    monkeypatch.setattr(parallel, "cells",
                        lambda study: [Cell("row", "reddit", c.seed, c) for c in configs])
    done = parallel.train_parallel("smoke", workers=2, log_dir=tmp_path / "logs")
    assert sorted(done) == sorted(c.label for c in configs)
    runs = sorted((tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 4 and all((r / "metrics.json").exists() for r in runs)
    # the processes shared one mining cache: one mined set per query sample, no partial files
    mined = list((tmp_path / "results" / "cache" / "mining").glob("*.jsonl"))
    assert len(mined) == 2 and not list((tmp_path / "results").rglob("*.tmp"))
    # a config the worker refuses (TrainConfig validates at construction, so this one is
    # made past the check, as a hand-edited run file would be)
    bad = [replace(configs[0], label="bad")]
    object.__setattr__(bad[0], "split", "no-such-split")
    monkeypatch.setattr(parallel, "cells",
                        lambda study: [Cell("row", "reddit", 0, c) for c in bad])
    with pytest.raises(RuntimeError, match=r"bad \(log: .*\.log\)"):
        parallel.train_parallel("smoke", workers=2, log_dir=tmp_path / "logs2")


def test_a_reopened_chapter_reads_the_committed_results_and_never_trains(tmp_path, monkeypatch):
    """What ``make study`` commits of a run (no model, no run file) reads back to the same
    per-query metrics; ``run_study(train=False)`` uses it and trains nothing, and stops
    naming the parameter when something it needs is not committed."""
    need_data()
    from clp_utils import runstore
    from clp_utils import study as S
    from clp_utils.base import paths
    from clp_utils.machinery import publish
    from clp_utils.profiles import Cell

    config = TrainConfig(**TINY, loss="clp", epochs=1)
    full = train(config, root=tmp_path / "a", progress=False)
    committed = tmp_path / "committed"
    publish._copy_small(full.run_dir, committed / "runs" / full.run_id)
    assert not list(committed.rglob("run.trec")) and not list(committed.rglob("model"))
    monkeypatch.setattr(runstore, "committed_dir", lambda: committed)
    back = load_run(runstore.committed_run(config))
    assert back.metrics == full.metrics
    assert back.in_domain.evaluation.per_query == full.in_domain.evaluation.per_query
    assert back.val.evaluation.per_query == full.val.evaluation.per_query
    with pytest.raises(FileNotFoundError, match="make study"):
        back.in_domain.run  # noqa: B018  (fusion would need it: it says where it comes from)

    monkeypatch.setattr(paths, "_SETTINGS", {**paths._SETTINGS, "results": tmp_path / "empty"})
    monkeypatch.setattr(S, "study_configs", lambda p: [Cell("ANCE + CLP", "reddit", 0, config)])
    monkeypatch.setattr(S, "study_profile", lambda p: p)
    monkeypatch.setattr(S, "training_plan", lambda cells, smaller=None: f"{len(cells)} run(s)")
    monkeypatch.setattr(S, "_train", lambda *a, **k: pytest.fail("a reopened chapter trained"))
    (run,) = S.run_study("reopened", train=False, progress=False)
    assert run.in_domain == full.in_domain.evaluation.per_query
    with pytest.raises(SystemExit, match=r"(?s)1 run.*train = True"):  # chapter 05 needs models
        S.run_study("reopened", train=False, progress=False, models=True)
    monkeypatch.setattr(runstore, "committed_dir", lambda: tmp_path / "nothing")
    with pytest.raises(SystemExit, match="train = True"):
        S.run_study("reopened", train=False, progress=False)
