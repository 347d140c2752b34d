"""A warm process for re-runs: ``python -m ivighelpers run ...`` hands its request to it.

A re-run spends about 2 s importing the analysis stack (pandas, scipy, matplotlib, IPython, papermill, nbconvert)
and reading the data before its notebook starts. The first ``run`` therefore starts a server for this checkout,
which imports all of it once (``execute.warm``); this and every later ``run`` send it their command line,
environment, working folder and terminal (standard input, output and error are passed as file descriptors), and the
server forks a process that runs the command exactly as ``python -m ivighelpers run`` would (``report.main_run``)
and reports its exit code back. Output, errors and exit codes are the command's own; Ctrl-C and ``kill`` on the
command are passed on to the forked process, which stops its notebook as a local run does.

Correctness first: the server answers only while nothing it has loaded has changed. Its fingerprint (name, size and
modification time of every file under ``ivighelpers/``, ``notebooks/``, ``data/`` and the data folder in use, plus
the Python and its installed packages) is taken before it imports anything and checked on every request; on any
difference it answers "stale" and exits, and the command starts a fresh one. Environments that change what an
import reads (``IVIG_*``, ``MPL*``, ``PYTHON*``, locale, thread counts, ``JUPYTER*``...) get servers of their own.
The server leaves after ``$IVIG_SERVER_IDLE`` seconds without a request (default 900), on SIGTERM, or by
``python -m ivighelpers server stop``. ``IVIG_SERVER=0`` runs every command in its own process, as before.

The socket lives in a folder only this user can open (``$XDG_RUNTIME_DIR`` or the temporary folder,
``ivighelpers-<uid>/``), beside the server's log; nothing is written in the checkout.

- ``request(argv)``: the command side; returns the exit code, or ``None`` when no server can be used (the command
  then runs in its own process).
- ``serve()``: the server (``python -m ivighelpers.server``).
- ``start()``: start one in the background (the end of ``make report``).
- ``stop()`` / ``status()``: ``python -m ivighelpers server stop|status``.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ENV_PREFIXES = ("IVIG_", "MPL", "PYTHON", "JUPYTER", "IPYTHON", "LC_", "LANG", "TZ", "OMP_", "OPENBLAS_", "MKL_",
                "NUMEXPR_", "VECLIB_", "HOME", "PATH", "TMPDIR", "SOURCE_DATE_EPOCH")
IGNORED_ENV = ("IVIG_SERVER_IDLE",)   # read by the server itself, not by what it has loaded
IDLE_DEFAULT = 900.0                  # seconds without a request after which the server leaves
START_TIMEOUT = 120.0                 # seconds a command waits for a server it started to accept


def enabled() -> bool:
    return os.environ.get("IVIG_SERVER", "1").strip().lower() not in ("0", "no", "false", "off")


def idle_seconds() -> float:
    """``$IVIG_SERVER_IDLE`` (seconds without a request after which the server leaves), default 900."""
    raw = os.environ.get("IVIG_SERVER_IDLE", "")
    try:
        value = float(raw) if raw.strip() else IDLE_DEFAULT
    except ValueError:
        value = -1
    if not value > 0:
        _log(f"IVIG_SERVER_IDLE={raw!r} is not a positive number of seconds; using {IDLE_DEFAULT:g}")
        value = IDLE_DEFAULT
    return value


def request(argv: list[str]) -> int | None:
    """Send ``argv`` (``["run", ...]``) to this checkout's server, starting one if none answers; returns the exit
    code of the command, or ``None`` when no server could be used."""
    try:
        fds = [0, 1, 2]
        for fd in fds:
            os.fstat(fd)
    except OSError:
        return None                    # a closed standard stream cannot be passed on
    message = _frame({"argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "umask": _umask()})
    for _ in range(2):                 # a stale server is replaced once
        try:
            conn = _connect() or _start_and_connect()
        except OSError:                # no private folder for the socket
            return None
        if conn is None:
            return None
        try:
            socket.send_fds(conn, [message], fds)
        except OSError:
            conn.close()
            return None                # nothing was run: the command runs here
        try:
            answer = _converse(conn)
        finally:
            conn.close()
        if answer == "stale":
            _wait_gone()               # the old server is leaving; start a fresh one
            continue
        if answer is None:
            print("the warm server ended without an answer; running the command here", file=sys.stderr)
        return answer
    return None


def serve() -> int:
    """The server loop (``python -m ivighelpers.server``); returns when idle, stale, stopped or replaced."""
    sock_path, lock_path, _ = _paths()
    fingerprint = _fingerprint()       # before importing anything: a file changed after this makes it stale
    import fcntl
    lock = open(lock_path, "a+")
    deadline = time.monotonic() + 10
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:        # a server for this checkout runs (or is leaving)
            if _answers() or time.monotonic() > deadline:
                return 0
            time.sleep(0.05)
    _log(f"starting for {ROOT} (pid {os.getpid()})")
    from . import execute
    execute.warm(full=True)                        # imports report (the command's module) too
    try:
        os.unlink(sock_path)
    except FileNotFoundError:
        pass
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock_path))
    os.chmod(sock_path, 0o600)
    listener.listen(16)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *a: stopping.append(1))
    signal.signal(signal.SIGINT, lambda *a: stopping.append(1))
    idle = idle_seconds()
    handlers, last = set(), time.monotonic()
    _log("ready")
    try:
        while not stopping:
            try:
                ready, _, _ = select.select([listener], [], [], 1.0)
            except InterruptedError:
                continue
            handlers -= _reaped(handlers)
            if handlers:
                last = time.monotonic()
            if not ready:
                if time.monotonic() - last > idle:
                    _log(f"idle for {idle:g} s: leaving")
                    break
                continue
            conn, _ = listener.accept()
            last = time.monotonic()
            req, fds = _receive(conn)
            if req is None:
                conn.close()
                continue
            if _fingerprint() != fingerprint:
                _log("a file changed since this server started: stale, leaving")
                _close_all(fds)
                _send(conn, "stale")
                conn.close()
                break
            if req["argv"] == ["server", "stop"]:
                _close_all(fds)
                _send(conn, "exit 0")
                conn.close()
                _log("stopped on request")
                break
            _log(f"serving {' '.join(req['argv'])}")
            pid = os.fork()
            if pid == 0:
                listener.close()
                lock.close()                     # closing this copy keeps the server's lock
                _handle(conn, req, fds)          # never returns
            handlers.add(pid)
            _close_all(fds)
            conn.close()
    finally:
        listener.close()
        try:
            os.unlink(sock_path)             # ours: no other server binds while this one holds the lock
        except OSError:
            pass
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
    for pid in handlers:                # let the commands being served finish; they answer their clients
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    return 0


def start() -> bool:
    """Start this checkout's server in the background unless one answers (``make report`` does, so that the
    first re-run after it is warm too); returns whether one was started."""
    try:
        if not enabled() or _answers():
            return False
        proc = _spawn()
        deadline = time.monotonic() + 10
        while not _starting() and not _answers() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)             # until it holds the lock, so that a `server stop` right after finds it
        return True
    except OSError:
        return False


def stop() -> int:
    """Stop this checkout's server (for the current environment), waiting for one that is still starting; prints
    what it did."""
    conn = _connect()
    deadline = time.monotonic() + START_TIMEOUT
    while conn is None and _starting() and time.monotonic() < deadline:
        time.sleep(0.05)                 # it holds the lock but has not bound its socket yet
        conn = _connect()
    if conn is None:
        print("no server runs for this checkout")
        return 0
    try:
        socket.send_fds(conn, [_frame({"argv": ["server", "stop"]})], [0, 1, 2])
        answer = _converse(conn)
    finally:
        conn.close()
    _wait_gone()
    print("server stopped" if answer in (0, "stale") else f"server answered {answer!r}")
    return 0


def status() -> int:
    sock_path, _, log_path = _paths()
    if not _answers():
        print("a server for this checkout is starting" if _starting() else
              f"no server runs for this checkout ({'disabled by IVIG_SERVER' if not enabled() else 'none started'})")
        return 0
    print(f"a server runs for this checkout: socket {sock_path}, log {log_path}")
    return 0


# --- the command's side ----------------------------------------------------------------------------------------

def _converse(conn) -> int | str | None:
    """Pass signals on while the command runs; returns its exit code, "stale", or None if the server vanished."""
    forwarded = {}

    def forward(signum, frame):
        if signum == signal.SIGHUP:       # a closed terminal: stop the run cleanly, as SIGTERM does
            signum = signal.SIGTERM
        try:
            conn.sendall(f"signal {signum}\n".encode())
        except OSError:
            pass

    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        forwarded[s] = signal.signal(s, forward)
    try:
        buf = b""
        while b"\n" not in buf:
            try:
                chunk = conn.recv(64)
            except InterruptedError:
                continue
            if not chunk:
                return None
            buf += chunk
        line = buf.split(b"\n", 1)[0].decode()
        if line == "stale":
            return "stale"
        return int(line.split()[1])
    finally:
        for s, old in forwarded.items():
            signal.signal(s, old)


def _answers() -> bool:
    conn = _connect()
    if conn is not None:
        conn.close()
    return conn is not None


def _starting() -> bool:
    """Whether a server holds this checkout's lock (it takes it before warming up, and binds its socket after)."""
    import fcntl
    _, lock_path, _ = _paths()
    try:
        with open(lock_path, "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True


def _connect():
    sock_path, _, _ = _paths()
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(sock_path))
        return s
    except OSError:
        s.close()
        return None


def _spawn():
    """Start a server in its own session, its output going to its log (never to the command's terminal or pipes)."""
    import subprocess
    _, _, log_path = _paths()
    try:
        fresh = log_path.stat().st_size > 1 << 20      # keep the log small: start it again past 1 MB
    except OSError:
        fresh = True
    with open(log_path, "w" if fresh else "a") as log:
        return subprocess.Popen([sys.executable, "-m", "ivighelpers.server"], cwd=str(ROOT), stdin=subprocess.DEVNULL,
                                stdout=log, stderr=log, start_new_session=True, close_fds=True)


def _start_and_connect():
    try:
        proc = _spawn()
    except OSError:
        return None
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        conn = _connect()
        if conn is not None:
            return conn
        if proc.poll() is not None:    # it left: another server may have won the race
            conn = _connect()
            if conn is not None:
                return conn
            if proc.returncode != 0:
                return None
            time.sleep(0.05)
            continue
        time.sleep(0.01)
    return None


def _wait_gone(timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _answers() and time.monotonic() < deadline:
        time.sleep(0.02)


# --- the server's side -----------------------------------------------------------------------------------------

def _handle(conn, req: dict, fds: list[int]) -> None:
    """In the handler process: fork the process that runs the command on the client's terminal, pass signals on,
    and send back its exit code."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    code = 1
    try:
        pid = os.fork()
        if pid == 0:
            _run_command(req, fds)               # never returns
        _close_all(fds)
        code = _watch(conn, pid)
        _send(conn, f"exit {code}")
    except BaseException as e:                   # the client must get an answer
        _log(f"handler failed: {e!r}")
        try:
            _send(conn, f"exit {code}")
        except OSError:
            pass
    finally:
        os._exit(0)


def _watch(conn, pid: int) -> int:
    pidfd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else None
    watched, buf = [conn], b""
    while True:
        if pidfd is not None:
            ready, _, _ = select.select(watched + [pidfd], [], [])
        else:
            ready, _, _ = select.select(watched, [], [], 0.05)
        if conn in ready:
            chunk = conn.recv(256)
            if not chunk:                        # the command was killed outright: stop its run
                _signal(pid, signal.SIGTERM)
                watched = []
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                parts = line.decode(errors="replace").split()
                if len(parts) == 2 and parts[0] == "signal" and parts[1].isdigit():
                    _signal(pid, int(parts[1]))
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            return code if code >= 0 else 128 - code


def _run_command(req: dict, fds: list[int]) -> None:
    """In the forked process: become the command (its terminal, environment, folder, umask) and run it."""
    code = 1
    try:
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
        _close_all(fds)
        os.environ.clear()
        os.environ.update(req["env"])
        os.chdir(req["cwd"])
        os.umask(req["umask"])
        import io
        sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False), encoding=sys.stdin.encoding)
        sys.stdout = io.TextIOWrapper(open(1, "wb", closefd=False), encoding=sys.stdout.encoding,
                                      line_buffering=os.isatty(1), errors=sys.stdout.errors)
        sys.stderr = io.TextIOWrapper(open(2, "wb", closefd=False), encoding=sys.stderr.encoding,
                                      line_buffering=True, errors="backslashreplace")
        argv = req["argv"]
        if argv[:1] != ["run"]:
            print(f"error: the server runs only 'run' commands, not {argv[:1]}", file=sys.stderr)
            code = 2
        else:
            from .report import main_run
            code = main_run(argv[1:])
    except SystemExit as e:                       # argparse: --help, usage errors
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
    except BaseException:
        import traceback
        traceback.print_exc()
        code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _receive(conn):
    """One request: a length-prefixed JSON message with the client's three standard streams attached."""
    try:
        conn.settimeout(10)
        data, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        if not data:
            return None, []                      # a connection that only asked whether a server runs
        while len(data) < 8:
            more = conn.recv(1 << 20)
            if not more:
                raise OSError("short request")
            data += more
        (size,) = struct.unpack("!Q", data[:8])
        data = data[8:]
        while len(data) < size:
            more = conn.recv(1 << 20)
            if not more:
                raise OSError("short request")
            data += more
        conn.settimeout(None)
        if len(fds) != 3:
            _close_all(fds)
            return None, []
        return json.loads(data[:size]), list(fds)
    except (OSError, ValueError) as e:
        _log(f"bad request: {e!r}")
        return None, []


def _reaped(pids: set) -> set:
    done = set()
    for pid in pids:
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                done.add(pid)
        except ChildProcessError:
            done.add(pid)
    return done


def _send(conn, line: str) -> None:
    conn.sendall((line + "\n").encode())


def _frame(obj) -> bytes:
    payload = json.dumps(obj).encode()
    return struct.pack("!Q", len(payload)) + payload


def _close_all(fds) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass


def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {msg}", file=sys.stderr, flush=True)


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


# --- where, and whether it is still the same code and data ------------------------------------------------------

def _paths() -> tuple[Path, Path, Path]:
    """Socket, lock and log of this checkout's server for the current environment (in a folder only this user can
    open)."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or _tempdir()) / f"ivighelpers-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    st = base.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{base} is not private to this user")
    env = {k: v for k, v in os.environ.items()
           if k.startswith(ENV_PREFIXES) and k not in IGNORED_ENV and k != "IVIG_SERVER"}
    key = hashlib.sha256(json.dumps([str(ROOT), sys.executable, sys.version, sorted(env.items())]).encode())
    name = key.hexdigest()[:20]
    return base / f"{name}.sock", base / f"{name}.lock", base / f"{name}.log"


def _tempdir() -> str:
    import tempfile
    return tempfile.gettempdir()


def _fingerprint() -> str:
    """Name, size and modification time of every file the server's imports and caches depend on."""
    import sysconfig
    h = hashlib.sha256()
    data = Path(os.environ.get("IVIG_DATA_DIR") or ROOT / "data")
    tops = [ROOT / "ivighelpers", ROOT / "notebooks", ROOT / "data", data]
    for top in tops:
        h.update(f"\0{top}".encode())
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in sorted(filenames):
                try:
                    st = os.stat(os.path.join(dirpath, f))
                except OSError:
                    continue
                h.update(f"{dirpath}/{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    for d in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        try:
            h.update(f"{d}:{os.stat(d).st_mtime_ns}\n".encode())
        except OSError:
            pass
    return h.hexdigest()


if __name__ == "__main__":
    try:
        code = serve()
    except Exception as e:
        _log(f"failed: {e!r}")
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
