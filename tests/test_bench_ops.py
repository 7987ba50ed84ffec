"""Per-op profiles: onnxruntime's trace and ExecuTorch's ETDump land on the model's own module
paths, say where each op ran, flag an op left on a slower path, and a runtime without a profiler
says so in one line. Profiles run the session fixture artifacts a few times only."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import pytest
import torch
from rich.console import Console
from torch import nn

from edgekit import exporters, models
from edgekit.artifact import read_manifest
from edgekit.bench import ops
from edgekit.bench.schema import OpProfile
from edgekit.errors import EdgekitError
from edgekit.exporters import executorch as et
from edgekit.exporters.tflite import OP_PROFILE_UNAVAILABLE
from edgekit.models.base import LoadedModel, SourceInfo, TensorSpec, seeded_inputs
from edgekit.quant.spec import float_spec

PROFILE_RUNS = 2
# Shares are fractions of a sum of the same rows: they add up to one but for float rounding.
SHARE_SUM_TOLERANCE = 1e-9
# onnxruntime's names for the ops a matrix multiply becomes (fused with its bias, or scaled).
ORT_MATMUL_OPS = {"MatMul", "Gemm", "FusedMatMul"}
# XNNPACK's operator names for convolutions and linear layers (a 1x1 convolution runs as a GEMM).
XNNPACK_LAYER_PREFIXES = ("Convolution", "Fully Connected")


@pytest.fixture(scope="module")
def mobilevit_modules() -> dict[str, nn.Module]:
    """The modules of the traced tiny-mobilevit, by the paths profiles report."""
    return dict(models.load("tiny-mobilevit").module.named_modules())


def _profile(folder: Path) -> tuple[object, OpProfile | str]:
    manifest = read_manifest(folder)
    component = manifest.component()
    runtime = exporters.open_runtime(folder, manifest, component, threads=1)
    inputs = seeded_inputs(component.inputs, 0)
    return runtime, ops.profile_runtime(runtime, inputs, PROFILE_RUNS)


def _assert_sums_over_runs(profile: OpProfile) -> None:
    assert profile.runs == PROFILE_RUNS
    # The warm-up run is dropped: every op is counted once per profiled run, not once more.
    assert {op.calls for op in profile.ops} == {PROFILE_RUNS}
    assert abs(sum(op.share for op in profile.ops) - 1) < SHARE_SUM_TOLERANCE


def test_onnx_profile_puts_each_convolution_on_its_conv_module(
    mobilevit_artifacts, mobilevit_modules
):
    leftovers_before = set(Path(tempfile.gettempdir()).glob("edgekit-ort-profile-*"))
    runtime, profile = _profile(mobilevit_artifacts["onnx"])
    assert isinstance(profile, OpProfile), profile
    _assert_sums_over_runs(profile)
    op_types = {op.op_type for op in profile.ops}
    assert "Conv" in op_types and op_types & ORT_MATMUL_OPS, op_types

    # Every convolution onnxruntime ran (renamed by its NCHWc pass) maps back to a Conv2d of
    # the model, and every Conv2d of the model has its row.
    conv_paths = {op.module_path for op in profile.ops if op.op_type == "Conv"}
    conv2d_paths = {p for p, m in mobilevit_modules.items() if isinstance(m, nn.Conv2d)}
    assert conv_paths == conv2d_paths
    linear_paths = {op.module_path for op in profile.ops if op.op_type in ORT_MATMUL_OPS}
    assert linear_paths <= set(mobilevit_modules), linear_paths - set(mobilevit_modules)
    assert any(isinstance(mobilevit_modules[p], nn.Linear) for p in linear_paths)

    # CPU provider only: no delegate in play, nothing to fall back from.
    assert {op.backend for op in profile.ops} == {"CPUExecutionProvider"}
    assert {op.delegated for op in profile.ops} == {None}
    assert not any(op.fallback for op in profile.ops)
    # Profiling ran in its own session, and its trace is gone.
    assert not runtime.session.get_session_options().enable_profiling
    assert set(Path(tempfile.gettempdir()).glob("edgekit-ort-profile-*")) == leftovers_before


def test_top_ops_and_their_renderings(mobilevit_artifacts):
    _, profile = _profile(mobilevit_artifacts["onnx"])
    top = ops.top_ops(profile, 5)
    slowest = sorted(profile.ops, key=lambda op: op.total_ms, reverse=True)
    assert [op.name for op in top] == [op.name for op in slowest[:5]]

    markdown = ops.ops_markdown(profile, 5)
    table_lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert len(table_lines) == 1 + 5  # header and five ops
    assert table_lines[1].startswith(f"| {top[0].op_type} | {top[0].name} |")
    assert f"Top 5 of {len(profile.ops)} ops" in markdown
    assert "Time by where ops ran: CPUExecutionProvider 100.0%" in markdown

    table = ops.ops_table(profile, 3)
    assert table.row_count == 3
    console = Console(record=True, width=250)
    console.print(table)
    assert top[0].name in console.export_text()


def test_executorch_profile_shows_xnnpack_work_on_module_paths(
    mobilevit_artifacts, mobilevit_modules
):
    folder = mobilevit_artifacts["executorch"]
    manifest = read_manifest(folder)
    # The ETRecord export wrote is listed with the artifact's files, but not in its size.
    assert manifest.component().export.details["etrecord"] == "model.etrecord"
    assert "model.etrecord" in {f.path for f in manifest.files}
    # It holds the graph, not a second copy of the weights.
    fp32_weight_bytes = sum(
        p.numel() * 4 for p in models.load("tiny-mobilevit").module.parameters()
    )
    with zipfile.ZipFile(folder / "model.etrecord") as record:
        stored = {info.filename: info.file_size for info in record.infolist()}
    assert "exported_program" not in stored
    assert stored["edge_dialect_exported_program/forward_state_dict"] < fp32_weight_bytes / 2

    _, profile = _profile(folder)
    assert isinstance(profile, OpProfile), profile
    _assert_sums_over_runs(profile)
    delegated = [op for op in profile.ops if op.delegated]
    assert {op.backend for op in delegated} == {"XNNPACK"}
    # fp32 MobileViT: XNNPACK takes every convolution and linear layer; what stays outside
    # (layer norms, copies) is no fallback, and XNNPACK holds most of the time.
    assert not any(op.fallback for op in profile.ops)
    assert ops.share_by_backend(profile)["XNNPACK"] > 0.5
    layers = [op for op in delegated if op.op_type.startswith(XNNPACK_LAYER_PREFIXES)]
    assert layers and all(op.module_path for op in layers)
    layer_modules = {type(mobilevit_modules[op.module_path]) for op in layers}
    assert layer_modules == {nn.Conv2d, nn.Linear}
    stem = [op for op in layers if op.name == "Convolution (NHWC, F32) IGEMM #1"]
    assert stem[0].module_path == "model.mobilevit.conv_stem.convolution"
    outside = [op for op in profile.ops if op.delegated is False]
    assert outside and {op.backend for op in outside} == {"portable kernels"}
    assert all(op.module_path in mobilevit_modules for op in outside if op.module_path)


def test_executorch_profile_without_an_etrecord_names_ops_only(mobilevit_artifacts, tmp_path):
    folder = tmp_path / "exported-before-etrecords"
    shutil.copytree(mobilevit_artifacts["executorch"], folder)
    (folder / "model.etrecord").unlink()
    _, profile = _profile(folder)
    assert isinstance(profile, OpProfile), profile
    assert any(op.delegated and op.backend == "XNNPACK" for op in profile.ops)
    assert {op.module_path for op in profile.ops} == {None}
    assert any("No ETRecord (model.etrecord)" in note for note in profile.notes)


class _DoubleConv(nn.Module):
    """A float64 convolution (XNNPACK computes fp32/fp16 only, so it stays on the portable
    kernels) before a float32 linear layer XNNPACK takes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1).double()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x.double()).float()).mean((2, 3)))


def test_a_layer_left_outside_xnnpack_is_flagged_as_fallback(tmp_path):
    torch.manual_seed(0)
    toy = LoadedModel(
        module=_DoubleConv().eval(),
        model_kind="toy",
        inputs=[TensorSpec(name="x", shape=[1, 2, 8, 8], dtype="float32")],
        outputs=[TensorSpec(name="y", shape=[1, 3], dtype="float32")],
        source=SourceInfo(
            kind="test", path="toy", sha256="0" * 64, is_preset=False, random_weights=False
        ),
    )
    sample = toy.sample_inputs()
    path = tmp_path / "model.pte"
    et.ExecuTorchExporter().export(toy, sample, path, quant=float_spec("fp32", toy.module))
    runtime = et.ExecuTorchRuntime(path, toy.inputs, toy.outputs, settings=None)
    profile = ops.profile_runtime(runtime, sample, PROFILE_RUNS)

    (conv,) = [op for op in profile.ops if op.op_type == "convolution"]
    assert (conv.module_path, conv.backend, conv.delegated, conv.fallback) == (
        "conv",
        "portable kernels",
        False,
        True,
    )
    assert [op.fallback for op in profile.ops].count(True) == 1
    (linear,) = [op for op in profile.ops if op.op_type.startswith("Fully Connected")]
    assert (linear.module_path, linear.backend, linear.delegated) == ("fc", "XNNPACK", True)

    # Every rendering makes the fallback stand out.
    rank = ops.top_ops(profile, len(profile.ops)).index(conv)
    table = ops.ops_table(profile, len(profile.ops))
    assert table.rows[rank].style == ops.FALLBACK_STYLE
    assert sum(row.style == ops.FALLBACK_STYLE for row in table.rows) == 1
    markdown = ops.ops_markdown(profile, len(profile.ops))
    assert "| **convolution** | **convolution.out** | **conv** |" in markdown
    assert "**FALLBACK**" in markdown
    assert "1 op (" in ops.summary(profile) and "(FALLBACK)" in ops.summary(profile)


def test_tflite_says_plainly_why_there_is_no_profile(mobilevit_artifacts):
    runtime, reason = _profile(mobilevit_artifacts["tflite"])
    assert not isinstance(runtime, exporters.OpProfiler)
    assert reason == OP_PROFILE_UNAVAILABLE
    assert "benchmark_model with --enable_op_profiling=true" in reason


def test_bad_run_and_top_counts_are_refused_in_one_line(mobilevit_artifacts):
    runtime, profile = _profile(mobilevit_artifacts["onnx"])
    with pytest.raises(EdgekitError, match="at least one run; 0 were asked for") as refused:
        ops.profile_runtime(runtime, {}, 0)
    assert refused.value.hint
    with pytest.raises(EdgekitError, match="--top must name at least one op; got 0"):
        ops.top_ops(profile, 0)
