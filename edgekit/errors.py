"""Errors that cross to the user.

Each one says what failed, the value received, what is allowed, and a hint. The CLI alone turns
them into one red line and a non-zero exit; library code raises, never prints.
"""

from __future__ import annotations


class EdgekitError(Exception):
    """Base for every user-facing error. `hint` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} Hint: {self.hint}" if self.hint else self.message


class SourceError(EdgekitError):
    """A model source that is missing, not a model, or corrupt."""

    exit_code = 2


class PickleRefusedError(SourceError):
    """A pickle-based weight file (.bin, .ckpt, ...) given without --allow-pickle."""


class UnknownChoiceError(EdgekitError):
    """An unknown preset, target, format or component."""

    exit_code = 2

    def __init__(self, kind: str, value: str, allowed: list[str], *, hint: str | None = None):
        listed = ", ".join(sorted(allowed))
        super().__init__(
            f"Unknown {kind} '{value}'. Known: {listed}.",
            hint=hint or "check the spelling against the known values.",
        )
        self.value = value
        self.allowed = sorted(allowed)


class OutputError(EdgekitError):
    """The output folder cannot be written."""

    exit_code = 2


class ExportError(EdgekitError):
    """A converter failed on a model it claims to support."""

    exit_code = 3


class VerificationError(EdgekitError):
    """An artifact's outputs disagree with the PyTorch reference beyond tolerance."""

    exit_code = 4


class DegenerateReferenceError(VerificationError):
    """The PyTorch reference outputs are all near zero, so any comparison would pass."""


class ArtifactError(EdgekitError):
    """An artifact folder that is missing, incomplete, or has a bad manifest."""

    exit_code = 2


class NoHostRuntimeError(EdgekitError):
    """The artifact's runtime does not exist on this OS (Core ML off macOS)."""

    exit_code = 2  # the request cannot be served on this machine: a usage problem, not a bug


class BenchReportError(EdgekitError):
    """A bench report file (from `edgekit bench --json`, a demo app or another machine) that is
    not JSON, has another schema version, or misses or mistypes fields; or a bad option of the
    commands that read reports."""

    exit_code = 2  # bad input, like a bad artifact folder: a usage problem, not a bug
