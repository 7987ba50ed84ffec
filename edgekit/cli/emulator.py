"""`edgekit emulator setup arm64` and `edgekit verify ARTIFACT --emulate arm64 --cpu ...`."""

from __future__ import annotations

from pathlib import Path

import typer

from edgekit.cli._common import Guard, configure_logging, console

app = typer.Typer(no_args_is_help=True, help="Emulated phone cores (qemu user mode).")

CACHE_HELP = "Where the emulator is built and cached (default ~/.cache/edgekit/emulator)."


@app.command("setup")
def setup(
    arch: str = typer.Argument(..., help="Which emulator: arm64."),
    cache: Path | None = typer.Option(None, help=CACHE_HELP),
    rebuild: bool = typer.Option(False, help="Build again even if a cached one is usable."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Build (once, cached) an arm64 Debian root with Python and the runtimes' aarch64 wheels."""
    configure_logging(verbose)
    with Guard():
        from edgekit.emulate import environment
        from edgekit.emulate.cores import CORES

        with console.status("Setting up ...") as status:
            env = environment.setup(
                arch, cache, rebuild=rebuild, progress=lambda step: status.update(step + " ...")
            )
        console.print(f"[bold]{arch} emulator ready[/bold] in {env.root}")
        console.print(f"runtimes: {', '.join(f'{k} {v}' for k, v in env.packages.items())}")
        from edgekit.emulate import executorch

        no_executorch = executorch.unavailable_reason()
        console.print(
            "ExecuTorch: "
            + (f"not available: {no_executorch}" if no_executorch else "runner built on first use")
        )
        cannot_count = env.instruction_counter_unavailable()
        console.print(
            "instruction counts (bench --emulate): "
            + (f"not available: {cannot_count}" if cannot_count else "available (qemu plugin)")
        )
        for core, identity in env.identities.items():
            console.print(
                f"  {core} (MIDR {identity.midr:#010x}): {CORES[core]}\n"
                f"    features: {' '.join(identity.features)}",
                highlight=False,
            )


def verify(
    artifact: Path = typer.Argument(..., help="Artifact folder written by `edgekit export`."),
    emulate: str | None = typer.Option(
        None, help="Emulator to run on: arm64 (see `emulator setup`). Default: this host only."
    ),
    cpu: str = typer.Option("cortex-a76", help="Emulated cores, e.g. cortex-a76,neoverse-n1,max."),
    cache: Path | None = typer.Option(None, help=CACHE_HELP),
    localize: bool = typer.Option(
        False,
        "--localize",
        help="Compare every layer's output with PyTorch's and name the first module where the "
        "error jumps (ONNX and TFLite artifacts; on this host or the emulated cores).",
    ),
    images: Path | None = typer.Option(
        None, help="With --localize: feed these photos (a folder) instead of the seeded inputs."
    ),
    jump_db: float = typer.Option(
        10.0, help="With --localize: the SQNR drop (dB) from one layer to the next that counts."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run an artifact's verification inputs again, on this host or on emulated cores (then vs
    PyTorch and vs this host); --localize finds the layer a divergence starts at."""
    configure_logging(verbose)
    with Guard():
        from edgekit.emulate import environment
        from edgekit.emulate.verify import EMULATION_FILE, verify_emulated

        cores = []
        if emulate:
            environment.check_arch(emulate)
            cores = [c.strip() for c in cpu.split(",") if c.strip()]
            environment.check_cores(cores)
        if images is not None and not localize:
            from edgekit.emulate.localize import LocalizeError

            raise LocalizeError("--images is used by --localize only.", hint="add --localize.")
        if localize:
            _localize(artifact, images, cores, emulate, cache, jump_db)
            return
        where = f"emulated {', '.join(cores)} (slow: ~100-300x)" if cores else "this host"
        with console.status(f"Running on {where} ..."):
            checks = verify_emulated(artifact, cores, arch=emulate, cache=cache)
        failed = False
        for check in checks:
            console.print(_table(check))
            failed |= check.vs_pytorch.status != "passed"
        if cores:
            console.print(f"Recorded in {artifact / EMULATION_FILE}")
        if failed:
            from edgekit.errors import VerificationError

            raise VerificationError(
                "The artifact does not match PyTorch on every emulated core (see the tables).",
                hint="a failure on one core only points at that core's kernels (e.g. i8mm on "
                "max): compare its row with the x86 columns.",
            )


def _localize(artifact, images, cores, arch, cache, jump_db):
    from edgekit.emulate.localize import LOCALIZE_FILE, describe_jump, localize

    where = f"emulated {', '.join(cores)} (slow: ~100-300x)" if cores else "this host"
    with console.status(f"Running every layer on {where} ..."):
        results = localize(
            artifact, images=images, cores=cores, arch=arch or "arm64", cache=cache,
            jump_db=jump_db,
        )  # fmt: skip
    for result in results:
        console.print(_layer_table(result))
        console.print(f"[bold]{result.component} on {result.where}:[/bold] {describe_jump(result)}")
        if result.first_host_divergence is not None:
            layer = result.first_host_divergence
            console.print(
                f"  leaves this x86 host's numbers at {layer.module} ({layer.kind}): "
                f"{layer.sqnr_vs_host_db:.1f} dB vs x86"
            )
        for note in result.notes:
            console.print(f"  note: {note}")
    console.print(f"Every layer is in {artifact / LOCALIZE_FILE}")


def _layer_table(result, context: int = 6):
    """The layers around the jump (or the lowest ones), not all few hundred."""
    from rich.table import Table

    layers = result.layers
    focus = result.first_jump or result.first_host_divergence
    if focus is not None:
        at = layers.index(focus)
        shown = layers[max(0, at - context) : at + context + 1]
    else:
        from edgekit.emulate.localize import trusted

        shown = sorted(trusted(layers), key=lambda layer: layer.sqnr_db)[:context]
        shown.sort(key=layers.index)
    table = Table(
        title=f"{result.component}: {result.runtime} on {result.where}, {result.inputs} "
        f"({len(layers)} of {result.modules_total} modules compared)",
        title_justify="left",
    )
    columns = ["#", "module", "type", "shape", "SQNR vs PyTorch", "max |diff|"]
    emulated = any(layer.sqnr_vs_host_db is not None for layer in layers)
    columns += ["SQNR vs x86"] if emulated else []
    for column in columns:
        table.add_column(column, justify="left" if column in {"module", "type"} else "right")
    for layer in shown:
        marker = " <" if layer is focus else ""
        cells = [
            str(layers.index(layer)),
            layer.module + marker,
            layer.kind,
            "x".join(map(str, layer.shape)),
            f"{layer.sqnr_db:.1f} dB",
            f"{layer.max_abs_diff:.2e}",
        ]
        if emulated:
            cells.append(_db(layer.sqnr_vs_host_db))
        table.add_row(*cells)
    return table


def _table(check):
    from rich.table import Table

    table = Table(
        title=f"{check.component}: {check.vs_pytorch.message}",
        title_justify="left",
    )
    on_host = check.core == "this host"  # then there is no x86 run to compare with
    columns = ["output", "SQNR vs PyTorch", "top-1 vs PyTorch"]
    columns += [] if on_host else ["max |diff| vs x86", "SQNR vs x86", "top-1 vs x86"]
    for column in [*columns, "verdict"]:
        table.add_column(column, justify="left" if column in {"output", "verdict"} else "right")
    host = {o.name: o for o in check.vs_host.outputs}
    for output in check.vs_pytorch.outputs:
        x86 = host.get(output.name)
        cells = [output.name, _db(output.centered_sqnr_db), _pct(output.top1_agreement)]
        if not on_host:
            cells += [
                f"{x86.max_abs_diff:.2e}" if x86 and x86.max_abs_diff is not None else "-",
                _db(x86.centered_sqnr_db if x86 else None),
                _pct(x86.top1_agreement if x86 else None),
            ]
        verdict = "passed" if output.passed else "FAILED: " + "; ".join(output.failures)
        table.add_row(*cells, verdict)
    return table


def _db(value):
    return "-" if value is None else f"{value:.1f} dB"


def _pct(value):
    return "-" if value is None else f"{value:.0%}"
