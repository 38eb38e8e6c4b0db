"""A throw-away systemd container: this machine's /usr (read-only, with a writable
overlay) under a fresh systemd as PID 1, on its own loopback-only network.

    systemd-nspawn --register=no --keep-unit --private-network -D / --volatile=yes
                   --overlay=/usr::/usr --boot systemd.firstboot=off ...

The root is a tmpfs, so nothing the container does reaches this machine's files
(directories given as `binds` appear read-only at the same path);
`run` executes a command in all of its namespaces, `net_run` only in its network
namespace (this machine's files, the container's loopback), `path` reaches its files.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

BOOT_TIMEOUT_S = 60.0
#: Units of this machine that only slow the boot down or fail in a container.
MASKED = (
    "systemd-networkd-wait-online.service",
    "nftables.service",
    "prometheus.service",
    "prometheus-node-exporter.service",
    "rtpengine-daemon.service",
    "ngcp-rtpengine-daemon.service",
    "getty@.service",
    "console-getty.service",
)


def unavailable() -> str | None:
    """Why no container can be booted here (None: it can)."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    for tool in ("systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian: systemd-container, util-linux)"
    if not Path("/usr/lib/systemd/systemd").exists() and not Path("/lib/systemd/systemd").exists():
        return "systemd is not installed"
    return None


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


def _is_container_init(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    nspid = next((ln.split()[1:] for ln in status.splitlines() if ln.startswith("NSpid:")), [])
    return len(nspid) >= 2 and nspid[-1] == "1"


class Container:
    def __init__(self, workdir: Path, binds: tuple[str, ...] = ()) -> None:
        """`binds`: directories of this machine to show at the same path, read-only."""
        self.workdir = workdir
        self.binds = binds
        self.log_path = workdir / "boot.log"
        self.name = f"rtpp-test-{os.getpid()}"
        self.proc: subprocess.Popen | None = None
        self.pid1: int | None = None

    def boot(self) -> None:
        cmd = [
            "systemd-nspawn",
            "--register=no",
            "--keep-unit",
            "--private-network",
            f"--machine={self.name}",
            "-D",
            "/",
            "--volatile=yes",
            "--overlay=/usr::/usr",
            *(f"--bind-ro={path}" for path in self.binds),
            "--boot",
            "systemd.firstboot=off",
            *(f"systemd.mask={unit}" for unit in MASKED),
        ]
        log = open(self.log_path, "wb")  # noqa: SIM115 - the container outlives this call
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while self.pid1 is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the container did not start:\n{self.boot_log()}")
            self.pid1 = self._find_init()
            time.sleep(0.1)
        while True:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the container did not boot ({state}):\n{self.boot_log()}")
            time.sleep(0.2)

    def _find_init(self) -> int | None:
        todo = _children(self.proc.pid)
        while todo:
            pid = todo.pop()
            if _is_container_init(pid):
                return pid
            todo.extend(_children(pid))
        return None

    def boot_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def run(self, *cmd: str, check: bool = True, timeout: float = 120, **kw):
        """`cmd` inside the container (all its namespaces)."""
        proc = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", "--", *cmd],
            capture_output=True, text=True, timeout=timeout, **kw,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def net_command(self, *cmd: str) -> list[str]:
        """`cmd` in the container's network namespace only (this machine's files)."""
        return ["nsenter", "-t", str(self.pid1), "--net", "--", *cmd]

    def path(self, inside: str) -> Path:
        """A path of the container as seen from here."""
        return Path(f"/proc/{self.pid1}/root") / inside.lstrip("/")

    def poweroff(self) -> None:
        if self.proc is None:
            return
        if self.pid1 is not None and self.proc.poll() is None:
            self.run("systemctl", "poweroff", check=False, timeout=30)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
