"""Compute efficiency: FLOPs counted exactly, the host peak plausible, CPU flags parsed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.bench import compute
from edgekit.bench.compute import (
    cpu_flags,
    efficiency,
    host_peak_gflops,
    int8_peak_unavailable_reason,
    loaded_model_flops,
    model_flops,
    peak_kind_for,
)
from edgekit.errors import EdgekitError, UnknownChoiceError

# Any real CPU core, from a phone's little core to a server's AMX unit, lands in here; a broken
# timer or FLOP formula (ms for s, n^2 for n^3) lands outside.
PLAUSIBLE_PEAK_GFLOPS = (0.5, 5000.0)
# Short enough for the default suite; the size search still reaches a saturating matmul.
PEAK_SECONDS = 0.2

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 \
avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni vaes
bugs\t\t: sysret_ss_attrs

processor\t: 1
flags\t\t: fpu vme de pse tsc msr sse sse2 ssse3 fma cx16 sse4_1 sse4_2 avx f16c avx2 \
avx512f avx512dq avx512bw avx512vl avx512_bf16 avx512_vnni vaes
"""
AARCH64_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
lrcpc dcpop asimddp ssbs i8mm bf16
CPU implementer\t: 0x41
"""


def test_flops_of_conv_and_linear_are_twice_their_multiply_adds():
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, kernel_size=3, padding=1),
        torch.nn.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 5),
    )
    images = torch.randn(2, 3, 8, 8)  # (N, C, H, W)
    # Conv: every output value (N x 4 x 8 x 8) sums 3 x 3 x 3 products; bias adds not counted.
    conv_macs = 2 * 4 * 8 * 8 * (3 * 3 * 3)
    linear_macs = 2 * (4 * 8 * 8) * 5
    expected = 2 * (conv_macs + linear_macs)

    assert model_flops(module, (images,)) == expected
    # Keyword inputs and numpy arrays give the same count (nn.Sequential names its input "input").
    assert model_flops(module, {"input": images.numpy()}) == expected


def test_mobilevit_flops_scale_exactly_with_batch():
    from edgekit import models

    model = models.load("tiny-mobilevit")
    one = model.sample_inputs(seed=0)
    two = {
        name: np.concatenate([array, model.sample_inputs(seed=1)[name]])
        for name, array in one.items()
    }

    flops_one = loaded_model_flops(model, one)
    flops_two = loaded_model_flops(model, two)

    # Convolutions alone of the 64x64 stem are well over a million FLOPs: a count of only the
    # classifier head, or none at all, fails here.
    assert flops_one > 1e6
    assert flops_two == 2 * flops_one


def test_fp32_peak_is_plausible_and_restores_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(3)  # not the measured count, so a missing restore shows
    try:
        peak = host_peak_gflops(threads=1, kind="fp32", seconds=PEAK_SECONDS)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)
    low, high = PLAUSIBLE_PEAK_GFLOPS
    assert low <= peak <= high


def test_peak_at_several_threads_is_never_below_one_thread(monkeypatch):
    # A busy core stalls a statically split torch.mm: 2 threads can measure below 1.
    by_threads = {1: 90.0, 2: 40.0, 4: 300.0}
    measured = []

    def fake_measure(kind, seconds):
        measured.append(torch.get_num_threads())
        return by_threads[torch.get_num_threads()]

    monkeypatch.setattr(compute, "_measure_matmul_gflops", fake_measure)

    assert host_peak_gflops(threads=2) == 90.0
    assert host_peak_gflops(threads=4) == 300.0
    assert host_peak_gflops(threads=1) == 90.0
    assert measured == [2, 1, 4, 1, 1]


def test_int8_peak_is_measured_where_the_cpu_has_int8_dot_products():
    reason = int8_peak_unavailable_reason()
    peak = host_peak_gflops(threads=1, kind="int8", seconds=PEAK_SECONDS)
    if reason is None:
        low, high = PLAUSIBLE_PEAK_GFLOPS
        assert peak is not None and low <= peak <= high
    else:
        assert peak is None


def test_int8_peak_says_why_without_vnni(monkeypatch):
    monkeypatch.setattr(compute, "cpu_flags", lambda cpuinfo_text=None: ["avx", "avx2", "fma"])

    reason = int8_peak_unavailable_reason()

    assert reason is not None
    assert reason.startswith("this CPU has no int8 dot-product instructions")
    assert "avx512_vnni" in reason
    assert host_peak_gflops(threads=1, kind="int8") is None


def test_int8_peak_says_why_without_torch_int_mm(monkeypatch):
    monkeypatch.delattr(torch, "_int_mm")
    compute._int_mm_unavailable_reason.cache_clear()
    try:
        reason = int8_peak_unavailable_reason(flags=["avx512_vnni"])
    finally:
        monkeypatch.undo()
        compute._int_mm_unavailable_reason.cache_clear()
    assert reason == f"torch {torch.__version__} has no torch._int_mm"


def test_cpu_flags_reads_x86_and_arm_cpuinfo(monkeypatch):
    assert cpu_flags(X86_CPUINFO) == [
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512bw",
        "avx512vl",
        "avx512_vnni",
        "avx512_bf16",
    ]
    assert cpu_flags(AARCH64_CPUINFO) == ["asimd", "asimddp", "asimdhp", "i8mm", "bf16"]
    assert cpu_flags("processor : 0\n") == []
    # ARM's dot product is enough for an int8 peak (torch permitting); AVX2 alone is not.
    monkeypatch.setattr(compute, "_int_mm_unavailable_reason", lambda: None)
    assert int8_peak_unavailable_reason(cpu_flags(AARCH64_CPUINFO)) is None
    assert int8_peak_unavailable_reason(["avx2"]) is not None


@pytest.mark.parametrize(
    ("precision", "layers", "kind"),
    [
        ("fp32", (), "fp32"),
        ("fp16", (), "fp32"),
        ("int8", (), "int8"),
        ("int8-dynamic", (), "int8"),
        ("mixed", (), "int8"),
        # Narrow weights, float arithmetic.
        ("int8-weight", (), "fp32"),
        ("int4-weight", (), "fp32"),
        # A custom plan's name says nothing; its realized layers decide.
        ("my-plan", ("fp32", "int8-weight"), "fp32"),
        ("my-plan", ("fp32", "int8"), "int8"),
    ],
)
def test_peak_kind_follows_where_the_arithmetic_runs(precision, layers, kind):
    assert peak_kind_for(precision, layers) == kind


def test_efficiency_divides_batch_flops_by_time_and_peak():
    result = efficiency(1e9, 10.0, batch=2, peak_gflops=400.0, peak_kind="fp32")

    assert result.flops == 2e9
    assert result.gflops_per_s == pytest.approx(200.0)  # 2 GFLOP in 10 ms
    assert result.peak_fraction == pytest.approx(0.5)
    assert result.peak_kind == "fp32"


def test_efficiency_leaves_unknowns_empty():
    no_peak = efficiency(1e9, 10.0)
    assert no_peak.gflops_per_s == pytest.approx(100.0)
    assert no_peak.peak_fraction is None
    no_time = efficiency(1e9, None, peak_gflops=100.0)
    assert no_time.gflops_per_s is None and no_time.peak_fraction is None


def test_peak_refuses_bad_arguments_with_one_line():
    with pytest.raises(UnknownChoiceError, match="Unknown peak kind 'fp64'. Known: fp32, int8."):
        host_peak_gflops(threads=1, kind="fp64")
    with pytest.raises(EdgekitError, match="threads >= 1 and seconds > 0; got threads=0"):
        host_peak_gflops(threads=0)
