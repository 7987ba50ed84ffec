"""Helpers for converters and runtimes that log from C++, past Python's logging."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass
class CapturedStderr:
    """What native code wrote to stderr inside `quiet_native_stderr` (empty when not quiet)."""

    text: str = ""

    @property
    def last_line(self) -> str:
        lines = [line.strip() for line in self.text.splitlines() if line.strip()]
        return lines[-1] if lines else ""


@contextmanager
def quiet_native_stderr(*, enabled: bool) -> Iterator[CapturedStderr]:
    """Capture file descriptor 2 (and Python's sys.stderr) for the duration instead of printing.

    C++ logs bypass Python; the captured text is kept so an error can quote the runtime's own
    diagnosis (e.g. ExecuTorch's "Program identifier 'bage' != expected 'ET12'").
    """
    captured = CapturedStderr()
    if not enabled:
        yield captured
        return
    sys.stderr.flush()
    saved = os.dup(2)
    python_side = io.StringIO()
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 2)
            with contextlib.redirect_stderr(python_side):
                yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.text = sink.read().decode(errors="replace") + python_side.getvalue()
