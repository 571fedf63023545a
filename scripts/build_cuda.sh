#!/usr/bin/env bash
# Builds lrprune with CUDA + cuDNN, on a machine with or without a GPU or a CUDA toolkit.
#
#   scripts/build_cuda.sh [--compute-cap 90] [--cuda 13.0] [--no-aot] [--check | --clippy]
#
# What it does, and why (scripts/cuda/README.md has the long form):
# 1. Finds nvcc. Without a toolkit it installs nvcc, the runtime headers, cuBLAS, cuRAND,
#    NVRTC and cuDNN from PyPI into a venv ($LRPRUNE_CUDA_VENV, default
#    ~/.cache/lrprune/cuda-venv). nvcc must not be newer than the GPU's driver: the CUDA
#    version defaults to the one `nvidia-smi` reports, else 13.0.
# 2. Links against stubs: the driver's libcuda.so.1 is generated from cudarc's bindings when
#    no driver is installed (the real one is loaded at run time).
# 3. Unless --no-aot: patches candle-kernels and candle-core (scripts/cuda/*.patch) so that
#    Candle's kernels ship as SASS for the target GPU, with the PTX kept as fallback: no
#    JIT stall when a fresh machine first runs a kernel.
# 4. cargo build --release --features cudnn into $CARGO_TARGET_DIR (default
#    ~/.cache/lrprune/target-cuda), leaving Cargo.lock as it was; prints the binary's path.
# --check runs `cargo check` instead of the build (CI's guard that the feature compiles);
# --clippy runs `cargo clippy -D warnings` on the CUDA-only code.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cache="${LRPRUNE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lrprune}"
cap="${CUDA_COMPUTE_CAP:-}"
cuda=""
aot=1
mode=build
while [ $# -gt 0 ]; do
  case "$1" in
    --compute-cap) cap="$2"; shift 2 ;;
    --cuda) cuda="$2"; shift 2 ;;
    --no-aot) aot=0; shift ;;
    --check) mode=check; shift ;;
    --clippy) mode=clippy; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "build_cuda.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done

say() { echo "build_cuda: $*" >&2; }
die() { echo "build_cuda: error: $*" >&2; exit 1; }

# -- 1. the toolkit ---------------------------------------------------------------------
if [ -z "$cap" ] && command -v nvidia-smi >/dev/null 2>&1; then
  cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')" || true
fi
if [ -z "$cap" ]; then
  cap=90
  say "no GPU seen and no --compute-cap: building SASS for sm_90 (H100/H200); other GPUs JIT the PTX"
fi
case "$cap" in (*[!0-9a-z]*|'') die "--compute-cap '$cap' must look like 80, 86, 89 or 90" ;; esac
if [ -z "$cuda" ] && command -v nvidia-smi >/dev/null 2>&1; then
  cuda="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9]*\.[0-9]*\).*/\1/p' | head -1)" || true
fi
cuda="${cuda:-13.0}"
major="${cuda%%.*}"

if [ -n "${CUDA_HOME:-}" ] && [ -x "$CUDA_HOME/bin/nvcc" ]; then
  say "toolkit: $CUDA_HOME (from CUDA_HOME)"
elif command -v nvcc >/dev/null 2>&1; then
  CUDA_HOME="$(cd "$(dirname "$(command -v nvcc)")/.." && pwd)"
  say "toolkit: $CUDA_HOME (nvcc on PATH)"
else
  venv="${LRPRUNE_CUDA_VENV:-$cache/cuda-venv}"
  if [ ! -x "$venv/bin/python" ]; then
    say "no nvcc: installing CUDA $cuda's compiler and libraries from PyPI into $venv"
    python3 -m venv "$venv" || die "python3 -m venv failed (fix: apt install python3-venv)"
  fi
  "$venv/bin/pip" install -q "nvidia-cuda-nvcc==$cuda.*" "nvidia-cuda-runtime==$cuda.*" \
    "nvidia-cuda-cccl==$cuda.*" "nvidia-cuda-crt==$cuda.*" "nvidia-cuda-nvrtc==$cuda.*" \
    "nvidia-nvvm==$cuda.*" \
    "nvidia-cublas==$cuda.*" "nvidia-curand" "nvidia-cudnn-cu$major" \
    || die "pip could not install CUDA $cuda from PyPI (fix: --cuda X.Y with a version PyPI has)"
  site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  CUDA_HOME="$site/nvidia/cu$major"
  [ -x "$CUDA_HOME/bin/nvcc" ] || die "no nvcc under $CUDA_HOME after the install"
  extra_libs="$site/nvidia/cudnn/lib"
fi
export CUDA_HOME CUDA_PATH="$CUDA_HOME" CUDA_COMPUTE_CAP="$cap"
export PATH="$CUDA_HOME/bin:$PATH"
say "nvcc $("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), sm_$cap"

# -- 2. link stubs ----------------------------------------------------------------------
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target-cuda}"
stubs="$CARGO_TARGET_DIR/cuda-link"
mkdir -p "$stubs"
# Unversioned names for the linker, pointing at whatever versioned library is found.
for lib in cublas cublasLt curand nvrtc cudart cudnn; do
  found="$(find "$CUDA_HOME/lib" "$CUDA_HOME/lib64" ${extra_libs:-} /usr/lib/x86_64-linux-gnu \
    -maxdepth 1 -name "lib$lib.so*" 2>/dev/null | sort | head -1)" || true
  [ -n "$found" ] || die "lib$lib.so not found under $CUDA_HOME (fix: install it, or unset CUDA_HOME to use PyPI)"
  ln -sf "$found" "$stubs/lib$lib.so"
done
if ldconfig -p 2>/dev/null | grep -q 'libcuda\.so\.1 '; then
  say "driver: linking the installed libcuda.so.1"
else
  # No driver here: a stub with every driver entry point cudarc declares, soname
  # libcuda.so.1, so that the binary loads the real driver on the GPU machine.
  registry="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ | head -1)"
  (cd "$repo" && cargo fetch -q)
  sysrs="$(ls -d "$registry"/cudarc-*/src/driver/sys/mod.rs | sort -V | tail -1)"
  grep -o 'pub unsafe fn cu[A-Za-z0-9_]*' "$sysrs" | sed 's/pub unsafe fn \(.*\)/void \1(void) {}/' \
    | sort -u > "$stubs/libcuda_stub.c"
  cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda_stub.c"
  say "driver: none here, linking a stub ($(wc -l < "$stubs/libcuda_stub.c") entry points)"
fi
export RUSTFLAGS="${RUSTFLAGS:-} -L native=$stubs"

# -- 3. Candle's kernels ahead of time ----------------------------------------------------
patch_args=()
if [ "$aot" = 1 ]; then
  registry="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ | head -1)"
  (cd "$repo" && cargo fetch -q)
  for p in "$here"/cuda/*.patch; do
    crate="$(basename "$p" .patch)"            # e.g. candle-core-0.11.1
    name="${crate%-*}"
    dst="$CARGO_TARGET_DIR/patched/$crate"
    stamp="$dst/.lrprune-patch.sha256"
    want="$(sha256sum "$p" | cut -d' ' -f1)"
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
      [ -d "$registry/$crate" ] || die "$crate is not in the cargo registry (Cargo.lock moved on? fix: refresh scripts/cuda/$crate.patch)"
      rm -rf "$dst"; mkdir -p "$(dirname "$dst")"; cp -r "$registry/$crate" "$dst"
      (cd "$dst" && patch -s -p2 < "$p") || die "scripts/cuda/$crate.patch does not apply"
      echo "$want" > "$stamp"
    fi
    patch_args+=(--config "patch.crates-io.$name.path=\"$dst\"")
  done
  say "Candle kernels: SASS for sm_$cap ahead of time (PTX kept as fallback)"
fi

# -- 4. build -----------------------------------------------------------------------------
cd "$repo"
cp Cargo.lock "$CARGO_TARGET_DIR/Cargo.lock.orig"
trap 'cp "$CARGO_TARGET_DIR/Cargo.lock.orig" "$repo/Cargo.lock"' EXIT
if [ "$mode" = check ]; then
  cargo check --release --features cudnn "${patch_args[@]}"
  say "cargo check --features cudnn passed"
elif [ "$mode" = clippy ]; then
  cargo clippy --release --features cudnn "${patch_args[@]}" -- -D warnings
  say "cargo clippy --features cudnn passed"
else
  cargo build --release --features cudnn "${patch_args[@]}"
  bin="$CARGO_TARGET_DIR/release/lrprune"
  say "built $bin"
  echo "$bin"
fi
