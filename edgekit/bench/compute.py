"""Compute efficiency: model FLOPs, this host's measured matmul peak, and how close a run came.

    flops = loaded_model_flops(model, model.sample_inputs())  # one call, PyTorch reference
    peak = host_peak_gflops(threads=2, kind=peak_kind_for(manifest.precision))
    efficiency(flops, median_ms, peak_gflops=peak, peak_kind="fp32")

FLOPs come from `torch.utils.flop_counter.FlopCounterMode`, which counts matrix products only
(convolutions, matmul/addmm/bmm, scaled-dot-product attention) at 2 FLOPs per multiply-add, and
no elementwise work (activations, normalization, softmax, bias adds). For the models edgekit
exports those matrix products are nearly all the arithmetic, and they are what a CPU peak
measures, so achieved GFLOP/s over a matmul peak says how far a runtime is from the hardware.

Nothing here imports torch at module import time: `edgekit --help` must stay light.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.bench.schema import ComputeEfficiency
from edgekit.errors import UnknownChoiceError

if TYPE_CHECKING:
    import numpy as np
    import torch

    from edgekit.models.base import LoadedModel

CPUINFO = Path("/proc/cpuinfo")

# ISA extensions that select different kernels in the runtimes edgekit benchmarks (oneDNN,
# MLAS, XNNPACK, KleidiAI), in the order reports list them. Names as /proc/cpuinfo spells them:
# x86 "flags", aarch64 "Features".
KERNEL_FLAGS = (
    # x86: vector width, FMA, and the int8 / bf16 / fp16 dot-product and matrix units.
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    # aarch64: dot product (asimddp), int8 matrix multiply (i8mm), fp16 arithmetic (asimdhp),
    # bf16, scalable vectors and matrices.
    "asimd",
    "asimddp",
    "asimdhp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
    "sme",
)
# Instructions that make int8 matmuls faster than fp32 ones: without them an int8 "peak" would
# measure emulation, and comparing int8 artifacts against it would flatter them.
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})

PEAK_KINDS = ("fp32", "int8")
# Precisions whose convolutions and linear layers multiply int8 activations by int8 weights.
# int8-weight and int4-weight store narrow weights but dequantize them and compute in float,
# and fp16 runs through fp32 kernels on most host CPUs: those are judged against the fp32 peak.
# "mixed" (edgekit's named plan) keeps convolutions and linear layers, most of the FLOPs, int8.
INT8_COMPUTE_PRECISIONS = frozenset({"int8", "int8-dynamic", "mixed"})

# Square matmul sizes: start small and double until one call takes this share of the time budget
# (20 ms at the default 0.5 s), long enough that thread wake-up and operand packing cost a few
# percent, so a fast host reaches a size that saturates its cores and a slow one stays within
# budget. On a 2-core AVX-512 host, fp32 at 1 thread gave 87 GFLOP/s at 1024 and 92 at 2048.
_START_SIZE = 512
_MAX_SIZE = 2048
_CALL_SHARE_OF_BUDGET = 0.04
_MIN_REPEATS = 3


def cpu_flags(cpuinfo_text: str | None = None) -> list[str]:
    """The kernel-relevant ISA extensions of this CPU (`KERNEL_FLAGS` order); [] where unknown.

    `cpuinfo_text`: the text of a /proc/cpuinfo (default: this machine's, when it has one).
    """
    if cpuinfo_text is None:
        if not CPUINFO.is_file():
            return []
        cpuinfo_text = CPUINFO.read_text(errors="replace")
    present: set[str] = set()
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present.update(value.split())
            break  # every core lists the same extensions
    return [flag for flag in KERNEL_FLAGS if flag in present]


def model_flops(module: torch.nn.Module, inputs: tuple | dict) -> float:
    """FLOPs of one forward call of `module` on `inputs` (positional tuple or keyword dict).

    Counts matrix products only (convolution, matmul/addmm/bmm, scaled-dot-product attention),
    2 FLOPs per multiply-add, as torch.utils.flop_counter does; elementwise ops (activations,
    normalization, softmax, bias adds) are not counted. Numpy arrays are converted to tensors.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    def as_tensor(value: Any) -> Any:
        return value if isinstance(value, torch.Tensor) else torch.as_tensor(value)

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        if isinstance(inputs, dict):
            module(**{name: as_tensor(value) for name, value in inputs.items()})
        else:
            module(*(as_tensor(value) for value in inputs))
    return float(counter.get_total_flops())


def loaded_model_flops(model: LoadedModel, inputs: dict[str, np.ndarray]) -> float:
    """FLOPs of one call of the PyTorch reference, fed as `LoadedModel.run_torch` feeds it
    (arrays by input name, in the order of `model.inputs`). The batch is the arrays' batch;
    see `model_flops` for what is counted."""
    return model_flops(model.module, tuple(inputs[spec.name] for spec in model.inputs))


def int8_peak_unavailable_reason(flags: Iterable[str] | None = None) -> str | None:
    """Why this host's int8 matmul peak cannot be measured (one clause, for a report's
    "No int8 peak: ..." note), or None when it can.

    `flags`: the CPU's extensions (default: `cpu_flags()`).
    """
    present = set(cpu_flags() if flags is None else flags)
    if not present & INT8_DOT_FLAGS:
        return (
            "this CPU has no int8 dot-product instructions "
            f"({', '.join(sorted(INT8_DOT_FLAGS))}); an int8 matmul here would time emulation"
        )
    return _int_mm_unavailable_reason()


@cache
def _int_mm_unavailable_reason() -> str | None:
    """torch._int_mm (int8 x int8 -> int32) is a private op: check it exists and runs on CPU."""
    import torch

    if not hasattr(torch, "_int_mm"):
        return f"torch {torch.__version__} has no torch._int_mm"
    probe = torch.ones(32, 32, dtype=torch.int8)
    try:
        product = torch._int_mm(probe, probe)
    except RuntimeError as exc:
        first_line = (str(exc).splitlines() or ["no message"])[0]
        return f"torch._int_mm fails on CPU (torch {torch.__version__}): {first_line}"
    if product.dtype != torch.int32 or int(product[0, 0]) != 32:
        return f"torch._int_mm gives wrong results on CPU (torch {torch.__version__})"
    return None


def host_peak_gflops(threads: int, kind: str = "fp32", seconds: float = 0.5) -> float | None:
    """The most square-matmul throughput this host gives with up to `threads` threads, in
    GFLOP/s (int8: giga int ops/s).

    fp32: torch.mm; int8: torch._int_mm (int8 x int8 -> int32), only where the CPU has int8
    dot-product instructions, else None (`int8_peak_unavailable_reason()` says why). The size
    doubles from 512 until one call takes 4% of the time (at most 2048); then calls repeat for
    the time (at least 3) and the fastest call gives 2*n^3 / t. With `threads` > 1 the time is
    split between `threads` and 1 thread, and the larger result is the peak: a multi-threaded
    torch.mm splits its work statically, so one core taken by another process stalls the whole
    call (on a busy 2-core machine: 43 GFLOP/s at 2 threads, 96 at 1, and runtimes with
    work-stealing pools reached 74 at 2), and a peak below what one thread does is no peak.
    torch's thread count is restored afterwards. Run it in a process of its own, like any
    other measurement: other runtimes' spinning thread pools would lower it.
    """
    if kind not in PEAK_KINDS:
        raise UnknownChoiceError("peak kind", kind, list(PEAK_KINDS))
    if threads < 1 or seconds <= 0:
        from edgekit.bench.runner import BenchError

        raise BenchError(
            f"A matmul peak needs threads >= 1 and seconds > 0; got threads={threads}, "
            f"seconds={seconds}.",
            hint="e.g. host_peak_gflops(threads=2, seconds=0.5).",
        )
    if kind == "int8" and int8_peak_unavailable_reason() is not None:
        return None
    import torch

    previous_threads = torch.get_num_threads()
    counts = [threads, 1] if threads > 1 else [1]
    try:
        results = []
        for count in counts:
            torch.set_num_threads(count)
            results.append(_measure_matmul_gflops(kind, seconds / len(counts)))
        return max(results)
    finally:
        torch.set_num_threads(previous_threads)


def _measure_matmul_gflops(kind: str, seconds: float) -> float:
    size = _START_SIZE
    while True:
        multiply = _square_matmul(kind, size)
        multiply()  # warm-up: packing buffers, thread pool start
        started = time.perf_counter()
        multiply()
        call_s = time.perf_counter() - started
        if call_s >= seconds * _CALL_SHARE_OF_BUDGET or size >= _MAX_SIZE:
            break
        size *= 2

    calls_s = [call_s]
    timing_started = time.perf_counter()
    while len(calls_s) < _MIN_REPEATS or time.perf_counter() - timing_started < seconds:
        started = time.perf_counter()
        multiply()
        calls_s.append(time.perf_counter() - started)
    # The fastest call: a matmul cannot run faster than the hardware allows, only slower when
    # other processes take a core, so the minimum time is the estimate of the peak. (The median
    # read 11 to 57 GFLOP/s across three runs on a busy 2-core machine, below what the
    # runtimes then achieved.)
    return 2 * size**3 / min(calls_s) / 1e9


def _square_matmul(kind: str, size: int) -> Callable[[], object]:
    """One (size x size) @ (size x size) product of `kind`, on seeded operands."""
    import torch

    generator = torch.Generator().manual_seed(0)
    if kind == "int8":
        a = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
        b = torch.randint(-128, 128, (size, size), dtype=torch.int8, generator=generator)
        return lambda: torch._int_mm(a, b)
    a = torch.randn(size, size, generator=generator)
    b = torch.randn(size, size, generator=generator)
    return lambda: torch.mm(a, b)


def peak_kind_for(precision: str, layer_precisions: Iterable[str] = ()) -> str:
    """Which host peak an artifact's compute is compared with: 'int8' or 'fp32'.

    int8 where convolutions and linear layers multiply int8 activations by int8 weights (plans
    int8, int8-dynamic, and edgekit's `mixed`); fp32 otherwise, including int8-weight and
    int4-weight, whose narrow weights are dequantized and multiplied in float. A custom plan's
    label says nothing about its layers: pass the realized layer precisions
    (`component.quant.counts`) and any int8 / int8-dynamic layer makes it 'int8'.
    """
    realized = set(layer_precisions)
    if realized:
        return "int8" if realized & {"int8", "int8-dynamic"} else "fp32"
    return "int8" if precision in INT8_COMPUTE_PRECISIONS else "fp32"


def efficiency(
    flops_per_sample: float | None,
    median_ms: float | None,
    *,
    batch: int = 1,
    peak_gflops: float | None = None,
    peak_kind: str | None = None,
) -> ComputeEfficiency:
    """Achieved GFLOP/s of one call at `batch` and its fraction of the host peak.

    `flops_per_sample`: FLOPs of one batch-1 call (`loaded_model_flops` at batch 1); a call at
    `batch` does `batch` times as much (each sample is computed on its own). Missing inputs
    leave the fields that need them None instead of guessing.
    """
    flops = flops_per_sample * batch if flops_per_sample is not None else None
    achieved = flops / median_ms / 1e6 if flops is not None and median_ms else None
    fraction = achieved / peak_gflops if achieved is not None and peak_gflops else None
    return ComputeEfficiency(
        flops=flops,
        gflops_per_s=achieved,
        peak_gflops_per_s=peak_gflops,
        peak_kind=peak_kind,
        peak_fraction=fraction,
    )
