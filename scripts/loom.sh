#!/usr/bin/env bash
# Model-checks the lock-free cores of matrix-core with loom: every
# matrix-core/tests/loom_*.rs (tagged stack and ABA, bitmap hints, split,
# consolidation, recovery races). Under `--cfg loom` matrix-core swaps its
# atomics for loom's (src/sync.rs) and the models run the real engine on a
# ModelArena. A separate target directory keeps the normal build cached.
#
#   scripts/loom.sh                 # all models, LOOM_MAX_PREEMPTIONS=2
#   LOOM_MAX_PREEMPTIONS=3 scripts/loom.sh loom_recover
set -euo pipefail
cd "$(dirname "$0")/.."

export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target/loom}"

models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  for file in matrix-core/tests/loom_*.rs; do
    models+=("$(basename "$file" .rs)")
  done
fi

start=$(date +%s)
for model in "${models[@]}"; do
  echo "== $model (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS)"
  cargo test -p matrix-core --release --test "$model"
done
echo "== loom: ${#models[@]} model files passed in $(( $(date +%s) - start )) s"
