"""The demo apps' Swift and Kotlin sources parse, and the Swift core's tests read the contract.

No Swift toolchain exists on the Linux machines this suite runs on (and Gradle builds the
Android app only in CI), so this is the check that keeps a syntax error out of ios-demo/ and
android-demo/: every `.swift`, `.kt` and `.kts` file is parsed with tree-sitter's grammars for
the language, and any ERROR or MISSING node fails the test with file, line and the offending
text. Parsing is not compiling: types, imports and API use are checked only where a compiler
runs (`swift test` and `xcodebuild` on macOS, Gradle and the JVM test script for Kotlin).
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

import pytest

from edgekit import __version__
from edgekit.bench.schema import BENCH_SCHEMA_VERSION, ESTIMATORS

ROOT = Path(__file__).parent.parent
IOS_APP = ROOT / "ios-demo"
ANDROID_APP = ROOT / "android-demo"
CONTRACT = ROOT / "tests" / "contract"
SWIFT_CORE_TESTS = IOS_APP / "EdgekitCore" / "Tests" / "EdgekitCoreTests"
SKIPPED_DIRS = {".build", "build", ".gradle", "DerivedData", ".swiftpm"}
# Problems listed per file before "and N more": the first one is usually the cause.
MAX_LISTED_PROBLEMS = 5
SNIPPET_CHARS = 60
# The contract files the Swift core must test against: every JSON index of test vectors, and
# the tokenizer files an exported pipeline ships.
REQUIRED_CONTRACT_FILES = {
    "manifest.json",
    "preprocess/cases.json",
    "classify/cases.json",
    "tokenizer/cases.json",
    "tokenizer/vocab.json",
    "tokenizer/merges.txt",
    "scheduler/cases.json",
    "bench/samples.json",
}


@cache
def _parser(language: str):
    from tree_sitter import Language, Parser

    if language == "swift":
        import tree_sitter_swift as grammar
    else:
        import tree_sitter_kotlin as grammar
    return Parser(Language(grammar.language()))


def syntax_problems(source: bytes, language: str) -> list[str]:
    """'line L, column C: ERROR at `text`' (what could not be parsed) or 'MISSING x in `line`'
    (a token the grammar expected there) for every problem node, in source order. Only
    subtrees that contain an error are walked."""
    lines = source.decode("utf-8", "replace").splitlines()
    problems = []
    pending = [_parser(language).parse(source).root_node]
    while pending:
        node = pending.pop()
        if node.is_missing or node.is_error:
            line, column = node.start_point
            if node.is_missing:  # zero-width: show the line it is missing from
                text, what = lines[line] if line < len(lines) else "", f"MISSING {node.type} in"
            else:
                text, what = (
                    source[node.start_byte : node.end_byte].decode("utf-8", "replace"),
                    "ERROR at",
                )
            snippet = " ".join(text.split())[:SNIPPET_CHARS]
            problems.append((line + 1, column + 1, f"{what} `{snippet}`"))
            if node.is_missing:
                continue
        pending.extend(child for child in reversed(node.children) if child.has_error)
    return [f"line {line}, column {column}: {what}" for line, column, what in sorted(problems)]


def _sources(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.suffix in suffixes
        and path.is_file()
        and not SKIPPED_DIRS.intersection(path.relative_to(folder).parts)
    )


SWIFT_FILES = _sources(IOS_APP, (".swift",))
KOTLIN_FILES = _sources(ANDROID_APP, (".kt", ".kts"))


def _language(path: Path) -> str:
    return "swift" if path.suffix == ".swift" else "kotlin"


@pytest.mark.parametrize("path", SWIFT_FILES + KOTLIN_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_app_source_parses(path):
    problems = syntax_problems(path.read_bytes(), _language(path))
    listed = "\n  ".join(problems[:MAX_LISTED_PROBLEMS])
    more = len(problems) - MAX_LISTED_PROBLEMS
    assert not problems, (
        f"{path.relative_to(ROOT)} does not parse as {_language(path)}:\n  {listed}"
        + (f"\n  and {more} more" if more > 0 else "")
    )


def test_both_apps_have_sources_to_parse():
    # An empty parametrization would pass silently if the apps moved or a glob broke.
    assert any(p.parts[-2:] == ("EdgekitCore", "Package.swift") for p in SWIFT_FILES)
    assert any("EdgekitDemo" in p.parts for p in SWIFT_FILES)
    assert any(p.suffix == ".kt" for p in KOTLIN_FILES)
    assert any(p.suffix == ".kts" for p in KOTLIN_FILES)


@pytest.mark.parametrize(
    ("language", "source", "line", "text"),
    [
        (
            "swift",
            "struct A {\n    func f() -> Int {\n        let x = (1 + \n        return x\n"
            "    }\n}\n",
            3,
            "(1 +",
        ),
        ("swift", "import Foundation\nlet values = [1, 2\nprint(values)\n", 2, "[1, 2"),
        # The grammar notices the missing ")" where the next statement starts.
        ("kotlin", "fun main() {\n    val x = listOf(1, 2\n    println(x)\n}\n", 3, "println(x)"),
        ("kotlin", "class A {\n    fun f(: Int) = 1\n}\n", 2, "fun f(: Int)"),
    ],
    ids=["swift-open-paren", "swift-open-bracket", "kotlin-open-call", "kotlin-bad-param"],
)
def test_a_syntax_error_is_caught_with_its_line(language, source, line, text):
    problems = syntax_problems(source.encode(), language)
    assert problems, f"the {language} grammar accepted broken code"
    assert problems[0].startswith(f"line {line},"), problems
    assert any(text in problem for problem in problems), problems


def test_valid_sources_have_no_problems():
    # The same shapes as the broken snippets, fixed: the check does not flag correct code.
    assert syntax_problems(b"struct A {\n    func f() -> Int { (1 + 2) }\n}\n", "swift") == []
    assert syntax_problems(b"fun main() {\n    println(listOf(1, 2))\n}\n", "kotlin") == []


def _contract_references() -> dict[str, list[str]]:
    """Contract paths the Swift tests name in string literals, with the files naming them."""
    found: dict[str, list[str]] = {}
    # Contract.data("tokenizer/merges.txt"), Contract.decode(Cases.self, "bench/samples.json");
    # interpolated names ("preprocess/\(case.rgb)") come from the cases files themselves.
    literal = re.compile(r'Contract\.\w+\([^)"]*"([\w./-]+)"')
    for path in sorted(SWIFT_CORE_TESTS.glob("*.swift")):
        for name in literal.findall(path.read_text()):
            found.setdefault(name, []).append(path.name)
    return found


def test_swift_core_tests_read_contract_files_that_exist():
    references = _contract_references()
    missing = {name: files for name, files in references.items() if not (CONTRACT / name).is_file()}
    assert not missing, f"Swift tests name contract files that do not exist: {missing}"
    unread = sorted(REQUIRED_CONTRACT_FILES - set(references))
    assert not unread, f"no Swift test reads these contract files: {unread}"


def test_swift_core_finds_the_contract_folder_where_it_is():
    # Contract.swift climbs from its own path (#filePath) to the repository root.
    source = (SWIFT_CORE_TESTS / "Contract.swift").read_text()
    climbs = source.count(".deletingLastPathComponent()")
    relative = SWIFT_CORE_TESTS.relative_to(ROOT)
    assert climbs == len(relative.parts) + 1, (climbs, relative)  # the file name, then folders
    assert '.appendingPathComponent("tests")' in source
    assert '.appendingPathComponent("contract")' in source
    assert CONTRACT.is_dir()


def test_swift_report_writer_speaks_edgekits_bench_schema():
    source = (IOS_APP / "EdgekitCore" / "Sources" / "EdgekitCore" / "BenchReport.swift").read_text()
    assert f'static let schemaVersion = "{BENCH_SCHEMA_VERSION}"' in source
    assert f'static let edgekitVersion = "{__version__}"' in source
    missing = [key for key in ESTIMATORS if f'"{key}":' not in source]
    assert not missing, f"BenchReport.estimators lacks {missing}"
    schema = json.loads((ROOT / "edgekit" / "schemas" / "bench.schema.json").read_text())
    result_fields = schema["$defs"]["BenchResult"]["properties"]
    # Every key the Swift row writes is a field of the schema's result row.
    row = source[source.index("public struct Result") : source.index("public struct Pipeline")]
    keys = re.findall(r'= "(\w+)"', row[row.index("enum CodingKeys") :])
    assert keys and set(keys) <= set(result_fields), sorted(set(keys) - set(result_fields))
