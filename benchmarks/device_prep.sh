#!/usr/bin/env bash
# One-time local preparation for a GPU lease (benchmarks/DEVICE.md): puts NeMo's wheel (and einops,
# which our CPU venv lacks) into .devicecarry/, git-ignored through .git/info/exclude, checks what
# will travel against the device tool's 64 MiB, then dry-runs benchmarks/cuda_device.py on this CPU.
#   benchmarks/device_prep.sh [--no-dry-run]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
CARRY=.devicecarry
# name, version, sha256 of the wheel (pinned: the GPU machine runs exactly this NeMo source)
WHEELS=(
  "nemo-toolkit 3.0.0 nemo_toolkit-3.0.0-py3-none-any.whl f1d8238e35909464cf426e5792af3113a7060de419f194b83bedd81cbe909394"
  "einops 0.8.2 einops-0.8.2-py3-none-any.whl 54058201ac7087911181bfec4af6091bb59380360f069276601256a76af08193"
)

mkdir -p "$CARRY"
exclude=$(git rev-parse --git-path info/exclude)
mkdir -p "$(dirname "$exclude")"
grep -qxF "/$CARRY/" "$exclude" 2>/dev/null || echo "/$CARRY/" >>"$exclude"

for w in "${WHEELS[@]}"; do
  read -r name version file sha <<<"$w"
  if [ ! -f "$CARRY/$file" ]; then
    "$PY" -m pip download -q --no-deps "$name==$version" -d "$CARRY"
  fi
  echo "$sha  $CARRY/$file" | sha256sum -c --quiet - || { echo "$CARRY/$file: sha256 differs from the pinned one" >&2; exit 1; }
done
# einops as a package folder (nemo_from_wheel.ensure_einops loads it from beside the NeMo wheel, if the image lacks it)
"$PY" -m zipfile -e "$CARRY/einops-0.8.2-py3-none-any.whl" "$CARRY/"

# what the device tool sends: tracked + untracked-not-ignored files, plus the carried folder
tree=$(git ls-files -co --exclude-standard -z | du -cb --files0-from=- 2>/dev/null | tail -1 | cut -f1)
carry=$(du -sb "$CARRY" | cut -f1)
total=$((tree + carry))
echo "travels: working tree $((tree / 1024)) KiB + $CARRY $((carry / 1024)) KiB = $((total / 1048576)) MiB (limit 64 MiB)"
[ "$total" -lt $((60 * 1048576)) ] || { echo "too large for the device tool: ignore or remove something first" >&2; exit 1; }

if [ "${1:-}" != "--no-dry-run" ]; then
  # the same script the GPU machine runs, on this CPU, reduced width: every step, less the CUDA-only parts
  PYTHONUNBUFFERED=1 "$PY" benchmarks/cuda_device.py --out cache/cuda-device-dryrun --device cpu --tiny --budget-s 60
  echo "dry run passed; reports in cache/cuda-device-dryrun/"
fi
