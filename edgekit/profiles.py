"""Deployment target profiles: TOML files that name a format and its settings (data, not code).

`--target coreml` resolves to that format's default profile, `--target coreml-ios17` to a built-in
profile by name, `--target ./my-phone.toml` to a user's file. Built-in profiles live in the
repository's top-level `targets/` and ship in the wheel as `edgekit/targets/`.
"""

from __future__ import annotations

import inspect
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edgekit.errors import EdgekitError, UnknownChoiceError


class ProfileError(EdgekitError):
    exit_code = 2


class _Strict(BaseModel):
    # A misspelt key is an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid")


class RuntimeSettings(_Strict):
    threads: int | None = Field(None, ge=1, description="CPU threads for the runtime on device.")
    delegate: str | None = Field(None, description="e.g. 'xnnpack'.")
    compute_units: Literal["ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"] | None = None
    execution_provider: str | None = None
    spinning: bool | None = Field(
        None,
        description="ONNX Runtime: whether idle intra-op threads spin waiting for work. None "
        "keeps the runtime's own default (on: the lowest latency for back-to-back runs); "
        "false saves power and cores next to other work.",
    )


class DemoApp(_Strict):
    platform: Literal["android", "ios"]
    asset_folder: str = Field(description="Where `edgekit install` copies the artifact.")


class TargetProfile(_Strict):
    name: str
    format: str
    description: str = ""
    default_for_format: bool = False
    precision: Literal["fp32", "fp16"] = "fp32"
    quant: str | None = Field(
        None,
        description="Default quantization plan: a named plan (int8, mixed, ...) or a plan .json "
        "path, relative to this profile file. `--quant` or `--precision` override it.",
    )
    minimum_os: str | None = None
    export: dict[str, Any] = Field(
        default_factory=dict, description="Keyword options of the format's exporter."
    )
    runtime: RuntimeSettings = Field(default_factory=RuntimeSettings)
    demo_app: DemoApp | None = None
    path: str | None = Field(None, description="The file it was read from.")


def builtin_dir() -> Path:
    installed = Path(__file__).parent / "targets"  # inside the wheel
    return installed if installed.is_dir() else Path(__file__).parent.parent / "targets"


def builtin_profiles() -> dict[str, TargetProfile]:
    profiles = (read_profile(p) for p in sorted(builtin_dir().glob("*.toml")))
    return {p.name: p for p in profiles}


def resolve(target: str) -> TargetProfile:
    """A format name, a built-in profile name, or a path to a .toml file -> TargetProfile."""
    from edgekit import exporters

    if target.endswith(".toml") or "/" in target:
        return read_profile(Path(target))
    profiles = builtin_profiles()
    if target in profiles:
        return profiles[target]
    if target in exporters.format_names():
        for profile in profiles.values():
            if profile.format == target and profile.default_for_format:
                return profile
        return TargetProfile(name=target, format=target)
    raise UnknownChoiceError(
        "target",
        target,
        exporters.format_names() + list(profiles),
        hint="pass a format, a built-in profile, or the path of your own profile .toml.",
    )


def read_profile(path: Path) -> TargetProfile:
    from edgekit import exporters

    if not path.is_file():
        raise ProfileError(
            f"No target profile at '{path}'.", hint="check the path of the .toml file."
        )
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(
            f"{path} is not valid TOML ({exc}).", hint="fix the file's syntax."
        ) from exc
    try:
        profile = TargetProfile(**data, path=str(path))
    except ValidationError as exc:
        error = exc.errors()[0]
        key = ".".join(str(part) for part in error["loc"])
        raise ProfileError(
            f"Bad key '{key}' in target profile {path}: {error['msg']}.",
            hint="see the built-in profiles in targets/ for the allowed keys.",
        ) from exc
    if profile.quant and profile.quant.endswith(".json"):
        # A plan file is named relative to the profile, so a profile and its plan travel together.
        profile = profile.model_copy(update={"quant": str(path.parent / profile.quant)})
    if profile.format not in exporters.format_names():
        raise ProfileError(
            f"Bad key 'format' in target profile {path}: '{profile.format}' is not a format.",
            hint=f"use one of: {', '.join(exporters.format_names())}.",
        )
    allowed = _exporter_options(profile.format)
    for key in profile.export:
        if key not in allowed:
            raise ProfileError(
                f"Bad key 'export.{key}' in target profile {path}: the {profile.format} exporter "
                f"takes {', '.join(allowed) or 'no options'}.",
                hint="remove or rename the key.",
            )
    return profile


def _exporter_options(format_name: str) -> list[str]:
    from edgekit import exporters

    exporter_class = exporters.exporter_class(format_name)
    parameters = inspect.signature(exporter_class.__init__).parameters
    keyword = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [n for n, p in parameters.items() if n != "self" and p.kind in keyword]
