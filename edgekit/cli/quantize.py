"""`edgekit quantize analyze|plan`: per-layer sensitivity, then a plan within a budget."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from edgekit.cli._common import Guard, configure_logging, console

app = typer.Typer(
    help="Choose per-layer precisions by measurement: analyze sensitivity, then plan.",
    no_args_is_help=True,
)
# Rows of the sensitivity table: the layers that suffer most, the ones a plan keeps float.
MOST_SENSITIVE_SHOWN = 12
# Points of the Pareto curve printed (evenly spread); the chosen plan is always shown.
CURVE_POINTS_SHOWN = 12

CalibOption = Annotated[
    Path | None,
    typer.Option(
        "--calib",
        help="Classifiers: a folder of representative images (subfolders fine), preprocessed "
        "as the manifest says. Default: seeded synthetic inputs, with a warning.",
    ),
]
PromptsOption = Annotated[
    Path | None,
    typer.Option(
        "--prompts",
        help="Stable Diffusion: a text file, one prompt per line; the PyTorch pipeline runs a "
        "few steps per prompt and each component's inputs are recorded.",
    ),
]
CalibCountOption = Annotated[
    int | None,
    typer.Option(
        "--calib-count",
        help="Calibration inputs to use (images spread over the folder; synthetic count). "
        "Default: 64 images or 16 synthetic inputs.",
    ),
]
StepsOption = Annotated[
    int, typer.Option("--steps", help="With --prompts: denoising steps recorded per prompt.")
]


@app.command("analyze")
def analyze(
    model: Annotated[str, typer.Argument(help="A preset, model folder or SD source.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Sensitivity JSON to write.")],
    component: Annotated[
        str | None,
        typer.Option(
            "--component", "-c", help="Stable Diffusion: text-encoder, unet or vae-decoder."
        ),
    ] = None,
    calib: CalibOption = None,
    prompts: PromptsOption = None,
    calib_count: CalibCountOption = None,
    steps: StepsOption = 4,
    scheme: Annotated[
        list[str] | None,
        typer.Option(
            "--scheme",
            help="Schemes to measure (repeatable): int8, int8-dynamic, int8-weight, int4-weight. "
            "Default: all.",
        ),
    ] = None,
    chart: Annotated[
        Path | None,
        typer.Option(help="PNG chart of per-layer SQNR. Default: next to --out, same stem."),
    ] = None,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Read pickle-based weights (see export).")
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Quantize one layer at a time (int8, int8-dynamic, int8-weight, int4-weight) and measure
    the output."""
    configure_logging(verbose)
    with Guard():
        from rich.progress import Progress

        from edgekit import models
        from edgekit.quant.analyze import ANALYZED_SCHEMES
        from edgekit.quant.analyze import analyze as run_analysis
        from edgekit.quant.calibration import calibration_for
        from edgekit.quant.chart import write_chart

        schemes = _schemes(scheme or [s.value for s in ANALYZED_SCHEMES], ANALYZED_SCHEMES)
        with console.status(f"Loading {model} ..."):
            loaded, name = _load_one(model, component, allow_pickle, models, whole=bool(prompts))
        with console.status("Preparing calibration inputs ..."):
            calibration = calibration_for(
                loaded, images=calib, prompts=prompts, count=calib_count, steps=steps
            )
        target = loaded if name is None else loaded.components[name]
        data = calibration[name or "model"]
        if data.warning:
            console.print(f"[yellow]warning:[/yellow] {data.warning}")
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("Analyzing layers", total=None)

            def on_layer(index: int, total: int, path: str) -> None:
                progress.update(task, total=total, completed=index, description=path)

            report = run_analysis(
                target,
                data,
                out,
                schemes=schemes,
                component=name,
                on_layer=on_layer,
                latent_psnr=_latent_metric(loaded, name, prompts, steps),
            )
        chart_path = write_chart(report, chart or out.with_suffix(".png"))
        _print_sensitivity(report)
        console.print(
            f"[green]✓[/green] sensitivity of {len(report.layers)} layers at [bold]{out}[/bold]; "
            f"chart {chart_path}"
        )


@app.command("plan")
def plan(
    sensitivity: Annotated[Path, typer.Argument(help="A file from `edgekit quantize analyze`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Plan JSON to write.")],
    min_sqnr: Annotated[
        float | None, typer.Option("--min-sqnr", help="Least predicted output SQNR, dB.")
    ] = None,
    max_top1_drop: Annotated[
        float | None,
        typer.Option("--max-top1-drop", help="Classifiers: most predicted top-1 loss, percent."),
    ] = None,
    max_size: Annotated[
        float | None, typer.Option("--max-size", help="Largest weight size, MB (10^6 bytes).")
    ] = None,
    scheme: Annotated[
        list[str] | None,
        typer.Option(
            "--scheme",
            help="Precision of quantized layers: int8, int8-dynamic, int8-weight, int4-weight. "
            "Repeat it for a ladder of weight sizes: with --scheme int8-weight --scheme "
            "int4-weight, layers step down to 4 bits (least sensitive first) once every layer "
            "has int8 weights. Default: int8.",
        ),
    ] = None,
    quantize_matmuls: Annotated[
        bool,
        typer.Option(
            "--quantize-matmuls",
            help="Also plan attention products (Q K^T, softmax V) int8, least sensitive block "
            "first, while the predicted fidelity stays within --min-sqnr / --max-top1-drop. "
            "They hold no weights (size unchanged): this is for speed on ONNX Runtime and "
            "LiteRT; ExecuTorch and Core ML refuse int8 products.",
        ),
    ] = False,
) -> None:
    """Pick the smallest plan within the budget; print the size/fidelity Pareto curve."""
    configure_logging(False)
    with Guard():
        from edgekit.artifact import write_bytes_atomic
        from edgekit.quant.analyze import ANALYZED_SCHEMES, read_report
        from edgekit.quant.planner import (
            candidates,
            choose,
            plan_for,
            scheme_ladder,
            with_matmuls,
        )

        ladder = scheme_ladder(_schemes(scheme or ["int8"], ANALYZED_SCHEMES))
        report = read_report(sensitivity)
        curve = candidates(report, *ladder)
        chosen = choose(
            curve, min_sqnr_db=min_sqnr, max_top1_drop_pct=max_top1_drop, max_size_mb=max_size
        )
        _print_curve(curve, chosen, ladder)
        if quantize_matmuls:
            chosen, verdicts = with_matmuls(
                report, chosen, min_sqnr_db=min_sqnr, max_top1_drop_pct=max_top1_drop
            )
            _print_matmul_choices(verdicts)
        chosen_plan = plan_for(report, chosen, name=out.stem)
        write_bytes_atomic(
            out, (chosen_plan.model_dump_json(indent=2, exclude_none=True) + "\n").encode()
        )
        kept = len(report.layers) - chosen.layer_count
        counts = "".join(f"{chosen.count_at(s)} layers {s}, " for s in ladder if chosen.count_at(s))
        if quantize_matmuls:
            counts += f"{len(chosen.matmuls)} attention blocks' products int8, "
        console.print(
            f"[green]✓[/green] plan at [bold]{out}[/bold]: {counts}"
            f"{kept} float; {chosen.size_bytes / 1e6:.2f} MB of weights "
            f"({curve[0].size_bytes / chosen.size_bytes:.2f}x smaller than fp32), predicted "
            f"{chosen.predicted_sqnr_db:.1f} dB"
        )


def _print_matmul_choices(verdicts) -> None:
    table = Table(
        title="Attention products (no weights: speed, not size), least sensitive first",
        title_justify="left",
    )
    for column in ["attention block", "int8 alone dB", "plan with it dB", "planned"]:
        table.add_column(column, justify="left" if column == "attention block" else "right")
    for v in verdicts:
        table.add_row(
            v.path,
            f"{v.sqnr_db:.1f}",
            f"{v.predicted_sqnr_db:.1f}",
            "[green]int8[/green]" if v.chosen else "fp32 (over budget)",
        )
    console.print(table)


def _schemes(names: list[str], allowed) -> tuple:
    from edgekit.errors import UnknownChoiceError

    known = {s.value: s for s in allowed}
    for name in names:
        if name not in known:
            raise UnknownChoiceError("scheme", name, list(known), hint="e.g. --scheme int8.")
    return tuple(known[name] for name in dict.fromkeys(names))


def _latent_metric(loaded, name: str | None, prompts: Path | None, steps: int):
    """For the UNet with prompts: the final-latent PSNR of the prompts' denoising loops."""
    if name != "unet" or prompts is None:
        return None
    from edgekit.quant.analyze import latent_psnr_metric
    from edgekit.quant.calibration import read_prompts

    with console.status("Running the fp32 denoising loops for the latent PSNR reference ..."):
        return latent_psnr_metric(
            loaded, loaded.components["unet"], read_prompts(prompts), steps=steps
        )


def _load_one(
    model: str, component: str | None, allow_pickle: bool, models, *, whole: bool = False
):
    """The model to analyze: a classifier, or one pipeline component (by --component); `whole`
    loads every component of a pipeline (prompt calibration runs the pipeline)."""
    from edgekit.quant.calibration import CalibrationError

    if models.is_stable_diffusion(model):
        if component is None:
            raise CalibrationError(
                "Analysis measures one model; a Stable Diffusion source has several.",
                hint="choose one with --component unet (or text-encoder, vae-decoder).",
            )
        components = None if whole else [component]
        pipeline = models.load_pipeline(model, components=components, allow_pickle=allow_pickle)
        return pipeline, component
    return models.load(model, allow_pickle=allow_pickle), None


def _print_sensitivity(report) -> None:
    schemes = report.schemes
    table = Table(
        title=f"Most sensitive layers (output SQNR with only that layer quantized; "
        f"calibration: {report.calibration.description})",
        title_justify="left",
    )
    table.add_column("layer")
    table.add_column("type")
    table.add_column("params", justify="right")
    for scheme in schemes:
        table.add_column(f"{scheme} dB", justify="right")
    if report.layers and report.layers[0].top1_agreement:
        table.add_column(f"top-1 ({schemes[0]})", justify="right")
    if report.layers and report.layers[0].latent_psnr_db:
        table.add_column(f"latent PSNR dB ({schemes[0]})", justify="right")
    ranked = sorted(report.layers, key=lambda e: e.sqnr_db[schemes[0]])
    for entry in ranked[:MOST_SENSITIVE_SHOWN]:
        row = [
            entry.path + (" [dim](attention)[/dim]" if entry.in_attention else ""),
            entry.layer_type,
            f"{entry.weight_count:,}",
            *(f"{entry.sqnr_db[s]:.1f}" for s in schemes),
        ]
        if entry.top1_agreement:
            row.append(f"{entry.top1_agreement[schemes[0]]:.0%}")
        if entry.latent_psnr_db:
            row.append(f"{entry.latent_psnr_db[schemes[0]]:.1f}")
        table.add_row(*row)
    console.print(table)
    _print_attention_products(report)
    for scheme, metrics in report.whole_model.items():
        top1, latent = metrics.get("top1_agreement"), metrics.get("latent_psnr_db")
        console.print(
            f"every layer {scheme}: {metrics['sqnr_db']:.1f} dB"
            + (f", top-1 agreement {top1:.0%}" if top1 is not None else "")
            + (f", final-latent PSNR {latent:.1f} dB" if latent is not None else "")
        )


def _print_attention_products(report) -> None:
    """The attention blocks whose matmuls (both operands int8) hurt the output most."""
    entries = report.attention_matmuls
    if not entries:
        return
    schemes = list(entries[0].sqnr_db)
    table = Table(
        title="Most sensitive attention matmuls (Q K^T and softmax V of one block quantized; "
        "plans keep them float unless they name them: `quantize plan --quantize-matmuls`)",
        title_justify="left",
    )
    table.add_column("attention block")
    for scheme in schemes:
        table.add_column(f"{scheme} dB", justify="right")
    for entry in sorted(entries, key=lambda e: e.sqnr_db[schemes[0]])[:MOST_SENSITIVE_SHOWN]:
        table.add_row(entry.path, *(f"{entry.sqnr_db[s]:.1f}" for s in schemes))
    console.print(table)


def _print_curve(curve, chosen, ladder) -> None:
    table = Table(title="Pareto curve: weight size vs predicted fidelity", title_justify="left")
    # With a ladder of schemes: how many layers sit on each step below the first.
    lower = [f"at {s}" for s in ladder[1:]]
    for column in ["layers quantized", *lower, "size MB", "x smaller", "predicted SQNR dB"]:
        table.add_column(column, justify="right")
    table.add_column("top-1 drop", justify="right")
    step = max(1, len(curve) // CURVE_POINTS_SHOWN)
    shown = sorted({*range(0, len(curve), step), len(curve) - 1, curve.index(chosen)})
    for index in shown:
        c = curve[index]
        mark = " ←" if c is chosen else ""
        table.add_row(
            f"{c.layer_count}{mark}",
            *(f"{c.count_at(s)}" for s in ladder[1:]),
            f"{c.size_bytes / 1e6:.3f}",
            f"{curve[0].size_bytes / c.size_bytes:.2f}",
            f"{c.predicted_sqnr_db:.1f}",
            f"{100 * c.predicted_top1_drop:.1f}%" if c.predicted_top1_drop is not None else "-",
        )
    console.print(table)
