#!/usr/bin/env bash
# The GPU acceptance run: one script, one GPU, within about 8 minutes on an H100-class device. Each check runs with
# its own timeout and exit code (a failure never stops the later checks); the script ends with one verdict line and
# writes OUTDIR/verdict.md, a table of every check. Without a CUDA device it fails at once, with that verdict.
#
#   bash benchmarks/gpu_accept.sh OUTDIR              # on the GPU machine
#   bash benchmarks/gpu_accept.sh OUTDIR --dry-run    # anywhere: lists every check; each `bench run` is validated
#                                                     # by `bench run --dry-run` (all in one process, on the CPU,
#                                                     # tf32 checked as fp32: it needs CUDA), each other check by
#                                                     # its own --dry-run
# What each check proves, and what has been verified where: docs/gpu.md.
set -uo pipefail
out=${1:?usage: gpu_accept.sh OUTDIR [--dry-run]}
dry=0
[ "${2:-}" = "--dry-run" ] && dry=1
[ $# -le 2 ] && { [ $# -lt 2 ] || [ $dry -eq 1 ]; } || { echo "error: usage: gpu_accept.sh OUTDIR [--dry-run]" >&2; exit 2; }
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here" || exit 2
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python=${PYTHON:-python}
mkdir -p "$out/logs" "$out/runs" || { echo "error: cannot create $out" >&2; exit 2; }
table="$out/checks.tsv"
pending="$out/pending.tsv"  # dry run: the `bench run` commands, validated together at the end
: >"$table"
: >"$pending"
failed=0
total=0

show() {  # one row of the table: NAME RESULT RC SECONDS COMMAND
    printf '%-24s %-6s rc=%-3s %4s s  %s\n' "$@"
}

# check NAME TIMEOUT_S KIND ARGS... : KIND bench runs `bench run ARGS`, KIND py runs benchmarks/gpu_checks.py ARGS.
check() {
    local name=$1 limit=$2 kind=$3
    shift 3
    local cmd
    total=$((total + 1))
    if [ "$kind" = bench ]; then
        cmd=(--out "$out/runs" --run-id "$name" --device cuda "$@")
        if [ $dry -eq 1 ]; then  # validated later, with the others, on the CPU
            local args=("${cmd[@]/#cuda/cpu}")
            args=("${args[@]/#tf32/fp32}")
            (IFS=$'\t'; echo "$name"$'\t'"${args[*]}") >>"$pending"
            printf '%s\t%s\t%s\t%s\t%s\n' "$name" PENDING - 0 "bench run ${args[*]} --dry-run" >>"$table"
            return 0
        fi
        cmd=("$python" -m bench run "${cmd[@]}")
    else
        cmd=("$python" benchmarks/gpu_checks.py "$@")
        [ $dry -eq 1 ] && cmd+=(--dry-run)
    fi
    local start=$SECONDS rc
    timeout --kill-after=10 "$limit" "${cmd[@]}" >"$out/logs/$name.log" 2>&1
    rc=$?
    local took=$((SECONDS - start)) result=PASS
    [ $rc -eq 0 ] || result=FAIL
    [ $rc -eq 124 ] && result="FAIL (timeout ${limit} s)"
    [ $rc -eq 0 ] || failed=$((failed + 1))
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$result" "$rc" "$took" "${cmd[*]}" >>"$table"
    [ $dry -eq 1 ] || show "$name" "$result" "$rc" "$took" "${cmd[*]}"
    return $rc
}

validate_pending() {  # dry run: every `bench run` command with --dry-run, in one process; the table completed
    RERANK_BENCH_PLUGINS=benchmarks.gpu_accept_models timeout 600 \
        "$python" benchmarks/gpu_checks.py validate "$pending" "$out/logs" >"$out/validated.tsv" 2>"$out/logs/validate.log"
    local rows
    rows=$(awk -F'\t' -v OFS='\t' 'NR == FNR { rc[$1] = $2; next }
        $2 == "PENDING" { $2 = ($1 in rc && rc[$1] == 0) ? "PASS" : "FAIL"; $3 = ($1 in rc) ? rc[$1] : "none" } 1' \
        "$out/validated.tsv" "$table")
    printf '%s\n' "$rows" >"$table"
    failed=$(awk -F'\t' '$2 != "PASS"' "$table" | wc -l)
    while IFS=$'\t' read -r name result rc took cmd; do
        show "$name" "$result" "$rc" "$took" "$cmd"
    done <"$table"
}

verdict() {  # writes verdict.md and prints the one verdict line
    local line
    [ $dry -eq 1 ] && validate_pending
    if [ $dry -eq 1 ]; then
        line="DRY RUN: $total checks listed, $failed with invalid arguments"
    elif [ $failed -eq 0 ]; then
        line="VERDICT: PASS ($total of $total checks passed)"
    else
        line="VERDICT: FAIL ($failed of $total checks failed)"
    fi
    {
        echo "# GPU acceptance: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
        echo
        echo "$line"
        echo
        echo "| check | result | exit code | seconds | command |"
        echo "|---|---|---|---|---|"
        while IFS=$'\t' read -r name result rc took cmd; do
            echo "| $name | $result | $rc | $took | \`$cmd\` |"
        done <"$table"
        echo
        echo "Logs: logs/<check>.log; records: runs/<check>/; nvidia-smi before and after: smi.jsonl."
    } >"$out/verdict.md"
    echo "$line"
}

smoke=(--profile smoke --executor process)
if ! check cuda 60 py cuda && [ $dry -eq 0 ]; then
    verdict
    exit 1
fi
check smi-before 30 py smi "$out/smi.jsonl" --label before
check data-identity 180 py data --device cuda
check no-host-sync 240 py probe --device cuda
check flops-cpu-equals-cuda 180 py flops --device cuda
for precision in fp32 bf16; do
    check "smoke-$precision" 300 bench "${smoke[@]}" --models all --precision "$precision"
    check "records-smoke-$precision" 60 py records "$out/runs/smoke-$precision"
done
check smoke-tf32 180 bench "${smoke[@]}" --models transformer,mlp,dlcm,seq2slate --precision tf32
check records-smoke-tf32 60 py records "$out/runs/smoke-tf32"
check compile-two-batch-sizes 300 bench "${smoke[@]}" --models transformer,mlp --compile --batch-sizes 64,256
check records-compile 60 py records "$out/runs/compile-two-batch-sizes"
for precision in fp32 bf16; do
    check "seed-$precision" 300 bench --profile seed --epochs 2 --models transformer,mlp --precision "$precision" \
        --executor process
    check "records-seed-$precision" 60 py records "$out/runs/seed-$precision"
done
# An out-of-memory cell, then a good one, in fresh processes and in one process (the inline executor): the first
# is recorded oom and the second ok.
export RERANK_BENCH_PLUGINS=benchmarks.gpu_accept_models
for executor in process inline; do
    check "oom-then-ok-$executor" 180 bench --profile smoke --executor "$executor" --models accept-oom,mlp
    check "records-oom-$executor" 60 py records "$out/runs/oom-then-ok-$executor" --oom accept-oom
done
unset RERANK_BENCH_PLUGINS
check smi-after 30 py smi "$out/smi.jsonl" --label after
verdict
[ $failed -eq 0 ]
