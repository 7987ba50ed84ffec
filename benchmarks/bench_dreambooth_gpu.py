"""DreamBooth on the SD 1.5 architecture at 512x512 on one CUDA GPU: seconds per step and peak GPU
memory of the plain loop, fused AdamW, edgekit's defaults (what a user gets with no flags), with
gradient checkpointing and with LoRA, with prior preservation.

    python benchmarks/bench_dreambooth_gpu.py [--steps 12] [--warmup 4] [--variant NAME ...]

The `sd15` preset (seeded random weights, the published architecture: 860M-parameter UNet), one
instance and one class image (a batch of 2 per step: instance + prior), bf16 autocast over fp32
weights, AdamW, as `edgekit train dreambooth` runs them. Each variant trains in this process one
after the other; a variant's step time is the median of its steps after `--warmup` (a compiled
UNet compiles in the first step, reported apart as first_step_s), its peak memory
torch.cuda.max_memory_allocated over its run (model load and class image included). Each row
records the optimizer and compile settings the run resolved (the training card's `engine`).
Results go to benchmarks/results/dreambooth-sd15-512-<gpu>.json and .md.

Needs a CUDA GPU and, beside torch/accelerate/peft, diffusers 0.42.1; run it from the repository
root (edgekit is imported from there). benchmarks/gpu_check.sh runs it, with the GPU-marked
training test, on a machine whose Python has torch but not the rest.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# Settings on top of the benchmark's. "edgekit defaults" sets nothing: its row is what a user
# gets with no flags (on CUDA, fused AdamW and a compiled UNet: choose_engine in
# edgekit/train/dreambooth.py). The H100 reference (torch 2.11, same setup): plain loop
# 0.201 s/step 17.0 GiB; fused AdamW 0.153 s 14.5 GiB; fused + compiled UNet 0.111 s 13.8 GiB;
# LoRA rank 4 (fused + compiled) 0.146 s 7.0 GiB; gradient checkpointing 0.328 s, no memory saved.
VARIANTS = {
    "plain loop": {"fused_adam": False, "compile_unet": False},
    "fused AdamW": {"fused_adam": True, "compile_unet": False},
    "edgekit defaults": {},
    "edgekit defaults + gradient checkpointing": {"gradient_checkpointing": True},
    "edgekit defaults, LoRA rank 4": {"lora_rank": 4},
}


def _instance_photo(folder: Path) -> None:
    """One 512x512 photo-like image (smooth colour gradients plus texture), made here: the GPU
    machine has no image datasets, and step time does not depend on the picture."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:512, 0:512] / 512.0
    rgb = np.stack([x, y, 1 - x * y], axis=-1) * 200 + rng.normal(0, 20, (512, 512, 3))
    folder.mkdir(parents=True)
    Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(folder / "subject.png")


def main() -> None:
    import torch

    from edgekit.train.dreambooth import DreamBoothConfig, train

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=4)
    # A CPU rehearsal of the script itself: --base tiny-sd --resolution 64 (no memory numbers).
    parser.add_argument("--base", default="sd15")
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--variant",
        action="append",
        choices=list(VARIANTS),
        help="Run only these variants (repeat the option; default: all, in the order listed).",
    )
    args = parser.parse_args()
    variants = {name: VARIANTS[name] for name in VARIANTS if name in (args.variant or VARIANTS)}
    cuda = torch.cuda.is_available()
    if not cuda and args.base == "sd15":
        raise SystemExit("needs a CUDA GPU (rehearse on CPU with --base tiny-sd --resolution 64)")
    gpu = torch.cuda.get_device_name(0) if cuda else "cpu"
    gpu_slug = re.sub(r"[^a-z0-9]+", "-", gpu.lower()).strip("-")  # nvidia-h100-80gb-hbm3
    stem = args.results_dir / f"dreambooth-{args.base}-{args.resolution}-{gpu_slug}"
    record = {
        "benchmark": "DreamBooth step on the SD 1.5 architecture, 512x512, prior preservation",
        "gpu": gpu,
        "torch": torch.__version__,
        "setup": "sd15 preset (random weights), 1 instance + 1 class image per step, bf16 "
        "autocast over fp32 weights, AdamW (fused or not, UNet compiled or not: per row)",
        "method": f"{args.steps} steps per variant, median of those after the first "
        f"{args.warmup}; peak = torch.cuda.max_memory_allocated over the variant's run",
        "results": [],
    }
    with tempfile.TemporaryDirectory(prefix="edgekit-db-gpu-") as work:
        photos = Path(work) / "photos"
        _instance_photo(photos)
        for name, extra in variants.items():
            torch._dynamo.reset()  # no compiled graphs of the previous variant's UNet held
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            config = DreamBoothConfig.model_validate(
                {
                    "base": args.base,
                    "instance_dir": photos,
                    "instance_prompt": "a photo of sks cat",
                    "class_prompt": "a photo of cat",
                    "class_dir": Path(work) / "class-images",  # generated once, then reused
                    "num_class_images": 1,
                    "inference_steps": 2,
                    "resolution": args.resolution,
                    "max_steps": args.steps,
                    "checkpoint_every": args.steps + 1,
                    "mixed_precision": "bf16",
                    "report_to": "none",
                    "out": Path(work) / name.replace(" ", "-"),
                    **extra,
                }
            )
            result = train(config)
            timed = result.step_seconds[args.warmup :]
            record["results"].append(
                {
                    "variant": name,
                    "median_step_s": round(statistics.median(timed), 4),
                    "steps_timed": len(timed),
                    "first_step_s": round(result.step_seconds[0], 3),
                    "fused_adam": result.card.engine["fused_adam"],
                    "compile_unet": result.card.engine["compile_unet"],
                    "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                    if cuda
                    else None,
                }
            )
            print(record["results"][-1], flush=True)
            # Written after every variant: a run cut short (a lease running out) keeps its rows.
            if cuda:
                _write(record, stem, args)
    if cuda:
        print(f"wrote {stem}.json and .md")


def _write(record: dict, stem: Path, args: argparse.Namespace) -> None:
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        f"# DreamBooth, {args.base} at {args.resolution}x{args.resolution}, on {record['gpu']}",
        "",
        f"{record['setup']}. {record['method']}. torch {record['torch']}.",
        "",
        "| variant | fused AdamW | compiled UNet | s/step | steps/s | first step (s) | "
        "peak GPU memory (GiB) |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {r['variant']} | {_yes(r['fused_adam'])} | {_yes(r['compile_unet'])} | "
            f"{r['median_step_s']:.3f} | {1 / r['median_step_s']:.2f} | {r['first_step_s']:.1f} | "
            f"{r['peak_gpu_memory_gib']:.1f} |"
            for r in record["results"]
        ),
        "",
    ]
    stem.with_suffix(".md").write_text("\n".join(lines))


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


if __name__ == "__main__":
    main()
