"""DreamBooth on tiny-sd on this CPU: full fine-tune vs LoRA vs text encoder trained too.

    .venv/bin/python benchmarks/bench_dreambooth_cpu.py [--steps 25] [--warmup 5] [--rounds 3]

Each variant trains in a fresh process (so its peak RSS is its own), on the same photos (crops
of scikit-image's cat) and the same class images (generated once, before any variant, and
reused by all through their record), with prior preservation, at 64 px. Step time is the
median over the optimizer steps after the warm-up ones; peak RSS is the process's high-water
mark (model load and class-image decoding included). Every round runs each variant once, so
drifts of a shared machine hit all variants alike; a variant's numbers are the medians over
rounds, and its ratios to the full fine-tune the medians of the per-round ratios. Results go
to benchmarks/results/dreambooth-tiny-sd-cpu.json and .md.

tiny-sd has seeded random weights and about 1M UNet parameters: the ratios show what each
variant costs relative to the others on this machine, not SD 1.5's absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
STEM = "dreambooth-tiny-sd-cpu"
VARIANTS = {
    "full": {},
    "lora": {"lora_rank": 4, "learning_rate": 1e-4},
    "text-encoder": {"train_text_encoder": True},
}


def settings(workdir: Path, steps: int, variant: str) -> dict:
    return {
        "base": "tiny-sd",
        "instance_dir": str(workdir / "cats"),
        "instance_prompt": "a photo of sks cat",
        "class_prompt": "a photo of cat",
        "class_dir": str(workdir / "class-images"),
        "num_class_images": 4,
        "inference_steps": 10,
        "resolution": 64,
        "max_steps": steps,
        "checkpoint_every": steps + 1,  # no checkpoint inside the timed steps
        "report_to": "none",
        "out": str(workdir / variant),
        **VARIANTS.get(variant, {}),
    }


def child(workdir: Path, variant: str, steps: int, threads: int) -> None:
    """One training run; prints its measurements as one JSON line."""
    import torch

    from edgekit.train.dreambooth import DreamBoothConfig, train

    torch.set_num_threads(threads)
    result = train(DreamBoothConfig(**settings(workdir, steps, variant)))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(
        json.dumps(
            {
                "step_seconds": result.step_seconds,
                "peak_rss_mib": round(peak_kib / 1024, 1),
                "trainable_parameters": result.card.trainable_parameters,
                "final_loss": result.card.final_losses["loss"],
            }
        )
    )


def write_photos(folder: Path) -> None:
    import numpy as np
    from PIL import Image
    from skimage import data

    photo = data.chelsea()
    folder.mkdir(parents=True)
    for index, crop in enumerate([photo[:, :300], photo[:, 151:], photo[20:280, 80:340][:, ::-1]]):
        Image.fromarray(np.ascontiguousarray(crop)).save(folder / f"cat-{index}.png")


def run_child(workdir: Path, variant: str, steps: int, threads: int) -> dict:
    command = [sys.executable, __file__, "--child", variant, "--workdir", str(workdir)]
    command += ["--steps", str(steps), "--threads", str(threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    for line in lines:
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": threads,
        "load_average_at_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25, help="optimizer steps per variant")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every variant")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: on a shared machine more threads wait on each other)",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.workdir, args.child, args.steps, args.threads)
        return
    started = time.perf_counter()
    info = machine(args.threads)
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-dreambooth-") as scratch:
        workdir = Path(scratch)
        write_photos(workdir / "cats")
        # Class images first, in their own run, so no variant pays for generating them.
        run_child(workdir, "prepare", 1, args.threads)
        rounds = [
            {v: run_child(workdir, v, args.steps, args.threads) for v in VARIANTS}
            for _ in range(args.rounds)
        ]
    for measured in rounds:
        for run in measured.values():
            run["median_step_s"] = statistics.median(run["step_seconds"][args.warmup :])
    results = {}
    for variant in VARIANTS:
        runs = [measured[variant] for measured in rounds]
        results[variant] = {
            "median_step_s": statistics.median(r["median_step_s"] for r in runs),
            "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
            "step_time_vs_full": round(
                statistics.median(
                    m[variant]["median_step_s"] / m["full"]["median_step_s"] for m in rounds
                ),
                3,
            ),
            "peak_rss_vs_full": round(
                statistics.median(
                    m[variant]["peak_rss_mib"] / m["full"]["peak_rss_mib"] for m in rounds
                ),
                3,
            ),
            "trainable_parameters": runs[0]["trainable_parameters"],
            "timed_steps": args.steps - args.warmup,
            "round_medians_s": [r["median_step_s"] for r in runs],
            "step_seconds": [r["step_seconds"] for r in runs],
        }
    record = {
        "benchmark": "dreambooth tiny-sd cpu",
        "machine": {**info, "load_average_at_end": list(os.getloadavg())},
        "settings": {
            key: value
            for key, value in settings(Path("."), args.steps, "full").items()
            if key not in {"instance_dir", "class_dir", "out"}
        }
        | {
            "warmup_steps": args.warmup,
            "rounds": args.rounds,
            "prior_preservation": True,
            "train_batch_size": 1,
        },
        "variants": {v: VARIANTS[v] for v in VARIANTS},
        "results": results,
        "duration_s": round(time.perf_counter() - started, 1),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{STEM}.json").write_text(json.dumps(record, indent=2) + "\n")
    markdown = render(record)
    (args.results_dir / f"{STEM}.md").write_text(markdown)
    print(markdown)
    print(f"written: {args.results_dir / STEM}.json, .md")


def render(record: dict) -> str:
    m = record["machine"]
    lines = [
        "# DreamBooth on tiny-sd, CPU: full fine-tune vs LoRA vs text encoder",
        "",
        f"{m['cpu']}, {m['cores']} cores, torch threads: {m['threads']}; load average "
        f"{m['load_average_at_start'][0]:.1f} at start, {m['load_average_at_end'][0]:.1f} at "
        f"end (the machine is shared). {record['settings']['resolution']} px, batch 1 photo + "
        f"1 class image per step, {record['settings']['max_steps']} steps per variant, median "
        f"over the last {record['results']['full']['timed_steps']} (the first "
        f"{record['settings']['warmup_steps']} are warm-up), {record['settings']['rounds']} "
        "interleaved rounds. Weights are RANDOM (preset).",
        "",
        "| variant | trainable params | median step | vs full | peak RSS | vs full |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in record["results"].items():
        lines.append(
            f"| {name} | {r['trainable_parameters']:,} | {r['median_step_s'] * 1000:.0f} ms | "
            f"{r['step_time_vs_full']:.2f}x | {r['peak_rss_mib']:.0f} MiB | "
            f"{r['peak_rss_vs_full']:.2f}x |"
        )
    lines += [
        "",
        "vs full: median over rounds of the variant's value / the full fine-tune's (below 1x is "
        "cheaper). Peak RSS is each run's process high-water mark, model load included.",
        "",
        f"Measured with Python {m['python']} on {m['platform']}; the run took "
        f"{record['duration_s']:.0f} s.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
