"""Reading bench reports from files (`edgekit bench ingest`, `bench compare`, report folders).

A report may come from a phone (the demo apps), another machine or an older edgekit, so nothing
is trusted: the file must be JSON, say the schema version this edgekit reads, and pass both the
committed JSON Schema (what the demo apps validate against) and the pydantic model. Every
failure is one line naming the file and, for fields, their JSON path.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edgekit.bench.html import DATA_DIR, report_key, write_report_folder
from edgekit.bench.schema import BENCH_SCHEMA_VERSION, SCHEMA_PATH, BenchReport
from edgekit.errors import BenchReportError

log = logging.getLogger(__name__)

# Versions this edgekit reads. A major version changes field meanings (1.x had flat results
# without status, batch or samples), so older files are refused rather than half-read.
READABLE_VERSIONS = ("2.0", BENCH_SCHEMA_VERSION)  # 2.1 only added optional fields
# Field problems listed in the one-line error; the count of the rest follows.
MAX_LISTED_PROBLEMS = 5
_RERUN_HINT = "re-run the demo app's benchmark with an app built from this edgekit version."


def load_report(path: Path) -> BenchReport:
    data = _read_json(path)
    _check_version(path, data)
    problems = _schema_problems(data)
    if not problems:
        try:
            return BenchReport.model_validate(data)
        except ValidationError as exc:
            problems = [_pydantic_problem(error) for error in exc.errors()]
    listed = "; ".join(problems[:MAX_LISTED_PROBLEMS])
    if len(problems) > MAX_LISTED_PROBLEMS:
        listed += f"; and {len(problems) - MAX_LISTED_PROBLEMS} more"
    raise BenchReportError(
        f"'{path}' is not a valid bench report: {listed}.",
        hint=f"bench schema {BENCH_SCHEMA_VERSION} is edgekit/schemas/bench.schema.json in the "
        "edgekit package; reports from `edgekit bench --json` and the demo apps follow it.",
    )


def _read_json(path: Path) -> dict[str, Any]:
    hint = "pass the JSON file that `edgekit bench --json` or a demo app's benchmark wrote."
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise BenchReportError(f"Bench report '{path}' does not exist.", hint=hint) from exc
    except UnicodeDecodeError as exc:
        raise BenchReportError(f"'{path}' is not JSON (not UTF-8 text).", hint=hint) from exc
    except OSError as exc:
        raise BenchReportError(
            f"Cannot read bench report '{path}': {exc.strerror or exc}.", hint=hint
        ) from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchReportError(
            f"'{path}' is not JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}.",
            hint=hint,
        ) from exc
    if not isinstance(data, dict):
        raise BenchReportError(
            f"'{path}' holds a JSON {type(data).__name__}, not a bench report (a JSON object).",
            hint=hint,
        )
    return data


def _check_version(path: Path, data: dict[str, Any]) -> None:
    readable = ", ".join(READABLE_VERSIONS)
    if "schema_version" not in data:
        raise BenchReportError(
            f"'{path}' has no schema_version, so it is not a bench report this edgekit reads "
            f"(bench schema {readable}).",
            hint=_RERUN_HINT,
        )
    version = data["schema_version"]
    if not isinstance(version, str):
        raise BenchReportError(
            f"'{path}' has schema_version {json.dumps(version)} ({type(version).__name__}); "
            f'expected the string "{BENCH_SCHEMA_VERSION}".',
            hint=_RERUN_HINT,
        )
    if version not in READABLE_VERSIONS:
        raise BenchReportError(
            f"'{path}' is bench schema {version}; edgekit reads {readable}.", hint=_RERUN_HINT
        )


@cache
def _validator():
    """The committed schema's validator, or None without jsonschema (pydantic still checks the
    same model the schema was generated from)."""
    try:
        import jsonschema
    except ImportError:
        log.debug("jsonschema is not installed: validating with the pydantic model only")
        return None
    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


def _schema_problems(data: dict[str, Any]) -> list[str]:
    validator = _validator()
    if validator is None:
        return []
    from jsonschema.exceptions import best_match

    # best_match descends into anyOf branches ("null or a number") to the error that matters.
    return sorted(_schema_problem(best_match([error])) for error in validator.iter_errors(data))


def _json_path(parts) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _schema_problem(error) -> str:
    path = list(error.absolute_path)
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        return "; ".join(f"missing required field {_json_path([*path, m])}" for m in missing)
    shown = json.dumps(error.instance)
    shown = shown if len(shown) <= 40 else shown[:37] + "..."
    if error.validator == "type":
        return f"{_json_path(path)} is {shown}, expected {error.validator_value}"
    if error.validator in {"enum", "const"}:
        allowed = error.validator_value
        allowed = ", ".join(map(str, allowed)) if isinstance(allowed, list) else str(allowed)
        return f"{_json_path(path)} is {shown}, expected one of: {allowed}"
    return f"{_json_path(path)}: {error.message}"


def _pydantic_problem(error: dict[str, Any]) -> str:
    path = _json_path(error["loc"])
    if error["type"] == "missing":
        return f"missing required field {path}"
    return f"{path}: {error['msg']}"


# ---------------------------------------------------------------------------------------------
# Report folders


@dataclass
class MergeResult:
    index_html: Path
    added: int  # reports new to the folder
    total: int  # reports the page now shows


def read_report_folder(folder: Path) -> list[BenchReport]:
    """The reports a folder's page was built from (`data/*.json`), oldest name first."""
    return [load_report(path) for path in sorted((folder / DATA_DIR).glob("*.json"))]


def merge_into_folder(folder: Path, reports: list[BenchReport]) -> MergeResult:
    """Add reports to a report folder (created if missing) and rebuild its page. A report
    already there (same content) is not added twice."""
    existing = read_report_folder(folder) if folder.is_dir() else []
    known = {report_key(report) for report in existing}
    added = []
    for report in reports:
        key = report_key(report)
        if key not in known:
            known.add(key)
            added.append(report)
    index = write_report_folder(folder, existing + added)
    return MergeResult(index_html=index, added=len(added), total=len(existing) + len(added))


def ingest(path: Path, report_folder: Path) -> MergeResult:
    """Validate a report file (a device run, another machine), then merge it into a folder."""
    return merge_into_folder(report_folder, [load_report(path)])
