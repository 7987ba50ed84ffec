"""What both trainers need from accelerate beyond its public API."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


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
