"""Running artifacts on emulated ARM64 phone cores (qemu user mode), before they reach a phone.

Phones run ARM kernels (XNNPACK's NEON, dotprod, fp16, i8mm paths) that an x86 host never
executes, so a host check can pass while the phone computes something else. `environment` builds
an arm64 Debian root with Python and the runtimes' aarch64 wheels, `cores` gives each emulated
core a consistent identity, `guest` is the script that runs inside the emulator, `verify`
compares its outputs with PyTorch and the x86 run.

Emulation is about 100-300x slower than native: for correctness and relative cost, never latency.
"""
