#!/usr/bin/env bash
# cell.sh CORE COMMIT NAME RUN_ARGS... : one `experiments.run` of a CPU grid, pinned to core CORE
# (one run per core, XLA single-threaded by the pinning), at high priority over other work, from a
# git worktree of COMMIT (edits on the checkout never change a running cell). Skips a finished cell;
# records launch.json (commit, command, core, CPU, allocator) and appends the launch's wall time to
# sweep_times.json (what experiments.report sums). A stopped cell resumes from its checkpoints.
# The cell runs at nice -10 so that other work on the machine (tests, edits) slows it little; on a
# kernel with autogroup scheduling, nice acts only within one terminal session unless autogroup is
# off (as root: echo 0 > /proc/sys/kernel/sched_autogroup_enabled).
#   GRID_DIR   where worktrees and runs live (default ~/stgcn_grid)
#   GRID_ROOT  the runs' folder under $GRID_DIR/runs (default nw_ucla_cpu)
#   PYTHON     the interpreter with the project's dependencies (default: the checkout's .venv)
#   CELL_NICE  the cell's nice level (default -10). 19 lends the core to development work: the cell
#              then runs only in the core's idle time (its wall time in sweep_times.json grows).
# Never edit this file (or grid.sh) in place while cells run: bash reads a running script as it
# goes, so a running cell would read the edited bytes. Write a new file and rename it over this one.
set -u
CORE=$1; C=$2; NAME=$3; shift 3
REPO=$(cd "$(dirname "$0")/../.." && pwd)
GRID_DIR=${GRID_DIR:-$HOME/stgcn_grid}; GRID_ROOT=${GRID_ROOT:-nw_ucla_cpu}
PY=${PYTHON:-$REPO/.venv/bin/python}
WT=$GRID_DIR/wt-$C; ROOT=$GRID_DIR/runs/$GRID_ROOT; WD=$ROOT/$NAME
[ -d "$WT" ] || git -C "$REPO" worktree add -q "$WT" "$C"
[ -e "$WT/runs" ] || ln -s "$GRID_DIR/runs" "$WT/runs"
[ -f "$WD/results.json" ] && { echo "done already: $NAME"; exit 0; }
mkdir -p "$WD"; cd "$WT"; export PYTHONPATH=$WT
TC=$(PYTHONPATH=$REPO "$PY" -c 'from stgcn_jax import runtime; print(runtime.tcmalloc_path() or "")')
ALLOC=glibc; if [ -n "$TC" ]; then export LD_PRELOAD=$TC STGCN_JAX_ALLOCATOR_SET=1; ALLOC=tcmalloc; fi
CMD=$("$PY" -c 'import shlex, sys; print(shlex.join(["python", "-m", "experiments.run", *sys.argv[1:]]))' \
      "$@" "--workdir=runs/$GRID_ROOT/$NAME")
[ -f "$WD/launch.json" ] || "$PY" - "$WD" "$CMD" "$CORE" "$ALLOC" "$WT" "${CELL_NICE:--10}" <<'PYEOF'
import datetime, json, subprocess, sys
wd, cmd, core, alloc, wt, nice = sys.argv[1:]
cpu = [l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')][0]
json.dump({"commit": subprocess.check_output(['git', 'rev-parse', 'HEAD'], cwd=wt).decode().strip(),
           "command": cmd, "pinned_core": int(core), "cpu": cpu, "allocator": alloc,
           "queued": datetime.datetime.now(datetime.timezone.utc).isoformat(),
           "nice": int(nice), "runner": f"taskset -c {core} (one run per core)"}, open(f"{wd}/launch.json", "w"), indent=1)
PYEOF
echo "start $NAME: $CMD"
t0=$(date +%s)
nice -n "${CELL_NICE:--10}" taskset -c "$CORE" "$PY" -m experiments.run "$@" --workdir="$WD" >> "$WD/log.txt" 2>&1 &
CHILD=$!
trap 'kill -TERM $CHILD 2>/dev/null' TERM INT
wait $CHILD; rc=$?
if kill -0 $CHILD 2>/dev/null; then wait $CHILD; rc=$?; fi
"$PY" -c 'import sys; from experiments import sweep_files as f; f.add_time(sys.argv[1], float(sys.argv[2]), int(sys.argv[3]) if int(sys.argv[3]) < 128 else 128 - int(sys.argv[3]))' \
  "$WD" $(( $(date +%s) - t0 )) $rc
echo "end $NAME rc=$rc after $(( $(date +%s) - t0 )) s"
