#!/usr/bin/env bash
# grid.sh CORE QUEUE_FILE: a worker pinned to CORE. Repeatedly takes the first line
# "ROOTNAME COMMIT NAME RUN_ARGS..." of QUEUE_FILE whose cell is neither finished nor locked by a
# live worker and runs it with cell.sh; the file is read again after every cell (edit it any time).
# Start one worker per core:
#   nohup experiments/cpu_grid/grid.sh 0 experiments/cpu_grid/nw_ucla.txt > g0.log 2>&1 &
#   nohup experiments/cpu_grid/grid.sh 1 experiments/cpu_grid/nw_ucla.txt > g1.log 2>&1 &
# Then: python -m experiments.report --collect=$GRID_DIR/runs/nw_ucla_cpu --results=... (README).
CORE=$1; Q=$2
HERE=$(cd "$(dirname "$0")" && pwd)
GRID_DIR=${GRID_DIR:-$HOME/stgcn_grid}; export GRID_DIR
while true; do
  picked=""
  while read -r R C NAME ARGS; do
    [ -z "$R" ] || [ "${R:0:1}" = "#" ] && continue
    WD=$GRID_DIR/runs/$R/$NAME
    [ -f "$WD/results.json" ] && continue
    # The claim is a lock on fd 9, held by this worker and the cell it runs, released when they exit:
    # two workers started together cannot take the same cell, and a dead worker leaves no stale claim.
    mkdir -p "$WD"; exec 9>>"$WD/claim"
    if flock -n 9; then picked="$R $C $NAME $ARGS"; break; fi
    exec 9>&-
  done < "$Q"
  [ -z "$picked" ] && { echo "queue empty"; exit 0; }
  set -- $picked
  R=$1; C=$2; NAME=$3; shift 3
  GRID_ROOT=$R "$HERE/cell.sh" "$CORE" "$C" "$NAME" "$@"
  rc=$?
  if [ ! -f "$GRID_DIR/runs/$R/$NAME/results.json" ]; then
    echo "cell $NAME did not finish (rc $rc); worker stops"; exit 1
  fi
done
