"""ExecuTorch under ARM64 emulation, without libtorch.

ExecuTorch's Python runtime (its pybindings) links libtorch, and the only aarch64 torch on PyPI is
a multi-GB CUDA build. The runtime itself does not need torch: executorch's aarch64 wheel also
ships the standalone C++ runtime (`executorch/lib/libexecutorch.so`, the optimized portable
kernels, the XNNPACK backend, its thread pool) with headers (`executorch/include`). So, on first
use, and cached in the emulator root under `executorch/`:

1. the host's pip downloads the aarch64 wheel of the host's executorch version (native speed,
   no pip under emulation) and only its `lib/` and `include/` are unpacked;
2. Debian's cross compiler (`g++-aarch64-linux-gnu`) builds `executorch_runner.cpp` against
   them. `--no-as-needed`: kernels and the XNNPACK backend register themselves from static
   initialisers, and the runner references no symbol of theirs, so a default link would drop them
   and every operator would be "not registered" at load;
3. the runtime libraries and the cross toolchain's aarch64 `libstdc++.so.6` (the Debian root has
   none: its Python needs no C++) are copied beside the runner, which, like the wheel's libraries,
   finds its dependencies through a `$ORIGIN` run path.

Everything is built in a temporary folder and renamed into place, so a failed build leaves
nothing a later run would trust; `runner.json` records the executorch version it was built from,
and a host with another version gets a fresh build.

Inputs and outputs cross as raw little-endian files, one per tensor, in the manifest's order; the
runner writes each output's dtype and shape to its `result.json`, checked here against the
manifest before the bytes are read (see executorch_runner.cpp).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.artifact import ComponentManifest
from edgekit.emulate.environment import (
    ARCHES,
    EmulatorError,
    Environment,
    instructions_per_run,
    run_on_core,
)

log = logging.getLogger(__name__)

CROSS_COMPILER = "aarch64-linux-gnu-g++"
CROSS_PACKAGE = "g++-aarch64-linux-gnu"
# Where Debian's cross toolchain keeps the aarch64 libstdc++ it links against.
CROSS_LIBRARIES = Path("/usr/aarch64-linux-gnu/lib")
RUNNER_FOLDER = "executorch"
RUNNER_NAME = "executorch_runner"
RUNNER_INFO = "runner.json"
RUNNER_SOURCE = Path(__file__).with_name("executorch_runner.cpp")
# The wheel's runtime libraries the runner links, each one's registrations kept (--no-as-needed):
# optimized portable kernels (what XNNPACK leaves undelegated), the quantized kernels (int8
# programs' quantize/dequantize outside the delegate), the XNNPACK backend and its thread pool.
RUNTIME_LIBRARIES = (
    "executorch_kernels_optimized",
    "executorch_kernels_quantized",
    "executorch_backend_xnnpack",
    "executorch_threadpool",
    "executorch",
)
# The compile definitions the wheel's CMake config (lib/cmake/executorch) gives consumers: the
# runtime headers must match how the libraries were built (event tracer hooks, thread pool).
COMPILE_DEFINITIONS = ("C10_USING_CUSTOM_GENERATED_MACROS", "ET_EVENT_TRACER_ENABLED",
                       "ET_USE_THREADPOOL")  # fmt: skip
# The include directories the same config names: the wheel's headers and the c10 headers it
# vendors (the runtime's headers include them as <c10/...>).
C10_HEADERS = "executorch/runtime/core/portable_type/c10"
# Download and cross-compile took 3-10 s on 2 shared cores; a hung compiler still ends.
BUILD_TIMEOUT_S = 600


def unavailable_reason() -> str | None:
    """Why ExecuTorch cannot run under emulation on this machine, or None."""
    # The compiler's package brings the aarch64 libstdc++ too; both are checked, both are used.
    if shutil.which(CROSS_COMPILER) is None or not (CROSS_LIBRARIES / "libstdc++.so.6").is_file():
        return (
            "ExecuTorch runs under emulation through a C++ runner cross-compiled for aarch64, "
            f"and this machine has no cross compiler: apt-get install {CROSS_PACKAGE}"
        )
    return None


def host_version() -> str:
    try:
        return importlib.metadata.version("executorch")
    except importlib.metadata.PackageNotFoundError:
        raise EmulatorError(
            "executorch is not installed on this host, so there is no version to run under "
            "emulation (and no host run to compare with).",
            hint="pip install executorch (the version the artifact was exported with).",
        ) from None


def runner(environment: Environment) -> Path:
    """The runner folder for the host's executorch version, built on first use."""
    folder = environment.root / RUNNER_FOLDER
    version = host_version()
    info = folder / RUNNER_INFO
    if info.is_file() and json.loads(info.read_text()).get("executorch") == version:
        return folder
    reason = unavailable_reason()
    if reason:
        raise EmulatorError(reason[0].upper() + reason[1:] + ".", hint="or verify the onnx or "
                            "tflite export of the same model.")  # fmt: skip
    staging = Path(tempfile.mkdtemp(prefix=f".{RUNNER_FOLDER}-building-", dir=environment.root))
    try:
        started = time.perf_counter()
        _build(environment, version, staging)
        log.info("built the aarch64 ExecuTorch runner in %.1f s", time.perf_counter() - started)
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder


def _run_step(name: str, command: list[str], fix: str, timeout_s: float = BUILD_TIMEOUT_S):
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise EmulatorError(
            f"Building the ExecuTorch runner timed out at '{name}'.", hint=fix
        ) from None
    if completed.returncode != 0:
        errors = [line for line in completed.stderr.splitlines() if "error" in line.lower()]
        tail = (errors or completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmulatorError(
            f"Building the ExecuTorch runner failed at '{name}' (exit {completed.returncode}): "
            f"{tail.strip()}",
            hint=fix,
        )


def _build(environment: Environment, version: str, staging: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="edgekit-executorch-wheel-") as scratch:
        wheel_dir = Path(scratch)
        # 1. The aarch64 wheel of the host's version, by the host's pip.
        platforms = [a for p in ARCHES[environment.arch]["platforms"] for a in ("--platform", p)]
        _run_step(
            "pip download",
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
             "--only-binary=:all:", "--python-version", "3.11", "--implementation", "cp",
             *platforms, "--dest", str(wheel_dir), f"executorch=={version}"],
            fix=f"check that PyPI is reachable and has an aarch64 wheel of executorch {version}.",
        )  # fmt: skip
        (wheel,) = wheel_dir.glob("executorch-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            wanted = [n for n in archive.namelist()
                      if n.startswith(("executorch/lib/", "executorch/include/"))]  # fmt: skip
            archive.extractall(wheel_dir, members=wanted)
        package = wheel_dir / "executorch"
        missing = [n for n in RUNTIME_LIBRARIES if not (package / "lib" / f"lib{n}.so").is_file()]
        if missing or not (package / "include").is_dir():
            raise EmulatorError(
                f"executorch {version}'s aarch64 wheel lacks the C++ runtime "
                f"({', '.join(f'lib{n}.so' for n in missing) or 'include/'}).",
                hint="use an executorch version whose wheel ships executorch/lib (1.5 does).",
            )
        # 3. (first, so the link below finds them where the runner will) the runtime beside it.
        for name in RUNTIME_LIBRARIES:
            shutil.copy2(package / "lib" / f"lib{name}.so", staging)
        shutil.copy2(CROSS_LIBRARIES / "libstdc++.so.6", staging / "libstdc++.so.6")
        # 2. The runner.
        _run_step(
            "cross-compile",
            [CROSS_COMPILER, "-std=c++17", "-O2", "-Wno-deprecated-declarations",
             *(f"-D{d}" for d in COMPILE_DEFINITIONS), f"-I{package / 'include'}",
             f"-I{package / 'include' / C10_HEADERS}",
             str(RUNNER_SOURCE), "-o", str(staging / RUNNER_NAME), f"-L{staging}",
             "-Wl,--no-as-needed", *(f"-l{n}" for n in RUNTIME_LIBRARIES), "-Wl,--as-needed",
             "-Wl,--enable-new-dtags,-rpath,$ORIGIN"],
            fix=f"check {CROSS_PACKAGE}; the runner is edgekit/emulate/executorch_runner.cpp.",
        )  # fmt: skip
    (staging / RUNNER_INFO).write_text(json.dumps({"executorch": version}) + "\n")


def run(
    environment: Environment,
    core: str,
    model_path: Path,
    component: ComponentManifest,
    input_sets: list[dict[str, np.ndarray]],
    *,
    threads: int | None,
    timed_runs: int,
    timeout_s: float,
    count_instructions: bool,
) -> tuple[list[dict[str, np.ndarray]], dict[str, Any]]:
    """Run `input_sets` through the `.pte` on an emulated core; (outputs per set, timings), as
    `edgekit.emulate.verify.run_in_guest` returns them."""
    folder = runner(environment)
    with tempfile.TemporaryDirectory(prefix="edgekit-emulate-et-") as scratch:
        exchange = Path(scratch)
        for index, input_set in enumerate(input_sets):
            for k, spec in enumerate(component.inputs):
                little_endian = np.dtype(spec.dtype).newbyteorder("<")
                value = np.ascontiguousarray(input_set[spec.name], dtype=little_endian)
                value.tofile(exchange / f"{index}.in{k}.bin")
        counts = exchange / "instructions.json" if count_instructions else None
        command = [
            *environment.binary(core, folder / RUNNER_NAME, count_instructions_to=counts),
            str(model_path), str(exchange), str(len(input_sets)), str(threads or 0),
            str(timed_runs), "1" if count_instructions else "0",
        ]  # fmt: skip
        # The runtime logs to stderr as it goes; the runner's own last line says what failed.
        run_on_core(command, core, timeout_s)
        result = json.loads((exchange / "result.json").read_text())
        outputs = [_read_outputs(exchange, index, component, result["outputs"])
                   for index in range(len(input_sets))]  # fmt: skip
        timings: dict[str, Any] = {
            "runtime": f"executorch {importlib.metadata.version('executorch')}",
            "load_s": result["load_s"],
            "samples_ms": result["samples_ms"],
        }
        if counts is not None:
            timings["instructions"] = instructions_per_run(counts)
        return outputs, timings


def _read_outputs(
    exchange: Path, index: int, component: ComponentManifest, produced: list[dict[str, Any]]
) -> dict[str, np.ndarray]:
    """Set `index`'s outputs, after checking that the program made what the manifest says."""
    declared = [(spec.dtype, spec.shape) for spec in component.outputs]
    made = [(o["dtype"], o["shape"]) for o in produced]
    if made != declared:
        raise EmulatorError(
            f"The program's outputs on the emulated core are {made}, the manifest declares "
            f"{declared}.",
            hint="the .pte is not the one the manifest describes: export it again.",
        )
    return {
        spec.name: np.fromfile(
            exchange / f"{index}.out{k}.bin", dtype=np.dtype(spec.dtype).newbyteorder("<")
        ).reshape(spec.shape)
        for k, spec in enumerate(component.outputs)
    }
