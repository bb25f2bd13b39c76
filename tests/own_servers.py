"""A PostgreSQL server and a Redis server of a test's own, on free loopback ports, that the
test may stop and start again as it likes: restarting the machine's shared servers would
break the other tests running beside it.

PostgreSQL is a real cluster (initdb, pg_ctl) run as the ``postgres`` user in a
temporary directory; ``restart`` stops it in ``immediate`` mode (what a crash looks like
to the clients: every connection cut, no checkpoint) and starts it again.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.markers import require
from tests.services import ChildProcess, accepts_connections, free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise FileNotFoundError(f"no PostgreSQL {name} under /usr/lib/postgresql")
    return found[-1]


class OwnPostgres:
    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="scripthut-pg-"))
        self.data = self.base / "data"
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}"
        owner = pwd.getpwnam("postgres")
        os.chown(self.base, owner.pw_uid, owner.pw_gid)
        self._as_postgres(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _as_postgres(self, *argv: str) -> None:
        command = ["runuser", "-u", "postgres", "--", *argv]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.base)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout}{proc.stderr}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        pg_ctl = _pg_bin("pg_ctl")
        self._as_postgres(pg_ctl, "-D", str(self.data), "-l", str(self.base / "log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def restart(self, down: float) -> None:
        """Cut every connection, stay down ``down`` seconds, come back (crash recovery)."""
        self.stop()
        time.sleep(down)
        self.start()

    def remove(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass  # not running
        shutil.rmtree(self.base, ignore_errors=True)


class OwnRedis:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.child: ChildProcess | None = None

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.child = ChildProcess.start("redis", argv, self.base / "redis.log", cwd=self.base)
        self.child.wait_until(lambda: accepts_connections(self.port))

    def stop(self) -> None:
        """SIGKILL: a crash (and Redis here keeps nothing on disk: every queued message is gone)."""
        if self.child and self.child.proc.poll() is None:
            self.child.proc.kill()
            self.child.proc.wait()

    def restart(self, down: float) -> None:
        self.stop()
        time.sleep(down)
        self.start()


@contextmanager
def own_servers(base: Path) -> Iterator[tuple[OwnPostgres, OwnRedis]]:
    require("faults", "PostgreSQL and Redis servers of its own that it restarts")
    postgres = OwnPostgres()
    redis = OwnRedis(base)
    try:
        postgres.start()
        redis.start()
        yield postgres, redis
    finally:
        redis.stop()
        postgres.remove()
