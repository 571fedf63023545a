#!/usr/bin/env bash
# One go on any machine with an NVIDIA GPU (a few minutes): is lrprune's CUDA build right,
# and how fast is it here?
#
#   scripts/gpu_check.sh [--binary PATH[.xz]] [--out DIR] [--no-torch]
#
# 1. takes the CUDA binary (--binary, $LRPRUNE_BIN, or scripts/build_cuda.sh's output;
#    builds it when there is none) and finds cuBLAS/cuDNN (toolkit or PyTorch's wheels);
# 2. runs experiments/gpu_check.toml and gpu_check_search.toml on cuda (a fresh process: its
#    start-up time is the kernel-loading stall a new machine sees) and on the CPU, and
#    compares every step file;
# 3. times experiments/gpu_check_224.toml (224²) on cuda;
# 4. lrprune bench --device cuda at fp32 and tf32, cuDNN's graph API (kernels by heuristics
#    and timed) and its legacy API:
#    conv per VGG16 layer vs PyTorch on this GPU (PyTorch side skipped with --no-torch or
#    when python3 has no torch);
# 5. prints one summary (also DIR/summary.txt) and exits non-zero if a check failed.
# Assets come from the cache ($LRPRUNE_CACHE); `lrprune fetch` fills it where there is
# internet. Nothing else is written outside DIR (default: a temporary folder).
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
bin="${LRPRUNE_BIN:-}"
out=""
torch=1
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --no-torch) torch=0; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
out="${out:-$(mktemp -d)}"
mkdir -p "$out"
summary="$out/summary.txt"
: > "$summary"
fail=0
say() { echo "$*" | tee -a "$summary"; }
check() { # check NAME OK(0/1) DETAIL
  if [ "$2" = 0 ]; then say "PASS  $1: $3"; else say "FAIL  $1: $3"; fail=1; fi
}
now() { date +%s.%N; }
secs() { python3 -c "print(f'{$2 - $1:.1f}')" 2>/dev/null || echo "?"; }

# -- the binary and its libraries ----------------------------------------------------------
command -v nvidia-smi >/dev/null || { echo "gpu_check: no nvidia-smi: is this a machine with an NVIDIA GPU?" >&2; exit 1; }
say "GPU: $(nvidia-smi --query-gpu=name,driver_version,compute_cap --format=csv,noheader | head -1)"
if [ -z "$bin" ]; then
  bin="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/lrprune/target-cuda}/release/lrprune"
  [ -x "$bin" ] || bin="$("$here/build_cuda.sh" | tail -1)" || { echo "gpu_check: build failed" >&2; exit 1; }
fi
case "$bin" in
  *.xz)
    plain="$out/lrprune"
    (xz -dc "$bin" 2>/dev/null || python3 -c 'import lzma,sys; sys.stdout.buffer.write(lzma.open(sys.argv[1]).read())' "$bin") > "$plain" \
      || { echo "gpu_check: cannot unpack $bin" >&2; exit 1; }
    chmod +x "$plain"; bin="$plain" ;;
esac
[ -x "$bin" ] || { echo "gpu_check: no binary at $bin" >&2; exit 1; }
# cuBLAS, cuRAND, NVRTC, cuDNN: a toolkit's, else the nvidia-* wheels next to PyTorch.
libdirs=""
for py in python3 /opt/torch/.venv/bin/python3; do
  d="$("$py" -c 'import nvidia, os; r = list(nvidia.__path__)[0]; print(" ".join(p for n in sorted(os.listdir(r)) for p in [os.path.join(r, n, "lib")] if os.path.isdir(p)))' 2>/dev/null)" || continue
  libdirs="$libdirs $d"
done
for d in $libdirs /usr/local/cuda/lib64 /usr/local/nvidia/lib64; do [ -d "$d" ] && LD_LIBRARY_PATH="$d:${LD_LIBRARY_PATH:-}"; done
export LD_LIBRARY_PATH
missing="$(ldd "$bin" | grep 'not found' || true)"
[ -z "$missing" ] || { echo "gpu_check: libraries not found for $bin:" >&2; echo "$missing" >&2; exit 1; }
say "binary: $bin ($("$bin" --version))"

# -- 2. the same sweeps on cuda and on the CPU ----------------------------------------------
# gpu_check.toml (lrp, lrp-oneshot, l1 to 90%), then gpu_check_search.toml (aa-lrp, 3 steps).
sweeps() { # DEVICE: both specs into $out/DEVICE, log $out/DEVICE.log
  "$bin" run "$repo/experiments/gpu_check.toml" --device "$1" --quiet --results-dir "$out/$1" > "$out/$1.log" 2>&1 \
    && "$bin" run "$repo/experiments/gpu_check_search.toml" --device "$1" --quiet --results-dir "$out/$1-search" >> "$out/$1.log" 2>&1
}
"$bin" fetch mobilenet-v2-imagenet mnist-5k > "$out/fetch.log" 2>&1 \
  || { cat "$out/fetch.log" >&2; echo "gpu_check: assets missing (fix: lrprune fetch on a machine with internet, then copy the cache, LRPRUNE_CACHE)" >&2; exit 1; }
t0="$(now)"
sweeps cuda
rc=$?; t1="$(now)"
check "sweeps on cuda" "$rc" "$(grep -c ': top1 ' "$out/cuda.log") runs in $(secs "$t0" "$t1") s (log: $out/cuda.log)"
ready="$(sed -n 's/.*first task ready.* \([0-9.]*\) s after start/\1/p' "$out/cuda.log" | head -1)"
dev="$(sed -n 's/^cuda: device 0 ready in \([0-9.]*\) s.*/\1/p' "$out/cuda.log" | head -1)"
stall=1; [ -n "$ready" ] && python3 -c "import sys; sys.exit(0 if $ready <= 5 else 1)" 2>/dev/null && stall=0
check "start-up" "$stall" "first task (data, head, step 0) ready ${ready:-?} s after the process started (device ${dev:-?} s); target ≤ 5 s"
t0="$(now)"
sweeps cpu
rc=$?; t1="$(now)"
check "sweeps on cpu" "$rc" "$(grep -c ': top1 ' "$out/cpu.log") runs in $(secs "$t0" "$t1") s"
for d in cuda cpu; do { "$bin" digest "$out/$d"; "$bin" digest "$out/$d-search"; } | sort > "$out/$d.digest"; done
same="$(comm -12 "$out/cuda.digest" "$out/cpu.digest" | wc -l)"
total="$(wc -l < "$out/cpu.digest")"
say "      step files identical on cuda and cpu: $same of $total"
# Runs that differ: how far apart (a near-tie in a ranking can fork a path; a bug moves
# every step). Needs pyarrow; without it only the digests are compared.
python3 - "$out" <<'EOF' > "$out/compare.txt" 2>&1
import glob, os, sys
import pyarrow.parquet as pq
out = sys.argv[1]
worst = 0.0
for a_dir, b_dir in [("cuda", "cpu"), ("cuda-search", "cpu-search")]:
    for a in sorted(glob.glob(os.path.join(out, a_dir, "steps", "*.parquet"))):
        b = os.path.join(out, b_dir, "steps", os.path.basename(a))
        ta, tb = pq.read_table(a).to_pydict(), pq.read_table(b).to_pydict()
        va, vb = ta["balanced_acc"], tb["balanced_acc"]
        d = max(abs(x - y) for x, y in zip(va, vb)) if len(va) == len(vb) else float("inf")
        first = next((i for i, (x, y) in enumerate(zip(va, vb)) if x != y), None)
        print(f"{os.path.basename(a)}: {len(va)} vs {len(vb)} steps, max |Δ balanced acc| {d:.4f}, first difference at step {first}")
        worst = max(worst, d)
print(f"WORST {worst:.4f}")
EOF
worst="$(sed -n 's/^WORST //p' "$out/compare.txt")"
if [ -n "$worst" ]; then
  ok=1; python3 -c "import sys; sys.exit(0 if $worst <= 0.05 else 1)" && ok=0
  check "cuda = cpu" "$ok" "$same of $total runs bit-identical; largest per-step |Δ balanced accuracy| $worst (≤ 0.05: near-ties may fork a path; $out/compare.txt)"
else
  ok=1; [ "$same" = "$total" ] && [ "$total" -gt 0 ] && ok=0
  check "cuda = cpu" "$ok" "$same of $total runs bit-identical (no pyarrow for the per-step differences)"
fi

# -- 3. 224² on cuda -------------------------------------------------------------------------
t0="$(now)"
"$bin" run "$repo/experiments/gpu_check_224.toml" --device cuda --quiet --results-dir "$out/cuda224" > "$out/cuda224.log" 2>&1
rc=$?; t1="$(now)"
check "224² sweep on cuda" "$rc" "$(grep -h ': top1 ' "$out/cuda224.log" | sed 's/.*(\(.*\))/\1/' | paste -sd ';') — $(secs "$t0" "$t1") s in all"

# -- 4. conv vs PyTorch -------------------------------------------------------------------------
targs=(); [ "$torch" = 1 ] && python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null || targs=(--no-torch)
# cuDNN's graph API (the default) with its heuristics' choice (deterministic) and timed once
# per shape; the legacy API's heuristic choice beside it for comparison.
for run in graph:heuristic graph:find legacy:heuristic; do
  api="${run%%:*}"; algo="${run#*:}"
  for p in fp32 tf32; do
    md="$out/gpu-$api-$algo-$p.md"
    LRPRUNE_CUDNN_API="$api" LRPRUNE_CUDNN_ALGO="$algo" "$bin" bench --device cuda --precision "$p" "${targs[@]}" \
      --script "$here/torch_reference.py" --out "$md" > "$out/bench-$api-$algo-$p.log" 2>&1
    rc=$?
    line="$(grep -h 'runs at' "$md" 2>/dev/null | sed 's/\*//g')"
    check "conv $p, $api API, $algo" "$rc" "${line:-no PyTorch ratio} ($md)"
  done
done

say ""
if [ "$fail" = 0 ]; then say "gpu_check: all checks passed"; else say "gpu_check: some checks FAILED (logs in $out)"; fi
exit "$fail"
