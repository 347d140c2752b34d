"""`make report` fails loudly and atomically, and stops cleanly on a signal; `run` reads parameters by type.

Each build test works on a copy of the project (package, notebooks, data, figures, the vendored metafor
reference) in a temporary folder, with no ../shared beside it, and runs the copy's own package.
"""
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def project(tmp_path):
    dst = tmp_path / "clone"
    for part in ("ivighelpers", "notebooks", "data", "figures", "tests/reference"):
        shutil.copytree(ROOT / part, dst / part, ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"))
    prev = dst / "reports"                              # a previous, complete build
    (prev / "results").mkdir(parents=True)
    (prev / "index.html").write_text("<html>previous build</html>")
    (prev / "results" / "strength.json").write_text("{}")
    return dst


def _env(project):
    env = {k: v for k, v in os.environ.items() if k != "IVIG_REFERENCE_DIR"}
    env["PYTHONPATH"] = str(project)
    return env


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _build(project, **kw):
    return subprocess.run([sys.executable, "-m", "ivighelpers", "report"], cwd=project, env=_env(project),
                          capture_output=True, text=True, timeout=600, **kw)


def test_bad_data_stops_the_build_before_any_notebook_with_one_message(project):
    oc = project / "data" / "outcomes.csv"
    df = pd.read_csv(oc, dtype=str, keep_default_na=False)
    df.loc[0, "events"] = "999"
    df.to_csv(oc, index=False)
    before = _snapshot(project / "reports"), _snapshot(project / "figures")
    t0 = time.perf_counter()
    r = _build(project)
    assert r.returncode == 2
    assert r.stderr.count("error:") == 1 and "outcomes.csv: row 2, column events: events (999) > n" in r.stderr
    assert "[1/6]" not in r.stdout                     # no notebook was started
    assert time.perf_counter() - t0 < 30
    assert (_snapshot(project / "reports"), _snapshot(project / "figures")) == before
    assert not list(project.glob(".reports-build-*"))


def test_a_failing_notebook_leaves_the_previous_build_and_figures_in_place(project):
    nb_path = project / "notebooks" / "02_ck.ipynb"
    nb = json.loads(nb_path.read_text())
    code = next(c for c in nb["cells"] if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", []))
    code["source"] = "raise RuntimeError('deliberate failure for the build test')"
    nb_path.write_text(json.dumps(nb))
    before = _snapshot(project / "reports"), _snapshot(project / "figures")
    r = _build(project)
    assert r.returncode == 1
    assert "1 of 6 notebooks failed (02_ck)" in r.stderr and "previous build in reports/ and figures/ is unchanged" in r.stderr
    assert "02_ck: FAILED: RuntimeError: deliberate failure" in r.stdout
    assert (_snapshot(project / "reports"), _snapshot(project / "figures")) == before
    assert (project / "build" / "failed" / "02_ck.ipynb").is_file()
    assert not list(project.glob(".reports-build-*"))


def test_sigterm_stops_every_notebook_process_and_publishes_nothing(project):
    before = _snapshot(project / "reports"), _snapshot(project / "figures")
    p = subprocess.Popen([sys.executable, "-m", "ivighelpers", "report"], cwd=project, env=_env(project),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    me = psutil.Process(p.pid)
    workers = []
    deadline = time.time() + 60
    while time.time() < deadline:                      # wait until two notebooks are executing (forked children)
        workers = me.children(recursive=True)
        if len(workers) >= 2:
            break
        time.sleep(0.1)
    assert len(workers) >= 2, "no notebook started"
    family = me.children(recursive=True)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0 and "interrupted" in err
    gone, alive = psutil.wait_procs(family, timeout=10)
    assert not alive, [a.cmdline() for a in alive]
    assert (_snapshot(project / "reports"), _snapshot(project / "figures")) == before
    assert not list(project.glob(".reports-build-*"))


def _run(*args):
    return subprocess.run([sys.executable, "-m", "ivighelpers", "run", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("content,message", [
    (None, r"-f .*missing.yaml: no such file"),
    ("- method\n- DL\n", r"must be a YAML mapping of parameter names to values .* not a list"),
    ("method: [DL\n", r"not valid YAML at line"),
    ("subtypes: no\n", r"subtypes='no': \['no'\] not allowed"),
    ("min_n: 5.7\n", r"min_n='5.7' must be a whole number"),
])
def test_parameter_file_problems_are_one_clear_line(tmp_path, content, message):
    f = tmp_path / ("missing.yaml" if content is None else "p.yaml")
    if content is not None:
        f.write_text(content)
    r = _run("strength", "-f", str(f))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert pytest.importorskip("re").search(message, r.stderr), r.stderr


@pytest.mark.parametrize("args,message", [
    (["-p", "subtypes", "no"], r"subtypes='no': \['no'\] not allowed"),
    (["-p", "route", "on"], r"route='on': \['on'\] not allowed"),
    (["-p", "min_n", "5.7"], r"min_n='5.7' must be a whole number"),
    (["-p", "min_n", "-3"], r"min_n=-3 .* must be >= 1"),
])
def test_p_values_are_read_as_text_and_converted_by_type(args, message):
    r = _run("strength", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert pytest.importorskip("re").search(message, r.stderr), r.stderr


def test_domain_help_lists_that_notebooks_own_defaults():
    out = _run("safety", "--help").stdout
    assert "the safety notebook's defaults" in out
    assert "transform" in out and "(default: 'GLMM')" in out
    assert "(default: 'PLO')" in _run("strength", "--help").stdout
