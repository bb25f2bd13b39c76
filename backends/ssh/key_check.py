"""Check a key a user pastes, in a child process with a CPU-time limit.

``backends.ssh.keys.refuse_costly`` already refuses, before any key derivation, the keys
whose cost their author chose (too many bcrypt rounds, PKCS#8 encryption, too long). What
is left is still loaded away from the web server: a child Python (``-I``: this checkout's
code only, no environment) reads the key, passphrase and certificate as JSON on its stdin
(never its argv), sets ``RLIMIT_CPU`` to ``KEY_CPU_SECONDS`` before it reads them, and
answers the fingerprint or the :class:`KeyProblem`. A child over its CPU time is killed by
the kernel (SIGXCPU), one that outlives ``KEY_WALL_SECONDS`` (a busy machine) by us.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

from backends.ssh import keys
from backends.ssh.keys import KeyProblem

KEY_CPU_SECONDS = 5  # a 64-round key loads in about 1.5 s of CPU here
KEY_WALL_SECONDS = 30
ROOT = Path(__file__).resolve().parents[2]  # the checkout: backends/ssh/key_check.py
CHILD = f"import sys; sys.path.insert(0, {str(ROOT)!r}); from backends.ssh.key_check import child; child()"


def checked_fingerprint(private_key: str, passphrase: str = "", certificate: str = "") -> str:
    """The fingerprint of the key (with its certificate, if given), or the :class:`KeyProblem`."""
    keys.refuse_costly(private_key.strip() + "\n")  # cheap, and no child for what is refused anyway
    request = {"key": private_key, "passphrase": passphrase, "certificate": certificate, "rounds": keys.MAX_KDF_ROUNDS}
    env = {name: os.environ[name] for name in ("PATH", "LD_LIBRARY_PATH") if name in os.environ}
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-c", CHILD, str(KEY_CPU_SECONDS)],
            input=json.dumps(request),
            capture_output=True,
            text=True,
            timeout=KEY_WALL_SECONDS,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise KeyProblem("private_key", f"checking this key took more than {KEY_WALL_SECONDS} s; try again") from None
    if done.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise KeyProblem(
            "private_key", f"checking this key took more than {KEY_CPU_SECONDS} s of CPU time: {keys.REENCRYPT}"
        )
    try:
        answer = json.loads(done.stdout)
    except ValueError:
        # The child's stderr may quote the request: it is not passed on.
        raise KeyProblem("private_key", f"this key could not be checked (exit status {done.returncode})") from None
    if "fingerprint" not in answer:
        raise KeyProblem(answer["field"], answer["message"])
    return str(answer["fingerprint"])


def child() -> None:
    """The child's side: limit its own CPU time first, then load the key from stdin."""
    seconds = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_CPU, (seconds, seconds + 1))
    request = json.load(sys.stdin)
    try:
        pkey = keys.load_key(request["key"], request["passphrase"], request["certificate"], request["rounds"])
        answer = {"fingerprint": pkey.fingerprint}
    except KeyProblem as problem:
        answer = {"field": problem.field, "message": str(problem)}
    json.dump(answer, sys.stdout)
