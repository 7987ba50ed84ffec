"""The committed JSON Schemas (manifest, bench report, quantization plan) are generated from the
pydantic models the same way; demo apps and other tools validate against the files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel


def json_schema(model: type[BaseModel], *, name: str, version: str) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://edgekit.dev/schemas/{name}-{version}.json"
    return schema


def write_json_schema(schema: dict[str, Any], path: Path) -> None:
    """Sorted keys, so a regenerated file differs only where the models changed."""
    path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n")
