#!/usr/bin/env bash
# Compile the pure-Kotlin core (dev.edgekit.core) and its unit tests with kotlinc and run them
# with JUnit 4 in one JVM: no Gradle, no Android SDK, no network. The tests read the contract
# vectors in tests/contract (written by `python -m tests.contract.generate`).
#
# Tools, each overridable by an environment variable:
#   KOTLIN_HOME  the Kotlin compiler distribution (default: .tools/node_modules/kotlin-compiler,
#                from `npm install --prefix .tools kotlin-compiler@2.4.20`)
#   GSON_JAR     default /usr/share/java/gson.jar (Debian: apt-get install libgoogle-gson-java)
#   JUNIT_JAR, HAMCREST_JAR  default: junit 4.13.2 and hamcrest-core 1.3 in ~/.m2/repository,
#                else Debian's (apt-get install junit4)
#   EDGEKIT_REPORT_OUT  where the bench-report test writes its report (default: a temp folder)
#   EDGEKIT_CORE_BUILD  build folder (default: a temporary folder, removed afterwards)
set -euo pipefail

core="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$core/../.." && pwd)"
KOTLIN_HOME="${KOTLIN_HOME:-$repo/.tools/node_modules/kotlin-compiler}"
M2="${M2_REPOSITORY:-$HOME/.m2/repository}"
GSON_JAR="${GSON_JAR:-/usr/share/java/gson.jar}"
# JUnit 4 from the local Maven repository, else from Debian's junit4 package.
first_file() { for f in "$@"; do [ -f "$f" ] && { echo "$f"; return; }; done; echo "$1"; }
JUNIT_JAR="${JUNIT_JAR:-$(first_file "$M2/junit/junit/4.13.2/junit-4.13.2.jar" /usr/share/java/junit4.jar)}"
HAMCREST_JAR="${HAMCREST_JAR:-$(first_file "$M2/org/hamcrest/hamcrest-core/1.3/hamcrest-core-1.3.jar" /usr/share/java/hamcrest-core.jar)}"

missing=()
[ -x "$KOTLIN_HOME/bin/kotlinc" ] || missing+=("kotlinc at $KOTLIN_HOME/bin/kotlinc (npm install --prefix .tools kotlin-compiler@2.4.20, or set KOTLIN_HOME)")
command -v java >/dev/null 2>&1 || missing+=("java (a JDK 17: apt-get install openjdk-17-jdk-headless)")
[ -f "$GSON_JAR" ] || missing+=("Gson at $GSON_JAR (apt-get install libgoogle-gson-java, or set GSON_JAR)")
[ -f "$JUNIT_JAR" ] || missing+=("JUnit 4 at $JUNIT_JAR (set JUNIT_JAR)")
[ -f "$HAMCREST_JAR" ] || missing+=("hamcrest-core at $HAMCREST_JAR (set HAMCREST_JAR)")
if [ ${#missing[@]} -gt 0 ]; then
    for item in "${missing[@]}"; do echo "jvm-test.sh: missing $item" >&2; done
    exit 3
fi

lib="$KOTLIN_HOME/lib"
test_libs="$GSON_JAR:$JUNIT_JAR:$HAMCREST_JAR:$lib/kotlin-test.jar:$lib/kotlin-test-junit.jar"
if [ -n "${EDGEKIT_CORE_BUILD:-}" ]; then
    build="$EDGEKIT_CORE_BUILD"
    rm -rf "$build/classes"
else
    build="$(mktemp -d)"
    trap 'rm -rf "$build"' EXIT
fi
mkdir -p "$build/classes"

# One kotlinc run for core and tests (each kotlinc start costs ~10 s of JVM warm-up).
started=$(date +%s)
"$KOTLIN_HOME/bin/kotlinc" -jvm-target 17 -nowarn -cp "$test_libs" -d "$build/classes" \
    "$core/src/main/kotlin" "$core/src/test/kotlin"
compiled=$(date +%s)

tests=$(cd "$core/src/test/kotlin" && find . -name '*Test.kt' | sed 's|^\./||; s|\.kt$||; s|/|.|g' | sort)
report_out="${EDGEKIT_REPORT_OUT:-$build/bench-report.json}"
java -Xshare:auto -cp "$build/classes:$lib/kotlin-stdlib.jar:$test_libs" \
    -Dedgekit.contract.dir="$repo/tests/contract" \
    -Dedgekit.report.out="$report_out" \
    org.junit.runner.JUnitCore $tests
echo "jvm-test.sh: compiled in $((compiled - started)) s, tests ran in $(($(date +%s) - compiled)) s"
