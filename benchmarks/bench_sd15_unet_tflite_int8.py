"""sd15-unet to TFLite with int8 weights: the export the 2 GB flatbuffer limit refuses in fp32.

    .venv/bin/python benchmarks/bench_sd15_unet_tflite_int8.py [--plan int8-weight|int8-dynamic]

The 860M-parameter UNet (random seeded weights) has 3.2 GiB of fp32 weights, over the limit of
one `.tflite` file; edgekit then quantizes its conv/linear weights to int8 in PyTorch (litert-torch
PT2E) before lowering, so the file holds about 0.8 GiB of int8 weights. Recorded: load, export
and verification time, peak resident memory (VmHWM of a child process that does only this, and
an RSS timeline to show where the peak falls), file size, the plan read back per layer and the
numeric verification against PyTorch fp32.

Expected on a 2-core, 24 GB machine: about 12 GiB peak (10-14), in the verification, and 5-10
minutes. Measured on the same UNet graph with 1/5 and 2/5 of its channels (37.5M and 142M
parameters, int8-weight): peak RSS about 1.0 GB + 11.8 bytes per parameter while converting
(the fp32 model, the converter's fp32 copy of the constants, the int8 ones, the flatbuffer) and
1.6 GB + 13.3 bytes per parameter while verifying (the PyTorch model, the interpreter's fp32
weights dequantized from int8, XNNPACK's packed copy); export 65 s + 0.2 s per million
parameters. int8-dynamic verified lighter (hybrid kernels keep the weights int8). Run it alone.

`--preset tiny-sd --limit-bytes N` rehearses the same path on the tiny UNet with the limit
pretended to be N bytes (tests do). Results go to
benchmarks/results/<preset>-tflite-int8[-dynamic]-<machine>.json and .md.
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
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
PLANS = ("int8-weight", "int8-dynamic")
ARTIFACT_NAME = "unet-tflite-int8"
# RSS samples: often enough to catch the converter's peak (it holds it for seconds), few enough
# to keep in the record.
RSS_SAMPLE_S = 0.5
TIMELINE_STEP_S = 5.0


class RssTimeline:
    """This process's resident memory, sampled in a thread: (seconds since start, max RSS in each
    TIMELINE_STEP_S window)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.windows: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> RssTimeline:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        from edgekit.bench.timing import current_rss_bytes

        while not self._stop.wait(RSS_SAMPLE_S):
            window = int((time.perf_counter() - self.started) // TIMELINE_STEP_S)
            self.windows[window] = max(self.windows.get(window, 0), current_rss_bytes())

    def as_list(self) -> list[list[float]]:
        return [
            [round(w * TIMELINE_STEP_S, 1), round(rss / 2**30, 2)]
            for w, rss in sorted(self.windows.items())
        ]


@contextmanager
def _peak_at_end_of_export(record: dict) -> Iterator[None]:
    """Record the peak RSS when the TFLite conversion returns (load + conversion), then reset the
    peak (Linux: "5" to /proc/self/clear_refs), so the final VmHWM is the read-back's and
    verification's own. The sampled timeline misses the converter's native stretches, which
    hold the GIL."""
    from edgekit.bench.timing import peak_rss_bytes
    from edgekit.exporters import tflite

    real_export = tflite.TFLiteExporter.export

    def export(self, *args, **kwargs):
        result = real_export(self, *args, **kwargs)
        record["peak_rss_export_bytes"] = peak_rss_bytes()
        clear_refs = Path("/proc/self/clear_refs")
        if clear_refs.exists():
            clear_refs.write_text("5")
        return result

    tflite.TFLiteExporter.export = export
    try:
        yield
    finally:
        tflite.TFLiteExporter.export = real_export


def child(preset: str, plan_name: str, out_dir: Path, limit_bytes: int | None) -> dict:
    """Runs in the child process: load, export through PT2E, read back, verify."""
    from edgekit import models
    from edgekit.artifact import read_manifest
    from edgekit.bench.timing import peak_rss_bytes
    from edgekit.errors import EdgekitError, VerificationError
    from edgekit.export import export_artifact
    from edgekit.exporters import tflite
    from edgekit.quant.plan import LayerPrecision, QuantPlan

    if limit_bytes:
        tflite.FLATBUFFER_LIMIT_BYTES = limit_bytes
    record: dict = {
        "preset": preset,
        "plan": plan_name,
        "limit_bytes": tflite.FLATBUFFER_LIMIT_BYTES,
    }
    with RssTimeline() as timeline:
        started = time.perf_counter()
        model = models.load(preset)  # the UNet component
        record.update(
            parameters=model.parameter_count,
            fp32_weight_bytes=tflite.fp32_weight_bytes(model.module),
            load_s=round(time.perf_counter() - started, 1),
            peak_rss_after_load_bytes=peak_rss_bytes(),
        )
        plan = QuantPlan(name=plan_name, default=LayerPrecision(plan_name))
        try:
            with _peak_at_end_of_export(record):
                export_artifact(model, "tflite", out_dir, plan=plan, name=ARTIFACT_NAME)
        except VerificationError as exc:  # the artifact is kept, marked failed: record it
            record["error"] = str(exc)
        except EdgekitError as exc:
            record.update(outcome="refused", error=str(exc))
        record["wall_s"] = round(time.perf_counter() - started, 1)
    # VmHWM was reset when the conversion ended: what is left is the verification's peak.
    record["peak_rss_verify_bytes"] = peak_rss_bytes()
    record["peak_rss_bytes"] = max(
        record["peak_rss_verify_bytes"], record.get("peak_rss_export_bytes", 0)
    )
    record["rss_timeline_gib"] = timeline.as_list()
    if record.get("outcome") == "refused":
        return record

    manifest = read_manifest(out_dir / ARTIFACT_NAME)
    component = manifest.component()
    details = component.export.details
    ops = details.get("op_histogram", {})
    record.update(
        outcome="exported",
        status=manifest.status,
        size_bytes=component.size_bytes,
        export_s=component.export.duration_s,
        verify_s=component.export.verify_duration_s,
        verification=component.verification.message,
        centered_sqnr_db=[o.centered_sqnr_db for o in component.verification.outputs],
        plan_check=component.quant.status if component.quant else None,
        realized_layers=component.quant.counts if component.quant else None,
        plan_failures=(component.quant.failures[:5] if component.quant else []),
        layer_ops={k: ops[k] for k in ("CONV_2D", "FULLY_CONNECTED", "DEQUANTIZE") if k in ops},
        details={k: v for k, v in details.items() if k != "op_histogram"},
    )
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="sd15-unet")
    parser.add_argument("--plan", choices=PLANS, default="int8-weight")
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument(
        "--limit-bytes",
        type=int,
        default=None,
        help="pretend the flatbuffer limit is this many bytes (rehearsals on tiny presets)",
    )
    parser.add_argument("--keep", type=Path, default=None, help="keep the artifact in this folder")
    parser.add_argument("--child", nargs=2, metavar=("OUT", "LIMIT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        out, limit = args.child
        record = child(args.preset, args.plan, Path(out), int(limit) or None)
        print("RESULT " + json.dumps(record))
        return

    scratch = args.keep or Path(tempfile.mkdtemp(prefix="edgekit-sd15-tflite-"))
    command = [
        sys.executable,
        __file__,
        "--preset",
        args.preset,
        "--plan",
        args.plan,
        "--child",
        str(scratch),
        str(args.limit_bytes or 0),
    ]
    machine = {
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "memory_gib": _memory_gib("MemTotal"),
        "available_memory_gib_at_start": _memory_gib("MemAvailable"),
        "platform": platform.platform(),
    }
    try:
        completed = subprocess.run(command, capture_output=True, text=True)
    finally:
        if args.keep is None:
            shutil.rmtree(scratch, ignore_errors=True)
    lines = [ln for ln in completed.stdout.splitlines() if ln.startswith("RESULT ")]
    if lines:
        record = json.loads(lines[-1][len("RESULT ") :])
    else:  # killed (out of memory: exit -9) or crashed: record how
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        record = {
            "preset": args.preset,
            "plan": args.plan,
            "outcome": "crashed",
            "exit_code": completed.returncode,
            "error": tail,
        }
    print(json.dumps(record))

    tag = "int8" if args.plan == "int8-weight" else args.plan
    args.results_dir.mkdir(parents=True, exist_ok=True)
    stem = args.results_dir / f"{args.preset}-tflite-{tag}-{platform.machine()}"
    stem.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "result": record}, indent=2) + "\n"
    )
    stem.with_suffix(".md").write_text(_markdown(machine, record))
    print(f"written: {stem}.json, {stem}.md")


def _memory_gib(field: str) -> float | None:
    meminfo = Path("/proc/meminfo")
    if not meminfo.is_file():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 2**20, 1)  # reported in kB
    return None


def _gib(value: int | None) -> str:
    if not value:
        return "-"
    return f"{value / 2**30:.2f} GiB" if value >= 2**30 else f"{value / 2**20:.1f} MiB"


def _markdown(machine: dict, r: dict) -> str:
    lines = [
        f"# {r['preset']} to TFLite, {r['plan']} (PT2E before lowering)",
        "",
        f"{machine['cpu_count']} cores, {machine['memory_gib']} GiB RAM "
        f"({machine['available_memory_gib_at_start']} GiB available at start), "
        f"{machine['platform']}. One child process: load + export + read-back + verification; "
        "peak RSS is its VmHWM.",
        "",
        "| outcome | fp32 weights | file | load | export | verify | wall | peak RSS "
        "(load+export / verify) | plan read-back | verification |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    export = f"{r['export_s']:.0f} s" if r.get("export_s") is not None else "-"
    verify = f"{r['verify_s']:.0f} s" if r.get("verify_s") is not None else "-"
    load = f"{r['load_s']:.0f} s" if r.get("load_s") is not None else "-"
    wall = f"{r['wall_s']:.0f} s" if r.get("wall_s") is not None else "-"
    check = r.get("plan_check") or "-"
    if r.get("realized_layers"):
        check += " " + ", ".join(f"{k}: {v}" for k, v in r["realized_layers"].items())
    note = r.get("verification") or r.get("error", "")
    lines.append(
        f"| {r['outcome']} | {_gib(r.get('fp32_weight_bytes'))} | {_gib(r.get('size_bytes'))} | "
        f"{load} | {export} | {verify} | {wall} | {_gib(r.get('peak_rss_export_bytes'))} / "
        f"{_gib(r.get('peak_rss_verify_bytes'))} | {check} "
        f"| {note} |"
    )
    if r.get("rss_timeline_gib"):
        points = ", ".join(f"{t:.0f} s: {gib} GiB" for t, gib in r["rss_timeline_gib"])
        lines += ["", f"RSS timeline (max per {TIMELINE_STEP_S:.0f} s): {points}"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
