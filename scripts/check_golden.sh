#!/usr/bin/env bash
# Rerun the quickstart into a temporary folder and compare every run's step rows (all
# columns but wall_ms) with the committed digests (those of aa-lrp written when its default
# was re-chosen in #13, the others by the code before the graph model).
# Usage: scripts/check_golden.sh [SPEC [DIGESTS]]   (defaults: the quickstart)
set -euo pipefail
cd "$(dirname "$0")/.."
spec="${1:-experiments/quickstart.toml}"
want="${2:-tests/fixtures/golden/quickstart.digest}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo run --release --quiet -- run "$spec" --quiet --results-dir "$out/results" >/dev/null
cargo run --release --quiet -- digest "$out/results" > "$out/got.digest"
if diff -u "$want" "$out/got.digest"; then
  echo "golden: $(wc -l < "$want") runs of $spec reproduce the committed step rows"
else
  echo "golden: $spec differs from $want (see the diff above)" >&2
  exit 1
fi
