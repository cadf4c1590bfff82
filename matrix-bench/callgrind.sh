#!/usr/bin/env bash
# Instructions per op of ours vs the system allocator, mimalloc and rlsf on pair64 and mixed (1 thread), counted by callgrind: stable
# on a noisy machine where nanoseconds are not.
#
#   matrix-bench/callgrind.sh            # OPS=500000 by default
#   OPS=2000000 TOP=20 matrix-bench/callgrind.sh
#
# Each contender × workload runs twice under callgrind, with OPS timed ops
# and with 0 (same setup, same warm-up and prefill, same teardown); the
# difference divided by OPS is the cost of one op, including the workload's
# own few instructions per op (random numbers, touching the block, the
# live-set vector), which are the same for every contender. The output
# files stay in target/callgrind/ for `callgrind_annotate --auto=yes`.
set -euo pipefail

OPS=${OPS:-500000}
TOP=${TOP:-12}
CONTENDERS=${CONTENDERS:-"ours system mimalloc rlsf"}
WORKLOADS=${WORKLOADS:-"pair64 mixed"}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
command -v valgrind >/dev/null || { echo "valgrind is not installed" >&2; exit 1; }
# The binary the bench's children run: LTO, one codegen unit (see lto.rs).
cargo build --profile bench-lto -p matrix-bench --bin matrix-bench >&2
bin="$root/target/bench-lto/matrix-bench"
out="$root/target/callgrind"
mkdir -p "$out"

# Total instructions (Ir) of one run under callgrind.
instructions() {
    local file=$1
    shift
    valgrind --tool=callgrind --callgrind-out-file="$file" "$bin" "$@" >/dev/null 2>"$file.log" || {
        echo "callgrind run failed: $bin $*" >&2
        cat "$file.log" >&2
        exit 1
    }
    awk '/^(summary|totals):/ { print $2; exit }' "$file"
}

printf '| workload | contender | Ir (%s ops) | Ir (0 ops) | instructions / op |\n' "$OPS"
printf '|---|---|---:|---:|---:|\n'
for workload in $WORKLOADS; do
    for contender in $CONTENDERS; do
        tag="$workload-$contender"
        args=(--single "$contender" "$workload" --warmup 0 --arena 64m --shm-name "matrix-bench-callgrind-$$-$tag")
        full=$(instructions "$out/$tag.out" "${args[@]}" --ops "$OPS")
        base=$(instructions "$out/$tag.zero.out" "${args[@]}" --ops 0)
        per_op=$(awk -v f="$full" -v b="$base" -v n="$OPS" 'BEGIN { printf "%.1f", (f - b) / n }')
        printf '| %s | %s | %s | %s | %s |\n' "$workload" "$contender" "$full" "$base" "$per_op"
    done
done

# Own instructions per source file (inlined code counts where it was
# written), N-op run minus 0-op run, divided by OPS.
by_file() {
    callgrind_annotate --inclusive=no --auto=no --threshold=100 "$1" 2>/dev/null |
        awk '/^ *[0-9,]+ \(/ && !/PROGRAM TOTALS/ {
                 ir = $1; gsub(",", "", ir)
                 loc = $0; sub(/^ *[0-9,]+ \( *[0-9.]+%\) +/, "", loc)
                 file = loc; sub(/:.*/, "", file)
                 sub(/^\/rustc\/[0-9a-f]+\/library\//, "std:", file)
                 sub(/^.*\/registry\/src\/[^\/]+\//, "", file)
                 cost[file] += ir
             }
             END { for (f in cost) print f, cost[f] }'
}

for workload in $WORKLOADS; do
    for contender in $CONTENDERS; do
        tag="$workload-$contender"
        echo
        echo "### $tag: instructions / op by source file (top $TOP)"
        echo
        echo '| source file | instructions / op |'
        echo '|---|---:|'
        join -a1 -e0 -o 0,1.2,2.2 <(by_file "$out/$tag.out" | sort) <(by_file "$out/$tag.zero.out" | sort) |
            awk -v n="$OPS" '{ printf "%s %.1f\n", $1, ($2 - $3) / n }' |
            sort -k2 -g -r | awk -v top="$TOP" 'NR <= top { printf "| %s | %s |\n", $1, $2 }'
    done
done
