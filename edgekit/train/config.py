"""Training configs: a YAML file and command-line options, the same keys, one typed model.

Values are converted by the field's declared type (pydantic), so YAML 1.1's reading of `1e-3` as
a string still gives a float learning rate. A key the model does not declare is an error that
names it (a misspelt key must not be silently ignored), and so is a value that does not convert.
Command-line options override the file; options left unset on the command line do not.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from edgekit.errors import EdgekitError

Config = TypeVar("Config", bound=BaseModel)


class TrainConfigError(EdgekitError):
    exit_code = 2


def load_config(model: type[Config], path: Path | None, overrides: dict[str, object]) -> Config:
    """`model` from the YAML at `path` (if any) with the non-None `overrides` on top."""
    values: dict[str, object] = dict(_read_yaml(path)) if path is not None else {}
    values.update({key: value for key, value in overrides.items() if value is not None})
    where = f" in {path}" if path is not None else ""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        # An unknown key first: a misspelt required key (`instance_dri`) also makes the real
        # one missing, and "'instance_dir' is required" would send the user looking elsewhere.
        errors = exc.errors()
        error = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        key = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            known = ", ".join(sorted(model.model_fields))
            close = difflib.get_close_matches(key, model.model_fields, n=1)
            meant = f"did you mean '{close[0]}'? " if close else ""
            raise TrainConfigError(
                f"Unknown key '{key}'{where}.", hint=f"{meant}the keys are: {known}."
            ) from exc
        if error["type"] == "missing":
            raise TrainConfigError(
                f"'{key}' is required{where}.",
                hint=f"set it in the YAML or as --{key.replace('_', '-')}.",
            ) from exc
        raise TrainConfigError(
            f"Bad value for '{key}'{where}: {error['msg']} (got {error.get('input')!r}).",
            hint="fix the value; see `edgekit train --help` for each key's meaning.",
        ) from exc


def _read_yaml(path: Path) -> dict[str, object]:
    import yaml

    if not path.is_file():
        raise TrainConfigError(f"No config file at '{path}'.", hint="pass a YAML file to --config.")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise TrainConfigError(
            f"'{path}' is not valid YAML ({type(exc).__name__}).",
            hint="fix the file: one `key: value` per line.",
        ) from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise TrainConfigError(
            f"'{path}' holds a {type(data).__name__}, not a mapping of keys to values.",
            hint="write one `key: value` per line.",
        )
    # YAML keys may be written as on the command line (learning-rate) or as fields (learning_rate).
    return {str(key).replace("-", "_"): value for key, value in data.items()}
