"""`edgekit emulator setup arm64`: an arm64 Debian root with Python and the runtimes' wheels.

Built once into a cache folder and reused:
1. `debootstrap --foreign` downloads and unpacks a minimal arm64 Debian bookworm (its Python is
   3.11, the version the host's wheels are for). Only the first stage: nothing in the root has to
   be configured to run Python, so no arm64 code runs during the set-up;
2. the Python packages that stage left in the root's apt archive are unpacked with dpkg-deb;
3. numpy and the runtimes' aarch64 wheels, the same versions as on the host, are installed by the
   host's pip (`--platform ... --target`), at native speed, not by pip under emulation;
4. each core is probed inside the emulator and gets a root of its own (symlinks to the shared
   one, plus its /proc/cpuinfo and /sys/devices/system/cpu; see `cores`).

Everything is built in a temporary folder beside the cache and renamed into place at the end, so
a failed or interrupted set-up leaves nothing that a later run would trust.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edgekit.emulate.cores import CORES, PROBE, CoreIdentity
from edgekit.errors import EdgekitError

DEBIAN_SUITE = "bookworm"  # Python 3.11, like the host
DEBIAN_MIRROR = "http://deb.debian.org/debian"
GUEST_PYTHON = "usr/bin/python3.11"
ENVIRONMENT_FILE = "environment.json"
# The instruction counter is built per plugin API generation (see insncount.c): qemu 9.0
# dropped the inline op API 1 plugins use and refuses plugins that declare it.
PLUGIN_API_2_FROM = (9, 0)
ARCHES = {
    "arm64": {
        "qemu": "qemu-aarch64-static",
        "qemu_plugins": "qemu-aarch64",  # Debian's dynamic build: the one that loads TCG plugins
        "debian": "arm64",
        # pip needs every manylinux tag it may take; Debian bookworm has glibc 2.36.
        "platforms": ["manylinux2014_aarch64"]
        + [f"manylinux_2_{v}_aarch64" for v in (17, 24, 27, 28, 31, 34, 35, 36)],
    }
}
# The guest runs what the host verifies with; ExecuTorch is not among them (see README).
GUEST_PACKAGES = ("numpy", "onnxruntime", "ai-edge-litert")
GUEST_FORMATS = ("onnx", "tflite")
# Cores whose emulation an older qemu gets wrong -> the first qemu measured to get it right.
# Under Debian bookworm's qemu 7.2, int8 inference on `max` (its SME and i8mm paths) computed
# other numbers: mobilevit-small int8 logits at -21 dB vs x86 on TFLite and ExecuTorch, ONNX
# mixed at 6.9 dB; under qemu 10.0 (bookworm-backports) the same artifacts on `max` track x86
# as cortex-a76 does (16-23 dB, benchmarks/results/emulated-mobilevit-small-x86-64-host.md).
# Versions between were not measured.
FAITHFUL_FROM: dict[str, tuple[int, ...]] = {"max": (10, 0)}


# The guest's numpy (OpenBLAS) starts a worker thread per host core at import, and the workers
# spin for a while after any numpy call. Under qemu 10 (threads run in parallel) their spinning
# landed inside the timed runs: tiny-mobilevit's TFLite inference counted 19.6-39.5 M
# instructions on cortex-a76 instead of 3.625 M (all runs within 0.15%), and the spinning
# competes with the inference for the host's cores. numpy only carries inputs and outputs in
# the guest.
GUEST_ENV = {"OPENBLAS_NUM_THREADS": "1"}


class EmulatorError(EdgekitError):
    exit_code = 2


def default_cache() -> Path:
    base = os.environ.get("EDGEKIT_CACHE") or Path.home() / ".cache" / "edgekit"
    return Path(base) / "emulator"


def qemu_version(binary: str) -> tuple[int, ...]:
    """`binary --version`'s version, e.g. (10, 0, 2); () if it cannot be read."""
    try:
        completed = subprocess.run([binary, "--version"], capture_output=True, text=True)
    except OSError:
        return ()
    match = re.search(r"version (\d+(?:\.\d+)*)", completed.stdout)
    return tuple(int(part) for part in match.group(1).split(".")) if match else ()


def loads_plugins(binary: str) -> bool:
    """Whether this qemu takes `-plugin` (dynamically linked builds only)."""
    try:
        completed = subprocess.run([binary, "-h"], capture_output=True, text=True)
    except OSError:
        return False
    return "-plugin" in completed.stdout


def _dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version)) or "unknown"


@dataclass
class Environment:
    root: Path
    arch: str
    identities: dict[str, CoreIdentity]
    packages: dict[str, str]
    qemu: tuple[int, ...] = ()  # the version that probed the cores and runs them

    @property
    def qemu_release(self) -> str:
        """The qemu version as its --version writes it (10.0.2), for records and messages."""
        return _dotted(self.qemu)

    def check_faithful(self, core: str) -> None:
        """Refuse a core this qemu is known to emulate wrongly: its numbers would blame the
        model or the runtime for qemu's error."""
        needed = FAITHFUL_FROM.get(core)
        if needed is None or self.qemu >= needed:
            return
        raise EmulatorError(
            f"qemu {self.qemu_release} is older than {_dotted(needed)}, the first qemu measured "
            f"to emulate '{core}' faithfully: under qemu 7.2 int8 models on '{core}' computed "
            f"other logits (-21 dB vs x86 on TFLite and ExecuTorch) that {_dotted(needed)} "
            "computes right.",
            hint=f"install qemu-user-static {_dotted(needed)} or newer (Debian bookworm: add "
            "bookworm-backports to apt's sources, apt-get install -t bookworm-backports "
            f"qemu-user-static), then run `edgekit emulator setup {self.arch} --rebuild`; or "
            "use cortex-a76 / cortex-a72.",
        )

    @property
    def site(self) -> Path:
        return self.root / "site"

    def python(self, core: str, count_instructions_to: Path | None = None) -> list[str]:
        """The command that runs the guest's Python on `core`; with `count_instructions_to`,
        under the dynamic qemu with the instruction-counting plugin writing to that file."""
        if core not in self.identities:
            raise EmulatorError(
                f"Unknown core '{core}'.", hint=f"choose from {', '.join(self.identities)}."
            )
        self.check_faithful(core)
        prefix = self.root / "cores" / core
        qemu = [ARCHES[self.arch]["qemu"]]
        if count_instructions_to is not None:
            plugin = self.instruction_counter()
            qemu = [
                ARCHES[self.arch]["qemu_plugins"],
                "-plugin",
                f"{plugin},out={count_instructions_to}",
            ]
        return [*qemu, "-cpu", core, "-L", str(prefix), str(prefix / GUEST_PYTHON)]

    def binary(
        self, core: str, program: Path, count_instructions_to: Path | None = None
    ) -> list[str]:
        """The command that runs an aarch64 `program` (linked against the root's glibc) on
        `core`: the same qemu, core root and plugin as `python`, with `program` for Python."""
        *qemu, _guest_python = self.python(core, count_instructions_to)
        return [*qemu, str(program)]

    def instruction_counter_unavailable(self) -> str | None:
        """Why instructions cannot be counted here, or None."""
        dynamic = ARCHES[self.arch]["qemu_plugins"]
        if shutil.which(dynamic) is None or not loads_plugins(dynamic):
            return (
                f"counting instructions needs a dynamically linked {dynamic}: static qemu "
                "builds cannot load TCG plugins (Debian bookworm's qemu-user 7.2 is dynamic; "
                "Debian's qemu-user 10 is static: README, 'Emulated ARM64 cores', builds one "
                "with plugins)"
            )
        counting = qemu_version(dynamic)
        if counting[:2] != self.qemu[:2]:  # as `load` compares releases
            return (
                f"counting instructions would run {dynamic} {_dotted(counting)}, not the qemu "
                f"{self.qemu_release} that probed and runs the cores"
            )
        if shutil.which("gcc") is None and not self._plugin_path().is_file():
            return "counting instructions needs gcc once, to build the qemu plugin"
        return None

    def instruction_counter(self) -> Path:
        """The plugin, built with gcc from edgekit/emulate/insncount.c on first use, for the
        plugin API of the qemu that probed the cores (the counting qemu is of the same release)."""
        target = self._plugin_path()
        if target.is_file():
            return target
        reason = self.instruction_counter_unavailable()
        if reason:
            raise EmulatorError(reason[0].upper() + reason[1:] + ".", hint="or leave it out.")
        target.parent.mkdir(exist_ok=True)
        source = Path(__file__).with_name("insncount.c")
        partial = target.with_suffix(".partial")
        built = subprocess.run(
            ["gcc", "-shared", "-fPIC", "-O2", f"-DEDGEKIT_QEMU_PLUGIN_API={self._plugin_api()}"]
            + ["-o", str(partial), str(source)],
            capture_output=True,
            text=True,
        )
        if built.returncode != 0:
            raise EmulatorError(
                f"Building the instruction-counting qemu plugin failed: "
                f"{(built.stderr.strip().splitlines() or ['no output'])[-1]}",
                hint="check gcc; the plugin is edgekit/emulate/insncount.c.",
            )
        partial.replace(target)  # a failed build leaves no plugin a later run would trust
        return target

    def _plugin_api(self) -> int:
        return 2 if self.qemu[:2] >= PLUGIN_API_2_FROM else 1

    def _plugin_path(self) -> Path:
        return self.root / "plugins" / f"libinsncount-api{self._plugin_api()}.so"


def run_on_core(command: list[str], core: str, timeout_s: float) -> None:
    """Run a guest command (from `Environment.python` or `.binary`); a hang or a crash becomes
    one EmulatorError naming the core. The guest's last stderr line says what failed."""
    try:
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout_s, env=GUEST_ENV | os.environ
        )
    except subprocess.TimeoutExpired:
        raise EmulatorError(
            f"The artifact did not finish on emulated {core} within {timeout_s:.0f} s.",
            hint="emulation is ~100-300x slower than native: try a smaller model or one core.",
        ) from None
    if completed.returncode != 0:
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise EmulatorError(
            f"The artifact crashed on emulated {core} (exit {completed.returncode}): {tail}",
            hint="a crash only on this core points at its kernels; compare with --cpu max.",
        )


def instructions_per_run(counts_file: Path) -> list[int]:
    """What insncount.c wrote: the guest marks each timed run's start and end; one count per
    run."""
    marks = json.loads(counts_file.read_text())["marks"]
    return [end - start for start, end in zip(marks[::2], marks[1::2], strict=True)]


def host_versions() -> dict[str, str]:
    return {name: importlib.metadata.version(name) for name in GUEST_PACKAGES}


def check_arch(arch: str) -> None:
    if arch not in ARCHES:
        raise EmulatorError(f"Unknown emulator '{arch}'.", hint=f"choose from {', '.join(ARCHES)}.")


def check_cores(cores: list[str]) -> None:
    unknown = [c for c in cores if c not in CORES]
    if unknown or not cores:
        raise EmulatorError(
            f"Unknown core{'s' if len(unknown) > 1 else ''} {', '.join(unknown) or '(none)'}.",
            hint=f"choose from {', '.join(CORES)}.",
        )


def missing_tools(arch: str) -> list[str]:
    needed = [ARCHES[arch]["qemu"], "debootstrap", "dpkg-deb"]
    return [tool for tool in needed if shutil.which(tool) is None]


def load(arch: str, cache: Path | None = None) -> Environment:
    """The environment `setup` built, refusing one that is missing or built for other runtime
    versions than the host's (its results would not be about the same runtimes)."""
    check_arch(arch)
    root = (cache or default_cache()) / arch
    info_path = root / ENVIRONMENT_FILE
    if not info_path.is_file():
        raise EmulatorError(
            f"The {arch} emulator is not set up (no {info_path}).",
            hint=f"run `edgekit emulator setup {arch}` once (it caches what it builds).",
        )
    missing = missing_tools(arch)[:1]
    if missing:
        raise EmulatorError(
            f"{missing[0]} is not installed, so nothing can run under emulation.",
            hint="apt-get install qemu-user-static (Debian/Ubuntu).",
        )
    info = json.loads(info_path.read_text())
    if info["packages"] != host_versions():
        raise EmulatorError(
            f"The {arch} emulator has {info['packages']}, the host {host_versions()}.",
            hint=f"run `edgekit emulator setup {arch} --rebuild` for this host's runtimes.",
        )
    # The cores were probed under the qemu of the set-up: another release emulates other
    # features (qemu 10's `max` adds mte3, mops and hbc to 7.2's), so the recorded identities
    # would be wrong. Patch releases (10.0.2 -> 10.0.3) keep their CPU models.
    qemu = qemu_version(ARCHES[arch]["qemu"])
    built_with = tuple(info.get("qemu", ()))
    if built_with[:2] != qemu[:2]:
        raise EmulatorError(
            f"The {arch} emulator's cores were probed under qemu {_dotted(built_with)}; this "
            f"machine's {ARCHES[arch]['qemu']} is {_dotted(qemu)}.",
            hint=f"run `edgekit emulator setup {arch} --rebuild` to probe them under this qemu.",
        )
    identities = {name: CoreIdentity(**value) for name, value in info["cores"].items()}
    return Environment(
        root=root, arch=arch, identities=identities, packages=info["packages"], qemu=qemu
    )


def setup(
    arch: str,
    cache: Path | None = None,
    *,
    rebuild: bool = False,
    progress: Callable[[str], None] = lambda step: None,
) -> Environment:
    check_arch(arch)
    cache = cache or default_cache()
    if not rebuild:
        try:
            return load(arch, cache)
        except EmulatorError:
            pass  # missing or stale: build it
    missing = missing_tools(arch)
    if missing:
        raise EmulatorError(
            f"Setting up the {arch} emulator needs {', '.join(missing)}, which this machine lacks.",
            hint="apt-get install qemu-user-static debootstrap (as root), then run again.",
        )
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise EmulatorError(
            "debootstrap has to run as root to unpack the arm64 root (device nodes, ownership).",
            hint=f"run `sudo edgekit emulator setup {arch}` once; later runs need no root.",
        )
    try:
        cache.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{arch}-building-", dir=cache))
    except OSError as exc:
        raise EmulatorError(
            f"Cannot write the emulator cache at {cache}: {exc.strerror}.",
            hint="pass --cache DIR on a disk with about 500 MB free.",
        ) from None
    try:
        _build(arch, staging, progress)
        final = cache / arch
        if final.exists():
            shutil.rmtree(final)
        staging.rename(final)
        # The per-core roots link into the shared root by absolute path: rewrite them.
        _make_core_roots(final, load_identities(final))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return load(arch, cache)


def load_identities(root: Path) -> dict[str, CoreIdentity]:
    info = json.loads((root / ENVIRONMENT_FILE).read_text())
    return {name: CoreIdentity(**value) for name, value in info["cores"].items()}


def _step(name: str, command: list[str], fix: str) -> None:
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        tail = (completed.stderr.strip() or completed.stdout.strip()).splitlines()[-1:]
        raise EmulatorError(
            f"Emulator set-up failed at '{name}' (exit {completed.returncode}): "
            f"{tail[0] if tail else 'no output'}",
            hint=fix,
        )


def _build(arch: str, root: Path, progress: Callable[[str], None]) -> None:
    spec = ARCHES[arch]
    rootfs = root / "rootfs"
    progress(f"downloading and unpacking a minimal {spec['debian']} Debian {DEBIAN_SUITE}")
    _step(
        "debootstrap",
        ["debootstrap", f"--arch={spec['debian']}", "--variant=minbase", "--foreign",
         "--include=python3.11,libpython3.11-stdlib", DEBIAN_SUITE, str(rootfs), DEBIAN_MIRROR],
        fix=f"check that {DEBIAN_MIRROR} is reachable and the disk has about 500 MB free.",
    )  # fmt: skip
    progress("unpacking Python into the root")
    for deb in sorted((rootfs / "var/cache/apt/archives").glob("*.deb")):
        _step("dpkg-deb", ["dpkg-deb", "-x", str(deb), str(rootfs)], fix="the download may be "
              "corrupt: run the set-up again with --rebuild.")  # fmt: skip
    if not (rootfs / GUEST_PYTHON).is_file():
        raise EmulatorError(
            f"The {arch} root has no {GUEST_PYTHON} after unpacking.",
            hint="run the set-up again with --rebuild.",
        )
    progress(f"installing {', '.join(GUEST_PACKAGES)} aarch64 wheels (host's pip)")
    versions = host_versions()
    platforms = [arg for p in spec["platforms"] for arg in ("--platform", p)]
    _step(
        "pip install",
        [sys.executable, "-m", "pip", "install", "--quiet", "--only-binary=:all:",
         "--python-version", "3.11", "--implementation", "cp", *platforms,
         "--target", str(root / "site"), *(f"{n}=={v}" for n, v in versions.items())],
        fix="check that PyPI is reachable and has aarch64 wheels of these versions.",
    )  # fmt: skip
    identities = {}
    _make_core_roots(root, {})
    for core in CORES:
        progress(f"probing {core} inside the emulator")
        identities[core] = _probe(arch, root, core)
    (root / ENVIRONMENT_FILE).write_text(
        json.dumps(
            {
                "arch": arch,
                "suite": DEBIAN_SUITE,
                "qemu": list(qemu_version(spec["qemu"])),
                "packages": versions,
                "cores": {name: vars(identity) for name, identity in identities.items()},
            },
            indent=2,
        )
        + "\n"
    )


def _make_core_roots(root: Path, identities: dict[str, CoreIdentity]) -> None:
    """cores/<core>/: the shared root's top-level entries as symlinks, plus this core's
    /proc/cpuinfo and /sys/devices/system/cpu, which qemu's -L prefix serves to the guest in
    place of the host's x86 files."""
    rootfs = root / "rootfs"
    processors = os.cpu_count() or 1
    for core in CORES:
        prefix = root / "cores" / core
        if prefix.exists():
            shutil.rmtree(prefix)
        prefix.mkdir(parents=True)
        for entry in rootfs.iterdir():
            if entry.name not in {"proc", "sys"}:
                (prefix / entry.name).symlink_to(entry.resolve())
        identity = identities.get(core)
        if identity is None:
            continue  # probing: a neutral root without cpuinfo, enough to run Python
        (prefix / "proc").mkdir()
        (prefix / "proc" / "cpuinfo").write_text(identity.cpuinfo(processors))
        cpus = prefix / "sys" / "devices" / "system" / "cpu"
        cpus.mkdir(parents=True)
        for name in ("possible", "present", "online"):
            (cpus / name).write_text(f"0-{processors - 1}\n" if processors > 1 else "0\n")
        for index in range(processors):
            regs = cpus / f"cpu{index}" / "regs" / "identification"
            regs.mkdir(parents=True)
            (regs / "midr_el1").write_text(f"0x{identity.midr:016x}\n")


def _probe(arch: str, root: Path, core: str) -> CoreIdentity:
    prefix = root / "cores" / core
    command = [ARCHES[arch]["qemu"], "-cpu", core, "-L", str(prefix), str(prefix / GUEST_PYTHON)]
    completed = subprocess.run([*command, "-c", PROBE], capture_output=True, text=True, timeout=300)
    if completed.returncode != 0:
        raise EmulatorError(
            f"Probing {core} inside the emulator failed: {completed.stderr.strip()[-300:]}",
            hint="check that qemu supports this core: `qemu-aarch64-static -cpu help`.",
        )
    return CoreIdentity(core=core, **json.loads(completed.stdout.strip().splitlines()[-1]))
