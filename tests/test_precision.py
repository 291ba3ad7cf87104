"""The bf16 decision: made from the machine, cached per machine, honoured by training."""

from __future__ import annotations

import json

import pytest
import torch

from clp_utils import precision as P

NO_BF16 = {"cpu": "test cpu", "capability": "AVX2", "avx512_bf16": False, "amx": False,
           "threads": 2, "torch": torch.__version__}
NATIVE = {**NO_BF16, "capability": "AVX512", "avx512_bf16": True}


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A fake CPU: returns a setter for what torch reports; timings counted, cache isolated."""
    monkeypatch.setenv("CLP_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(P.ENV, raising=False)
    monkeypatch.setattr(P, "_MEMO", {})
    calls = []
    speeds = {torch.float32: 100.0, torch.bfloat16: 400.0}

    def fake_time(dtype, n=P.TIMING_SIZE, repeats=5):
        calls.append(dtype)
        return speeds[dtype]

    monkeypatch.setattr(P, "time_matmul", fake_time)

    def set_hw(hw, bf16_speed=400.0):
        monkeypatch.setattr(P, "cpu_hardware", lambda: dict(hw))
        speeds[torch.bfloat16] = bf16_speed
        P._MEMO.clear()

    set_hw.calls = calls
    return set_hw


def test_no_native_bf16_means_float32_without_timing(machine):
    machine(NO_BF16)
    p = P.decide("auto", "cpu")
    assert not p.bf16 and p.dtype == torch.float32 and "no native bf16" in p.reason
    assert machine.calls == []  # an emulated bf16 matmul is never timed
    assert p.record()["precision"] == "float32" and "AVX2" in p.describe()


def test_native_bf16_is_confirmed_by_timing_and_cached_per_machine(machine, tmp_path):
    machine(NATIVE)
    p = P.decide("auto", "cpu")
    assert p.bf16 and "4.0x" in p.reason and machine.calls == [torch.float32, torch.bfloat16]
    cache = json.loads((tmp_path / "cache" / P.CACHE_FILE).read_text())
    assert list(cache.values()) == [{"float32_gflops": 100.0, "bf16_gflops": 400.0}]
    P._MEMO.clear()
    assert P.decide("auto", "cpu").bf16 and len(machine.calls) == 2  # read back, not re-timed


def test_native_bf16_that_is_not_faster_stays_float32(machine):
    machine(NATIVE, bf16_speed=110.0)
    p = P.decide("auto", "cpu")
    assert not p.bf16 and "only 1.10x" in p.reason


def test_forcing_and_the_environment_override(machine, monkeypatch):
    machine(NO_BF16)
    assert P.decide(True, "cpu").bf16 and not P.decide(False, "cpu").bf16
    monkeypatch.setenv(P.ENV, "1")
    forced = P.decide("auto", "cpu")
    assert forced.bf16 and "$CLP_BF16" in forced.reason
    monkeypatch.setenv(P.ENV, "0")
    assert not P.decide("auto", "cpu").bf16
    with pytest.raises(ValueError, match="bf16 must be"):
        P.decide("sometimes", "cpu")


def test_autocast_is_entered_only_for_bf16(machine):
    machine(NO_BF16)
    with P.autocast(P.decide("auto", "cpu")):
        assert not torch.is_autocast_enabled("cpu")
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.float32
    with P.autocast(P.decide(True, "cpu")):
        assert torch.is_autocast_enabled("cpu")
        assert (torch.ones(4, 4) @ torch.ones(4, 4)).dtype == torch.bfloat16


@pytest.mark.slow
def test_training_honours_the_decision(machine, tmp_path, monkeypatch):
    """On a CPU without native bf16, "auto" trains and encodes in float32 with no autocast."""
    from clp_utils import evaluation, training
    from clp_utils.data import DATA_DIR
    from clp_utils.mining import MiningConfig

    if not (DATA_DIR / "squadshifts" / "reddit" / "corpus.jsonl").exists():
        pytest.skip("data not built (make data)")
    seen = {"step": [], "encode": []}
    step_loss = training.step_loss

    def spy_step(*args, **kwargs):
        seen["step"].append(torch.is_autocast_enabled("cpu"))
        return step_loss(*args, **kwargs)

    def spy_autocast(precision, device_type=None):
        seen["encode"].append(precision.bf16)
        return P.autocast(precision, device_type)

    monkeypatch.setattr(training, "step_loss", spy_step)
    monkeypatch.setattr(evaluation, "autocast", spy_autocast)
    config = training.TrainConfig(
        split="reddit", passages=60, train_queries=8, batch_size=4, max_query_len=16,
        max_passage_len=32, ood_split=None, no_duplicates=False,
        mining=MiningConfig(rank_min=2, rank_max=10, num_negatives=2))
    for hw, want in ((NO_BF16, False), (NATIVE, True)):
        machine(hw)
        seen["step"].clear()
        seen["encode"].clear()
        res = training.train(config, root=tmp_path / hw["capability"], progress=False, device="cpu")
        info = json.loads((res.run_dir / "config.json").read_text())
        assert info["precision"]["precision"] == ("bf16" if want else "float32")
        assert info["precision"]["hardware"]["capability"] == hw["capability"]
        assert seen["step"] and set(seen["step"]) == {want}, hw
        assert seen["encode"] and set(seen["encode"]) == {want}, hw
    # the precision that ran is part of the run id: the two runs are different runs
    assert len(list((tmp_path / "AVX2").iterdir())) == 1
    assert ({p.name for p in (tmp_path / "AVX2").iterdir()}
            != {p.name for p in (tmp_path / "AVX512").iterdir()})
