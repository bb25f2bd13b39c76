"""The shell scripts that start, follow and cancel local jobs.

They run as the backend's ``run_as`` user when it has one (else as the portal's user),
so every file in the work root is made by that user: the portal never writes into a
directory the tasks' user controls.
"""

from __future__ import annotations

# Runs detached from the portal: `timeout` enforces the time limit and makes its own
# process group, whose leader pid is kept so that cancel can signal the whole group.
# With out/err given (run_as) the task's user opens its own files; else the portal has
# opened and checked them, and they arrive as fds 3 and 4.
#
# First the runner takes the job's claim (an atomic mkdir): the reconcile phase takes it
# instead when the launcher died before the runner started (LocalAdapter.find_submitted),
# and whoever has it decides whether the job runs, so that it runs once or not at all.
RUNNER = r"""
dir=$1; limit=$2; out=$3; err=$4
mkdir -- "$dir/claim" 2>/dev/null || exit 0
echo $$ > "$dir/pid"
date +%s.%N > "$dir/started.tmp" && mv "$dir/started.tmp" "$dir/started"
open_files() {  # one file for both streams shares one offset, as with 2>&1
    mkdir -p -- "$(dirname -- "$out")" "$(dirname -- "$err")" && exec 3>"$out" || return
    if [ "$err" = "$out" ]; then exec 4>&3; else exec 4>"$err"; fi
}
code=1
if [ -z "$out" ] || open_files 2>"$dir/reason"; then
    (umask "$TASK_UMASK"; exec timeout --kill-after=5 "$limit" bash "$dir/script.sh" >&3 2>&4 3>&- 4>&- </dev/null) &
    echo $! > "$dir/group"
    wait $!
    code=$?
fi
date +%s.%N > "$dir/finished"
echo $code > "$dir/exit_code.tmp" && mv "$dir/exit_code.tmp" "$dir/exit_code"
"""

# Makes the job's directory (the script comes on stdin) and starts the runner, detached
# (setsid, &) so that it outlives the portal and is not its child; returns once the runner
# has taken the job (until then it is still in the portal's process group, and a kill of
# that group would take it along).
# Exit 3: the job directory exists, started by an interrupted earlier submit.
# Exit 4: the work root is not a private directory of this user.
# Exit 5: the runner did not take the job within 30 s; the launcher took it back.
LAUNCHER = r"""
task_umask=$(umask)
umask "$1"; mode=$2; root=$3; tag=$4; run=$5; name=$6; runner=$7; limit=$8; out=$9; err=${10}; ofd=${11}; efd=${12}
mkdir -p -- "$root" 2>/dev/null
if [ -L "$root" ] || [ ! -d "$root" ] || [ ! -O "$root" ]; then
    echo "work_dir $root must be a directory owned by $(id -un)" >&2; exit 4
fi
chmod "$mode" "$root" && mkdir -p -- "$root/jobs" "$root/runs/$run" || exit 4
dir=$root/jobs/$tag
mkdir -- "$dir" 2>/dev/null || { [ -d "$dir" ] && exit 3; mkdir -- "$dir"; exit 1; }
cat > "$dir/script.sh" && printf '%s\n' "$name" > "$dir/name" || exit 1
if [ -n "$ofd" ]; then
    exec 3>&"$ofd" 4>&"$efd" && eval "exec $ofd>&- $efd>&-" || exit 1
fi
TASK_UMASK=$task_umask setsid bash -c "$runner" runner "$dir" "$limit" "$out" "$err" >/dev/null 2>&1 </dev/null &
for _ in $(seq 3000); do [ -d "$dir/claim" ] && exit 0; sleep 0.01; done
mkdir -- "$dir/claim" 2>/dev/null && { echo "the job's runner did not start" >&2; exit 5; }
"""

# Cancels the jobs whose directories are given: marks each cancelled, then sends TERM
# to `timeout`, which forwards it to the job's group. Run as the jobs' user, so that a
# forged pid file can only ever signal that user's own processes.
CANCEL = r"""
for dir; do
    [ -d "$dir" ] && [ ! -L "$dir" ] && [ ! -e "$dir/exit_code" ] || continue
    touch -- "$dir/cancelled"
    for _ in $(seq 50); do  # the runner writes its group id right after it starts
        group=$(head -c 32 -- "$dir/group" 2>/dev/null)
        case $group in
            '' | *[!0-9]*) sleep 0.05 ;;
            *) kill -TERM "$group" 2>/dev/null; break ;;
        esac
    done
done
"""
