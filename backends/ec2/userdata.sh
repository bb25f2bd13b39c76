#!/bin/bash
# ScriptHut: the user data of one task instance (rendered by backends/ec2/userdata.py).
# It runs one task in its container, writes the log and the exit code where ScriptHut
# reads them, and powers the instance off (InstanceInitiatedShutdownBehavior=terminate
# then deletes it) whatever happens to ScriptHut.
# SCRIPTHUT_ROOT is empty on an instance; a test sets it to run this script in a directory.
set -u
root="${SCRIPTHUT_ROOT:-}"
log_dir="$root/var/log/scripthut"
done_dir="$root/var/run/scripthut"
task_dir="$root/opt/scripthut"
mkdir -p "$log_dir" "$done_dir" "$task_dir"

# Safety timer, armed first: time_limit + idle_terminate_seconds, in whole minutes.
shutdown -h "+@{shutdown_minutes}" "scripthut: safety timer" >/dev/null 2>&1 &

image=@{image}
time_limit_seconds=@{time_limit_seconds}
# The task script travels base64-encoded: no value in it can break this file.
base64 -d >"$task_dir/task.sh" <<'SCRIPTHUT_TASK_SCRIPT'
@{script_base64}
SCRIPTHUT_TASK_SCRIPT
chmod 0644 "$task_dir/task.sh"

{
    echo "scripthut: pulling $image"
    if docker pull "$image"; then
        # timeout kills the docker client; the container is killed by name below.
        timeout --kill-after=30 "$time_limit_seconds" \
            docker run --rm --name scripthut-task \
            -v "$task_dir:/scripthut:ro" "$image" bash /scripthut/task.sh
        code=$?
        if [ "$code" -eq 124 ] || [ "$code" -eq 137 ]; then
            echo "scripthut: time limit of ${time_limit_seconds}s reached"
            docker kill scripthut-task >/dev/null 2>&1
        fi
    else
        code=125
        echo "scripthut: cannot pull $image"
    fi
} >>"$log_dir/task.log" 2>&1
chmod 0644 "$log_dir/task.log"

# Written then renamed: a reader sees the whole exit code or no file.
echo "$code" >"$done_dir/done.tmp" && mv "$done_dir/done.tmp" "$done_dir/done"
