"""Test support: run an `edgekit` command as two processes under `accelerate launch`.

This is the multi-GPU command of the README (`accelerate launch --multi_gpu --num_processes N
-m edgekit ...`) on the CPUs: the trainers join the processes into one gloo group when torch
sees no GPU (edgekit.train.engine), so data-parallel training, reduced losses, main-process-only
writes and per-process RNG checkpoints are all exercised here.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys


def _free_port() -> int:
    """A port nothing listens on, for the processes' rendezvous (tests may run side by side)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def launch_two_processes(*args: str, env: dict[str, str] | None = None):
    """`accelerate launch` of `edgekit ARGS` with two processes on this machine."""
    command = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu",
        "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
        "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "edgekit", *args,
    ]  # fmt: skip
    return subprocess.run(
        command, env={**os.environ, **(env or {})}, capture_output=True, text=True
    )
