"""edgekit: take vision models to phones and prove they still work there.

Nothing heavy is imported here: `edgekit --help` must stay fast and torch-free.
"""

from __future__ import annotations

__version__ = "0.1.0"
