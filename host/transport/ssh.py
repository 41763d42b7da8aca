"""The ``ssh`` transport on paramiko: ~/.ssh/config (Host aliases, User, Port, IdentityFile,
ProxyJump), ssh-agent, known_hosts.

Host keys: the board's key must already be in known_hosts (the inventory's ``known_hosts``, the
config's UserKnownHostsFile, else ~/.ssh/known_hosts), read and decided on by
:mod:`.known_hosts` (never paramiko's reader). An unknown key is refused unless
``accept_new_host_key`` (OpenSSH's accept-new: the key is recorded, atomically); a *changed* or
``@revoked`` key is always refused; a line that cannot be parsed is an error naming the file and
line (exit 6). paramiko hangs on a cut link, keepalives notwithstanding (measured here), so the
socket is made here with TCP_USER_TIMEOUT and handed to paramiko.

Every failure to connect is one line (a BoardError): paramiko's own log records (a traceback
for a port that is not SSH, "Socket exception" for a socket closed under it) are not printed.

(A little past 400 lines: one transport — connection and host keys, command streams, the
stream-local channel paramiko can't open itself, SFTP — whose parts share its error mapping;
known_hosts itself is read in known_hosts.py.)
"""

from __future__ import annotations

import logging
import os
import posixpath
import socket
import stat
import time
from pathlib import Path
from typing import Sequence

import paramiko

from ...errors import AuthFailed, HostKeyRefused, InputError, RemoteFailure, Unreachable
from . import Progress, RunResult, Stream, Transport, known_hosts, shell_join

TCP_USER_TIMEOUT_MS = 15000


class _QuietRefusedSocket(logging.Filter):
    """paramiko logs every refused channel as an ERROR; a missing resident agent socket is
    an expected refusal here (we fall back), not something to print."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "open FAILED: open failed: Connect failed" not in record.getMessage()


logging.getLogger("paramiko.transport").addFilter(_QuietRefusedSocket())
# paramiko logs a failed connection (with a traceback) from its own thread; with no handler
# anywhere, Python's last-resort handler prints that on stderr beside our one-line error.
# A handler here keeps it off stderr; an application that configures logging still gets it.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


def _fingerprint(key: paramiko.PKey) -> str:
    return getattr(key, "fingerprint", None) or key.get_name()


class _HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko when none of the host's trusted keys was loaded for it: decides
    with known_hosts.verdict (refuse a revoked or unknown key; accept-new records it)."""

    def __init__(self, board: str, path: Path, entries: list[known_hosts.Entry],
                 accept_new: bool) -> None:
        self.board, self.path, self.entries, self.accept_new = board, path, entries, accept_new

    def missing_host_key(self, client, hostname, key) -> None:
        v = known_hosts.verdict(self.entries, hostname, key.get_name(), key.get_base64())
        if v == "revoked":
            raise _revoked(self.board, hostname, key, self.path)
        if v == "changed":
            raise _changed(self.board, hostname, self.path)
        if not self.accept_new:
            raise HostKeyRefused(self.board, f"unknown host key for {hostname} "
                                             f"({_fingerprint(key)}): not in {self.path}",
                                 hint="check the fingerprint, then pass --accept-new-host-key "
                                      "to record it")
        try:
            known_hosts.append(self.path, f"{hostname} {key.get_name()} {key.get_base64()}")
        except (OSError, InputError) as exc:
            raise HostKeyRefused(self.board, f"cannot record the host key of {hostname} in "
                                             f"{self.path} ({exc})") from None
        client.get_host_keys().add(hostname, key.get_name(), key)


def _revoked(board: str, name: str, key: paramiko.PKey, path: Path) -> HostKeyRefused:
    return HostKeyRefused(board, f"the host key of {name} ({_fingerprint(key)}) is REVOKED "
                                 f"in {path}",
                          hint="the board must get a new host key; it is refused even with "
                               "--accept-new-host-key")


def _changed(board: str, name: str, path: Path) -> HostKeyRefused:
    return HostKeyRefused(board, f"the host key of {name} CHANGED (known_hosts {path} has "
                                 f"another one)",
                          hint="if the board was reinstalled, remove the old line with "
                               "ssh-keygen -R; otherwise someone may be in the middle")


def _ssh_config(path: str | None) -> paramiko.SSHConfig:
    p = Path(os.path.expanduser(path or "~/.ssh/config"))
    if p.is_file():
        return paramiko.SSHConfig.from_path(str(p))
    return paramiko.SSHConfig()


def _socket(board: str, host: str, port: int, timeout: float) -> "socket.socket | _QuickAck":
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.timeout as exc:
        raise Unreachable(board, f"connecting to {host}:{port} timed out after {timeout} s",
                          hint="is the board on and on the network?") from exc
    except OSError as exc:
        raise Unreachable(board, f"cannot connect to {host}:{port} ({exc.strerror or exc})",
                          hint="is the board on, and sshd running?") from exc
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_USER_TIMEOUT"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, TCP_USER_TIMEOUT_MS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return _QuickAck(sock) if hasattr(socket, "TCP_QUICKACK") else sock


class _QuickAck:
    """A socket that ACKs at once. sshd doesn't set TCP_NODELAY on non-interactive sessions,
    so its second small packet in a row (a channel's confirmation, then its data or exit
    status) waits for our ACK of the first — which Linux delays by 40 ms. Measured here: the
    first channel after login took 45 ms, 3.5 ms with this. Quick-ACK mode lapses, so it is
    asked for again before every read."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def recv(self, n: int) -> bytes:
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        except OSError:
            pass
        return self._sock.recv(n)

    def __getattr__(self, name: str):
        return getattr(self._sock, name)


_LINK_ERRORS = (paramiko.SSHException, OSError, EOFError)  # socket.timeout is an OSError


def _link_error(board: str, what: str, exc: BaseException, timeout: float | None = None
                ) -> Unreachable:
    """What a board's command or channel raised, as the BoardError the user sees."""
    if isinstance(exc, socket.timeout):
        return Unreachable(board, f"{what} gave no output for {timeout} s",
                           hint="the board or its link may be down")
    return Unreachable(board, f"{what}: the connection broke ({type(exc).__name__}: {exc})")


def _open_streamlocal(transport: paramiko.Transport, path: str, timeout: float
                      ) -> paramiko.Channel:
    """paramiko's open_channel, for the one channel type it can't word: RFC 4254's
    CHANNEL_OPEN with OpenSSH's direct-streamlocal@openssh.com fields (socket path, reserved
    string, reserved uint32). Uses paramiko's channel table as open_channel does."""
    import threading

    from paramiko.channel import Channel
    from paramiko.common import cMSG_CHANNEL_OPEN
    from paramiko.message import Message

    with transport.lock:
        window = transport._sanitize_window_size(None)
        packet = transport._sanitize_packet_size(None)
        chanid = transport._next_channel()
        m = Message()
        m.add_byte(cMSG_CHANNEL_OPEN)
        m.add_string("direct-streamlocal@openssh.com")
        m.add_int(chanid)
        m.add_int(window)
        m.add_int(packet)
        m.add_string(path)
        m.add_string("")
        m.add_int(0)
        chan = Channel(chanid)
        transport._channels.put(chanid, chan)
        transport.channel_events[chanid] = event = threading.Event()
        transport.channels_seen[chanid] = True
        chan._set_transport(transport)
        chan._set_window(window, packet)
    transport._send_user_message(m)
    deadline = time.monotonic() + timeout
    while not event.wait(0.1):
        if not transport.is_active():
            raise transport.get_exception() or paramiko.SSHException("connection closed")
        if time.monotonic() > deadline:
            raise paramiko.SSHException("timeout opening a channel")
    chan = transport._channels.get(chanid)
    if chan is None:  # refused: paramiko recorded why
        raise transport.get_exception() or paramiko.ChannelException(2, "Connect failed")
    return chan


class _SshStream(Stream):
    def __init__(self, board: str, chan: paramiko.Channel, command: str,
                 exits: bool = True) -> None:
        self.board, self.chan, self.command = board, chan, command
        self.exits = exits  # a command has an exit status; a forwarded socket has none
        self.out = chan.makefile("rb")
        self._err = b""

    def _drain_err(self) -> None:
        while self.chan.recv_stderr_ready():
            self._err = (self._err + self.chan.recv_stderr(65536))[-65536:]

    def send_bytes(self, data: bytes) -> None:
        try:
            self.chan.sendall(data)
        except _LINK_ERRORS as exc:
            t = self.chan.get_transport()
            if t is not None and t.is_active():
                return  # the command has ended; read_line says so with ''
            raise _link_error(self.board, f"`{self.command}`", exc) from exc

    def read_line(self, timeout: float) -> str:
        self.chan.settimeout(timeout)
        try:
            line = self.out.readline()
        except _LINK_ERRORS as exc:
            raise _link_error(self.board, f"`{self.command}`", exc, timeout) from exc
        finally:
            self._drain_err()
        return line.decode("utf-8", "replace")

    def close(self) -> int | None:
        try:
            self.chan.shutdown_write()
            if not self.exits:
                return 0
            deadline = time.monotonic() + 10
            while not self.chan.exit_status_ready() and time.monotonic() < deadline:
                self._drain_err()
                time.sleep(0.005)
            self._drain_err()
            return self.chan.recv_exit_status() if self.chan.exit_status_ready() else None
        except (paramiko.SSHException, OSError, EOFError):
            return None
        finally:
            self.chan.close()

    def stderr(self) -> str:
        return self._err.decode("utf-8", "replace")


def _connect_failure(host: str, port: int, exc: BaseException) -> str:
    """One line for an SSH handshake that failed after the TCP connection was made."""
    text = str(exc) or type(exc).__name__
    if "protocol banner" in text or isinstance(exc, EOFError) or \
            "Connection reset" in text or "Incompatible version" in text:
        return f"{host}:{port} answers, but not as an SSH server ({text})"
    if isinstance(exc, socket.timeout):
        return f"SSH to {host}:{port}: no answer in time ({text})"
    if "No existing session" in text:  # the negotiation did not finish in time (see _connect)
        return f"SSH to {host}:{port}: the SSH handshake did not finish in time"
    return f"SSH to {host}:{port} failed ({type(exc).__name__}: {text})"


class SshTransport(Transport):
    forwards_unix = True

    def __init__(self, board, *, accept_new_host_key: bool = False) -> None:
        self.board = board.name
        self.spec = board
        cfg = _ssh_config(board.ssh_config).lookup(board.host)
        self.host = cfg.get("hostname", board.host)
        self.port = int(board.port or cfg.get("port", board.profile.port))
        self.user = board.user or cfg.get("user") or os.environ.get("USER", "root")
        keys = [board.key] if board.key else cfg.get("identityfile", [])
        self.keys = [os.path.expanduser(k) for k in keys if os.path.exists(os.path.expanduser(k))]
        kh = board.known_hosts or (cfg.get("userknownhostsfile") or "").split(" ")[0] or \
            "~/.ssh/known_hosts"
        self.known_hosts = Path(os.path.expanduser(kh))
        self.timeout = board.connect_timeout
        self.command_timeout = board.command_timeout
        self._jump: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self.client = self._connect(cfg.get("proxyjump"), accept_new_host_key)

    def _host_entries(self) -> list[known_hosts.Entry]:
        try:
            return known_hosts.load(self.known_hosts)
        except InputError as exc:
            raise HostKeyRefused(self.board, f"known_hosts {exc.message}", hint=exc.hint) \
                from None

    def _connect(self, proxyjump: str | None, accept_new: bool,
                 only: known_hosts.Entry | None = None) -> paramiko.SSHClient:
        entries = self._host_entries()
        name = known_hosts.host_field(self.host, self.port)
        if proxyjump and proxyjump.lower() != "none":
            sock = self._through_jump(proxyjump, accept_new)
        else:
            sock = _socket(self.board, self.host, self.port, self.timeout)
        client = paramiko.SSHClient()
        for e in [only] if only else known_hosts.trusted(entries, name):
            try:  # one key per type (paramiko's table); another of that type: see below
                key = paramiko.PKey.from_type_string(e.keytype, e.blob)
            except (paramiko.SSHException, ValueError, TypeError):
                continue  # a key type paramiko cannot check: it admits nothing
            client.get_host_keys().add(name, e.keytype, key)
        client.set_missing_host_key_policy(_HostKeyPolicy(self.board, self.known_hosts,
                                                          entries, accept_new))

        def fail(err: Exception) -> Exception:
            client.close()  # stops paramiko's thread before its socket goes
            sock.close()
            return err

        try:
            # with sock given, paramiko uses timeout only to wait for the negotiation, and
            # returns *silently* when it runs out ("No existing session" follows): it must
            # outlast banner_timeout, or a silent port races into that non-answer under load
            client.connect(self.host, port=self.port, username=self.user,
                           key_filename=self.keys or None, sock=sock, timeout=2 * self.timeout,
                           banner_timeout=self.timeout, auth_timeout=self.timeout,
                           allow_agent=True, look_for_keys=not self.keys)
        except paramiko.BadHostKeyException as exc:
            got = exc.key
            v = known_hosts.verdict(entries, name, got.get_name(), got.get_base64())
            fail(exc)
            if v == "known" and only is None:  # a second trusted key of the same type
                match = next(e for e in known_hosts.trusted(entries, name)
                             if e.key == got.get_base64())
                return self._connect(proxyjump, accept_new, only=match)
            raise (_revoked(self.board, name, got, self.known_hosts) if v == "revoked"
                   else _changed(self.board, name, self.known_hosts)) from None
        except HostKeyRefused as exc:
            raise fail(exc) from None
        except paramiko.AuthenticationException:
            raise fail(AuthFailed(self.board, f"{self.user}@{self.host}:{self.port} refused our "
                                              f"key(s) ({', '.join(self.keys) or 'agent/default'})",
                                  hint="check `key` in fleet.toml and the board's "
                                       "authorized_keys")) from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise fail(Unreachable(self.board, _connect_failure(self.host, self.port, exc),
                                   hint="is this the board's SSH port?")) from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(5)
        return client

    def _through_jump(self, proxyjump: str, accept_new: bool):
        from dataclasses import replace

        jump_host = proxyjump.split(",")[0]
        user, _, hostport = jump_host.rpartition("@")
        host, _, port = hostport.partition(":")
        jump = replace(self.spec, name=f"{self.board} (via {jump_host})", host=host,
                       user=user or None, port=int(port) if port else None)
        jt = SshTransport(jump, accept_new_host_key=accept_new)
        self._jump = jt.client
        transport = jt.client.get_transport()
        assert transport is not None
        try:
            return transport.open_channel("direct-tcpip", (self.host, self.port),
                                          ("127.0.0.1", 0), timeout=self.timeout)
        except (paramiko.SSHException, OSError) as exc:
            raise Unreachable(self.board, f"jump host {jump_host} cannot reach "
                                          f"{self.host}:{self.port} ({exc})") from exc

    # -- operations --------------------------------------------------------------------
    def run(self, argv: Sequence[str] | str, *, timeout: float | None = None,
            input: bytes | None = None) -> RunResult:
        cmd = argv if isinstance(argv, str) else shell_join(argv)
        timeout = timeout or self.command_timeout
        try:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                raise Unreachable(self.board, "the SSH connection is closed")
            chan = transport.open_session(timeout=self.timeout)
            chan.settimeout(timeout)
            chan.exec_command(cmd)
            if input:
                chan.sendall(input)
            chan.shutdown_write()
            out = chan.makefile("rb").read()
            err = chan.makefile_stderr("rb").read()
            code = chan.recv_exit_status()
            chan.close()
        except _LINK_ERRORS as exc:
            raise _link_error(self.board, f"`{cmd}`", exc, timeout) from exc
        return RunResult(cmd, code, out.decode("utf-8", "replace"),
                         err.decode("utf-8", "replace"))

    def start(self, command: str) -> Stream:
        try:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                raise Unreachable(self.board, "the SSH connection is closed")
            chan = transport.open_session(timeout=self.timeout)
            chan.exec_command(command)
        except _LINK_ERRORS as exc:
            raise _link_error(self.board, f"`{command}`", exc) from exc
        return _SshStream(self.board, chan, command)

    def connect_unix(self, path: str) -> Stream | None:
        """A board's Unix socket, through OpenSSH stream-local forwarding
        (direct-streamlocal@openssh.com): no process starts on the board. None when sshd
        refuses (no socket there, or AllowStreamLocalForwarding no)."""
        try:
            transport = self.client.get_transport()
            if transport is None or not transport.is_active():
                raise Unreachable(self.board, "the SSH connection is closed")
            chan = _open_streamlocal(transport, path, self.timeout)
        except paramiko.ChannelException:
            return None
        except _LINK_ERRORS as exc:
            raise _link_error(self.board, f"forwarding to {path}", exc) from exc
        return _SshStream(self.board, chan, f"socket {path}", exits=False)

    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            try:
                self._sftp = self.client.open_sftp()
                self._sftp.get_channel().settimeout(self.command_timeout)
            except (paramiko.SSHException, OSError) as exc:
                raise Unreachable(self.board, f"SFTP failed ({exc})") from exc
        return self._sftp

    @staticmethod
    def _sftp_path(remote: str) -> str:
        return remote[2:] if remote.startswith("~/") else remote  # SFTP paths start at home

    def size(self, path: str) -> int | None:
        try:
            st = self.sftp().stat(self._sftp_path(path))
        except FileNotFoundError:
            return None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise Unreachable(self.board, f"SFTP stat {path} failed ({exc})") from exc
        return st.st_size if stat.S_ISREG(st.st_mode or 0) else None

    def mkdir(self, path: str) -> None:
        """mkdir -p over SFTP: a request per missing level, no shell."""
        sftp = self.sftp()
        p = self._sftp_path(path).rstrip("/") or "/"
        try:
            sftp.mkdir(p)  # the usual case: only the last level is new
            return
        except (OSError, paramiko.SSHException, EOFError):
            pass  # it exists, or a parent is missing: level by level below
        missing = []
        while True:
            try:
                if stat.S_ISDIR(sftp.stat(p).st_mode or 0):
                    break
                raise RemoteFailure(self.board, f"mkdir {path}", 1, f"{p} is not a folder")
            except FileNotFoundError:
                missing.append(p)
                parent = posixpath.dirname(p)
                if parent in ("", p):
                    break
                p = parent
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise Unreachable(self.board, f"SFTP stat {p} failed ({exc})") from exc
        for d in reversed(missing):
            try:
                sftp.mkdir(d)
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise RemoteFailure(self.board, f"mkdir {d}", 1,
                                    f"{type(exc).__name__}: {exc}") from exc

    def put(self, data: Path | bytes, remote: str, progress: Progress | None = None) -> int:
        import io

        what = f"{len(data)} bytes" if isinstance(data, bytes) else str(data)
        size = len(data) if isinstance(data, bytes) else Path(data).stat().st_size
        try:
            with (io.BytesIO(data) if isinstance(data, bytes) else open(data, "rb")) as f:
                self.sftp().putfo(f, self._sftp_path(remote), file_size=size,
                                  callback=progress, confirm=True)
        except socket.timeout as exc:
            raise Unreachable(self.board, f"upload of {what} stalled",
                              hint="the link may be down") from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise Unreachable(self.board, f"upload of {what} to {remote} failed "
                                          f"({type(exc).__name__}: {exc})",
                              hint="is the board's disk full?") from exc
        return size

    def close(self) -> None:
        for c in (self._sftp, self.client, self._jump):
            try:
                if c is not None:
                    c.close()
            except Exception:
                pass
