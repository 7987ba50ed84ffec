#!/usr/bin/env bash
# The checks only an NVIDIA GPU can run, as one command for a CUDA machine that has PyTorch but
# no network (a lent or rented box whose image holds torch, transformers, accelerate, ...):
#   - the GPU-marked DreamBooth test (fp16 + LoRA + text encoder + 8-bit Adam + gradient
#     checkpointing, and a run killed after a checkpoint and resumed with the trainer's CUDA
#     defaults, fused AdamW and a compiled UNet, giving the unbroken run's losses and weights
#     bit for bit) and the classifier's (fp16 with gradient checkpointing learns and saves
#     float32 weights);
#   - benchmarks/bench_dreambooth_gpu.py: the SD 1.5 architecture at 512x512 with prior
#     preservation, seconds per step and peak GPU memory for each engine variant.
#
#   bash benchmarks/gpu_check.sh download WHEELS [PYTHON]  # where pip reaches PyPI: the wheels
#                                                          # such an image lacks, for its Python
#                                                          # (default 3.12)
#   bash benchmarks/gpu_check.sh run WHEELS OUT [test|bench [ARGS]]  # on the GPU machine,
#                                                          # from the repository root (default:
#                                                          # both; ARGS go to the benchmark,
#                                                          # e.g. --variant "edgekit defaults";
#                                                          # one OUT per part: each run rewrites
#                                                          # its results file)
#   bash benchmarks/gpu_check.sh rehearse WHEELS OUT       # the same plumbing on a CPU: the test
#                                                          # collected, the benchmark on tiny-sd
#
# `run` installs the wheels into a private folder put first on PYTHONPATH (the machine's torch and
# other packages stay as they are) and, before any GPU work, checks that every package training
# imports is there in the range pyproject.toml declares (torch and numpy excepted: their pins
# serve executorch and coremltools, which training does not load), so a missing wheel costs one
# line, not a lease. It writes OUT/gpu-test.log, OUT/bench.log and the benchmark's .json/.md
# (rewritten after each variant, so a run cut short keeps the rows it finished). Where one
# command's time is limited, run `test` and `bench` as two commands: the test compiles tiny-sd's
# UNet three times, the benchmark builds the 860M-parameter UNet five times and compiles it three.
set -euo pipefail

# What a CUDA PyTorch image usually lacks, at versions that work with the rest (pyproject.toml):
# diffusers is pinned there; pydantic and its core go as a pair; bitsandbytes 0.50 ships the
# CUDA 13 library; peft for the range edgekit declares.
WHEELS_NEEDED=(
    diffusers==0.42.1 importlib_metadata==10.2.0 zipp==4.1.2
    pydantic==2.11.10 pydantic-core==2.33.2 annotated-types==0.8.0 typing-inspection==0.4.2
    bitsandbytes==0.50.2 peft==0.21.2
)

usage() {
    # The first comment block's usage lines, up to the empty comment line after them.
    sed -n '/^#   bash /,/^#$/{/^#$/q;p}' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

[ $# -ge 2 ] || usage
mode=$1 wheels=$2

if [ "$mode" = download ]; then
    python=${3:-3.12}
    mkdir -p "$wheels"
    python3 -m pip download --quiet --no-deps --only-binary=:all: \
        --python-version "$python" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$wheels" "${WHEELS_NEEDED[@]}"
    du -sh "$wheels"
    exit 0
fi

[ $# -ge 3 ] || usage
out=$3 part=${4:-all}
bench_args=("${@:5}")
[ ${#bench_args[@]} -eq 0 ] || [ "$part" = bench ] || usage
case $mode in run | rehearse) ;; *) usage ;; esac
case $part in all | test | bench) ;; *) usage ;; esac
[ -f pyproject.toml ] && [ -d edgekit ] || { echo "run it from the repository root" >&2; exit 2; }
if ! ls "$wheels"/*.whl > /dev/null 2>&1; then
    echo "no wheels in $wheels: run 'download' first" >&2
    exit 2
fi
mkdir -p "$out"

site=$(mktemp -d /tmp/edgekit-gpu-site.XXXXXX)
trap 'rm -rf "$site"' EXIT
python3 -m pip install --quiet --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

python3 - "$mode" <<'EOF'
"""Before any GPU work: every package training imports, at a version pyproject.toml accepts."""
import importlib.metadata as metadata
import sys
import tomllib

from packaging.requirements import Requirement

needed = {"typer", "rich", "pydantic", "pyyaml", "safetensors", "pillow", "psutil",
          "transformers", "diffusers", "accelerate", "peft", "tensorboard"}
declared = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
problems = []
for requirement in map(Requirement, declared):
    if requirement.name.lower() not in needed:
        continue
    try:
        version = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        problems.append(f"{requirement.name} missing (carry its wheel: see 'download')")
        continue
    if not requirement.specifier.contains(version, prereleases=True):
        problems.append(
            f"{requirement.name} {version}, needs {requirement.specifier} (carry its wheel)"
        )
import importlib  # noqa: E402

import torch  # noqa: E402

# Installed is not enough: diffusers checks its own dependencies (requests, regex...) at import.
for module in ("diffusers", "transformers", "accelerate", "peft", "pydantic", "yaml", "typer"):
    try:
        importlib.import_module(module)
    except Exception as error:
        problems.append(f"{module} does not import: {str(error).splitlines()[0]}")
if sys.argv[1] == "run":
    if not torch.cuda.is_available():
        problems.append("torch sees no CUDA GPU")
    try:
        import bitsandbytes  # noqa: F401
    except Exception as error:  # its CUDA library not loading shows here, not as an ImportError
        problems.append(f"bitsandbytes does not load: {error}")
if problems:
    sys.exit("gpu_check: " + "; ".join(problems))
print(f"gpu_check: torch {torch.__version__}, "
      f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}; "
      "training packages in range")
EOF

# The GPU-marked tests of both trainers; addopts would deselect them (-m 'not gpu', xdist).
gpu_tests=(tests/test_train_dreambooth.py tests/test_train_classifier.py -m gpu -o addopts=""
    -p no:cacheprovider -ra)
status=0
if [ "$mode" = run ]; then
    if [ "$part" != bench ]; then
        python3 -m pytest "${gpu_tests[@]}" 2>&1 | tee "$out/gpu-test.log" || status=1
    fi
    if [ "$part" != test ]; then
        python3 benchmarks/bench_dreambooth_gpu.py --results-dir "$out" "${bench_args[@]}" 2>&1 \
            | tee "$out/bench.log" || status=1
    fi
else
    python3 -m pytest "${gpu_tests[@]}" --collect-only -q 2>&1 | tee "$out/gpu-test.log"
    python3 benchmarks/bench_dreambooth_gpu.py --base tiny-sd --resolution 64 --steps 3 \
        --warmup 1 --results-dir "$out" 2>&1 | tee "$out/bench.log"
fi
exit $status
