"""The bf16 decision: made from the machine, cached per machine, honoured by training."""

from __future__ import annotations

import json

import pytest
import torch

from clp_utils.base import paths
from clp_utils.base import precision as P

NO_BF16 = {"cpu": "test cpu", "capability": "AVX2", "avx512_bf16": False, "amx": False,
           "threads": 2, "torch": torch.__version__}
NATIVE = {**NO_BF16, "capability": "AVX512", "avx512_bf16": True}


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A fake CPU: returns a setter for what torch reports; timings counted, cache isolated."""
    monkeypatch.setitem(paths._SETTINGS, "cache", tmp_path / "cache")
    monkeypatch.setitem(paths._SETTINGS, "bf16", None)
    monkeypatch.setattr(P, "_MEMO", {})
    calls = []
    speeds = {torch.float32: 100.0, torch.bfloat16: 400.0}

    def fake_time(dtype, n=P.TIMING_SIZE, repeats=5):
        calls.append(dtype)
        return speeds[dtype]

    monkeypatch.setattr(P, "time_matmul", fake_time)
    attention_ms = {False: 10.0, True: 10.0}  # default kernel, math kernel

    def fake_attention(dtype, math, shape=P.ATTENTION_SHAPE, repeats=3):
        calls.append(("attention", dtype, math))
        return attention_ms[math]

    monkeypatch.setattr(P, "time_attention", fake_attention)

    def set_hw(hw, bf16_speed=400.0, default_ms=10.0, math_ms=10.0):
        monkeypatch.setattr(P, "cpu_hardware", lambda: dict(hw))
        speeds[torch.bfloat16] = bf16_speed
        attention_ms.update({False: default_ms, True: math_ms})
        P._MEMO.clear()

    set_hw.calls = calls
    return set_hw


def test_no_native_bf16_means_float32_without_timing(machine):
    machine(NO_BF16)
    p = P.decide("auto", "cpu")
    assert not p.bf16 and "no native bf16" in p.reason
    assert torch.bfloat16 not in machine.calls  # an emulated bf16 matmul is never timed
    assert [c for c in machine.calls if c[0] == "attention" and c[1] == torch.bfloat16] == []
    assert p.record()["precision"] == "float32" and "AVX2" in p.describe()


def test_native_bf16_is_confirmed_by_timing_and_cached_per_machine(machine, tmp_path):
    machine(NATIVE)
    p = P.decide("auto", "cpu")
    assert p.bf16 and "4.0x" in p.reason and machine.calls[:2] == [torch.float32, torch.bfloat16]
    cache = json.loads((tmp_path / "cache" / P.CACHE_FILE).read_text())
    assert list(cache.values()) == [{"float32_gflops": 100.0, "bf16_gflops": 400.0,
                                     "attention_bf16_default_ms": 10.0,
                                     "attention_bf16_math_ms": 10.0}]
    P._MEMO.clear()
    n = len(machine.calls)
    assert P.decide("auto", "cpu").bf16 and len(machine.calls) == n  # read back, not re-timed


def test_the_faster_attention_kernel_is_measured_and_used_in_training(machine):
    machine(NATIVE, default_ms=30.0, math_ms=20.0)  # flash backward slower, as on this CPU
    p = P.decide("auto", "cpu")
    assert p.attention == "math" and p.hardware["attention_default_ms"] == 30.0
    assert "math attention" in p.describe()
    assert torch.backends.cuda.flash_sdp_enabled()
    with P.training_attention(p):
        assert not torch.backends.cuda.flash_sdp_enabled()  # the math kernel only
    assert torch.backends.cuda.flash_sdp_enabled()
    machine(NATIVE, default_ms=21.0, math_ms=20.0)  # under the 1.1x margin: keep the default
    P._MEMO.clear()
    (__import__("pathlib").Path(P.cache_dir()) / P.CACHE_FILE).unlink()
    q = P.decide("auto", "cpu")
    assert q.attention == "default" and "math" not in q.describe()
    with P.training_attention(q):
        assert torch.backends.cuda.flash_sdp_enabled()


def test_both_attention_kernels_compute_the_same_attention_and_gradients():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 16, 8, generator=gen, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    mask = torch.ones(2, 1, 16, 16, dtype=torch.bool)
    mask[1, :, :, 9:] = False
    results = []
    for kernel in (None, SDPBackend.MATH):
        with sdpa_kernel(kernel) if kernel else __import__("contextlib").nullcontext():
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        grads = torch.autograd.grad(out.pow(2).sum(), (q, k, v))
        results.append((out.detach(), grads))
    # reference: softmax(q k^T / sqrt(d) + mask) v by hand
    scores = q @ k.transpose(-1, -2) / 8**0.5
    ref = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1) @ v
    ref_grads = torch.autograd.grad(ref.pow(2).sum(), (q, k, v))
    for out, grads in results:
        torch.testing.assert_close(out, ref.detach())
        for got, want in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(got, want)


def test_native_bf16_that_is_not_faster_stays_float32(machine):
    machine(NATIVE, bf16_speed=110.0)
    p = P.decide("auto", "cpu")
    assert not p.bf16 and "only 1.10x" in p.reason
    assert p.describe().startswith("float32 on CPU capability AVX512 (avx512_bf16 reported; "
                                   "bf16 not faster when timed)")


def test_forcing_and_the_environment_override(machine, monkeypatch):
    machine(NO_BF16)
    assert P.decide(True, "cpu").bf16 and not P.decide(False, "cpu").bf16
    # $CLP_BF16 reaches the decision through the command line's edge, not the environment
    monkeypatch.setenv("CLP_BF16", "1")
    assert not P.decide("auto", "cpu").bf16
    monkeypatch.setitem(paths._SETTINGS, "bf16", paths.from_environment()["bf16"])
    forced = P.decide("auto", "cpu")
    assert forced.bf16 and "$CLP_BF16" in forced.reason
    monkeypatch.setitem(paths._SETTINGS, "bf16", "0")
    assert not P.decide("auto", "cpu").bf16
    assert P.decide(True, "cpu").bf16  # an explicit setting is not "auto": not overridden
    with pytest.raises(ValueError, match="bf16 must be"):
        P.decide("sometimes", "cpu")


def test_the_cache_and_the_override_are_settings_read_at_the_command_line_edge(monkeypatch,
                                                                               tmp_path):
    monkeypatch.setattr(paths, "_SETTINGS", dict(paths._SETTINGS))
    monkeypatch.delenv("CLP_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("CLP_BF16", "0")
    env = paths.from_environment()
    assert env["cache"] == str(tmp_path / "xdg" / "clp-study") and env["bf16"] == "0"
    monkeypatch.setenv("CLP_CACHE", str(tmp_path / "own"))
    paths.configure(**paths.from_environment())
    assert paths.cache_dir() == tmp_path / "own" and (tmp_path / "own").is_dir()
    assert paths.bf16_override() == "0"
    paths.configure(results=tmp_path)  # a chapter's begin: the defaults for the rest
    assert paths.bf16_override() is None and paths._SETTINGS["cache"] is None


def test_autocast_is_entered_only_for_bf16(machine):
    machine(NO_BF16)
    with P.autocast(P.decide("auto", "cpu")):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32
    with P.autocast(P.decide(True, "cpu")):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16


@pytest.mark.slow
def test_training_honours_the_decision(machine, tmp_path, monkeypatch, tiny_model_path):
    """On a CPU without native bf16, "auto" trains and encodes in float32 with no autocast
    (the tiny random BERT of conftest: the precision does not depend on trained weights)."""
    from clp_utils import retrieval, training
    from clp_utils.data import DATA_DIR
    from clp_utils.mining import MiningConfig
    from clp_utils.models import SentenceTransformer

    if not (DATA_DIR / "squadshifts" / "reddit" / "corpus.jsonl").exists():
        pytest.skip("data not built (make data)")
    seen = {"step": [], "encode": []}
    forward = SentenceTransformer.forward

    def spy_step(*args, **kwargs):  # the model's forward in a training step (with gradients)
        if torch.is_grad_enabled():
            seen["step"].append(torch.is_autocast_enabled("cpu"))
            seen.setdefault("flash", []).append(torch.backends.cuda.flash_sdp_enabled())
        return forward(*args, **kwargs)

    def spy_autocast(precision, device_type=None):
        seen["encode"].append(precision.bf16)
        return P.autocast(precision, device_type)

    monkeypatch.setattr(SentenceTransformer, "forward", spy_step)
    monkeypatch.setattr(retrieval, "autocast", spy_autocast)
    config = training.TrainConfig(
        model=tiny_model_path, split="reddit", passages=60, train_queries=8, batch_size=4,
        max_query_len=16, max_passage_len=32, ood_split=None, no_duplicates=False,
        mining=MiningConfig(rank_min=2, rank_max=10, num_negatives=2))
    for hw, want in ((NO_BF16, False), (NATIVE, True)):
        machine(hw, default_ms=30.0 if want else 10.0, math_ms=20.0)
        seen["flash"] = []
        seen["step"].clear()
        seen["encode"].clear()
        res = training.train(config, root=tmp_path / hw["capability"], progress=False, device="cpu")
        info = json.loads((res.run_dir / "config.json").read_text())
        assert info["precision"]["precision"] == ("bf16" if want else "float32")
        assert info["precision"]["hardware"]["capability"] == hw["capability"]
        assert seen["step"] and set(seen["step"]) == {want}, hw
        assert seen["encode"] and set(seen["encode"]) == {want}, hw
        # the attention kernel measured faster here (math on the fake native machine)
        assert set(seen["flash"]) == {not want} and info["precision"]["attention"] == (
            "math" if want else "default")
    # the precision that ran is part of the run id: the two runs are different runs
    assert len(list((tmp_path / "AVX2").iterdir())) == 1
    assert ({p.name for p in (tmp_path / "AVX2").iterdir()}
            != {p.name for p in (tmp_path / "AVX512").iterdir()})
