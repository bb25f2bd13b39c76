"""A real OpenLDAP ``slapd`` on 127.0.0.1, for the LDAP sign-in tests.

The session fixture ``slapd`` writes its own slapd.conf into a temp dir, loads
tests/setup/ldap/seed.ldif with ``slapadd``, runs ``slapd -d 0 -f slapd.conf -h ldap://127.0.0.1:PORT/``
in the foreground on a free port and stops it when the session ends. No system slapd, system
config (/etc/ldap/slapd.d) or port 389 is used or touched. tests/setup/services.sh installs the
Debian package ``slapd``. A module loads this as a plugin (see tests/cluster.py for why)::

    pytest_plugins = ["tests.ldap_server"]

The directory: users ``alice`` (in the posixGroup ``physics``) and ``bob`` (in ``chemistry`` and
``hut-admins``), posixAccounts under ou=people; groups are posixGroups under ou=groups listing
their members by uid (``memberUid``); the portal binds as ``cn=portal,ou=services``. Tests that
change the directory (``set_members``) put it back in a ``finally``: the server is shared.
"""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import ldap
import pytest

from tests.services import ChildProcess, ServiceError, accepts_connections, free_port, serve

SLAPD = Path("/usr/sbin/slapd")
SLAPADD = Path("/usr/sbin/slapadd")
SEED = Path(__file__).resolve().parent / "setup" / "ldap" / "seed.ldif"
SUFFIX = "dc=scripthut,dc=test"
ROOT_DN = f"cn=admin,{SUFFIX}"
BIND_DN = f"cn=portal,ou=services,{SUFFIX}"
BIND_PASSWORD = "pw-portal-bind"  # as in seed.ldif
PASSWORDS = {"alice": "pw-alice-ldap", "bob": "pw-bob-ldap"}  # as in seed.ldif
STAFF_GROUP = f"cn=hut-admins,ou=groups,{SUFFIX}"
START_TRIES = 3  # a free port can be taken between choosing and binding it

CONF = """\
include /etc/ldap/schema/core.schema
include /etc/ldap/schema/cosine.schema
include /etc/ldap/schema/nis.schema
include /etc/ldap/schema/inetorgperson.schema
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
modulepath /usr/lib/ldap
moduleload back_mdb
database mdb
maxsize 10485760
suffix "{suffix}"
rootdn "{root_dn}"
rootpw {root_password}
directory {dir}/db
access to attrs=userPassword by self write by anonymous auth by * none
access to * by * read
"""


@dataclass
class Slapd:
    """How to reach the test directory, and how to change it."""

    url: str
    root_password: str = field(repr=False)
    passwords: dict[str, str] = field(default_factory=lambda: dict(PASSWORDS), repr=False)

    def env(self) -> dict[str, str]:
        """The SCRIPTHUT_LDAP_* variables that point the portal at this directory."""
        return {
            "SCRIPTHUT_LDAP_URL": self.url,
            "SCRIPTHUT_LDAP_BIND_DN": BIND_DN,
            "SCRIPTHUT_LDAP_BIND_PASSWORD": BIND_PASSWORD,
            "SCRIPTHUT_LDAP_USER_SEARCH": f"ou=people,{SUFFIX}",
            "SCRIPTHUT_LDAP_GROUP_SEARCH": f"ou=groups,{SUFFIX}",
            "SCRIPTHUT_LDAP_STAFF_GROUP": STAFF_GROUP,
        }

    def members(self, group: str) -> list[str]:
        conn = self._connect()
        try:
            [(_, attrs)] = conn.search_s(f"cn={group},ou=groups,{SUFFIX}", ldap.SCOPE_BASE, attrlist=["memberUid"])
        finally:
            conn.unbind_s()
        return [uid.decode() for uid in attrs.get("memberUid", [])]

    def set_members(self, group: str, uids: list[str]) -> None:
        """Make ``uids`` the only members of the posixGroup ``group``."""
        conn = self._connect()
        try:
            change = [(ldap.MOD_REPLACE, "memberUid", [uid.encode() for uid in uids] or None)]
            conn.modify_s(f"cn={group},ou=groups,{SUFFIX}", change)
        finally:
            conn.unbind_s()

    def _connect(self) -> ldap.ldapobject.LDAPObject:
        conn = ldap.initialize(self.url)
        conn.simple_bind_s(ROOT_DN, self.root_password)
        return conn


def _write_config(directory: Path, root_password: str) -> Path:
    (directory / "db").mkdir(parents=True)
    conf = directory / "slapd.conf"
    conf.write_text(CONF.format(dir=directory, suffix=SUFFIX, root_dn=ROOT_DN, root_password=root_password))
    return conf


def _seed(conf: Path, log: Path) -> None:
    proc = subprocess.run([str(SLAPADD), "-f", str(conf), "-l", str(SEED)], capture_output=True, text=True)
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise ServiceError(f"slapadd failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")


def _start_on_free_port(conf: Path, directory: Path, root_password: str) -> tuple[ChildProcess, Slapd]:
    port = free_port()
    url = f"ldap://127.0.0.1:{port}/"
    child = ChildProcess.start("slapd", [str(SLAPD), "-d", "0", "-f", str(conf), "-h", url], directory / "slapd.log")
    try:
        child.wait_until(lambda: accepts_connections(port), timeout=20)
    except ServiceError:
        child.stop()
        raise
    return child, Slapd(url=url, root_password=root_password)


def start_slapd(directory: Path) -> tuple[ChildProcess, Slapd]:
    """Load the seed and start slapd on a free port (another one if that was taken meanwhile)."""
    if not SLAPD.exists():
        raise ServiceError(f"{SLAPD} is missing (apt-get install slapd)")
    root_password = secrets.token_urlsafe(16)
    conf = _write_config(directory, root_password)
    _seed(conf, directory / "slapadd.log")
    for _ in range(START_TRIES - 1):
        try:
            return _start_on_free_port(conf, directory, root_password)
        except ServiceError:
            pass  # most likely the port was taken between choosing and binding it
    return _start_on_free_port(conf, directory, root_password)


@pytest.fixture(scope="session")
def slapd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Slapd]:
    """The running test directory (module docstring); skips, or fails under CI, if slapd cannot start."""
    yield from serve("test LDAP server (slapd)", lambda: start_slapd(tmp_path_factory.mktemp("slapd")))
