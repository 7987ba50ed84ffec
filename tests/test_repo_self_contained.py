"""The repository stands alone: nothing in it cites a file outside it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
SKIPPED_DIRS = {
    ".git",
    ".venv",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    "build",
    "dist",
    ".tools",
    "node_modules",
}
TEXT_SUFFIXES = {".py", ".toml", ".md", ".txt", ".cfg", ".json", ".yaml", ".yml", ".kt", ".swift"}
# A path that leaves the checkout (../something) or names the team's working notes beside it.
# Spelled in two parts so this file does not match itself.
OUTSIDE = re.compile(r"\.\./" + r"shared|(?<![\w.])shared[/](DESIGN|VERSIONS|STYLE)" + r"\.md")


def _repo_files():
    for path in ROOT.rglob("*"):
        if SKIPPED_DIRS.intersection(path.relative_to(ROOT).parts) or not path.is_file():
            continue
        if path.suffix in TEXT_SUFFIXES or path.parent.name == ".ci":
            yield path


def test_no_file_cites_a_file_outside_the_repository():
    files = list(_repo_files())
    assert len(files) > 50  # the walk really covers the package, tests and docs
    citing = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in files
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert citing == [], f"carry the fact into the repository instead: {citing}"


def test_the_pattern_catches_what_it_is_for():
    assert OUTSIDE.search("see ../" + "shared" + "/VERSIONS.md")
    assert OUTSIDE.search("Pins follow shared" + "/VERSIONS" + ".md: executorch")
    assert not OUTSIDE.search("an offset shared by every value")
