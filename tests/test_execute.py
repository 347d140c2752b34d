"""The in-process notebook engine (ivighelpers.execute): what a kernel would record, errors, and isolation.

That its outputs equal a kernel's for the review's own notebooks is checked by nbval (``make test`` re-executes
the committed notebooks, which ``make notebooks`` wrote with this engine, in a real kernel and compares them).
"""

import json
import os

import nbformat
import pytest

from ivighelpers.execute import run_notebooks


def _text(x):
    return "".join(x) if isinstance(x, list) else x


def _notebook(path, *sources):
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(s) for s in sources]
    nbformat.write(nb, path)
    return path


def test_outputs_are_recorded_as_a_kernel_records_them(tmp_path):
    src = _notebook(tmp_path / "in.ipynb",
                    "print('hello'); print('world')",
                    "from IPython.display import Markdown, display\ndisplay(Markdown('**bold**'), metadata={'alt': 'a'})",
                    "x + 41",
                    "import sys; print('warn', file=sys.stderr)")
    [(err, secs)] = run_notebooks([(src, tmp_path / "out.ipynb", {"x": 1}, None)], workers=1)
    assert err is None and secs > 0
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "injected-parameters" in code[1]["metadata"]["tags"]          # papermill injected the parameter
    out = {i: c["outputs"] for i, c in enumerate(code)}
    assert [(o["output_type"], o["name"], _text(o["text"])) for o in out[2]] == [("stream", "stdout", "hello\nworld\n")]
    assert out[3][0]["output_type"] == "display_data" and _text(out[3][0]["data"]["text/markdown"]) == "**bold**"
    assert out[3][0]["metadata"] == {"alt": "a"}
    assert out[4][0]["output_type"] == "execute_result" and _text(out[4][0]["data"]["text/plain"]) == "42"
    assert out[4][0]["execution_count"] == code[4]["execution_count"]
    assert [(o["name"], _text(o["text"])) for o in out[5]] == [("stderr", "warn\n")]
    assert [c["execution_count"] for c in code] == [1, 2, 3, 4, 5, 6]


def test_a_failing_cell_stops_the_notebook_with_its_error(tmp_path):
    src = _notebook(tmp_path / "in.ipynb", "y = 2", "raise ValueError('deliberate: y is ' + str(y))", "z = 3")
    [(err, _)] = run_notebooks([(src, tmp_path / "out.ipynb", {}, None)], workers=1)
    assert err == "ValueError: deliberate: y is 2"
    nb = json.loads((tmp_path / "out.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    error = code[-2]["outputs"][0]
    assert error["output_type"] == "error" and error["ename"] == "ValueError"
    assert any("deliberate" in line for line in error["traceback"])
    assert code[-1]["outputs"] == [] and code[-1]["execution_count"] is None    # never ran


def test_each_notebook_runs_in_its_own_process_and_leaves_this_one_alone(tmp_path):
    a = _notebook(tmp_path / "a.ipynb", "import os; leak = 'from a'; os.environ['IVIG_TEST_LEAK'] = '1'")
    b = _notebook(tmp_path / "b.ipynb", "import os\nprint(globals().get('leak', 'clean'), os.environ.get('IVIG_TEST_LEAK', 'unset'))")
    cwd = os.getcwd()
    res = run_notebooks([(a, tmp_path / "a_out.ipynb", {}, None), (b, tmp_path / "b_out.ipynb", {}, None)], workers=1)
    assert [e for e, _ in res] == [None, None]
    out = json.loads((tmp_path / "b_out.ipynb").read_text())["cells"][-1]["outputs"][0]["text"]
    assert _text(out) == "clean unset\n"
    assert os.getcwd() == cwd and "IVIG_TEST_LEAK" not in os.environ


def test_a_notebook_that_kills_its_process_is_reported(tmp_path):
    src = _notebook(tmp_path / "in.ipynb", "import os; os._exit(3)")
    [(err, _)] = run_notebooks([(src, tmp_path / "out.ipynb", {}, None)], workers=1)
    assert err == "the notebook's process ended with exit code 3"


@pytest.mark.parametrize("workers", [1, 2])
def test_results_come_back_in_the_order_of_the_jobs(tmp_path, workers):
    jobs = [(_notebook(tmp_path / f"n{i}.ipynb", f"import time; time.sleep({0.3 - 0.1 * i})"
                       if i < 3 else "raise KeyError('k')"), tmp_path / f"o{i}.ipynb", {}, None) for i in range(4)]
    res = run_notebooks(jobs, workers=workers)
    assert [e for e, _ in res] == [None, None, None, "KeyError: 'k'"]


_FIGURE_CELL = """
import matplotlib.pyplot as plt
from types import SimpleNamespace
from ivighelpers import notebook as nb
fig, ax = plt.subplots(figsize=(3, 2))
ax.plot([0, 1], [0, 1])
ctx = SimpleNamespace(domain="demo", run_name="run", figdir={figdir!r})
nb._figure(ctx, fig, "line", alt="Line plot: a test figure")
print("after the figure")
"""


def test_a_figure_is_rendered_beside_the_notebook_and_shown_where_it_was_made(tmp_path):
    src = _notebook(tmp_path / "in.ipynb", _FIGURE_CELL.format(figdir=str(tmp_path / "figs")))
    [(err, _)] = run_notebooks([(src, tmp_path / "out.ipynb", {}, None)], workers=1)
    assert err is None
    outs = json.loads((tmp_path / "out.ipynb").read_text())["cells"][-1]["outputs"]
    assert [o["output_type"] for o in outs] == ["display_data", "stream"]            # in the order they were made
    assert outs[0]["metadata"] == {"alt": "Line plot: a test figure"} and outs[0]["data"]["image/png"]
    assert (tmp_path / "figs" / "demo" / "line.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_figure_that_cannot_be_rendered_fails_its_notebook(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the figure folder should be")
    src = _notebook(tmp_path / "in.ipynb", _FIGURE_CELL.format(figdir=str(blocked)))
    [(err, _)] = run_notebooks([(src, tmp_path / "out.ipynb", {}, None)], workers=1)
    assert err.startswith("RuntimeError: the figure 'Line plot: a test figure' could not be rendered: ")
    assert "Error" in err.split("rendered: ")[1]                 # the cause, e.g. FileExistsError: ... 'blocked'


_MADE_CELL = """
import matplotlib.pyplot as plt
from types import SimpleNamespace
from ivighelpers import notebook as nb
import os
ctx = SimpleNamespace(domain="demo", run_name="run", figdir={figdir!r})
def make():
    if {fail}:
        raise ValueError("no data for this plot")
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1], [0, 1])
    with open({pidfile!r}, "w") as fh:
        fh.write(str(os.getpid()))
    return fig
nb._figure(ctx, make, "line", alt="Line plot: made where it is rendered")
print("notebook", os.getpid())
"""


def test_a_figure_function_is_run_where_the_figure_is_rendered(tmp_path):
    src = _notebook(tmp_path / "in.ipynb", _MADE_CELL.format(figdir=str(tmp_path / "figs"), fail=False,
                                                                 pidfile=str(tmp_path / "pid")))
    [(err, _)] = run_notebooks([(src, tmp_path / "out.ipynb", {}, None)], workers=1)
    assert err is None
    outs = json.loads((tmp_path / "out.ipynb").read_text())["cells"][-1]["outputs"]
    assert [o["output_type"] for o in outs] == ["display_data", "stream"]
    assert outs[0]["metadata"] == {"alt": "Line plot: made where it is rendered"} and outs[0]["data"]["image/png"]
    svg_free = sorted(p.name for p in (tmp_path / "figs" / "demo").iterdir())
    assert svg_free == ["line.png"]                               # a re-run: PNG only
    notebook_pid = int("".join(outs[1]["text"]).split()[1])
    assert int((tmp_path / "pid").read_text()) != notebook_pid     # made in the renderer's process


def test_a_figure_function_that_raises_fails_its_notebook_with_the_cause(tmp_path):
    src = _notebook(tmp_path / "in.ipynb", _MADE_CELL.format(figdir=str(tmp_path / "figs"), fail=True,
                                                                 pidfile=str(tmp_path / "pid")))
    [(err, _)] = run_notebooks([(src, tmp_path / "out.ipynb", {}, None)], workers=1)
    assert err == ("RuntimeError: the figure 'Line plot: made where it is rendered' could not be rendered: "
                   "ValueError: no data for this plot")
    outs = json.loads((tmp_path / "out.ipynb").read_text())["cells"][-1]["outputs"]
    assert any("raise ValueError" in "".join(o.get("traceback", [])) for o in outs if o["output_type"] == "error")


def test_a_figure_function_is_called_in_place_in_a_kernel(tmp_path):
    from types import SimpleNamespace

    import matplotlib.pyplot as plt

    from ivighelpers import notebook as nb
    assert nb.figure_sink is None                                 # as in JupyterLab or nbval
    calls = []

    def make():
        calls.append(1)
        fig, ax = plt.subplots(figsize=(2, 2))
        ax.plot([0, 1], [1, 0])
        return fig

    ctx = SimpleNamespace(domain="demo", run_name="run", figdir=str(tmp_path))
    nb._figure(ctx, make, "inplace", alt="Line plot: in place")
    assert calls == [1] and (tmp_path / "demo" / "inplace.png").read_bytes()[:4] == b"\x89PNG"

