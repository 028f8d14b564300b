#!/bin/bash
# main job before (7b13e17) / after (perf), interleaved A B B A, alone on the machine
set -u
OUT=/work/timing/runs; mkdir -p $OUT
run() { # side tree venv tag
  local side=$1 tree=$2 py=$3 tag=$4
  cd $tree
  local t0=$(date +%s.%N) load=$(cut -d' ' -f1 /proc/loadavg)
  PYTHONPATH=$tree $py -c "import sys; from bench.cli import main; sys.exit(main())" run --models all --out $OUT/$tag --run-id r > $OUT/$tag.log 2>&1
  local rc=$?
  local t1=$(date +%s.%N)
  echo "$side $tag rc=$rc wall=$(echo "$t1 - $t0" | bc) load_before=$load load_after=$(cut -d' ' -f1 /proc/loadavg)" | tee -a $OUT/walls.txt
}
run before /tmp/before /work/main/.venv/bin/python b1
run after /work/wt/perf /work/wt/perf/.venv/bin/python a1
run after /work/wt/perf /work/wt/perf/.venv/bin/python a2
run before /tmp/before /work/main/.venv/bin/python b2
