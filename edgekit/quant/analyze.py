"""Per-layer sensitivity: how much the whole model's output suffers when ONE layer is quantized.

For every quantizable layer (convolution and linear layers, by the module path the user sees),
and every scheme, the layer alone is fake-quantized in PyTorch and the whole model's outputs are
compared with fp32 on the calibration inputs: SQNR of every output; top-1 agreement for
classifiers. The method of apple's ml-stable-diffusion mixed-bit recipes (per-layer PSNR) and of
AIMET's per-layer analysis, on the layers a `QuantPlan` can name. The attention blocks'
activation-by-activation matmuls (Q K^T, softmax V) are measured the same way, one block at a
time (edgekit.quant.attention).

Schemes, simulated the way the runtimes compute them:
- int8: weights symmetric per output channel, the layer's input activation affine per tensor
  with its range observed over the calibration inputs (static W8A8: ONNX QDQ, XNNPACK, LiteRT);
- int8-dynamic: the same weights, the activation range taken from each input at run time;
- int8-weight: int8 weights only, computed in float (Core ML's linear weight quantization);
- int4-weight: 4-bit weights only (symmetric per output channel, scale max|w| / 7 over -8..7, as
  ai-edge-quantizer and coremltools round them), computed in float.

Observers and fake-quantize ops are PyTorch's own (torch.ao.quantization), so the rounding is
the reference rounding the converters implement. Results are written after every layer: an
interrupted run resumes where it stopped when given the same output file (same model weights,
calibration data and schemes; anything else starts over).
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from edgekit.artifact import write_bytes_atomic
from edgekit.errors import EdgekitError
from edgekit.models.base import SourceInfo
from edgekit.quant import attention as products
from edgekit.quant.plan import LayerPrecision, is_attention, quantizable_layers, user_root
from edgekit.quant.spec import CalibrationInputs, CalibrationRecord, executed_layers
from edgekit.validate import SQNR_CEILING_DB, sqnr_db

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgekit.models.base import LoadedModel, LoadedPipeline

SENSITIVITY_SCHEMA_VERSION = "1.1"  # 1.1: attention_matmuls
# Inputs stacked into one forward pass during analysis.
ANALYSIS_BATCH = 16
# int4-weight is measured by default too: the planner can step a layer down to 4 bits only where
# the file holds its measurement, and it is one more pass per layer of the cheapest kind (inputs
# stacked, no activation hooks): about a quarter of the analysis time on tiny-mobilevit. Where
# that is too long (the SD UNet with --prompts), --scheme leaves it out.
ANALYZED_SCHEMES = (
    LayerPrecision.INT8,
    LayerPrecision.INT8_DYNAMIC,
    LayerPrecision.INT8_WEIGHT,
    LayerPrecision.INT4_WEIGHT,
)
# Bytes per weight stored at each precision (per-channel scales are negligible); 4-bit weights
# are packed two to a byte.
WEIGHT_BYTES = {
    LayerPrecision.FP32: 4.0,
    LayerPrecision.FP16: 2.0,
    LayerPrecision.INT8: 1.0,
    LayerPrecision.INT8_DYNAMIC: 1.0,
    LayerPrecision.INT8_WEIGHT: 1.0,
    LayerPrecision.INT4_WEIGHT: 0.5,
}


class AnalyzeError(EdgekitError):
    exit_code = 2


class LayerSensitivity(BaseModel):
    path: str = Field(description="Module path as in the model's named_modules().")
    layer_type: str = Field(description="Conv2d, Linear, ...")
    weight_count: int = Field(description="Elements of the weight tensor (biases stay 32-bit).")
    in_attention: bool = Field(description="Inside an attention block.")
    sqnr_db: dict[LayerPrecision, float] = Field(
        description="Scheme -> worst output SQNR vs fp32 with only this layer quantized."
    )
    latent_psnr_db: dict[LayerPrecision, float] = Field(
        default_factory=dict,
        description="SD UNet: scheme -> PSNR of the final latents of the prompts' denoising "
        "loop vs the fp32 loop, with only this layer quantized.",
    )
    top1_agreement: dict[LayerPrecision, float] = Field(
        default_factory=dict, description="Classifiers: scheme -> argmax agreement with fp32."
    )


class MatmulSensitivity(BaseModel):
    """An attention block's activation-by-activation products (Q K^T, softmax V), quantized
    together (see edgekit.quant.attention)."""

    path: str = Field(description="Module path of the attention block.")
    product_count: int = Field(description="Products per forward (2: scores and output).")
    sqnr_db: dict[LayerPrecision, float] = Field(
        description="Scheme (int8, int8-dynamic: both operands int8) -> worst output SQNR vs "
        "fp32 with only these products quantized."
    )
    latent_psnr_db: dict[LayerPrecision, float] = Field(default_factory=dict)
    top1_agreement: dict[LayerPrecision, float] = Field(default_factory=dict)


class SensitivityReport(BaseModel):
    schema_version: Literal["1.0", "1.1"] = SENSITIVITY_SCHEMA_VERSION
    source: SourceInfo
    component: str | None = Field(description="Pipeline component analyzed (e.g. 'unet').")
    model_kind: str
    calibration: CalibrationRecord
    schemes: list[LayerPrecision]
    total_parameter_count: int
    whole_model: dict[LayerPrecision, dict[str, float]] = Field(
        default_factory=dict,
        description="Every layer quantized with the scheme at once: the measured end of the "
        "trade-off, against which the planner's additive prediction can be judged.",
    )
    layers: list[LayerSensitivity]
    attention_matmuls: list[MatmulSensitivity] = Field(
        default_factory=list,
        description="Per attention block, its matmuls alone quantized (activation schemes "
        "only: they have no weights). Plans set them by block path (`attention_matmuls`, plan "
        "schema 1.1); `quantize plan --quantize-matmuls` picks them from these measurements.",
    )
    complete: bool = Field(description="False while a run is under way or was interrupted.")


def analyze(
    model: LoadedModel,
    calibration: CalibrationInputs,
    out_path: Path,
    *,
    schemes: tuple[LayerPrecision, ...] = ANALYZED_SCHEMES,
    component: str | None = None,
    on_layer: Callable[[int, int, str], None] | None = None,
    latent_psnr: Callable[[], float] | None = None,
) -> SensitivityReport:
    """Measure every layer's sensitivity; write `out_path` after each layer (resumable).

    `latent_psnr` (SD UNet, see `latent_psnr_metric`) reruns the denoising loop with the model as
    it currently computes, and returns the final latents' PSNR against the fp32 loop's."""
    import torch

    # Every layer is evaluated on the same inputs, so they are held (capped by the calibration
    # count; the CLI's default keeps them to a few dozen) instead of re-read per layer.
    inputs = list(calibration)
    if not inputs:
        raise AnalyzeError("The calibration data is empty.", hint="pass images or prompts.")
    ran = executed_layers(model)  # a VAE decoder's module also holds the encoder it never runs
    layers = {p: m for p, m in quantizable_layers(model.module).items() if p in ran}
    root = user_root(model.module)
    attention = _attention_paths(root)
    reference = _run_all(model, inputs)
    ranges = _observe_input_ranges(model, layers, inputs)

    report = _resume(out_path, model, calibration, list(schemes), component)
    done = {entry.path for entry in report.layers}
    for index, (path, layer) in enumerate(layers.items()):
        if on_layer:
            on_layer(index, len(layers), path)
        if path in done:
            continue
        entry = LayerSensitivity(
            path=path,
            layer_type=type(layer).__name__,
            weight_count=layer.weight.numel(),
            in_attention=any(path == a or path.startswith(a + ".") for a in attention),
            sqnr_db={},
        )
        for scheme in schemes:
            with fake_quantized({path: layer}, scheme, ranges), torch.inference_mode():
                stack = scheme != LayerPrecision.INT8_DYNAMIC
                _measure(entry, scheme, model, inputs, reference, stack, latent_psnr)
        report.layers.append(entry)
        _save(report, out_path)

    _analyze_attention_products(model, inputs, reference, report, schemes, out_path, latent_psnr)

    for scheme in schemes:
        if scheme in report.whole_model:
            continue
        with fake_quantized(layers, scheme, ranges), torch.inference_mode():
            outputs = _run_all(model, inputs, stack=scheme != LayerPrecision.INT8_DYNAMIC)
            latent = round(latent_psnr(), 3) if latent_psnr is not None else None
        sqnr, top1 = _fidelity(reference, outputs, classifier=bool(model.labels))
        report.whole_model[scheme] = {
            "sqnr_db": sqnr,
            **({"top1_agreement": top1} if top1 is not None else {}),
            **({"latent_psnr_db": latent} if latent is not None else {}),
        }
    report.complete = True
    _save(report, out_path)
    return report


def _analyze_attention_products(
    model: LoadedModel,
    inputs: list[dict[str, np.ndarray]],
    reference: list[dict[str, np.ndarray]],
    report: SensitivityReport,
    schemes: tuple[LayerPrecision, ...],
    out_path: Path,
    latent_psnr: Callable[[], float] | None,
) -> None:
    """The attention products of each block alone quantized, for the activation schemes (the
    weight-only ones leave weightless products untouched); appended to `report` per block."""
    import torch

    active = [s for s in schemes if s in (LayerPrecision.INT8, LayerPrecision.INT8_DYNAMIC)]
    if not active:
        return
    with torch.inference_mode():
        ranges = products.observe_operand_ranges(model.module, lambda: _run_all(model, inputs))
    done = {entry.path for entry in report.attention_matmuls}
    for path, count in products.product_blocks(ranges).items():
        if path in done:
            continue
        entry = MatmulSensitivity(path=path, product_count=count, sqnr_db={})
        for scheme in active:
            dynamic = scheme == LayerPrecision.INT8_DYNAMIC
            with (
                products.quantized_products(
                    model.module,
                    path,
                    dynamic=dynamic,
                    ranges=ranges,
                    fake_quantize=_fake_quantize_activation,
                ),
                torch.inference_mode(),
            ):
                _measure(entry, scheme, model, inputs, reference, not dynamic, latent_psnr)
        report.attention_matmuls.append(entry)
        _save(report, out_path)


def _measure(
    entry: LayerSensitivity | MatmulSensitivity,
    scheme: LayerPrecision,
    model: LoadedModel,
    inputs: list[dict[str, np.ndarray]],
    reference: list[dict[str, np.ndarray]],
    stack: bool,
    latent_psnr: Callable[[], float] | None,
) -> None:
    """Run the model as it computes now (part of it fake-quantized) and record the scheme's
    output SQNR, top-1 agreement (classifiers) and final-latent PSNR (SD UNet) in `entry`."""
    outputs = _run_all(model, inputs, stack=stack)
    if latent_psnr is not None:
        entry.latent_psnr_db[scheme] = round(latent_psnr(), 3)
    sqnr, top1 = _fidelity(reference, outputs, classifier=bool(model.labels))
    entry.sqnr_db[scheme] = sqnr
    if top1 is not None:
        entry.top1_agreement[scheme] = top1


@contextmanager
def fake_quantized(
    layers: dict[str, nn.Module],
    scheme: LayerPrecision,
    input_ranges: dict[str, tuple[float, float]],
) -> Iterator[None]:
    """Within the block, `layers` compute as `scheme` would: weights replaced by their int8
    (int4-weight: 4-bit) round trip, inputs (int8, int8-dynamic) by theirs. Restored on exit,
    even on error."""
    saved = {path: layer.weight.data for path, layer in layers.items()}
    handles = []
    round_trip = (
        fake_quantize_weight_int4 if scheme == LayerPrecision.INT4_WEIGHT else fake_quantize_weight
    )
    try:
        for path, layer in layers.items():
            layer.weight.data = round_trip(layer.weight.data)
            if scheme == LayerPrecision.INT8:
                low, high = input_ranges[path]
                handles.append(layer.register_forward_pre_hook(_static_input_hook(low, high)))
            elif scheme == LayerPrecision.INT8_DYNAMIC:
                handles.append(layer.register_forward_pre_hook(_dynamic_input_hook))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for path, layer in layers.items():
            layer.weight.data = saved[path]


def fake_quantize_weight(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel int8, as every target stores conv/linear weights."""
    import torch
    from torch.ao.quantization.observer import PerChannelMinMaxObserver

    observer = PerChannelMinMaxObserver(
        ch_axis=0, dtype=torch.qint8, qscheme=torch.per_channel_symmetric
    )
    observer(weight)
    scale, zero_point = observer.calculate_qparams()
    return torch.fake_quantize_per_channel_affine(weight, scale, zero_point.int(), 0, -128, 127)


def fake_quantize_weight_int4(weight: torch.Tensor) -> torch.Tensor:
    """Symmetric per-output-channel 4-bit, as ai-edge-quantizer and coremltools store it: scale
    max|w| / 7 per channel, values rounded into -8..7. Not PyTorch's observer: its symmetric scale
    divides by (quant_max - quant_min) / 2 = 7.5, which would clip each channel's largest weight
    to 7 steps where the converters keep it exact."""
    import torch

    flat = weight.detach().reshape(weight.shape[0], -1)
    # An all-zero channel keeps a tiny scale (zeros round trip exactly either way).
    scale = (flat.abs().amax(dim=1) / 7).clamp(min=torch.finfo(torch.float32).tiny)
    zero_point = torch.zeros(weight.shape[0], dtype=torch.int32)
    return torch.fake_quantize_per_channel_affine(weight, scale, zero_point, 0, -8, 7)


def _fake_quantize_activation(x: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Affine per-tensor uint8-range round trip, the activation scheme of XNNPACK/QDQ."""
    import torch
    from torch.ao.quantization.observer import MinMaxObserver

    observer = MinMaxObserver(dtype=torch.quint8, qscheme=torch.per_tensor_affine)
    observer.min_val = torch.tensor(low)
    observer.max_val = torch.tensor(high)
    scale, zero_point = observer.calculate_qparams()
    return torch.fake_quantize_per_tensor_affine(x, float(scale), int(zero_point), 0, 255)


def _static_input_hook(low: float, high: float) -> Callable:
    def hook(module: nn.Module, args: tuple) -> tuple:
        return (_fake_quantize_activation(args[0], low, high), *args[1:])

    return hook


def latent_psnr_metric(
    pipeline: LoadedPipeline, unet: LoadedModel, prompts: list[str], *, steps: int
) -> Callable[[], float]:
    """A metric for `analyze(latent_psnr=...)`: the prompts' denoising loops (seeded, DDIM, as
    `generate` runs them) with `unet` as it computes when called, final latents compared with
    the fp32 loop's as PSNR over their peak magnitude. The UNet's per-step error compounds
    over the loop; this measures what a user sees, not one step."""
    from edgekit.generate import denoise
    from edgekit.models import clip_tokenizer

    with tempfile.TemporaryDirectory(prefix="edgekit-tokenizer-") as folder:
        clip_tokenizer.write_tokenizer_files(Path(folder))
        tokenizer = clip_tokenizer.load_tokenizer(Path(folder))
    components = {
        "text-encoder": pipeline.components["text-encoder"].run_torch,
        "unet": unet.run_torch,
    }

    def latents() -> np.ndarray:
        return np.concatenate(
            [
                denoise(components, tokenizer, pipeline.info, prompt, "", steps, 7.5, seed)
                for seed, prompt in enumerate(prompts)
            ]
        ).astype(np.float64)

    reference = latents()
    peak = float(np.max(np.abs(reference)))

    def psnr() -> float:
        mse = float(np.mean((latents() - reference) ** 2))
        return SQNR_CEILING_DB if mse == 0 else min(SQNR_CEILING_DB, 10 * math.log10(peak**2 / mse))

    return psnr


def _dynamic_input_hook(module: nn.Module, args: tuple) -> tuple:
    """The range of this run's activation tensor, as runtimes compute it per run."""
    x = args[0]
    return (_fake_quantize_activation(x, float(x.min()), float(x.max())), *args[1:])


def _observe_input_ranges(
    model: LoadedModel, layers: dict[str, nn.Module], inputs: list[dict[str, np.ndarray]]
) -> dict[str, tuple[float, float]]:
    """Min and max of every layer's input over the calibration inputs, in one pass: only two
    numbers per layer are kept, whatever the number of inputs."""
    import torch

    ranges: dict[str, list[float]] = {}

    def observer(path: str) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            low, high = float(args[0].min()), float(args[0].max())
            seen = ranges.setdefault(path, [low, high])
            seen[0], seen[1] = min(seen[0], low), max(seen[1], high)

        return hook

    handles = [layer.register_forward_pre_hook(observer(p)) for p, layer in layers.items()]
    try:
        with torch.inference_mode():
            _run_all(model, inputs)
    finally:
        for handle in handles:
            handle.remove()
    return {path: (low, high) for path, (low, high) in ranges.items()}


def _run_all(
    model: LoadedModel, inputs: list[dict[str, np.ndarray]], *, stack: bool = True
) -> list[dict[str, np.ndarray]]:
    """Outputs for every input, run as batches: one forward of 16 stacked inputs costs far less
    than 16 forwards of one (the whole analysis is some thousand model runs). Per input where a
    model's outputs do not follow its batch (then stacking cannot be undone), or where `stack`
    is off: dynamic quantization takes its range from the whole activation tensor of one run,
    and models fold the batch into other dimensions (MobileViT's patches), so a stacked batch
    would change the ranges."""
    if not stack:
        return [model.run_torch(x) for x in inputs]
    outputs: list[dict[str, np.ndarray]] = []
    for start in range(0, len(inputs), ANALYSIS_BATCH):
        chunk = inputs[start : start + ANALYSIS_BATCH]
        stacked = {name: np.concatenate([x[name] for x in chunk]) for name in chunk[0]}
        sizes = [next(iter(x.values())).shape[0] for x in chunk]
        result = model.run_torch(stacked)
        if any(r.shape[:1] != (sum(sizes),) for r in result.values()):
            outputs += [model.run_torch(x) for x in chunk]
            continue
        bounds = np.cumsum(sizes)[:-1]
        split = {name: np.split(r, bounds) for name, r in result.items()}
        outputs += [{name: split[name][i] for name in result} for i in range(len(chunk))]
    return outputs


def _fidelity(
    reference: list[dict[str, np.ndarray]],
    outputs: list[dict[str, np.ndarray]],
    *,
    classifier: bool,
) -> tuple[float, float | None]:
    """Worst output SQNR over all inputs together, and top-1 agreement of the first output."""
    worst = min(
        sqnr_db(
            np.concatenate([r[name].ravel() for r in reference]),
            np.concatenate([o[name].ravel() for o in outputs]),
        )
        for name in reference[0]
    )
    top1 = None
    if classifier:
        name = next(iter(reference[0]))
        agree = [
            np.array_equal(r[name].argmax(-1), o[name].argmax(-1))
            for r, o in zip(reference, outputs, strict=True)
        ]
        top1 = float(np.mean(agree))
    return round(worst, 3), top1


def _attention_paths(root: nn.Module) -> list[str]:
    return [path for path, module in root.named_modules() if path and is_attention(module)]


def _resume(
    out_path: Path,
    model: LoadedModel,
    calibration: CalibrationInputs,
    schemes: list[LayerPrecision],
    component: str | None,
) -> SensitivityReport:
    fresh = SensitivityReport(
        source=model.source,
        component=component,
        model_kind=model.model_kind,
        calibration=CalibrationRecord.of(calibration),
        schemes=schemes,
        total_parameter_count=model.parameter_count,
        layers=[],
        complete=False,
    )
    if not out_path.is_file():
        return fresh
    try:
        earlier = SensitivityReport.model_validate_json(out_path.read_text())
    except (ValidationError, UnicodeDecodeError):
        return fresh  # not ours or damaged: start over (it is overwritten atomically)
    same_run = (
        earlier.source.sha256 == model.source.sha256
        and earlier.calibration.sha256 == fresh.calibration.sha256
        and earlier.schemes == schemes
        and earlier.component == component
    )
    return earlier if same_run else fresh


def _save(report: SensitivityReport, path: Path) -> None:
    write_bytes_atomic(path, report.model_dump_json(indent=2).encode())


def read_report(path: Path) -> SensitivityReport:
    if not path.is_file():
        raise AnalyzeError(
            f"No sensitivity file at '{path}'.", hint="write one with `edgekit quantize analyze`."
        )
    try:
        report = SensitivityReport.model_validate_json(path.read_text())
    except (ValidationError, UnicodeDecodeError) as exc:
        raise AnalyzeError(
            f"'{path}' is not an edgekit sensitivity file.",
            hint="write one with `edgekit quantize analyze`.",
        ) from exc
    if not report.complete:
        raise AnalyzeError(
            f"'{path}' is from an analysis that did not finish ({len(report.layers)} layers done).",
            hint="run the same `edgekit quantize analyze` command again: it resumes.",
        )
    return report


def weight_bytes(report: SensitivityReport, precisions: dict[str, LayerPrecision]) -> float:
    """Model weight bytes with each analyzed layer at `precisions[path]` (default fp32), every
    other parameter (norms, embeddings, biases of unlisted modules) in fp32."""
    layer_weights = sum(entry.weight_count for entry in report.layers)
    other = (report.total_parameter_count - layer_weights) * WEIGHT_BYTES[LayerPrecision.FP32]
    return other + sum(
        entry.weight_count * WEIGHT_BYTES[precisions.get(entry.path, LayerPrecision.FP32)]
        for entry in report.layers
    )
