"""Pieces of `edgekit quickstart` that are not printing: preset check and report text."""

from __future__ import annotations

from pathlib import Path

from edgekit.errors import UnknownChoiceError

QUICKSTART_PRESETS = [
    "mobilevit-small",
    "mobilevit-x-small",
    "mobilevit-xx-small",
    "tiny-mobilevit",
]


def check_preset(preset: str) -> None:
    if preset not in QUICKSTART_PRESETS:
        raise UnknownChoiceError(
            "quickstart preset",
            preset,
            QUICKSTART_PRESETS,
            hint="quickstart shows the MobileViT path; other models go through `edgekit export`.",
        )


def quickstart_report_intro(preset: str, artifacts: list[Path]) -> str:
    listed = "\n".join(f"- `{p}`" for p in artifacts)
    return (
        f"# edgekit quickstart: {preset}\n\n"
        f"**Weights are random** ({preset} is the published architecture with a seeded init): "
        "fidelity and latency are real measurements, predictions are meaningless.\n\n"
        f"Artifacts (each with `manifest.json`):\n{listed}\n\n"
    )
