"""fp32 vs int8 vs mixed on every target, in one run: size, latency ratio, SQNR, top-1 on photos.

    .venv/bin/python benchmarks/bench_quantization.py [--preset mobilevit-small] [--rounds 5]

Real photos only (no download): the colour images that ship in scikit-image plus matplotlib's
Grace Hopper, each cut into several crops. The photos are split in two disjoint halves: crops of
one half calibrate the int8 layers (`--calib`), crops of the other half measure the artifacts
against PyTorch fp32 (SQNR of the logits, top-1 agreement), so no artifact is judged on the data
it was calibrated on. Latency: every host artifact and PyTorch eager round-robin, each in its own
process (edgekit bench); the ratio vs fp32 is the median over rounds of (fp32 median / variant
median) within the same format. Core ML has no runtime off macOS: size and plan only.
Results go to benchmarks/results/quantization-<preset>-<machine>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import tempfile
from pathlib import Path

import numpy as np

from edgekit import exporters, models, profiles
from edgekit.artifact import read_manifest
from edgekit.bench import BenchSettings, TimingSettings, run_bench
from edgekit.cli._common import configure_logging
from edgekit.export import export_for_target
from edgekit.preprocess import preprocess
from edgekit.quant.calibration import image_calibration
from edgekit.validate import sqnr_db

RESULTS = Path(__file__).parent / "results"
# `attention-float`: `mixed` with the attention blocks fp32 whole (what `mixed` was before its
# attention projections became int8-dynamic): the size it costs and the fidelity it buys.
ATTENTION_FLOAT = "attention-float"
PLANS = ("fp32", "int8", "mixed", ATTENTION_FLOAT)
FORMATS = ("onnx", "executorch", "tflite", "coreml")
# Crops per photo: the full frame and four overlapping corners, so each photo gives five
# different views (framing changes the logits as much as a different photo of a random model).
CROP_FRACTION = 0.7


def photo_crops(folder: Path) -> tuple[Path, Path]:
    """Write crops of the shipped photos into `folder`/calib and `folder`/eval (disjoint
    photos); return both folders."""
    import matplotlib
    from PIL import Image
    from skimage import data

    names = [
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "cat",
        "immunohistochemistry",
        "hubble_deep_field",
        "retina",
        "colorwheel",
        "logo",
        "page",
        "horse",
    ]
    photos = []
    for name in names:
        image = np.asarray(getattr(data, name)())
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        photos.append((name, Image.fromarray(image[..., :3].astype(np.uint8))))
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    photos.append(("grace_hopper", Image.open(hopper).convert("RGB")))
    calib, evaluation = folder / "calib", folder / "eval"
    for index, (name, photo) in enumerate(photos):
        target = (calib if index % 2 == 0 else evaluation) / name
        target.mkdir(parents=True)
        width, height = photo.size
        w, h = int(width * CROP_FRACTION), int(height * CROP_FRACTION)
        boxes = [
            (0, 0, width, height),
            (0, 0, w, h),
            (width - w, 0, width, h),
            (0, height - h, w, height),
            (width - w, height - h, width, height),
        ]
        for crop, box in enumerate(boxes):
            photo.crop(box).save(target / f"{crop}.png")
    return calib, evaluation


def evaluate(folder: Path, artifact: Path, loaded: models.LoadedModel) -> dict[str, float]:
    """Logit SQNR and top-1 agreement of an artifact vs PyTorch fp32 on every photo crop."""
    manifest = read_manifest(artifact)
    runtime = exporters.open_runtime(artifact, manifest, manifest.component(), threads=2)
    name = loaded.inputs[0].name
    ref, out = [], []
    for path in sorted(folder.rglob("*.png")):
        pixels = {name: preprocess(path, loaded.preprocessing)}
        ref.append(loaded.run_torch(pixels)["logits"][0])
        out.append(runtime(pixels)["logits"][0])
    ref_array, out_array = np.array(ref, np.float64), np.array(out, np.float64)
    return {
        "images": len(ref),
        "sqnr_db": round(sqnr_db(ref_array, out_array), 2),
        "top1_agreement": float(np.mean(ref_array.argmax(1) == out_array.argmax(1))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobilevit-small")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--formats", nargs="+", default=list(FORMATS))
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure_logging(verbose=False)

    loaded = models.load(args.preset)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edgekit-quant-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        calib_folder, eval_folder = photo_crops(scratch / "photos")
        calibration = {"model": image_calibration(loaded, calib_folder, count=64)}
        host_artifacts: list[Path] = []
        for format_name in args.formats:
            profile = profiles.resolve(format_name)
            for plan_name in PLANS:
                plan = _plan(format_name, plan_name, loaded)
                row: dict = {"format": format_name, "plan": plan_name}
                try:
                    folder, manifest = export_for_target(
                        loaded,
                        profile,
                        scratch / "artifacts",
                        plan=plan,
                        calibration=calibration if plan else None,
                        name=f"{format_name}-{plan_name}",
                    )
                except Exception as exc:  # a failed plan is a result too: record why
                    row["error"] = f"{type(exc).__name__}: {exc}"
                    rows.append(row)
                    print(f"{format_name} {plan_name}: {row['error']}")
                    continue
                component = manifest.component()
                row.update(
                    precision=manifest.precision,
                    size_bytes=component.size_bytes,
                    fp32_weight_bytes=component.fp32_weight_bytes,
                    layers=component.quant.counts if component.quant else None,
                    plan_check=component.quant.status if component.quant else None,
                    export_s=component.export.duration_s,
                    verification=component.verification.message,
                )
                if exporters.get(format_name).host_runtime_unavailable_reason() is None:
                    row.update(evaluate(eval_folder, folder, loaded))
                    host_artifacts.append(folder)
                rows.append(row)
                print(json.dumps(row))
        del loaded
        report = run_bench(
            host_artifacts,
            timing=TimingSettings(warmup_runs=args.warmup, min_runs=args.runs),
            settings=BenchSettings(threads=[args.threads], rounds=args.rounds),
        )
    by_name = {Path(r.artifact).name: r for r in report.results if r.artifact}
    for row in rows:
        result = by_name.get(f"{row['format']}-{row['plan']}")
        fp32 = by_name.get(f"{row['format']}-fp32")
        if result and fp32:
            row["median_ms"] = round(result.latency.median_ms, 2)
            # One round records no per-round medians: the ratio of the two medians then.
            fp32_rounds = fp32.round_medians_ms or [fp32.latency.median_ms]
            variant_rounds = result.round_medians_ms or [result.latency.median_ms]
            ratios = [f / v for f, v in zip(fp32_rounds, variant_rounds, strict=True)]
            row["speedup_vs_fp32"] = round(statistics.median(ratios), 3)

    machine = re.sub(
        r"[^a-z0-9]+", "-", f"{platform.machine()}-{report.machine.cpu_count}core".lower()
    )
    stem = args.results_dir / f"quantization-{args.preset}-{machine}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(
        json.dumps(
            {
                "preset": args.preset,
                "machine": report.machine.model_dump(),
                "settings": report.settings,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    stem.with_suffix(".md").write_text(_markdown(args.preset, report, rows))
    print(_markdown(args.preset, report, rows))
    print(f"written: {stem}.json, {stem}.md")


def _plan(format_name: str, plan_name: str, loaded: models.LoadedModel):
    """The plan measured as `plan_name` on `format_name`: a named plan as the export builds it
    for that target, or `attention-float` (`mixed` with the attention blocks kept fp32 whole).
    Core ML's static int8 layers are int8 weights here (its W8A8 calibration needs a Core ML
    runtime, i.e. macOS), and what a plan keeps float is fp16, the profile's float precision."""
    from edgekit.quant.plan import LayerPrecision, QuantPlan, named_plan

    if plan_name == "fp32":
        return None
    precisions = exporters.get(format_name).layer_precisions
    plan = named_plan(
        "mixed" if plan_name == ATTENTION_FLOAT else plan_name, loaded.module, precisions
    )
    if plan_name == ATTENTION_FLOAT:
        plan = QuantPlan(
            name=ATTENTION_FLOAT,
            default=plan.default,
            overrides=dict.fromkeys(plan.overrides, LayerPrecision.FP32),
        )
    if format_name != "coreml":
        return plan
    as_coreml = {
        LayerPrecision.INT8: LayerPrecision.INT8_WEIGHT,
        LayerPrecision.FP32: LayerPrecision.FP16,
    }
    return QuantPlan(
        name=plan_name,
        default=as_coreml.get(plan.default, plan.default),
        overrides={path: as_coreml.get(p, p) for path, p in plan.overrides.items()},
    )


def _markdown(preset: str, report, rows: list[dict]) -> str:
    machine = report.machine
    lines = [
        f"# {preset}: fp32 vs int8 vs mixed (vs attention-float) per target",
        "",
        f"{machine.processor}, {machine.cpu_count} cores, {report.settings['threads']} threads; "
        f"{report.settings['rounds']} interleaved rounds x >= {report.settings['min_runs']} runs. "
        "Weights are the preset's RANDOM ones (published architecture): fidelity numbers are those "
        "of a random network, which amplifies rounding far more than trained weights do.",
        "",
        "| format | plan | precision | size MB | x smaller than fp32 | layers (read back) | "
        "SQNR dB (eval photos) | top-1 agreement | median ms | speed vs fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        if "error" in row:
            lines.append(
                f"| {row['format']} | {row['plan']} | failed: {row['error'][:160]} |||||||"
            )
            continue
        size = row["size_bytes"] / 1e6
        lines.append(
            f"| {row['format']} | {row['plan']} | {row['precision']} | {size:.2f} | "
            f"{row['fp32_weight_bytes'] / row['size_bytes']:.2f} | {row['layers']} | "
            f"{row.get('sqnr_db', 'n/a (no runtime)')} | {row.get('top1_agreement', 'n/a')} | "
            f"{row.get('median_ms', '-')} | {row.get('speedup_vs_fp32', '-')} |"
        )
    lines += [
        "",
        "Plans: `int8` every conv/linear layer static int8; `mixed` (edgekit's named default) "
        "convolutions and feed-forward layers static int8, attention projections int8-dynamic "
        "(int8 weights, activations quantized per run; int8-weight on Core ML), attention "
        "products and norms float; `attention-float` the same with the attention blocks fp32 "
        "whole. Attention products (Q K^T, softmax V) are float in every plan.",
        "",
        f"Evaluation: {rows[0].get('images', '?')} crops of photos not used for calibration. "
        "Speed vs fp32: median over rounds of fp32 median / variant median, same format; above 1 "
        "is faster.",
        f"\nMeasured {report.created_utc} with edgekit {report.edgekit_version} on "
        f"{machine.platform}, Python {machine.python}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
