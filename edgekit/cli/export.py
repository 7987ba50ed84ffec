"""`edgekit export`: model source -> verified artifact folder."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from edgekit.cli._common import Guard, configure_logging, console, err_console
from edgekit.errors import EdgekitError
from edgekit.exporters import format_names


def export(
    model: str = typer.Argument(
        ...,
        help="A preset (mobilevit-small, mobilevit-x-small, mobilevit-xx-small, tiny-mobilevit, "
        "sd15, sd15-unet, tiny-sd), a Hugging Face MobileViT folder, a diffusers pipeline / "
        "UNet folder, or a single-file SD checkpoint (.safetensors/.ckpt, with --config; "
        ".ckpt and .bin weights need --allow-pickle).",
    ),
    target: str = typer.Option(
        ...,
        "--target",
        "-t",
        help=f"A format ({', '.join(format_names())}: its default profile), a built-in profile "
        "(coreml-ios17, tflite-android, executorch-xnnpack, onnx-cpu) or a profile .toml path. "
        "Several, comma-separated (onnx,executorch,tflite): the model is loaded and traced once "
        "and each target gets its own artifact folder under --out.",
    ),
    out: Path = typer.Option(
        Path("artifacts"), "--out", "-o", help="Folder the artifact goes into."
    ),
    component: list[str] = typer.Option(
        None,
        "--component",
        "-c",
        help="Stable Diffusion: export only these (text-encoder, unet, vae-decoder; repeatable). "
        "Default: every component the source has, plus tokenizer and scheduler files.",
    ),
    config: Path | None = typer.Option(
        None,
        "--config",
        help="With a single-file SD checkpoint: the local diffusers folder with its configs "
        "(unet/, vae/, text_encoder/, tokenizer/, scheduler/).",
    ),
    height: int | None = typer.Option(None, help="Stable Diffusion image height in pixels."),
    width: int | None = typer.Option(None, help="Stable Diffusion image width in pixels."),
    batch_size: int = typer.Option(1, help="Static batch size (MobileViT)."),
    unet_batch: int = typer.Option(
        1,
        "--unet-batch",
        help="Stable Diffusion: 2 exports the UNet with batch 2, so classifier-free guidance "
        "runs both branches in one call per step (as apple's ml-stable-diffusion does; "
        "`generate` uses it); 1 calls it once per branch.",
    ),
    precision: str | None = typer.Option(
        None, help="fp32 or fp16 (Core ML). Default: the target profile's precision."
    ),
    quant: str | None = typer.Option(
        None,
        "--quant",
        help="Quantization plan: fp32, fp16, int8, int8-dynamic, int8-weight, int4-weight, mixed "
        "(convolutions int8, attention projections int8-dynamic, attention products and norms "
        "float), or a plan .json from `edgekit quantize plan` (default "
        "precision + per-module overrides). Default: the target profile's plan or precision.",
    ),
    calib: Path | None = typer.Option(
        None,
        "--calib",
        help="With an int8 plan, classifiers: a folder of representative images. Default: "
        "seeded synthetic inputs, with a warning.",
    ),
    prompts: Path | None = typer.Option(
        None,
        "--prompts",
        help="With an int8 plan, Stable Diffusion: a text file, one prompt per line.",
    ),
    calib_count: int | None = typer.Option(
        None, "--calib-count", help="Calibration inputs to use (default 64 images / 16 synthetic)."
    ),
    name: str | None = typer.Option(None, help="Artifact folder name (default: derived)."),
    allow_pickle: bool = typer.Option(
        False,
        "--allow-pickle",
        help="Read pickle-based weights (a folder's .bin, a .ckpt). Refused without it: "
        "unpickling can run code hidden in the file. With it they are read by torch's restricted "
        "unpickler (weights_only: tensors only, never code). Prefer converting to safetensors.",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show converter logs and traces."),
) -> None:
    """Export MODEL to --target, verify it against PyTorch, write an artifact folder."""
    configure_logging(verbose)
    with Guard():
        from edgekit import models, profiles

        chosen = _resolve_targets(target, name)  # a bad target fails before a slow model load
        if quant and precision:
            raise profiles.ProfileError(
                "--quant and --precision both set the precision.",
                hint="use --quant (a named plan such as fp16, or a plan file) alone.",
            )
        with console.status(f"Loading {model} ..."):
            if models.is_stable_diffusion(model):
                if batch_size != 1:
                    raise profiles.ProfileError(
                        "Stable Diffusion components are exported with batch size 1.",
                        hint="drop --batch-size; for guidance in one UNet call per step, pass "
                        "--unet-batch 2.",
                    )
                loaded = models.load_pipeline(
                    model,
                    components=component or None,
                    height=height,
                    width=width,
                    config=config,
                    allow_pickle=allow_pickle,
                    unet_batch=unet_batch,
                )
            else:
                if unet_batch != 1:
                    raise profiles.ProfileError(
                        "--unet-batch is for Stable Diffusion pipelines.",
                        hint="use --batch-size for a classifier's batch.",
                    )
                loaded = models.load(
                    model,
                    component=component[0] if component else None,
                    height=height,
                    width=width,
                    batch_size=batch_size,
                    allow_pickle=allow_pickle,
                )
        if loaded.source.random_weights:
            console.print(
                f"[yellow]{model} is a preset with RANDOM weights[/yellow] (real architecture, "
                "seeded init): use it to test the path, not results."
            )
        # One load, one trace per component (LoadedModel.exported_program), one calibration
        # set: every target reuses them. One target failing does not stop the others.
        calibration: dict | None = None
        failed: dict[str, EdgekitError] = {}
        for profile in chosen:
            try:
                plan = _load_plan(quant or (None if precision else profile.quant), loaded)
                needs_data = plan is not None and _needs_calibration(plan, loaded)
                if needs_data and calibration is None:
                    calibration = _prepare_calibration(loaded, calib, prompts, calib_count)
                if not needs_data and (calib is not None or prompts is not None):
                    _warn_calibration_unused(calib, profile.name if len(chosen) > 1 else None)
                data = calibration if needs_data else None
                _export_one(loaded, profile, out, precision, plan, data, name)
            except EdgekitError as exc:
                if len(chosen) == 1:
                    raise
                err_console.print(f"[bold red]{profile.name} failed:[/bold red] {exc}")
                failed[profile.name] = exc
        if failed:
            summary = EdgekitError(
                f"{len(failed)} of {len(chosen)} targets failed: {', '.join(failed)}.",
                hint="see each target's error above; the others were written.",
            )
            # The exit code one target's failure would give (4: verification, 3: export, ...).
            summary.exit_code = max(exc.exit_code for exc in failed.values())
            raise summary


def _resolve_targets(target: str, name: str | None) -> list:
    """The profiles `--target` names (comma-separated), one per format."""
    from edgekit import profiles

    given = [t.strip() for t in target.split(",") if t.strip()]
    chosen = [profiles.resolve(t) for t in given]
    if not chosen:
        raise profiles.ProfileError("--target is empty.", hint="name a format or a profile.")
    formats = [p.format for p in chosen]
    repeated = sorted({f for f in formats if formats.count(f) > 1})
    if repeated:
        same = [t for t, p in zip(given, chosen, strict=True) if p.format == repeated[0]]
        raise profiles.ProfileError(
            f"--target names the {repeated[0]} format more than once ({', '.join(same)}).",
            hint="one profile per format in a run: their artifacts would share a folder name.",
        )
    if name and len(chosen) > 1:
        raise profiles.ProfileError(
            f"--name names one artifact folder, and --target names {len(chosen)} targets.",
            hint="drop --name (each target's folder is named after it), or export one target.",
        )
    return chosen


def _prepare_calibration(loaded, calib: Path | None, prompts: Path | None, count: int | None):
    from edgekit.quant.calibration import calibration_for

    with console.status("Preparing calibration inputs ..."):
        calibration = calibration_for(loaded, images=calib, prompts=prompts, count=count)
    for warning in {d.warning for d in calibration.values() if d.warning}:
        console.print(f"[yellow]warning:[/yellow] {warning}")
    return calibration


def _warn_calibration_unused(calib: Path | None, target: str | None) -> None:
    given = "--calib" if calib is not None else "--prompts"
    where = f" for {target}" if target else ""
    console.print(
        f"[yellow]warning:[/yellow] {given} is not used{where}: only static int8 layers "
        "calibrate, and this export has none (int8-dynamic and int8-weight need no data)."
    )


def _export_one(loaded, profile, out: Path, precision, plan, calibration, name) -> None:
    from edgekit.export import export_for_target

    with console.status(f"Exporting to {profile.format} ({profile.name}) and verifying ..."):
        path, manifest = export_for_target(
            loaded,
            profile,
            out,
            precision=precision,
            plan=plan,
            calibration=calibration,
            name=name,
            on_replace=say_replaced,
        )
    print_manifest_summary(path, manifest)


def _load_plan(quant: str | None, loaded):
    """A named plan's name (built per component at export), or a plan file checked against the
    model (or the pipeline component it names: `component`, written by `quantize plan`)."""
    if not quant:
        return None
    from edgekit.models import LoadedPipeline
    from edgekit.quant.plan import NAMED_PLANS, QuantPlanError, load_plan, named_plan, read_plan

    if quant in NAMED_PLANS:
        return quant
    if not quant.endswith(".json"):
        named_plan(quant, None)  # not a named plan: fails here, listing the named plans
    if not isinstance(loaded, LoadedPipeline):
        return load_plan(quant, loaded.module)
    components = loaded.components
    plan = read_plan(Path(quant))
    target = plan.component or (next(iter(components)) if len(components) == 1 else None)
    if target is None:
        raise QuantPlanError(
            "The plan file names no component, and this pipeline has "
            f"{len(components)}: {', '.join(components)}.",
            hint="export one with --component (e.g. --component unet), or write "
            '"component": "unet" into the plan.',
        )
    if target not in components:
        raise QuantPlanError(
            f"The plan is for the '{target}' component, which this export does not have "
            f"(it has {', '.join(components)}).",
            hint="export the source the plan was made for, or add --component.",
        )
    return load_plan(quant, components[target].module)


def _needs_calibration(plan, loaded) -> bool:
    """Static int8 layers calibrate their activation ranges (named plans: int8 and mixed)."""
    from edgekit.models import LoadedPipeline
    from edgekit.quant.plan import named_plan

    if isinstance(plan, str):
        models = loaded.components.values() if isinstance(loaded, LoadedPipeline) else [loaded]
        plan = named_plan(plan, next(iter(models)).module)
    return plan.quantizes_activations


def say_replaced(path: Path) -> None:
    console.print(f"[yellow]Replaced the existing artifact at {path}[/yellow] (atomically).")


def print_manifest_summary(path: Path, manifest) -> None:
    # The model files are what an app ships; the folder also holds host-side records (an
    # ExecuTorch int8 folder of tiny-mobilevit: 0.4 MiB program beside a 5.6 MiB ETRecord, which
    # as one total read as an int8 export bigger than its fp32 one).
    model_mib = sum(c.size_bytes or 0 for c in manifest.components) / 2**20
    folder_mib = sum(f.size_bytes for f in manifest.files) / 2**20
    sizes = f"{model_mib:.1f} MiB model"
    if f"{folder_mib:.1f}" != f"{model_mib:.1f}":
        sizes += f", {folder_mib:.1f} MiB folder"
    seconds = sum(c.export.duration_s for c in manifest.components)
    profile = f", profile {manifest.profile['name']}" if manifest.profile else ""
    console.print(
        f"[green]✓[/green] {manifest.format} artifact ({manifest.precision}{profile}) at "
        f"[bold]{path}[/bold] ({sizes}, exported in {seconds:.1f} s)"
    )
    for component in manifest.components:
        verification = component.verification
        label = "" if component.name == "model" else f"{component.name}: "
        if manifest.quant_plan is not None or (component.quant and component.quant.failures):
            print_plan_check(label, component)
        if verification.runtime_error:
            console.print(f"[red]{label}{verification.message}[/red]")
            continue
        if not verification.numerics_checked:
            color = "yellow" if verification.status == "not-checked" else "red"
            console.print(f"[{color}]{label}{verification.message}[/{color}]")
            if verification.structure:
                facts = verification.structure.facts
                ops = sum(facts.get("op_histogram", {}).values())
                weights = ", ".join(
                    f"{dtype}: {count.get('tensors', '?')} tensors"
                    for dtype, count in facts.get("weight_precision", {}).items()
                    if isinstance(count, dict)
                )
                console.print(f"  structure: {ops} ops; weights {weights or 'n/a'}")
                for failure in verification.structure.failures:
                    console.print(f"  [red]{failure}[/red]")
            continue
        table = Table(title=f"{label}{verification.message}", title_justify="left")
        columns = ["output", "shape", "SQNR dB", "centered SQNR dB", "max abs diff", "top-1"]
        for column in [*columns, "status"]:
            table.add_column(column)
        for o in verification.outputs:
            table.add_row(
                o.name,
                "x".join(map(str, o.shape)),
                f"{o.sqnr_db:.1f}" if o.sqnr_db is not None else "-",
                f"{o.centered_sqnr_db:.1f}" if o.centered_sqnr_db is not None else "-",
                f"{o.max_abs_diff:.2e}" if o.max_abs_diff is not None else "-",
                f"{o.top1_agreement:.0%}" if o.top1_agreement is not None else "-",
                "[green]pass[/green]" if o.passed else f"[red]{'; '.join(o.failures)}[/red]",
            )
        console.print(table)
        details = component.export.details
        if "delegated_ops" in details:
            console.print(
                f"{label}XNNPACK delegated {details['delegated_ops']} ops in "
                f"{details['delegated_subgraphs']} subgraphs; not delegated "
                f"({details['non_delegated_ops']}): {details['non_delegated_by_op'] or 'none'}"
            )


# Plan failures listed one per line before "... and N more".
MAX_PLAN_FAILURES_SHOWN = 5


def print_plan_check(label: str, component) -> None:
    """The plan as read back from the artifact, size against fp32, and the calibration data."""
    check = component.quant
    if check is None:
        return
    counts = ", ".join(f"{n} {precision}" for precision, n in check.counts.items())
    verdict = "[green]as planned[/green]" if not check.failures else "[red]NOT as planned[/red]"
    size = ""
    if component.size_bytes and component.fp32_weight_bytes:
        size = (
            f"; {component.size_bytes / 2**20:.2f} MiB on disk vs "
            f"{component.fp32_weight_bytes / 2**20:.2f} MiB of weights in fp32"
        )
    console.print(f"{label}layers: {counts} — {verdict} (read back: {check.evidence}){size}")
    if check.matmul_summary:
        console.print(f"{label}{check.matmul_summary}")
    for failure in check.failures[:MAX_PLAN_FAILURES_SHOWN]:
        console.print(f"  [red]{failure}[/red]")
    if len(check.failures) > MAX_PLAN_FAILURES_SHOWN:
        console.print(f"  [red]... and {len(check.failures) - MAX_PLAN_FAILURES_SHOWN} more[/red]")
    if component.calibration:
        console.print(f"{label}calibrated on {component.calibration.description}")
