"""The SSH transport against the real sshd on 127.0.0.1 (host keys checked, never auto-added)."""

from __future__ import annotations

import subprocess

import pytest

from backends.base import BackendUnavailable, FileRefused
from backends.ssh.transport import SshTransport
from tests.cluster import Cluster, cluster  # noqa: F401  (fixture)

pytestmark = pytest.mark.cluster


def transport(cluster: Cluster, **overrides: object) -> SshTransport:  # noqa: F811
    return SshTransport.from_settings(cluster.ssh_settings() | overrides)


def test_commands_files_and_quoting(cluster, tmp_path):  # noqa: F811
    ssh = transport(cluster)
    result = ssh.run('printf \'%s|%s\' "$1" "$(whoami)"', timeout=30)
    assert result.exit_code == 0 and result.stdout == f"|{cluster.user}"
    assert ssh.run("exit 7").exit_code == 7
    assert ssh.run("cat", stdin=b"through stdin").stdout == "through stdin"
    assert ssh.run_script("echo $((6 * 7))").stdout == "42\n"
    # A large file is read from its tail only.
    ssh.run("seq 1 200000 > big.txt")
    tail = ssh.read_file("~/big.txt", max_bytes=1000)
    assert len(tail) == 1000 and tail.endswith("199999\n200000\n")
    with pytest.raises(FileNotFoundError):
        ssh.read_file("~/no-such-file")
    ssh.close()


def test_output_that_comes_after_the_exit_status_is_kept(cluster):  # noqa: F811
    """sshd sends a command's exit status as soon as the command exits, and the output
    still in its pipe after it (OpenSSH's session.c: "there could be some more data waiting
    in the pipe"). Under load that is a plain ``printf``'s output too: CI once lost a login's
    ``$HOME`` that way. Here a child that outlives the shell writes after it exited."""
    ssh = transport(cluster)
    result = ssh.run("(sleep 0.5; printf late; printf err >&2) & exit 3", timeout=30)
    assert (result.exit_code, result.stdout, result.stderr) == (3, "late", "err")
    ssh.close()


def test_special_files_are_refused(cluster):  # noqa: F811
    """A log view or generated file never reads a FIFO (it would hang the SFTP session),
    a device or /proc, even through a link."""
    ssh = transport(cluster)
    ssh.run("rm -f fifo env-link && mkfifo fifo && ln -s /proc/self/environ env-link")
    for path in ("~/fifo", "/proc/self/environ", "~/env-link", "/dev/zero"):
        with pytest.raises(FileRefused):
            ssh.read_file(path)
    ssh.close()


def test_command_timeout(cluster):  # noqa: F811
    from backends.base import BackendError

    with pytest.raises(BackendError, match="timed out after 1s"):
        transport(cluster).run("sleep 10", timeout=1)


def test_unknown_host_key_is_refused(cluster, tmp_path):  # noqa: F811
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(BackendUnavailable, match=r"unknown host key for 127\.0\.0\.1:\d+: add it to"):
        transport(cluster, known_hosts=str(empty)).run("true")
    # An explicit opt-out connects, and says so (paramiko's WarningPolicy: a warning on stderr).
    with pytest.warns(UserWarning, match=r"Unknown \S+ host key for \[127\.0\.0\.1\]:\d+"):
        assert transport(cluster, known_hosts=str(empty), allow_unknown_host_keys=True).run("true").exit_code == 0


def test_host_key_mismatch_is_refused(cluster, tmp_path):  # noqa: F811
    key = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    public = key.with_suffix(".pub").read_text().split()
    forged = tmp_path / "known_hosts"
    forged.write_text(f"[{cluster.host}]:{cluster.port} {public[0]} {public[1]}\n")
    with pytest.raises(BackendUnavailable, match="host key mismatch"):
        transport(cluster, known_hosts=str(forged)).run("true")


def test_authentication_failure_and_missing_key(cluster, tmp_path):  # noqa: F811
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    with pytest.raises(BackendUnavailable, match=f"authentication failed for {cluster.user}@"):
        transport(cluster, key_path=str(key)).run("true")
    with pytest.raises(BackendUnavailable, match="ssh key .* not found"):
        transport(cluster, key_path=str(tmp_path / "absent")).run("true")


def test_refused_then_backoff(cluster):  # noqa: F811
    ssh = transport(cluster, port=1)
    with pytest.raises(BackendUnavailable, match="connection refused by 127.0.0.1:1"):
        ssh.run("true")
    # Within the backoff the same reason comes back at once, without a new attempt.
    with pytest.raises(BackendUnavailable, match="connection refused"):
        ssh.run("true")
    assert ssh.round_trips == 0


def test_openssh_certificate_login(cluster, tmp_path):  # noqa: F811
    """cert_path: a key the server does not know logs in with a certificate from the CA it trusts."""
    ca = f"{cluster.dir}/user_ca"  # trusted by the test sshd (TrustedUserCAKeys)

    def new_key(name: str, principal: str) -> tuple[str, str]:
        key = tmp_path / name
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        subprocess.run(
            ["ssh-keygen", "-q", "-s", ca, "-I", f"scripthut-{name}", "-n", principal, "-V", "+10m", f"{key}.pub"],
            check=True,
        )
        # Away from <key>-cert.pub, where paramiko would pick it up without being told.
        cert = tmp_path / f"{name}.certificate"
        (tmp_path / f"{name}-cert.pub").rename(cert)
        return str(key), str(cert)

    key, cert = new_key("carrier", cluster.user)
    with pytest.raises(BackendUnavailable, match="authentication failed"):
        transport(cluster, key_path=key).run("true")  # the bare key is a stranger
    assert transport(cluster, key_path=key, cert_path=cert).run("whoami").stdout.strip() == cluster.user

    # A certificate for another login, or a file that is not a certificate, is refused clearly.
    other_key, other_cert = new_key("other", "somebody-else")
    with pytest.raises(BackendUnavailable, match="authentication failed"):
        transport(cluster, key_path=other_key, cert_path=other_cert).run("true")
    with pytest.raises(BackendUnavailable, match="cannot load ssh certificate"):
        transport(cluster, key_path=key, cert_path=f"{key}.pub").run("true")


@pytest.fixture
def sshd_without_sftp(cluster: Cluster, tmp_path):  # noqa: F811
    """A second sshd like the cluster's, on its own port, with no SFTP subsystem."""
    import socket
    import time
    from pathlib import Path

    from tests.services import free_port

    port = free_port()
    lines = (Path(cluster.dir) / "sshd_config").read_text().splitlines()
    kept = [line for line in lines if not line.startswith(("Port ", "PidFile ", "Subsystem "))]
    config = tmp_path / "sshd_config"
    config.write_text("\n".join([f"Port {port}", f"PidFile {tmp_path / 'sshd.pid'}", *kept]) + "\n")
    known_hosts = tmp_path / "known_hosts"
    host_key = (Path(cluster.dir) / "ssh_host_ed25519_key.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    server = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 20
    while True:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                break
        assert server.poll() is None and time.monotonic() < deadline, "the second sshd did not start"
        time.sleep(0.05)
    try:
        yield {"port": port, "known_hosts": str(known_hosts)}
    finally:
        server.terminate()
        server.wait(timeout=10)


def test_a_server_without_sftp_is_named_as_such(cluster, sshd_without_sftp):  # noqa: F811
    """It used to fail with "connection lost: Channel closed" (and drop the connection)."""
    from backends.base import BackendError

    ssh = transport(cluster, **sshd_without_sftp)
    assert ssh.run("echo on the exec channel").stdout == "on the exec channel\n"
    with pytest.raises(BackendError) as refused:
        ssh.read_file("~/.profile")
    assert str(refused.value) == (
        f"ssh {cluster.user}@127.0.0.1:{sshd_without_sftp['port']}: the SSH server offers no SFTP subsystem "
        "(needed to read files: logs, scripts, generated workflows)"
    )
    assert not isinstance(refused.value, BackendUnavailable)  # the backend is reachable: commands work
    assert ssh.run("true").exit_code == 0
    ssh.close()
