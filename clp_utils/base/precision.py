"""Which precision runs: bf16 autocast only where the hardware computes bf16 natively.

On a CPU with AVX512-BF16 or AMX, MiniLM trains faster under ``torch.autocast("cpu",
bfloat16)``; on an AVX2-only CPU the same autocast emulates bf16 and trains many times
SLOWER than float32 (``bench/bf16_check.py`` measures the ratio here). So every place that
autocasts asks ``decide(setting, device)`` for one ``Precision``:

- ``setting="auto"`` (the profiles' default): on CUDA, bf16 where
  ``torch.cuda.is_bf16_supported()``; on a CPU, bf16 only if it reports native bf16 AND a
  short timed matmul confirms that bf16 beats float32 here. The timing is cached per machine
  (CPU model, capability, flags, torch version) in ``<cache>/precision.json``.
- ``setting=True`` / ``False`` forces bf16 / float32. The configured override
  (``paths.bf16_override()``: ``$CLP_BF16`` ``0``/``1`` at the command line) replaces every
  ``"auto"``, e.g. ``CLP_BF16=0 make study`` for a float32 study.

The attention kernel of a training step is the same kind of lever: on a CPU, PyTorch's fused
attention is fast forward but its backward can be slower than the plain "math" kernel. So
``decide`` also times one attention forward + backward at a training batch's shape with each
kernel (cached with the matmul timing), and ``training_attention(precision)`` enters the
faster one around a training step. Encoding keeps the default kernel (no backward).
"""

from __future__ import annotations

import contextlib
import json
import platform
import timeit
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from clp_utils.base.io import atomic_write
from clp_utils.base.paths import bf16_override, cache_dir

#: bf16 must beat float32 by this factor in the timed matmul before "auto" turns it on.
MIN_SPEEDUP = 1.2
#: Matmul side of the confirmation timing. Small on purpose: an emulated bf16 matmul of
#: 2048^3 did not finish in minutes on an AVX2-only CPU; this one takes milliseconds where
#: bf16 is native and is never run where the CPU reports no native bf16 at all.
TIMING_SIZE = 384
#: The math attention kernel must beat the default one by this factor to be used in training.
MIN_ATTENTION_SPEEDUP = 1.1
#: Shape of the attention timing: a training batch of MiniLM (batch, heads, tokens, head dim).
ATTENTION_SHAPE = (32, 12, 128, 32)
CACHE_FILE = "precision.json"


@dataclass(frozen=True)
class Precision:
    """One precision decision and the evidence for it."""

    bf16: bool
    setting: str  # "auto" | "true" | "false" as given
    device: str  # "cpu" | "cuda" | ...
    reason: str
    hardware: dict[str, Any] = field(default_factory=dict)
    attention: str = "default"  # the training step's attention kernel: "default" | "math"

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "float32"

    def record(self) -> dict[str, Any]:
        """A JSON-ready summary (what ran, why, and on what hardware)."""
        return {"precision": self.name, **asdict(self)}

    def describe(self) -> str:
        """One line for logs and the README's timing line."""
        hw = self.hardware
        if self.device == "cpu":
            where = f"CPU capability {hw.get('capability', '?')}"
            flags = [f for f in ("avx512_bf16", "amx") if hw.get(f)]
            if not flags:
                where += " (no native bf16)"
            elif not self.bf16 and "bf16_gflops" in hw:
                # reported, yet slower when timed (e.g. kernels confined to AVX2)
                where += f" ({', '.join(flags)} reported; bf16 not faster when timed)"
            else:
                where += f" ({', '.join(flags)})"
        else:
            where = hw.get("name", self.device)
        kernel = ", math attention in training" if self.attention == "math" else ""
        return f"{self.name} on {where}{kernel}"


def normalize_setting(setting: bool | str | None) -> str:
    """``"auto"``, ``"true"`` or ``"false"``; anything else is a ``ValueError``."""
    if setting is None or setting == "auto":
        return "auto"
    word = str(setting).lower() if isinstance(setting, bool | str) else None
    if word in ("true", "1", "yes", "on"):
        return "true"
    if word in ("false", "0", "no", "off"):
        return "false"
    raise ValueError(f"bf16 must be 'auto', True or False, got {setting!r}")


def cpu_hardware() -> dict[str, Any]:
    """What torch reports about this CPU's vector units (no timing)."""
    model = None
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        model = next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")),
                     None)
    cpu = torch.cpu
    return {
        "cpu": platform.processor() or platform.machine() if model is None else model,
        "capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": bool(getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()),
        "amx": bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }


def time_matmul(dtype: torch.dtype, n: int = TIMING_SIZE, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n`` matmul in ``dtype`` on the CPU (best of ``repeats``)."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(dtype)
    b = torch.randn(n, n, generator=gen).to(dtype)
    a @ b  # warm-up: first call picks kernels
    return 2 * n**3 / min(timeit.repeat(lambda: a @ b, repeat=repeats, number=1)) / 1e9


def time_attention(dtype: torch.dtype, math: bool, shape: tuple[int, ...] = ATTENTION_SHAPE,
                   repeats: int = 3) -> float:
    """Milliseconds of one attention forward + backward (padding mask, training shape) on the
    CPU, with the default kernel or the math one, under ``dtype`` autocast (best of
    ``repeats``)."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(*shape, generator=gen, requires_grad=True) for _ in range(3))
    mask = torch.ones(shape[0], 1, shape[2], shape[2], dtype=torch.bool)
    mask[::2, :, :, shape[2] // 2:] = False  # half the batch padded, as real batches are

    def step() -> None:
        kernel = sdpa_kernel(SDPBackend.MATH) if math else contextlib.nullcontext()
        with kernel, torch.autocast("cpu", dtype=dtype, enabled=dtype != torch.float32):
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out.float().sum().backward()

    # repeats + 1: the first call picks kernels
    return min(timeit.repeat(step, repeat=repeats + 1, number=1)) * 1000


def cached_timings(hw: dict[str, Any], use_cache: bool, measure) -> dict[str, Any]:
    """This machine's entry of ``<cache>/precision.json``, completed by ``measure(entry)``."""
    path = cache_dir() / CACHE_FILE
    cached = {}
    if use_cache and path.exists():
        with contextlib.suppress(OSError, ValueError):
            cached = json.loads(path.read_text(encoding="utf-8"))
    key = json.dumps(hw, sort_keys=True)
    entry = dict(cached.get(key, {}))
    new = measure(entry)
    if new and use_cache:
        entry.update(new)
        cached[key] = entry
        with atomic_write(path) as fh:
            json.dump(cached, fh, indent=1, sort_keys=True)
    return {**entry, **new}


def _timings(hw: dict[str, Any], use_cache: bool, **timers: Callable[[], float]) -> dict:
    """The named timings (rounded to 0.1) of this machine, measured where none are cached."""

    def measure(entry: dict) -> dict:
        if all(k in entry for k in timers):
            return {}
        return {k: round(timer(), 1) for k, timer in timers.items()}

    entry = cached_timings(hw, use_cache, measure)
    return {k: entry[k] for k in timers}


def decide(setting: bool | str | None = "auto", device: str | torch.device = "cpu",
           use_cache: bool = True) -> Precision:
    """The precision to train and encode with on ``device``: ``setting`` ``"auto"`` decides
    from the hardware, ``True``/``False`` force; ``use_cache`` reuses (and stores) the
    per-machine CPU timing."""
    norm, forced_by = normalize_setting(setting), "the setting"
    if norm == "auto" and bf16_override():
        norm, forced_by = normalize_setting(bf16_override()), "$CLP_BF16"  # overrides "auto"
    key = (norm, forced_by, torch.device(device).type, use_cache)
    if key not in _MEMO:
        _MEMO[key] = _decide(*key)
    return _MEMO[key]


_MEMO: dict[tuple, Precision] = {}  # one decision per process and setting (encoding asks often)


def _decide(norm: str, forced_by: str, dev: str, use_cache: bool) -> Precision:
    hw, timing, attention = {}, {}, "default"
    if dev == "cuda":
        hw = {"name": torch.cuda.get_device_name(),
              "bf16_supported": torch.cuda.is_bf16_supported()}
    elif dev == "cpu":
        hw = cpu_hardware()  # read once: the cache key of both CPU timings
    if norm != "auto":
        ok, reason = norm == "true", f"forced by {forced_by}"
    elif dev == "cuda":
        ok = hw["bf16_supported"]
        reason = "the GPU supports bf16" if ok else "no bf16 on this GPU"
    elif dev != "cpu":
        ok, reason = False, f"no bf16 policy for device {dev!r}: float32"
    elif not (hw["avx512_bf16"] or hw["amx"]):
        ok, reason = False, "the CPU reports no native bf16 (neither AVX512-BF16 nor AMX): float32"
    else:
        timing = _timings(hw, use_cache, float32_gflops=lambda: time_matmul(torch.float32),
                          bf16_gflops=lambda: time_matmul(torch.bfloat16))
        speedup = timing["bf16_gflops"] / max(timing["float32_gflops"], 1e-9)
        ok = speedup >= MIN_SPEEDUP
        reason = (f"native bf16, measured {speedup:.1f}x float32 on a matmul" if ok else
                  f"native bf16 reported but measured only {speedup:.2f}x float32: float32")
    if dev == "cpu":  # the faster attention kernel for a training step in this precision
        name, dtype = ("bf16", torch.bfloat16) if ok else ("float32", torch.float32)
        default, math = _timings(
            hw, use_cache, **{f"attention_{name}_default_ms": lambda: time_attention(dtype, False),
                              f"attention_{name}_math_ms": lambda: time_attention(dtype, True)}
        ).values()
        attention = "math" if default >= MIN_ATTENTION_SPEEDUP * math else "default"
        timing = {**timing, "attention_default_ms": default, "attention_math_ms": math}
    return Precision(ok, norm, dev, reason, {**hw, **timing}, attention)


def autocast(precision: Precision,
             device_type: str | None = None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` in bf16 when ``precision.bf16``; with float32 no autocast context
    at all (not even a disabled one)."""
    if not precision.bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type or precision.device, dtype=torch.bfloat16)


def training_attention(precision: Precision) -> contextlib.AbstractContextManager:
    """The attention kernel ``decide`` measured as faster for a training step on this machine
    (``precision.attention``); nothing where the default kernel is the faster one."""
    if precision.attention != "math":
        return contextlib.nullcontext()
    return sdpa_kernel(SDPBackend.MATH)


def enable_tf32() -> None:
    """TF32 for what stays float32 on an Ampere+ GPU (no effect on a CPU)."""
    if torch.cuda.is_available():
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True
