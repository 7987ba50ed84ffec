"""The emulated cores and their identity as the runtimes see it.

XNNPACK and onnxruntime pick kernels with pytorch/cpuinfo, which reads the ISA features from the
auxiliary vector (AT_HWCAP, AT_HWCAP2: qemu sets them for the emulated core) and the core's
MIDR (implementer, part, variant, revision) from /proc/cpuinfo. qemu user mode passes the host's
x86 /proc/cpuinfo through, and onnxruntime crashes on import when the two disagree. So each
core gets a /proc/cpuinfo written from what a probe reads inside the emulator: the HWCAP bits
and the MIDR register itself (`mrs MIDR_EL1`, which qemu answers for the emulated core), never
from a table that could drift from qemu's.
"""

from __future__ import annotations

from dataclasses import dataclass

# qemu -cpu name -> what the core is, and which kernel families it makes the runtimes use.
CORES: dict[str, str] = {
    "cortex-a72": "Armv8.0 (2015; e.g. Raspberry Pi 4): NEON fp32, int8 through NEON "
    "multiply-accumulate; no dotprod, no fp16 arithmetic",
    "cortex-a76": "Armv8.2 (2018 phones' big cores): NEON, dotprod (SDOT int8 kernels), fp16 "
    "arithmetic",
    "neoverse-n1": "Armv8.2 server core, the cortex-a76 design: NEON, dotprod, fp16",
    "max": "everything qemu emulates (Armv9): adds i8mm (SMMLA int8 kernels), bf16, SVE/SVE2, SME",
}

# Linux arm64 HWCAP / HWCAP2 bit -> /proc/cpuinfo feature name (arch/arm64/kernel/cpuinfo.c).
HWCAP_NAMES = [
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp",
    "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4",
    "asimddp", "sha512", "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb",
    "paca", "pacg",
]  # fmt: skip
HWCAP2_NAMES = [
    "dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2",
    "frint", "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng", "bti",
    "mte", "ecv", "afp", "rpres", "mte3", "sme", "smei16i64", "smef64f64", "smei8i32",
    "smef16f32", "smeb16f32", "smef32f32", "smefa64", "wfxt", "ebf16", "sveebf16", "cssc",
    "rprfm", "sve2p1", "sme2", "sme2p1", "smei16i32", "smebi32i32", "smeb16b16", "smef16f16",
    "mops", "hbc", "sveb16b16", "lrcpc3", "lse128", "fpmr", "lut", "faminmax",
]  # fmt: skip


@dataclass(frozen=True)
class CoreIdentity:
    """What a probe inside the emulator read for one core."""

    core: str
    hwcap: int
    hwcap2: int
    midr: int

    @property
    def features(self) -> list[str]:
        names = [n for bit, n in enumerate(HWCAP_NAMES) if self.hwcap >> bit & 1]
        return names + [n for bit, n in enumerate(HWCAP2_NAMES) if self.hwcap2 >> bit & 1]

    def cpuinfo(self, processors: int) -> str:
        """/proc/cpuinfo as an arm64 Linux kernel writes it for this core."""
        midr = self.midr
        block = (
            f"BogoMIPS\t: 50.00\n"
            f"Features\t: {' '.join(self.features)}\n"
            f"CPU implementer\t: {midr >> 24 & 0xFF:#04x}\n"
            f"CPU architecture: 8\n"
            f"CPU variant\t: {midr >> 20 & 0xF:#x}\n"
            f"CPU part\t: {midr >> 4 & 0xFFF:#05x}\n"
            f"CPU revision\t: {midr & 0xF}\n"
        )
        return "".join(f"processor\t: {i}\n{block}\n" for i in range(processors))


# Runs inside the emulator with the guest's Python: the HWCAPs from the auxiliary vector, and
# MIDR_EL1 read by the instruction itself (mrs x0, midr_el1; ret) from an executable page.
PROBE = """
import ctypes, json, mmap, struct
libc = ctypes.CDLL(None)
libc.getauxval.restype = ctypes.c_ulong
libc.getauxval.argtypes = [ctypes.c_ulong]
page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
page.write(struct.pack("<II", 0xD5380000, 0xD65F03C0))
read_midr = ctypes.CFUNCTYPE(ctypes.c_uint64)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
print(json.dumps({"hwcap": libc.getauxval(16), "hwcap2": libc.getauxval(26), "midr": read_midr()}))
"""
