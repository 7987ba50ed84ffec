"""Deliberately wrong artifacts fail verification, each naming the check that caught it; a runtime
that cannot load or run the artifact marks it failed, with the runtime's error in the manifest."""

from __future__ import annotations

import copy

import pytest
import torch
from typer.testing import CliRunner

from edgekit import exporters, models
from edgekit.artifact import read_manifest
from edgekit.cli import app
from edgekit.errors import DegenerateReferenceError, VerificationError
from edgekit.export import CLASSIFIER_VERIFY_SEEDS, export_artifact
from edgekit.quant.plan import LayerPrecision, QuantPlan
from edgekit.quant.spec import quant_spec
from edgekit.validate import TOLERANCES
from tests.conftest import host_formats

runner = CliRunner()


def _export_other_module(monkeypatch, format_name: str, make_module):
    """Make the exporter convert `make_module(original)` while verification keeps comparing with
    the original PyTorch model: the artifact is wrong in exactly the way make_module says."""
    exporter_class = exporters.exporter_class(format_name)
    original_export = exporter_class.export

    def export(self, model, sample_inputs, model_path, *, quant):
        wrong = copy.copy(model)
        wrong.module = make_module(copy.deepcopy(model.module)).eval()
        return original_export(self, wrong, sample_inputs, model_path, quant=quant)

    monkeypatch.setattr(exporter_class, "export", export)


def _failures(tmp_path, name="tiny-mobilevit-onnx-fp32") -> list[str]:
    return read_manifest(tmp_path / name).component().verification.failures


def test_swapped_weight_fails(tmp_path, monkeypatch):
    def swap_two_filters(module):
        conv = module.model.mobilevit.encoder.layer[1].layer[0].expand_1x1.convolution
        with torch.no_grad():
            conv.weight[[0, 1]] = conv.weight[[1, 0]].clone()
        return module

    _export_other_module(monkeypatch, "onnx", swap_two_filters)
    with pytest.raises(VerificationError, match="centered SQNR"):
        export_artifact(models.load("tiny-mobilevit"), "onnx", tmp_path)
    failures = _failures(tmp_path)
    assert any(f.startswith("logits: centered SQNR") for f in failures), failures


class _IgnoresInput(torch.nn.Module):
    """Returns the right logits for the first verification input, whatever it is given."""

    def __init__(self, answer: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("answer", answer)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.answer + 0 * pixel_values.mean()


def test_output_that_ignores_its_input_fails(tmp_path, monkeypatch):
    loaded = models.load("tiny-mobilevit")
    first = loaded.run_torch(loaded.sample_inputs(CLASSIFIER_VERIFY_SEEDS[0]))["logits"]
    _export_other_module(monkeypatch, "onnx", lambda _: _IgnoresInput(torch.from_numpy(first)))
    with pytest.raises(VerificationError):
        export_artifact(loaded, "onnx", tmp_path)
    failures = _failures(tmp_path)
    assert any(f.startswith("logits: centered SQNR") for f in failures), failures
    assert any(f.startswith("logits: top-1 agreement") for f in failures), failures


def test_offset_logits_fail(tmp_path, monkeypatch):
    class Offset(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixel_values):
            return self.inner(pixel_values) + 0.05

    _export_other_module(monkeypatch, "onnx", Offset)
    with pytest.raises(VerificationError):
        export_artifact(models.load("tiny-mobilevit"), "onnx", tmp_path)
    assert any(f.startswith("logits: centered SQNR") for f in _failures(tmp_path))


def test_reference_that_ignores_its_input_is_refused_before_exporting(tmp_path, monkeypatch):
    loaded = models.load("tiny-mobilevit")
    answer = loaded.run_torch(loaded.sample_inputs(0))["logits"]
    loaded.module = _IgnoresInput(torch.from_numpy(answer))
    with pytest.raises(DegenerateReferenceError, match="barely changes with its input"):
        export_artifact(loaded, "onnx", tmp_path)
    assert list(tmp_path.iterdir()) == []


def _write_instead_of_exporting(monkeypatch, format_name: str, write):
    """The exporter 'succeeds' but leaves `write(path)`'s file: what its runtime then meets."""
    from edgekit.exporters import ExportResult

    def export(self, model, sample_inputs, model_path, *, quant):
        write(model_path)
        return ExportResult(files=[model_path])

    monkeypatch.setattr(exporters.exporter_class(format_name), "export", export)


@pytest.mark.parametrize("format_name", host_formats())
def test_corrupt_file_is_marked_failed_with_the_runtime_error(tmp_path, monkeypatch, format_name):
    _write_instead_of_exporting(
        monkeypatch, format_name, lambda path: path.write_bytes(b"\x00garbage" * 64)
    )
    result = runner.invoke(
        app, ["export", "tiny-mobilevit", "--target", format_name, "--out", str(tmp_path)]
    )
    assert result.exit_code == VerificationError.exit_code, result.output
    assert "Traceback" not in result.output
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and "Hint:" in result.output
    assert "could not run the artifact" in result.output
    folder = next(tmp_path.glob(f"tiny-mobilevit-{format_name}-*"))
    manifest = read_manifest(folder)
    verification = manifest.component().verification
    assert manifest.status == "failed" and verification.status == "failed"
    assert verification.runtime_error and not verification.outputs
    # The runtime's own words reach the user's one line (its last 40 characters, unwrapped).
    assert verification.runtime_error[-40:] in " ".join(result.output.split())


def _onnx_model(path, *, input_name: str = "pixel_values", op: str = "Relu", domain: str = ""):
    """A one-node ONNX model taking (1, 3, 64, 64) and returning 'logits'."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node(op, [input_name], ["logits"], domain=domain)
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 64, 64])],
    )
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda p: _onnx_model(p, input_name="image"), "pixel_values"),
        (lambda p: _onnx_model(p, op="NoSuchOp", domain="com.example"), "NoSuchOp"),
    ],
    ids=["wrong-input-name", "missing-op"],
)
def test_onnx_runtime_errors_are_recorded(tmp_path, monkeypatch, make, expected):
    _write_instead_of_exporting(monkeypatch, "onnx", make)
    with pytest.raises(VerificationError, match="could not run the artifact|runtime"):
        export_artifact(models.load("tiny-mobilevit"), "onnx", tmp_path)
    verification = read_manifest(tmp_path / "tiny-mobilevit-onnx-fp32").component().verification
    assert expected in verification.runtime_error
    assert verification.runtime.startswith("onnx")


def test_verification_covers_several_inputs(mobilevit_artifacts):
    for folder in mobilevit_artifacts.values():
        verification = read_manifest(folder).component().verification
        assert verification.input_seeds == list(CLASSIFIER_VERIFY_SEEDS)
        logits = verification.outputs[0]
        assert logits.top1_agreement == 1.0
        assert logits.centered_sqnr_db >= TOLERANCES["fp32"].min_centered_sqnr_db


def test_capabilities_are_data_and_refusals_are_generated_from_it():
    """What each exporter accepts is declared, and the refusal reads the declaration."""
    loaded = models.load("tiny-mobilevit")
    refusing = []
    for name in exporters.format_names():
        exporter = exporters.get(name)
        assert LayerPrecision.FP32 in exporter.layer_precisions
        missing = [p for p in LayerPrecision if p not in exporter.layer_precisions]
        if not missing:  # realizes every precision: nothing to refuse
            continue
        refusing.append(name)
        plan = QuantPlan(default=missing[0])
        refused = exporters.unsupported_reason(
            exporter, loaded, quant=quant_spec(plan, loaded.module)
        )
        assert refused.startswith(
            f"{exporter.display_name} cannot realize {missing[0]} for layer "
            "'mobilevit.conv_stem.convolution' (and "
        )
        assert all(p in refused for p in exporter.layer_precisions)
    assert refusing  # some format refuses some precision (Core ML has no int8-dynamic)
    # Only the format whose runtime can be missing on a host checks structure instead.
    checkers = {
        n
        for n in exporters.format_names()
        if isinstance(exporters.get(n), exporters.StructureChecker)
    }
    assert checkers == {"coreml"}


def test_no_runtime_and_no_structure_check_fails_clearly(tmp_path, monkeypatch):
    """A format without a runtime here and nothing to check instead is a failed verification,
    never a silent pass."""
    monkeypatch.setattr(
        exporters.exporter_class("onnx"),
        "host_runtime_unavailable_reason",
        lambda self: "pretend onnxruntime is missing",
    )
    with pytest.raises(VerificationError, match="no structure check to fall back on"):
        export_artifact(models.load("tiny-mobilevit"), "onnx", tmp_path)
    manifest = read_manifest(tmp_path / "tiny-mobilevit-onnx-fp32")
    assert manifest.status == "failed" and not manifest.component().verification.numerics_checked
