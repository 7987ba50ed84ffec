"""fp32, int8 and mixed artifacts on emulated ARM64 cores vs this x86 host and PyTorch.

    .venv/bin/python -m benchmarks.bench_emulated [--preset mobilevit-small] [--cores ...]
        [--formats onnx,tflite,executorch]

Needs `edgekit emulator setup arm64` (run it once; `--cache` as there; ExecuTorch also Debian's
g++-aarch64-linux-gnu, for its runner). Each artifact runs on crops of real photos (the
ones bench_quantization evaluates on; the other half calibrates the int8 layers) inside qemu
on each core, and on this host with the same runtime. Per core: logit SQNR and top-1 agreement
vs PyTorch fp32 and vs the x86 run, and the largest difference from x86: a kernel that computes
something else on ARM (the issue's example: a dynamic-int8 model with another top-1 on `max`,
whose i8mm kernels x86 never runs) shows as agreement below 100% vs x86.
Results go to benchmarks/results/emulated-<preset>[-<formats>]-<machine>.json and .md (the
formats named when not all).
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.bench_quantization import _plan, photo_crops
from edgekit import exporters, models, profiles
from edgekit.artifact import now_utc
from edgekit.cli._common import configure_logging
from edgekit.emulate.environment import load
from edgekit.emulate.verify import run_in_guest
from edgekit.export import export_for_target
from edgekit.preprocess import preprocess
from edgekit.quant.calibration import image_calibration
from edgekit.validate import sqnr_db

RESULTS = Path(__file__).parent / "results"
PLANS = ("fp32", "int8", "mixed")
FORMATS = ("onnx", "tflite", "executorch")


def agreement(reference: list[np.ndarray], actual: list[np.ndarray]) -> dict[str, float]:
    ref, out = np.array(reference, np.float64), np.array(actual, np.float64)
    return {
        "sqnr_db": round(sqnr_db(ref, out), 2),
        "top1_agreement": float(np.mean(ref.argmax(-1) == out.argmax(-1))),
        "max_abs_diff": float(np.abs(ref - out).max()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobilevit-small")
    parser.add_argument("--cores", default="cortex-a72,cortex-a76,max")
    parser.add_argument("--images", type=int, default=8, help="Evaluation crops per artifact.")
    parser.add_argument("--formats", default=",".join(FORMATS))
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure_logging(verbose=False)
    cores = [c for c in args.cores.split(",") if c]
    environment = load("arm64", args.cache)

    loaded = models.load(args.preset)
    name = loaded.inputs[0].name
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-emulated-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        calib_folder, eval_folder = photo_crops(scratch / "photos")
        images = sorted(eval_folder.rglob("*.png"))[: args.images]
        inputs = [{name: preprocess(path, loaded.preprocessing)} for path in images]
        reference = [loaded.run_torch(x)["logits"][0] for x in inputs]
        calibration = {"model": image_calibration(loaded, calib_folder, count=64)}
        formats = [f for f in args.formats.split(",") if f]
        for format_name in formats:
            for plan_name in PLANS:
                plan = _plan(format_name, plan_name, loaded)
                folder, manifest = export_for_target(
                    loaded, profiles.resolve(format_name), scratch / "artifacts", plan=plan,
                    calibration=calibration if plan else None, name=f"{format_name}-{plan_name}",
                )  # fmt: skip
                component = manifest.component()
                host = exporters.open_runtime(folder, manifest, component, threads=1)
                x86 = [host(x)["logits"][0] for x in inputs]
                row = {
                    "format": format_name,
                    "plan": plan_name,
                    "precision": manifest.precision,
                    "x86_vs_pytorch": agreement(reference, x86),
                    "cores": {},
                }
                for core in cores:
                    outputs, timed = run_in_guest(
                        environment, core, folder / component.model_file, manifest, component,
                        inputs, threads=1,
                    )  # fmt: skip
                    arm = [o["logits"][0] for o in outputs]
                    row["runtime"] = timed["runtime"]
                    row["cores"][core] = {
                        "vs_pytorch": agreement(reference, arm),
                        "vs_x86": agreement(x86, arm),
                    }
                rows.append(row)
                print(json.dumps(row))

    machine = re.sub(r"[^a-z0-9]+", "-", f"{platform.machine()}-host".lower())
    subset = "" if set(formats) == set(FORMATS) else "-" + "-".join(formats)
    stem = args.results_dir / f"emulated-{args.preset}{subset}-{machine}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    result = {
        "preset": args.preset,
        "created_utc": now_utc(),
        "images": len(images),
        "emulator": {"cores": cores, "qemu": environment.qemu_release,
                     "packages": environment.packages,
                     "identities": {c: vars(environment.identities[c]) for c in cores}},
        "rows": rows,
    }  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(_markdown(args.preset, result))
    print(f"written: {stem}.json, {stem}.md")


def _markdown(preset: str, result: dict) -> str:
    cores = result["emulator"]["cores"]
    lines = [
        f"# {preset} on emulated ARM64 cores vs x86 and PyTorch",
        "",
        f"{result['images']} crops of real photos (not the calibration ones), batch 1, one thread. "
        "Each cell: top-1 agreement / logit SQNR; 'vs x86' compares the same runtime on this "
        "host; max |diff| is the largest logit difference from x86. Weights are the preset's "
        f"RANDOM ones. Emulated by qemu {result['emulator']['qemu']} user mode "
        f"({', '.join(f'{k} {v}' for k, v in result['emulator']['packages'].items())}).",
        "",
        "| format | plan | x86 vs PyTorch | "
        + " | ".join(f"{c} vs PyTorch | {c} vs x86 | {c} max diff" for c in cores)
        + " |",
        "|---|---|---|" + "---|---|---|" * len(cores),
    ]
    for row in result["rows"]:
        cells = [row["format"], row["plan"], _cell(row["x86_vs_pytorch"])]
        for core in cores:
            values = row["cores"][core]
            cells += [_cell(values["vs_pytorch"]), _cell(values["vs_x86"]),
                      f"{values['vs_x86']['max_abs_diff']:.2e}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\nMeasured {result['created_utc']}.")
    return "\n".join(lines) + "\n"


def _cell(values: dict) -> str:
    return f"{values['top1_agreement']:.0%} / {values['sqnr_db']:.1f} dB"


if __name__ == "__main__":
    main()
