"""What both trainers need from accelerate beyond its public API: the process group a launcher
started, on GPUs or on CPUs alone, and a per-run accelerator state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edgekit.train.config import TrainConfigError

# Where launchers put the number of processes they started: torchrun and `accelerate launch`
# (WORLD_SIZE), MPI implementations (the others). accelerate reads the same variables.
_WORLD_SIZE_VARIABLES = ["WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"]


def launched_processes() -> int:
    """How many processes the launcher started for this run (1 without a launcher)."""
    from accelerate.utils import get_int_from_env

    return get_int_from_env(_WORLD_SIZE_VARIABLES, 1)


def _cpu_process_group() -> bool:
    """Whether the run is several processes on a machine without an accelerator.

    accelerate forms a CPU process group (gloo) only when told `cpu` (ACCELERATE_USE_CPU, which
    `accelerate launch --cpu` sets but then starts a single process). Without it, the processes
    of `accelerate launch --multi_gpu --num_processes 2` or torchrun on a CPU machine each train
    alone, the whole data each, and all write the same output folder. So the trainers pass
    `cpu` themselves when processes were launched and torch sees no accelerator.
    """
    import torch

    return launched_processes() > 1 and not torch.accelerator.is_available()


def distributed_state():
    """accelerate's PartialState for this process, made first so that it knows about a CPU
    process group (the state is made once per process; later Accelerators reuse it). Refuses
    a launch whose processes did not join one group."""
    from accelerate import PartialState

    state = PartialState(cpu=_cpu_process_group())
    launched = launched_processes()
    if state.num_processes != launched:
        raise TrainConfigError(
            f"the launcher started {launched} processes but accelerate joined "
            f"{state.num_processes} ({state.distributed_type.value}): each would train alone "
            "and write the same output folder.",
            hint="launch with `accelerate launch --multi_gpu --num_processes N -m edgekit ...` "
            "(GPUs, or CPUs only), or run one process without a launcher.",
        )
    return state


def make_accelerator(**settings):
    """accelerate's Accelerator with `settings`, in the process group `distributed_state`
    joins (made first if it was not: it decides whether CPU processes form one group)."""
    from accelerate import Accelerator

    distributed_state()
    return Accelerator(cpu=_cpu_process_group(), **settings)


@contextmanager
def scoped_accelerator_state() -> Iterator[None]:
    """accelerate keeps one AcceleratorState per process and refuses a second Accelerator with
    other settings (mixed precision); a library function may train twice in one process (tests,
    notebooks, `train dreambooth` then `train classifier`), so the state goes with the run. The
    distributed state (PartialState) stays. accelerate has no public reset: its own tests use
    these."""
    from accelerate.state import AcceleratorState, GradientState

    try:
        yield
    finally:
        AcceleratorState._reset_state()
        GradientState._reset_state()
