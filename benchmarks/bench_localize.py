"""Where does an artifact leave PyTorch, and where does ARM leave x86? `verify --localize` on
real photos for the mobilevit-small preset's int8 and mixed LiteRT and ONNX artifacts, on emulated
ARM cores.

    .venv/bin/python -m benchmarks.bench_localize [--preset P] [--cores max,cortex-a76]

Needs `edgekit emulator setup arm64` (`--cache` as there). bench_emulated found the TFLite int8
and mixed artifacts computing something else on `max` (i8mm/SVE2 kernels x86 never runs) than on
x86; this names the first module where that starts, per core, next to the first module where the
artifact's own quantization error jumps against PyTorch.
Results go to benchmarks/results/localize-<preset>-<machine>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import tempfile
from dataclasses import asdict
from pathlib import Path

from benchmarks.bench_quantization import _plan, photo_crops
from edgekit import models, profiles
from edgekit.artifact import now_utc
from edgekit.cli._common import configure_logging
from edgekit.emulate.environment import load
from edgekit.emulate.localize import describe_jump, localize
from edgekit.export import export_for_target
from edgekit.quant.calibration import image_calibration

RESULTS = Path(__file__).parent / "results"


def summary(result) -> dict:
    jump, host = result.first_jump, result.first_host_divergence
    return {
        "core": result.where,
        "runtime": result.runtime,
        "inputs": result.inputs,
        "modules_compared": len(result.layers),
        "modules_total": result.modules_total,
        "probe_sqnr_db": round(result.probe_sqnr_db, 1),
        "first_jump": asdict(jump) if jump else None,
        "first_jump_drop_db": result.first_jump_drop_db,
        "first_divergence_from_x86": asdict(host) if host else None,
        "final_sqnr_db": round(result.layers[-1].sqnr_db, 1) if result.layers else None,
        "final_sqnr_vs_x86_db": result.layers[-1].sqnr_vs_host_db if result.layers else None,
        "verdict": describe_jump(result),
        "notes": result.notes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobilevit-small")
    parser.add_argument("--cores", default="max,cortex-a76")
    parser.add_argument("--formats", default="tflite,onnx")
    parser.add_argument("--plans", default="int8,mixed")
    parser.add_argument("--images", type=int, default=4, help="Real photo crops fed.")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure_logging(verbose=False)
    cores = [c for c in args.cores.split(",") if c]
    loaded = models.load(args.preset)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekit-localize-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        calib_folder, eval_folder = photo_crops(scratch / "photos")
        photos = scratch / "eval"
        photos.mkdir()
        for path in sorted(eval_folder.rglob("*.png"))[: args.images]:
            (photos / path.name).write_bytes(path.read_bytes())
        calibration = {"model": image_calibration(loaded, calib_folder, count=64)}
        for format_name in args.formats.split(","):
            for plan_name in args.plans.split(","):
                plan = _plan(format_name, plan_name, loaded)
                folder, manifest = export_for_target(
                    loaded, profiles.resolve(format_name), scratch / "artifacts", plan=plan,
                    calibration=calibration if plan else None, name=f"{format_name}-{plan_name}",
                )  # fmt: skip
                results = localize(folder, images=photos, cores=cores, cache=args.cache)
                for result in results:
                    row = {"format": format_name, "plan": plan_name, **summary(result)}
                    rows.append(row)
                    print(f"{format_name} {plan_name} {result.where}: {row['verdict']}; "
                          f"leaves x86 at {(row['first_divergence_from_x86'] or {}).get('module')}",
                          flush=True)  # fmt: skip
    machine = re.sub(r"[^a-z0-9]+", "-", platform.node().lower()).strip("-") or "host"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"localize-{args.preset}-{machine}"
    record = {
        "created_utc": now_utc(),
        "machine": f"{platform.machine()} host, {platform.processor() or 'cpu'}; cores emulated "
        f"by qemu {load('arm64', args.cache).qemu_release} user mode",
        "preset": args.preset,
        "rows": rows,
    }
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# verify --localize on emulated cores: {args.preset}",
        "",
        f"{record['created_utc']}, {record['machine']}. Inputs: {args.images} real photo crops.",
        "",
        "| format | plan | core | first jump vs PyTorch | first module leaving x86 | "
        "final SQNR vs PyTorch | final SQNR vs x86 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        jump, x86 = row["first_jump"], row["first_divergence_from_x86"]
        jump_cell = f"{jump['module']} ({jump['sqnr_db']:.1f} dB)" if jump else "none"
        x86_cell = f"{x86['module']} ({x86['sqnr_vs_host_db']:.1f} dB)" if x86 else "none"
        lines.append(
            f"| {row['format']} | {row['plan']} | {row['core']} | {jump_cell} | {x86_cell} | "
            f"{row['final_sqnr_db']} dB | {row['final_sqnr_vs_x86_db']} dB |"
        )
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json and .md")


if __name__ == "__main__":
    main()
