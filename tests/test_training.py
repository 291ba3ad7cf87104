"""Training: reuse by config hash, exact resume after a kill, 1 vs 2 processes (gloo)."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from clp_utils.data import DATA_DIR
from clp_utils.mining import MiningConfig
from clp_utils.training import TrainConfig, load_run, run_id, select_queries, to_examples, train

pytestmark = pytest.mark.slow

TINY = dict(split="reddit", passages=40, train_queries=16, batch_size=4, max_query_len=16,
            max_passage_len=32, ood_split=None, checkpoint_every=1,
            mining=MiningConfig(rank_min=2, rank_max=10, num_negatives=2))


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


def test_run_id_changes_with_any_parameter_but_not_the_label():
    c = TrainConfig(**TINY)
    assert run_id(c, "x") != run_id(TrainConfig(**{**TINY, "lam": 0.2}), "x")
    assert run_id(c, "x") != run_id(c, "y")  # data checksum
    assert run_id(c, "x").split("-")[-1] == run_id(TrainConfig(**TINY, label="named"), "x").split("-")[-1]


def test_resume_after_kill_equals_uninterrupted_and_finished_runs_are_reused(tmp_path):
    need_data()
    config = TrainConfig(**TINY, loss="clp", epochs=1)
    full = train(config, root=tmp_path / "a", progress=False)
    with pytest.raises(KeyboardInterrupt):
        train(config, root=tmp_path / "b", progress=False, stop_after_steps=2)
    assert (tmp_path / "b" / full.run_id / "checkpoint.pt").exists()
    resumed = train(config, root=tmp_path / "b", progress=False)
    assert resumed.metrics == full.metrics
    wa, wb = weights(full.run_dir), weights(resumed.run_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    log_a = (full.run_dir / "log.csv").read_text().splitlines()
    log_b = (resumed.run_dir / "log.csv").read_text().splitlines()
    strip = [lambda rows: [",".join(r.split(",")[:3] + r.split(",")[4:]) for r in rows]][0]  # drop seconds
    assert strip(log_a) == strip(log_b)
    assert not (resumed.run_dir / "checkpoint.pt").exists()
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
    config = TrainConfig(**{**TINY, "train_queries": 8}, loss="clp", dropout=False)
    single = train(config, root=tmp_path / "one", progress=False, device="cpu")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_worker, args=(2, port, str(tmp_path / "two"), config), nprocs=2,
                       join=True, start_method="spawn")
    # Same global loss at every step (the log holds the global batch's loss on every rank count).
    log1 = [r.split(",") for r in (single.run_dir / "log.csv").read_text().splitlines()]
    log2 = [r.split(",") for r in (tmp_path / "two" / single.run_id / "log.csv").read_text().splitlines()]
    assert log1[0] == log2[0] and len(log1) == len(log2) == 3
    for r1, r2 in zip(log1[1:], log2[1:], strict=True):
        for col in ("loss", "contrastive", "penalty"):
            i = log1[0].index(col)
            assert float(r2[i]) == pytest.approx(float(r1[i]), abs=2e-5), (col, r1, r2)
    # Same update: Adam amplifies float noise in parameters whose gradient is ~0 (key biases),
    # so compare the whole update direction rather than every element.
    from clp_utils.models import load_model

    base = load_model("minilm").state_dict()
    w1, w2 = weights(single.run_dir), weights(tmp_path / "two" / single.run_id)
    d1 = torch.cat([(w1[k] - base[k]).flatten() for k in w1])
    d2 = torch.cat([(w2[k] - base[k]).flatten() for k in w1])
    assert d1.norm() > 0
    assert torch.nn.functional.cosine_similarity(d1, d2, dim=0) > 0.99
