"""Program entry: helper-tool dispatch, daemon start-up, signals and orderly shutdown."""

from __future__ import annotations

import dataclasses
import importlib
import logging
import os
import signal
import sys
from collections import deque

import gevent
from gevent.event import Event

from rtpp import cli, daemon, logsetup, sdnotify
from rtpp.config import Config
from rtpp.control.server import BindError, ControlServer, make_listeners
from rtpp.control.spec import parse_spec

# The handoff code runs when the executable on disk may already be a newer one: a
# one-file build could no longer import it then, so it is imported now.
from rtpp.handoff import carrier, main_pid, media_state, receiver, sender, waiter
from rtpp.handoff.archive import pin_archive
from rtpp.handoff.successor import Executable
from rtpp.media.notify import NotifyConfigError
from rtpp.spawn import spawn_logged

log = logging.getLogger(__name__)

PROG = "rtpproxy"
TOOLS = {
    "makeann": "rtpp.tools.makeann",
    "extractaudio": "rtpp.tools.extractaudio",
    "top": "rtpp.tools.top",
}
#: Program names (symlinks to the executable) that run a tool; `top` alone would
#: shadow procps' top.
TOOL_PROGRAMS = {"makeann": "makeann", "extractaudio": "extractaudio", "rtpproxy-top": "top"}
#: signals that stop the daemon at once (OPERATIONS.md 2.6); SIGUSR2 hands over instead
STOP_SIGNALS = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGUSR1,
    signal.SIGXCPU,
    signal.SIGXFSZ,
    signal.SIGVTALRM,
    signal.SIGPROF,
)
#: reopens the accounting file (--acct) after log rotation; its default action is to
#: ignore it, so a rotation script that signals an older version does no harm
REOPEN_SIGNAL = signal.SIGWINCH
DRAIN_POLL_S = 0.25
#: systemd's status line; the package's postinst looks for "live handoff" in it
SERVING_STATUS = "serving; reload (SIGUSR2) = live handoff to the executable on disk"
EOF_EVENT = "EOF"


def entry(argv: list[str]) -> int:
    name = os.path.basename(argv[0]) if argv else PROG
    args = list(argv[1:])
    for program, tool in TOOL_PROGRAMS.items():
        if name == program or name.startswith(program + "."):
            return run_tool(tool, args)
    if args and args[0] in TOOLS:
        return run_tool(args[0], args[1:])
    return run_daemon(args, Executable.of_this_process(list(argv)))


def run_tool(tool: str, args: list[str]) -> int:
    module = importlib.import_module(TOOLS[tool])
    return int(module.main(args) or 0)


def _print_error(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def run_daemon(args: list[str], executable: Executable | None = None) -> int:
    pin_archive()  # modules imported late still come from this executable after an upgrade
    try:
        config = cli.parse_args(args)
    except cli.EarlyExit as info:
        stream = sys.stderr if info.to_stderr else sys.stdout
        stream.write(info.output)
        stream.flush()
        return info.status
    except cli.ListenError as exc:
        _print_error(exc.message)
        _print_error("init_config_bail: init_bindaddrs() failed")
        return 1
    except cli.UsageError as exc:
        _print_error(f"{PROG}: {exc.message}")
        if exc.show_usage:
            sys.stderr.write(cli.usage_text())
        return 1
    return Daemon(config, executable).run()


class Daemon:
    """Start-up (OPERATIONS.md 2.1), the main greenlet's signal loop and shutdown."""

    def __init__(self, config: Config, executable: Executable | None = None) -> None:
        self.config = config
        self.executable = executable
        self._handoff: gevent.Greenlet | None = None
        self.server: ControlServer | None = None
        self.app = None
        self.observe = None
        self._metrics_listener = None
        self.pidfile = daemon.Pidfile(config.pidfile)
        self.daemonized: daemon.Daemonized | None = None
        self._pending: deque = deque()
        self._wakeup = Event()
        self._draining = False
        self._stopping = False
        self._shut_down = False

    # -------------------------------------------------------------- start-up

    def run(self) -> int:
        channel = receiver.inherited_channel()
        if channel is not None:
            return self._take_over(receiver.Takeover(channel))
        try:
            app_class = _import_app()
            observe_class = _import_observe(self.config)
            self._bind()
        except (BindError, daemon.DaemonError, ImportError) as exc:
            _print_error(f"{PROG}: {exc}")
            if isinstance(exc, BindError):
                _print_error(f"{PROG}: can't initialize control socket(s): {exc.reason}")
                owner = self.pidfile.live_owner()
                if owner is not None:
                    _print_error(
                        f"{PROG}: {self.config.pidfile} names process {owner}, still running"
                    )
            return 1
        try:
            self._bind_metrics()
        except OSError as exc:
            host, port = self.config.metrics_addr or ("", 0)
            _print_error(f"{PROG}: can't serve metrics on {host}:{port}: {exc}")
            self.server.close()
            return 1
        if not self.config.foreground:
            self.daemonized = daemon.daemonize(self.config.no_chdir, self.config.no_redirect)
        logsetup.setup_logging(self.config, foreground=self.config.foreground)
        log.info("rtpproxy started, pid %d", os.getpid())
        try:
            self._start(app_class, observe_class)
        except Exception as exc:
            expected = isinstance(exc, (OSError, daemon.DaemonError, NotifyConfigError))
            log.critical("start-up failed: %s", exc, exc_info=not expected)
            if self.daemonized is not None:
                self.daemonized.fail(str(exc))
            self.shutdown()
            return 1
        return self._main_loop()

    def _listeners(self) -> ControlServer:
        cfg = self.config
        owner = None
        if cfg.run_uid is not None or cfg.run_gid is not None or cfg.sock_mode:
            owner = (cfg.run_uid, cfg.run_gid, cfg.sock_mode)
        specs = [parse_spec(text) for text in cfg.ctrl_socks]
        listeners = make_listeners(
            specs, no_resolve=cfg.no_resolve, owner=owner, on_eof=self.request_drain
        )
        return ControlServer(listeners)

    def _bind(self) -> None:
        cfg = self.config
        if cfg.nofile_limit is not None:
            daemon.set_nofile_limit(cfg.nofile_limit)
        self.server = self._listeners()
        try:
            self.server.bind()
        except BindError:
            self.server.close()
            raise

    def _bind_metrics(self, shared: bool = False) -> None:
        if self.config.metrics_addr is not None:
            from rtpp.observe.http import bind_listener

            self._metrics_listener = bind_listener(*self.config.metrics_addr, shared=shared)

    def _start(self, app_class, observe_class) -> None:
        cfg = self.config
        if cfg.sched_policy:
            daemon.set_scheduling(cfg.sched_policy)
        if cfg.nice is not None:
            daemon.set_nice(cfg.nice)
        if cfg.config_file:
            log.info("%s loads no modules; its other sections are ignored", cfg.config_file)
        self.app = app_class(cfg)
        self.pidfile.write()
        if cfg.run_uid is not None or cfg.run_gid is not None:
            daemon.drop_privileges(
                cfg.run_uid, cfg.run_gid, cfg.run_user, keep_net_admin=self.app.kernel_route_on
            )
        daemon.enable_core_dumps()
        self.app.start()
        self._start_observing(observe_class)
        assert self.server is not None
        self.server.start(self.app)
        self._install_signals()
        sdnotify.notify(f"READY=1\nSTATUS={SERVING_STATUS}")
        if self.daemonized is not None:
            self.daemonized.ready()

    def _start_observing(self, observe_class) -> None:
        if observe_class is not None:
            self.observe = observe_class(self.app, self._metrics_listener, self.config.acct_path)
            self.observe.start()

    def _install_signals(self) -> None:
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        for signum in (*STOP_SIGNALS, signal.SIGHUP, signal.SIGUSR2, REOPEN_SIGNAL):
            gevent.signal_handler(signum, self._record, signum)

    # -------------------------------------------------------------- live handoff

    def _take_over(self, takeover: receiver.Takeover) -> int:
        """Start-up of a live handoff's successor: everything comes from the old process.

        Nothing is bound, no daemonizing; the sockets, sessions and files are the old
        process's until GO, so every failure before it only tells the old one why.
        """
        cfg = self.config
        observe_class = _import_observe(cfg)
        sections, fds = takeover.hello()
        self.server = self._listeners()
        takeover.restore(lambda: carrier.restore_control(self.server, sections["control"], fds))
        logsetup.setup_logging(cfg, foreground=cfg.foreground)
        players: list = []

        def build() -> None:
            nonlocal players
            if cfg.nofile_limit is not None:
                daemon.set_nofile_limit(cfg.nofile_limit)
            if cfg.nice is not None:
                daemon.set_nice(cfg.nice)
            self.app = _import_app()(dataclasses.replace(cfg, kernel_adopt=True))
            carrier.restore_app(self.app, sections["app"])
            carrier.restore_pidfile(self.pidfile, sections["pidfile"], fds)
            players = media_state.restore(self.app, sections["media"], fds)
            # The old process still listens there: the port is shared until it exits.
            self._bind_metrics(shared=True)
            if cfg.run_uid is not None or cfg.run_gid is not None:
                daemon.drop_privileges(cfg.run_uid, cfg.run_gid, cfg.run_user)
            left = fds.untaken()
            if left:
                raise ValueError(f"{len(left)} handed-over descriptors were not taken over")

        takeover.restore(build)
        takeover.ready()
        # GO: from here on this process is the daemon.
        media_state.activate(self.app, players)
        daemon.enable_core_dumps()
        self.app.start()
        self._start_observing(observe_class)
        self.server.start(self.app)
        self._install_signals()
        self.pidfile.rewrite()
        main_pid.announce(SERVING_STATUS, takeover.old_pid, takeover.release)
        log.info("rtpproxy took over from the previous process, pid %d", os.getpid())
        return self._main_loop()

    def _start_handoff(self) -> None:
        if self._handoff is not None:
            log.warning("got SIGUSR2 while a live handoff is under way: ignored")
            return
        if self.executable is None:
            log.error("live handoff refused: the executable is unknown; this process serves on")
            return
        log.info("got SIGUSR2, handing over to a new process of %s", self.executable.program)
        if self.observe is not None:
            self.observe.share_port()
        self._handoff = spawn_logged(self._run_handoff, name="handoff")

    def _run_handoff(self) -> None:
        try:
            pid = sender.hand_over(carrier.DaemonCarrier(self), self.executable)
        except Exception:
            log.exception("live handoff failed; this process serves on")
            pid = None
        finally:
            self._handoff = None
        if pid is not None:
            self._leave_to_successor()

    def _leave_to_successor(self) -> None:
        """The successor serves: exit without closing, removing or flushing what it took
        (or, in a terminal's foreground job, stay as its waiter)."""
        if self.observe is not None:
            self.observe.close()  # not handed over: the successor serves its own
        carrier.DaemonCarrier(self).release()
        if waiter.wanted(self.config.foreground):
            waiter.stay()  # the terminal's job: it lives on until the daemon ends
        log.info("rtpproxy ended (handed over)")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    # -------------------------------------------------------------- main loop

    def _record(self, event) -> None:
        """Signal handler: only record, the main greenlet acts."""
        self._pending.append(event)
        self._wakeup.set()

    def request_drain(self) -> None:
        self._record(EOF_EVENT)

    def _main_loop(self) -> int:
        while not self._stopping:
            self._wakeup.wait(timeout=DRAIN_POLL_S if self._draining else None)
            self._wakeup.clear()
            while self._pending and not self._stopping:
                self._dispatch(self._pending.popleft())
            if self._draining and not self._stopping and self._sessions() == 0:
                log.info("deorbiting-burn sequence completed, exiting")
                self._stopping = True
        if self._handoff is not None:
            self._handoff.kill(block=True)  # ends the successor; we stop the normal way
        self.shutdown()
        return 0

    def _dispatch(self, event) -> None:
        if event == signal.SIGHUP:
            log.info("got SIGHUP, initiating deorbiting-burn sequence")
            self._drain()
        elif event == signal.SIGUSR2:
            self._start_handoff()
        elif event == REOPEN_SIGNAL:
            if self.observe is not None:
                self.observe.reopen()
        elif event == EOF_EVENT:
            log.info("EOF on the control channel, initiating deorbiting-burn sequence")
            self._drain()
        else:
            log.info("got signal %d", event)
            self._stopping = True

    def _drain(self) -> None:
        if not self._draining:
            self._draining = True
            self.app.drain()

    def _sessions(self) -> int:
        try:
            return int(self.app.session_count)
        except Exception:
            log.exception("can't read the session count")
            return 0

    # -------------------------------------------------------------- shutdown

    def shutdown(self) -> None:
        """Close listeners, destroy sessions, unlink sockets and pidfile. Idempotent."""
        if self._shut_down:
            return
        self._shut_down = True
        if self.server is not None:
            self.server.close()
        if self.observe is not None:
            self.observe.stop_serving()
        elif self._metrics_listener is not None:
            self._metrics_listener.close()
        if self.app is not None:
            try:
                self.app.close()
            except Exception:
                log.exception("error while closing sessions")
        if self.observe is not None:
            self.observe.close()  # the records of the sessions just closed
        if self.server is not None:
            self.server.stop(timeout=0.5)
        self.pidfile.remove()
        sdnotify.notify("STATUS=Exited")
        log.info("rtpproxy ended")
        logging.shutdown()


def _import_app():
    from rtpp.app import App

    return App


def _import_observe(config: Config):
    """Observability, when asked for (imported before the daemon detaches)."""
    if config.metrics_addr is None and config.acct_path is None:
        return None
    from rtpp.observe import Observability

    return Observability
