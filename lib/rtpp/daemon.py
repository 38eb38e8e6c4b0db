"""Daemon plumbing: daemonize, pidfile, privilege drop, rlimits, scheduling."""

from __future__ import annotations

import errno
import logging
import os
import resource
import socket
import stat
import sys

from rtpp import linuxcaps

log = logging.getLogger(__name__)

READY_TOKEN = b"OK"
NO_PIDFILE = "/dev/null"


def _close_now(fd: int) -> None:
    """Close at once: gevent's patched os.close defers to the hub, which a
    parent blocked in os.read never runs, so the pipe would never see EOF."""
    os.closerange(fd, fd + 1)


class DaemonError(Exception):
    """A start-up failure to report as `rtpproxy: <message>` with exit 1."""


class Daemonized:
    """The child's end of the start-up pipe: `ready()` lets the waiting parent exit 0."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    def ready(self) -> None:
        self._send(READY_TOKEN)

    def fail(self, message: str) -> None:
        """Have the parent print `message` on its stderr (ours is /dev/null) and exit 1."""
        self._send(f"rtpproxy: {message}\n".encode(errors="replace"))

    def _send(self, data: bytes) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, data)
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        if self.fd is not None:
            _close_now(self.fd)
            self.fd = None


def daemonize(no_chdir: bool, no_redirect: bool = False) -> Daemonized:
    """Fork once. The parent waits for "OK" from the child and exits 0 (else 1).

    The child becomes a session leader, chdirs to / (unless `no_chdir`), points
    stdio at /dev/null (stdout/stderr kept with `no_redirect`) and reinitialises
    the gevent hub.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:
        _close_now(wfd)
        os._exit(_parent_wait(rfd))
    _close_now(rfd)
    os.setsid()
    if not no_chdir:
        os.chdir("/")
    _redirect_stdio(keep_output=no_redirect)
    import gevent

    gevent.reinit()
    return Daemonized(wfd)


def _parent_wait(rfd: int) -> int:
    data = b""
    while True:
        try:
            chunk = os.read(rfd, 4096)
        except InterruptedError:
            continue
        if not chunk:
            break
        data += chunk
    if data == READY_TOKEN:
        return 0
    if data:
        os.write(2, data)
    return 1


def _redirect_stdio(keep_output: bool) -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    devnull = os.open(os.devnull, os.O_RDWR)
    targets = (0,) if keep_output else (0, 1, 2)
    for fd in targets:
        os.dup2(devnull, fd)
    os.close(devnull)


class Pidfile:
    """A pidfile written atomically and removed only if it still holds our pid."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pid: int | None = None
        #: the file, kept open for writing: a successor that runs without the rights to
        #: replace it (after -u) rewrites it in place (live handoff)
        self.fd: int | None = None

    @property
    def disabled(self) -> bool:
        return os.path.realpath(self.path) == NO_PIDFILE

    def write(self, pid: int | None = None, quiet: bool = False) -> bool:
        """Write `<pid>\\n`; failures are logged, not fatal (as in the classic).

        Only a regular file is ever replaced: a device, socket, directory or symlink
        at the path is left alone (the classic overwrites and later unlinks them).
        """
        if self.disabled:
            return False
        if not _absent_or_regular(self.path):
            log.error("not writing pidfile %s: it exists and is not a regular file", self.path)
            return False
        pid = os.getpid() if pid is None else pid
        tmp = f"{self.path}.{pid}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            with os.fdopen(fd, "w") as f:
                f.write(f"{pid}\n")
            os.rename(tmp, self.path)
        except OSError as exc:
            if not quiet:
                log.error("can't open pidfile for writing: %s: %s", self.path, exc.strerror)
            _unlink_quietly(tmp)
            return False
        self.pid = pid
        self._keep_open()
        return True

    def _keep_open(self) -> None:
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return
        if self.fd is not None:
            os.close(self.fd)
        self.fd = fd

    def rewrite(self) -> bool:
        """A live handoff's successor: our pid into the file, replaced if we may, else
        rewritten in place through the descriptor the old process kept open."""
        if self.disabled or self.write(quiet=True):
            return True
        if self.fd is None:
            log.error("can't rewrite pidfile %s after the handoff", self.path)
            return False
        data = f"{os.getpid()}\n".encode()
        try:
            os.pwrite(self.fd, data, 0)
            os.ftruncate(self.fd, len(data))
        except OSError as exc:
            log.error("can't rewrite pidfile %s: %s", self.path, exc.strerror)
            return False
        self.pid = os.getpid()
        return True

    def live_owner(self) -> int | None:
        """The pid the file names if that process is alive and is not us."""
        if self.disabled:
            return None
        try:
            with open(self.path) as f:
                pid = int(f.read(64).strip())
        except (OSError, ValueError):
            return None
        if pid <= 0 or pid == os.getpid():
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, and not ours to signal
        return pid

    def remove(self) -> None:
        if self.pid is None or self.disabled:
            return
        try:
            st = os.lstat(self.path)
            if not stat.S_ISREG(st.st_mode):
                return
            with open(self.path) as f:
                content = f.read(64).strip()
            if content == str(self.pid):
                os.unlink(self.path)
        except OSError:
            pass
        self.pid = None


def _absent_or_regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return True
    except OSError:
        return False


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def unlink_socket(path: str, inode: tuple[int, int] | None = None) -> None:
    """Remove `path` if it is a socket (never anything else).

    With `inode` (st_dev, st_ino), only if the path still holds that very socket: a
    socket another process has since bound at the same path is left alone.
    """
    try:
        st = os.lstat(path)
        if stat.S_ISSOCK(st.st_mode) and inode in (None, (st.st_dev, st.st_ino)):
            os.unlink(path)
    except OSError:
        pass


def clear_socket_path(path: str) -> str | None:
    """Make room for a new unix socket at `path` (its server checked it is not live).

    A stale socket or an empty regular file is removed, as the classic does (its test
    harness hands it a file made by mktemp). Anything else is left alone, so binding
    fails: a file with data in it (the classic would delete even that, `/bin/sh` as
    root), a directory, a symbolic link, a FIFO or a device. Returns what was removed
    ("socket", "file") or None.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    empty_file = stat.S_ISREG(st.st_mode) and st.st_size == 0
    kind = "socket" if stat.S_ISSOCK(st.st_mode) else "file" if empty_file else None
    if kind is not None:
        try:
            os.unlink(path)
        except OSError:
            return None
    return kind


def socket_inode(path: str) -> tuple[int, int] | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


#: connect() errors that mean "nobody serves this socket any more"
_STALE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK, errno.EACCES})


def socket_in_use(path: str, timeout_s: float = 1.0) -> bool:
    """True when a process accepts connections on the unix socket at `path`.

    A socket file left behind by a killed daemon refuses connections (stale); a live
    one accepts, or has its backlog full (EAGAIN), or does not answer in time.
    """
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            return False
    except OSError:
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout_s)
    try:
        probe.connect(path)
    except TimeoutError:
        return True
    except OSError as exc:
        return exc.errno not in _STALE_ERRNOS
    finally:
        probe.close()
    return True


def chown_socket(path: str, uid: int | None, gid: int | None, mode: int) -> None:
    """Ownership (-u) and mode (-w) of a unix control socket, set before the drop.

    The classic applies -w only when -u names a group; here a given mode always applies.
    """
    if uid is not None or gid is not None:
        os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
    if mode:
        os.chmod(path, mode)


def drop_privileges(
    uid: int | None, gid: int | None, user: str | None, keep_net_admin: bool = False
) -> None:
    """initgroups/setgid before setuid. With only a user, `gid` is the user's primary group.

    `keep_net_admin`: keep CAP_NET_ADMIN (and no other capability) after setuid, for the
    kernel route (--kernel-offload), whose nftables and conntrack calls need it.

    Nothing to do (and no right to do it) for a process already running unprivileged
    as that user and group: a live handoff's successor of a daemon that dropped them.
    """
    if (
        os.geteuid() != 0
        and uid in (None, os.geteuid(), os.getuid())
        and gid in (None, os.getegid(), os.getgid())
    ):
        return
    try:
        if gid is not None:
            if user is not None:
                os.initgroups(user, gid)
            else:
                os.setgroups([gid])
            os.setgid(gid)
        if uid is not None:
            if keep_net_admin:
                linuxcaps.keep_caps(True)
            os.setuid(uid)
            if keep_net_admin:
                linuxcaps.keep_caps(False)
                linuxcaps.set_only(linuxcaps.CAP_NET_ADMIN)
    except OSError as exc:
        raise DaemonError(f"can't switch to requested user/group: {exc.strerror}") from None


def set_nofile_limit(limit: int) -> None:
    """-L: soft = hard = limit; warn if the kernel granted less."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    except (OSError, ValueError) as exc:
        raise DaemonError(f"setrlimit: {getattr(exc, 'strerror', None) or exc}") from None
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < limit:
        sys.stderr.write(
            f"rtpproxy: limit allocated by setrlimit ({hard}) is less than requested ({limit})\n"
        )


def enable_core_dumps() -> None:
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (OSError, ValueError) as exc:
        log.debug("can't raise RLIMIT_CORE: %s", exc)


def set_nice(level: int) -> None:
    """--nice: failure is fatal."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, level)
    except OSError as exc:
        raise DaemonError(f"setpriority: {exc.strerror}") from None


def set_scheduling(policy: str) -> None:
    """-c fifo|rr at the policy's maximum priority; failure is only logged."""
    code = os.SCHED_FIFO if policy == "fifo" else os.SCHED_RR
    try:
        os.sched_setscheduler(0, code, os.sched_param(os.sched_get_priority_max(code)))
    except OSError as exc:
        log.error("sched_setscheduler(%s): %s", policy, exc.strerror)
