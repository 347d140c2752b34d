"""The warm server for re-runs (ivighelpers/server.py): a re-run it serves gives what a run in its own process
gives (results, HTML, exit codes, messages), it is replaced when code or data change, signals reach the notebook,
and it leaves when idle or asked to. Every test uses a private socket folder and stops its server."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from ivighelpers import server

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / "reports" / "runs"


@pytest.fixture
def env(tmp_path):
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    e = {**os.environ, "IVIG_SERVER": "1", "XDG_RUNTIME_DIR": str(runtime), "IVIG_SERVER_IDLE": "120"}
    yield e
    for pid in _server_pids(e):                   # every server of this folder, whatever environment started it
        try:
            psutil.Process(pid).terminate()
        except psutil.NoSuchProcess:
            pass


def _run(env, *args, timeout=300):
    return subprocess.run([sys.executable, "-m", "ivighelpers", "run", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def _log(env) -> str:
    logs = sorted(Path(env["XDG_RUNTIME_DIR"]).glob("ivighelpers-*/*.log"))
    return "".join(p.read_text() for p in logs)


def _server_pids(env) -> list[int]:
    log = _log(env)
    return sorted({int(line.split("(pid ")[1].rstrip(")")) for line in log.splitlines() if "starting for" in line})


def test_a_served_rerun_equals_a_run_in_its_own_process(env):
    args = ["ck", "-p", "method", "DL", "-p", "level", "0.9"]
    first = _run(env, *args)                      # starts the server, which serves it
    assert first.returncode == 0, first.stderr
    name = "ck__level-0.9__method-DL"
    served = json.loads((RUNS / name / "results.json").read_text())
    second = _run(env, *args)                     # warm
    assert second.returncode == 0, second.stderr
    assert second.stdout.startswith(f"{name}: reports/runs/{name}/{name}.html")
    log = _log(env)
    assert log.count("starting for") == 1 and log.count("serving run ck -p method DL -p level 0.9") == 2, log
    html_served = (RUNS / name / f"{name}.html").read_text()
    png_served = {p.name: p.read_bytes() for p in (RUNS / name).rglob("*.png")}
    own = _run({**env, "IVIG_SERVER": "0"}, *args)
    assert own.returncode == 0, own.stderr
    assert json.loads((RUNS / name / "results.json").read_text()) == served
    assert {p.name: p.read_bytes() for p in (RUNS / name).rglob("*.png")} == png_served and png_served
    # the only difference: papermill gives the injected parameters cell a random id in every run
    strip = lambda h: [x for x in h.splitlines() if "celltag_injected-parameters" not in x]  # noqa: E731
    assert strip((RUNS / name / f"{name}.html").read_text()) == strip(html_served)
    both = [subprocess.Popen([sys.executable, "-m", "ivighelpers", "run", *args], cwd=ROOT, env=env, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    for p in both:                                # two identical served runs at once do not collide
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert json.loads((RUNS / name / "results.json").read_text()) == served
    assert _log(env).count("starting for") == 1


def test_errors_help_and_exit_codes_are_the_commands_own(env):
    bad = _run(env, "ck", "-p", "method", "XX")
    assert bad.returncode == 2
    assert "error: method='XX' is not allowed; allowed: FE, DL, REML, ML, PM, HS, SJ, HE, EB" in bad.stderr
    assert "serving run ck -p method XX" in _log(env)
    unknown = _run(env, "nosuch")
    assert unknown.returncode == 2 and "invalid choice: 'nosuch'" in unknown.stderr
    helped = _run(env, "strength", "--help")
    assert helped.returncode == 0 and "the strength notebook's defaults" in helped.stdout
    assert "min_n" in helped.stdout


def test_a_changed_data_file_replaces_the_server(env, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(ROOT / "data", data)
    e = {**env, "IVIG_DATA_DIR": str(data)}
    assert _run(e, "steroid", "-p", "method", "DL").returncode == 0
    first = _server_pids(e)
    f = data / "studies.csv"
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))     # the server cannot know the content is the same
    again = _run(e, "steroid", "-p", "method", "DL")
    assert again.returncode == 0, again.stderr
    log = _log(e)
    assert "a file changed since this server started: stale, leaving" in log
    assert len(_server_pids(e)) == 2 and _server_pids(e)[0] == first[0]
    assert not psutil.pid_exists(first[0]) or psutil.Process(first[0]).status() == psutil.STATUS_ZOMBIE


def test_sigterm_on_the_command_stops_the_served_notebook(env):
    assert _run(env, "ck", "-p", "method", "DL").returncode == 0      # the server is warm
    [pid] = _server_pids(env)
    before = set(os.listdir(RUNS / ".staging"))
    p = subprocess.Popen([sys.executable, "-m", "ivighelpers", "run", "strength", "-p", "method", "HE"], cwd=ROOT,
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not psutil.Process(pid).children(recursive=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)                                                   # the notebook is running
    p.send_signal(signal.SIGTERM)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, (out, err)
    assert "interrupted: every notebook's process was stopped; no partial output was published" in err
    deadline = time.monotonic() + 10
    while psutil.Process(pid).children(recursive=True) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert psutil.Process(pid).children(recursive=True) == []         # nothing of that run still executes
    assert set(os.listdir(RUNS / ".staging")) == before               # and its staging folder is gone


def test_the_server_leaves_when_idle_and_when_asked(env):
    idle = {**env, "IVIG_SERVER_IDLE": "1"}
    assert _run(idle, "ck", "-p", "method", "DL").returncode == 0
    [pid] = _server_pids(idle)
    deadline = time.monotonic() + 20
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "idle for 1 s: leaving" in _log(idle)
    st = subprocess.run([sys.executable, "-m", "ivighelpers", "server", "status"], cwd=ROOT, env=idle,
                        capture_output=True, text=True)
    assert st.stdout.startswith("no server runs for this checkout")
    assert _run(env, "ck", "-p", "method", "DL").returncode == 0
    stop = subprocess.run([sys.executable, "-m", "ivighelpers", "server", "stop"], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    assert stop.stdout.strip() == "server stopped" and "stopped on request" in _log(env)



def test_stop_waits_for_a_server_that_is_still_starting(env):
    started = subprocess.run([sys.executable, "-c", "from ivighelpers import server; print(server.start())"], cwd=ROOT,
                             env=env, capture_output=True, text=True)
    assert started.stdout.strip() == "True"
    stop = subprocess.run([sys.executable, "-m", "ivighelpers", "server", "stop"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180)     # at once: the server is still warming up
    assert stop.stdout.strip() == "server stopped", stop.stdout
    [pid] = _server_pids(env)
    deadline = time.monotonic() + 20
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_environments_that_change_imports_get_their_own_server(monkeypatch, tmp_path):
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("IVIG_DATA_DIR", raising=False)
    plain = server._paths()[0]
    monkeypatch.setenv("TERM", "something-else")                       # irrelevant to what is imported
    assert server._paths()[0] == plain
    monkeypatch.setenv("IVIG_DATA_DIR", str(tmp_path))
    assert server._paths()[0] != plain
    monkeypatch.delenv("IVIG_DATA_DIR")
    monkeypatch.setenv("MPLBACKEND", "svg")
    assert server._paths()[0] != plain


def test_the_fingerprint_sees_every_file_it_depends_on(monkeypatch, tmp_path):
    for d in ("ivighelpers", "notebooks", "data/extraction"):
        (tmp_path / d).mkdir(parents=True)
    (tmp_path / "ivighelpers" / "a.py").write_text("x = 1\n")
    (tmp_path / "data" / "extraction" / "b.csv").write_text("a\n1\n")
    monkeypatch.setattr(server, "ROOT", tmp_path)
    monkeypatch.delenv("IVIG_DATA_DIR", raising=False)
    f0 = server._fingerprint()
    assert server._fingerprint() == f0
    (tmp_path / "data" / "extraction" / "b.csv").write_text("a\n12\n")
    f1 = server._fingerprint()
    assert f1 != f0
    (tmp_path / "ivighelpers" / "__pycache__").mkdir()
    (tmp_path / "ivighelpers" / "__pycache__" / "a.pyc").write_bytes(b"\0")   # compiled files are not the code
    assert server._fingerprint() == f1
    (tmp_path / "notebooks" / "01.ipynb").write_text("{}")
    assert server._fingerprint() != f1


def test_no_private_socket_folder_means_no_server(monkeypatch, tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / f"ivighelpers-{os.getuid()}").mkdir(mode=0o777)
    os.chmod(shared / f"ivighelpers-{os.getuid()}", 0o777)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    with pytest.raises(OSError, match="is not private to this user"):
        server._paths()
    assert server.request(["run", "ck"]) is None                     # the command then runs in its own process
