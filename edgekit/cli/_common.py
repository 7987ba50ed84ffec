"""What every command shares: logging set-up, the error boundary, the console."""

from __future__ import annotations

import logging
import os
import sys
import warnings

from rich.console import Console

from edgekit.errors import EdgekitError

console = Console()
if not console.is_terminal:
    # Piped or captured output: rich would assume 80 columns and squeeze the bench table.
    console = Console(width=180)
err_console = Console(stderr=True)

# Third-party loggers that report routine progress at INFO/WARNING (graph rewrites, missing
# optional torchvision kernels); their detail is available with --verbose.
_NOISY_LOGGERS = [
    "onnx_ir",
    "onnxscript",
    "torch.onnx",
    "torchao",
    "torch._export",
    "torch.utils._pytree",
    "executorch",
    "root",
    "transformers",
    "diffusers",
]


def configure_logging(verbose: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    if not verbose:
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger("edgekit").setLevel(logging.WARNING)
        warnings.filterwarnings("ignore")
        # transformers and diffusers reset their loggers' levels on first use from these.
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
        # transformers' "Loading weights" bar (read when it is first imported, which commands
        # do lazily after this) would print tqdm lines between edgekit's own output.
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def fail(exc: EdgekitError) -> None:
    err_console.print(f"[bold red]error:[/bold red] {exc}", highlight=False, soft_wrap=True)
    sys.exit(exc.exit_code)


class Guard:
    """Inside a command: turn EdgekitError into the one-line exit (used under CliRunner too)."""

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if isinstance(exc, EdgekitError):
            fail(exc)
        return False
