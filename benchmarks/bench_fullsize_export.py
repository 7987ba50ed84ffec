"""Full-size export check: does a big model fit this machine, per format? Time and peak memory.

    .venv/bin/python benchmarks/bench_fullsize_export.py [--preset sd15-unet] [--formats ...]

Each format is exported (and verified) in a child process of its own, so its peak resident
memory (VmHWM, read by the child itself at the end) is that format's alone. A format that
refuses the model (TFLite's 2 GB flatbuffer limit) is recorded with its error message: that
message is the expected result, not a failure of the benchmark. Results go to
benchmarks/results/fullsize-<preset>-<machine>.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
FORMATS = ["onnx", "coreml", "executorch", "tflite"]


def child(preset: str, format_name: str, out_dir: Path) -> dict:
    """Runs in the child process: load, export, verify; report what happened and the peak."""
    from edgekit import models, profiles
    from edgekit.bench.timing import peak_rss_bytes
    from edgekit.errors import EdgekitError
    from edgekit.export import export_for_target

    started = time.perf_counter()
    record: dict = {"format": format_name}
    try:
        profile = profiles.resolve(format_name)
        loaded = models.load(preset)
        record["parameters"] = loaded.parameter_count
        folder, manifest = export_for_target(loaded, profile, out_dir)
        component = manifest.component()
        record.update(
            outcome="exported",
            status=manifest.status,
            precision=manifest.precision,
            size_bytes=sum(f.size_bytes for f in manifest.files),
            files=[f.path for f in manifest.files if "/" not in f.path],
            export_s=component.export.duration_s,
            verify_s=component.export.verify_duration_s,
            verification=component.verification.message,
            details={k: v for k, v in component.export.details.items() if k != "op_histogram"},
        )
    except EdgekitError as exc:
        record.update(outcome="refused", error=str(exc))
    record["wall_s"] = round(time.perf_counter() - started, 1)
    record["peak_rss_bytes"] = peak_rss_bytes()
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sd15-unet")
    parser.add_argument("--formats", nargs="+", default=FORMATS)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--child", nargs=3, metavar=("PRESET", "FORMAT", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        preset, format_name, out = args.child
        print("RESULT " + json.dumps(child(preset, format_name, Path(out))))
        return

    records = []
    for format_name in args.formats:
        scratch = Path(tempfile.mkdtemp(prefix="edgekit-fullsize-"))
        try:
            completed = subprocess.run(
                [sys.executable, __file__, "--child", args.preset, format_name, str(scratch)],
                capture_output=True,
                text=True,
            )
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        lines = [ln for ln in completed.stdout.splitlines() if ln.startswith("RESULT ")]
        if lines:
            record = json.loads(lines[-1][len("RESULT ") :])
        else:  # killed (e.g. out of memory) or crashed: record how
            tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
            record = {
                "format": format_name,
                "outcome": "crashed",
                "exit_code": completed.returncode,
                "error": tail,
            }
        print(json.dumps(record))
        records.append(record)

    machine = {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
    }
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"fullsize-{args.preset}-{platform.machine()}-{os.cpu_count()}core"
    stem.with_suffix(".json").write_text(
        json.dumps({"preset": args.preset, "machine": machine, "results": records}, indent=2) + "\n"
    )
    stem.with_suffix(".md").write_text(_markdown(args.preset, machine, records))
    print(f"written: {stem}.json, {stem}.md")


def _memory_gib() -> float | None:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        return None


def _markdown(preset: str, machine: dict, records: list[dict]) -> str:
    lines = [
        f"# Full-size export: {preset}",
        "",
        f"{machine['cpu_count']} cores, {machine['memory_gib']} GiB RAM, {machine['platform']}. "
        "One child process per format (load + export + verify); peak RSS is that process's VmHWM.",
        "",
        "| format | outcome | precision | size | export | verify | wall (load+export+verify) "
        "| peak RSS | verification / error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        size = f"{r['size_bytes'] / 2**30:.2f} GiB" if "size_bytes" in r else "-"
        export = f"{r['export_s']:.0f} s" if "export_s" in r else "-"
        verify = f"{r['verify_s']:.0f} s" if r.get("verify_s") is not None else "-"
        rss = f"{r['peak_rss_bytes'] / 2**30:.1f} GiB" if "peak_rss_bytes" in r else "-"
        wall = f"{r['wall_s']:.0f} s" if "wall_s" in r else "-"
        note = r.get("verification") or r.get("error", "")
        lines.append(
            f"| {r['format']} | {r['outcome']} | {r.get('precision', '-')} | {size} | "
            f"{export} | {verify} | {wall} | {rss} | {note} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
