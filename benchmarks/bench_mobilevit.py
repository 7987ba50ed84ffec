"""MobileViT-small: every host-runnable format vs PyTorch eager, in one run, as ratios.

    .venv/bin/python benchmarks/bench_mobilevit.py [--preset mobilevit-small] [--rounds 5]

Exports the preset (published architecture, seeded random weights) to every format whose runtime
exists on this host, then measures PyTorch eager and each artifact round-robin: every round runs
each variant once, each in a fresh process (warm-up, then timed runs), so drifts of a shared
machine hit all variants alike. Speed-up = median over rounds of (PyTorch median / artifact
median). Results go to benchmarks/results/<preset>-<machine>.json and .md.
"""

from __future__ import annotations

import argparse
import platform
import re
import tempfile
from pathlib import Path

from edgekit import exporters, models, profiles
from edgekit.bench import BenchSettings, TimingSettings, run_bench
from edgekit.bench.report import markdown
from edgekit.cli._common import configure_logging
from edgekit.export import export_for_target

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="mobilevit-small")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    configure_logging(verbose=False)

    loaded = models.load(args.preset)
    formats = [
        f
        for f in exporters.format_names()
        if exporters.get(f).host_runtime_unavailable_reason() is None
    ]
    with tempfile.TemporaryDirectory(prefix="edgekit-bench-") as scratch:
        artifacts = []
        for format_name in formats:
            profile = profiles.resolve(format_name)
            folder, manifest = export_for_target(loaded, profile, Path(scratch))
            component = manifest.component()
            print(
                f"{format_name} ({profile.name}): {component.verification.message}; "
                f"export {component.export.duration_s:.1f} s"
            )
            artifacts.append(folder)
        del loaded
        report = run_bench(
            artifacts,
            timing=TimingSettings(warmup_runs=args.warmup, min_runs=args.runs),
            settings=BenchSettings(threads=[args.threads], rounds=args.rounds),
        )
    machine = re.sub(
        r"[^a-z0-9]+", "-", f"{platform.machine()}-{report.machine.cpu_count}core".lower()
    )
    stem = args.results_dir / f"{args.preset}-{machine}"
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(report.model_dump_json(indent=2) + "\n")
    stem.with_suffix(".md").write_text(
        markdown(report, title=f"{args.preset}: formats vs PyTorch eager")
    )
    print(markdown(report))
    print(f"written: {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
