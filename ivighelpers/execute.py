"""Execute notebooks without starting a kernel: papermill with an in-process engine, in forked workers.

A kernel costs a process start and a second import of the whole analysis stack (pandas, scipy, matplotlib,
ivighelpers: about 3 s of a re-run). Here the command imports the stack once (``warm()``), then forks one child per
notebook; the child runs papermill with ``InProcessEngine``, which executes the cells in an IPython shell inside
the child and records what a kernel would send (display data with the same MIME bundles, stream text, errors with
their traceback), then exports the HTML. Every notebook still gets a fresh process (a fork), so no notebook sees
another's state, and a signal that stops the parent's children stops the notebook.

- ``run_notebooks(jobs, workers)``: each job ``(src, dst, params, html)``; at most ``workers`` children at a time;
  returns, per job, ``(error or None, seconds)``.
- ``InProcessEngine``: the papermill engine (registered as ``ivig-inprocess``). While it runs, every figure a
  notebook shows (``notebook._figure``) is made and rendered in a process forked at that moment, beside the notebook's
  next computations (a re-run has one notebook and two cores); the image fills the output left where the figure
  was made when the notebook ends, so the notebook reads as if rendered in place. A figure that cannot be
  rendered fails its notebook.

The committed notebooks are still validated in a real kernel by nbval (``make test``), which compares their
outputs with these; the notebooks written here and those a kernel writes are the same, except papermill's
timings and the kernel's execution metadata.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

# jsonschema (imported by nbformat, which papermill and nbconvert use) imports the optional rfc3987_syntax, which
# compiles an IRI grammar at import: 1.2 s of every command. The notebook schema uses no "iri" formats, so it is
# left out here (jsonschema then skips that format check, as when the package is not installed).
sys.modules.setdefault("rfc3987_syntax", None)

from papermill.engines import Engine, papermill_engines  # noqa: E402


def run_notebooks(jobs, workers: int = 2, on_done=None) -> list:
    """Execute ``jobs`` (``(src, dst, params, html)``: notebook in, notebook out, papermill parameters, and
    ``None`` or a dict of ``export_html`` keywords to export it in the same child) in forked children, at most
    ``workers`` at a time, in order of submission. ``on_done(index, error, seconds)`` is called as each ends.
    Returns ``[(error or None, seconds), ...]`` in the order of ``jobs``."""
    import multiprocessing as mp
    from multiprocessing.connection import wait
    ctx = mp.get_context("fork")
    warm()
    results = [None] * len(jobs)
    pending = list(enumerate(jobs))
    running = {}                                   # sentinel -> (index, process, connection, start)
    try:
        while pending or running:
            while pending and len(running) < max(1, workers):
                i, job = pending.pop(0)
                recv, send = ctx.Pipe(duplex=False)
                p = ctx.Process(target=_child, args=(job, send))   # not daemonic: it forks figure renderers
                p.start()
                send.close()
                running[p.sentinel] = (i, p, recv, time.perf_counter())
            for s in wait(list(running)):
                i, p, recv, t0 = running.pop(s)
                try:
                    err = recv.recv() if recv.poll() else None
                except EOFError:
                    err = None
                p.join()
                if err is None and p.exitcode != 0:
                    err = f"the notebook's process ended with exit code {p.exitcode}"
                recv.close()
                results[i] = (err, time.perf_counter() - t0)
                if on_done is not None:
                    on_done(i, *results[i])
    finally:
        for _, p, recv, _ in running.values():     # interrupted: stop what still runs
            if p.is_alive():
                p.terminate()
            p.join(3)
            if p.is_alive():
                p.kill()
    return results


def warm(full: bool = False) -> None:
    """Import, once in this process, what every notebook imports, so that each forked child starts warm; ``full``
    (the warm server) also what only some notebooks import (seaborn for the evidence map, scipy.stats for the
    rank correlation test) and the IPython shell. The data are read and checked here too (cached while no file
    changes), so the children get copies."""
    global _warmed
    if _warmed is None or (full and not _warmed):
        import matplotlib
        matplotlib.use("agg")                     # the child switches to IPython's inline backend
        import IPython.core.interactiveshell  # noqa: F401
        import nbconvert  # noqa: F401
        import papermill  # noqa: F401
        from . import (analysis, grade, notebook, notebook_evidence, notebook_trials, over_time,  # noqa: F401
                       published, sof, trials)
        _first_export()                           # compiles the HTML templates once, before the fork
        if full:
            import scipy.stats  # noqa: F401
            import seaborn  # noqa: F401
            _shell()                              # created, never used here: each fork gets a fresh one
        _warmed = full
    from .data import load_all
    from .errors import DataValidationError
    try:
        load_all()
    except DataValidationError:
        pass                                      # each notebook then reports it


_warmed: bool | None = None                       # None until warm() has run here; then whether it was full


def _first_export() -> None:
    """Export a two-cell notebook: the first export of a process compiles nbconvert's templates (0.2 s)."""
    import tempfile

    import nbformat

    from .report import export_html
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Warm-up\n\n| a |\n|---|\n| 1 |"),
                                         nbformat.v4.new_code_cell("1")])
    with tempfile.TemporaryDirectory(prefix="ivig-warm-") as d:
        path = Path(d) / "warm.ipynb"
        nbformat.write(nb, path)
        export_html(path)


def _child(job, conn) -> None:
    """In the forked child: execute one notebook with papermill's in-process engine (and export it); send back
    ``None`` or the error, then leave without running the parent's exit handlers."""
    src, dst, params, html = job
    code = 0
    try:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        err = _execute_here(src, dst, params)
        if err is None and html is not None:
            from .report import export_html
            export_html(Path(dst), **html)
        conn.send(err)
    except BaseException as e:                     # noqa: BLE001 - reported to the parent, which fails the build
        try:
            conn.send(f"{type(e).__name__}: {e}")
        except Exception:
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _execute_here(src, dst, params) -> str | None:
    import logging

    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    logging.getLogger("papermill").setLevel(logging.ERROR)   # no "Unable to parse line" / "unknown parameter" noise
    from .report import NOTEBOOKS
    try:
        pm.execute_notebook(str(src), str(dst), parameters=params, kernel_name="python3", progress_bar=False,
                            cwd=str(NOTEBOOKS), execution_timeout=600, log_output=False, engine_name="ivig-inprocess",
                            request_save_on_cell_execute=False)   # write the notebook once, not after every cell
        return None
    except PapermillExecutionError as e:
        return f"{e.ename}: {e.evalue}"


class InProcessEngine(Engine):
    """A papermill engine that runs the cells in an IPython shell in this process (see the module docstring).
    Stops at the first cell that raises, as papermill's kernel engine does; ``execution_timeout`` (seconds) is
    enforced per cell with an alarm."""

    @classmethod
    def execute_managed_notebook(cls, nb_man, kernel_name, cwd=None, execution_timeout=None, **kwargs):
        shell = _shell()
        import matplotlib.pyplot as plt
        plt.close("all")              # figures left open in the process this one was forked from are not ours
        old_cwd = os.getcwd()
        if cwd:
            os.chdir(cwd)
        from . import notebook
        notebook.figure_sink = _FigureRenderer(shell)
        try:
            cells = nb_man.nb.cells
            for cell in cells:
                if cell.cell_type == "code":
                    cell.outputs = []
                    cell.execution_count = None
            for i, cell in enumerate(cells):
                nb_man.cell_start(cell, i)
                try:
                    if cell.cell_type == "code" and not _run_cell(shell, cell, execution_timeout):
                        nb_man.cell_exception(cell, i)
                        break
                finally:
                    nb_man.cell_complete(cell, i)
            for cell in notebook.figure_sink.finish():   # cells with a figure that could not be rendered
                nb_man.cell_exception(cell, next(i for i, c in enumerate(cells) if c is cell))
        finally:
            notebook.figure_sink = None
            os.chdir(old_cwd)


papermill_engines.register("ivig-inprocess", InProcessEngine)


class _CellTimeout(Exception):
    pass


def _run_cell(shell, cell, timeout) -> bool:
    """Run one code cell; its outputs go to ``cell.outputs`` in the order they were produced."""
    import nbformat
    outputs = cell.outputs
    shell._ivig_outputs = outputs
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Stream("stdout", outputs), _Stream("stderr", outputs)
    use_alarm = bool(timeout) and hasattr(signal, "SIGALRM")
    if use_alarm:
        def _alarm(signum, frame):
            raise _CellTimeout(f"cell did not finish within {timeout} s")
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(int(timeout))
    try:
        result = shell.run_cell(cell.source, store_history=True)
    finally:
        if use_alarm:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        sys.stdout, sys.stderr = out, err
        shell._ivig_outputs = None
    cell.execution_count = result.execution_count
    for o in outputs:
        if o["output_type"] == "execute_result":
            o["execution_count"] = result.execution_count
    cell.outputs = [nbformat.from_dict(o) for o in outputs]
    from . import notebook
    if isinstance(notebook.figure_sink, _FigureRenderer):      # the figures still rendering fill these outputs
        notebook.figure_sink.rebind(outputs, cell)
    return result.success


class _FigureRenderer:
    """``notebook.figure_sink`` in an in-process run: each figure is made (when the notebook passed a function) and
    rendered (savefig, quantisation) in a process forked at that moment, so it sees the notebook's state as it was
    then, and the notebook goes on at once; its image fills the placeholder output left where the figure was made
    once the notebook has run (``finish``). The renderers take turns: one renders while the notebook computes
    (two cores: the notebook and one renderer), two once the notebook has finished."""

    def __init__(self, shell):
        import multiprocessing as mp
        self.shell = shell
        self.pending = []                           # [placeholder output, process, result path, cell]
        self.turns = mp.get_context("fork").Semaphore(1)

    def __call__(self, render, alt):
        import multiprocessing as mp
        import tempfile
        fd, path = tempfile.mkstemp(suffix=".png", prefix="ivig-figure-")
        os.close(fd)
        proc = mp.get_context("fork").Process(target=_render_child, args=(render, path, self.turns), daemon=True)
        proc.start()
        out = {"output_type": "display_data", "data": {}, "metadata": {"alt": alt}}
        sink = getattr(self.shell, "_ivig_outputs", None)
        if sink is not None:
            sink.append(out)
        self.pending.append([out, proc, path, None])

    def rebind(self, raw: list, cell) -> None:
        """The cell's outputs were copied into notebook nodes: point the placeholders at the copies."""
        for p in self.pending:
            if p[3] is None:
                j = next((k for k, o in enumerate(raw) if o is p[0]), None)
                if j is not None:
                    p[0], p[3] = cell.outputs[j], cell

    def finish(self) -> list:
        """Wait for every renderer, put each image in its output; returns the cells whose figure failed (each
        gets an error output)."""
        from IPython.display import Image
        from multiprocessing.connection import wait
        pending, self.pending = self.pending, []
        if pending:
            self.turns.release()                    # the notebook is done: two renderers at a time
        alive = {p[1].sentinel: p[1] for p in pending}
        while alive:                                # a renderer killed outright never gave its turn back: give it
            for s in wait(list(alive)):
                proc = alive.pop(s)
                proc.join()
                if proc.exitcode is not None and proc.exitcode < 0:
                    self.turns.release()
        failed = []
        for out, proc, path, cell in pending:
            try:
                data = open(path, "rb").read()
            finally:
                os.unlink(path)
            if proc.exitcode == 0 and data:
                out["data"] = self.shell.display_formatter.format(Image(data=data, format="png"))[0]
            elif cell is not None:
                why = data.decode(errors="replace").strip().splitlines()
                msg = (f"the figure '{out['metadata']['alt'][:80]}' could not be rendered"
                       + (f": {why[-1]}" if why else f" (its process ended with exit code {proc.exitcode})"))
                cell.outputs.append(nbformat_error("RuntimeError", msg, data.decode(errors="replace")))
                if not any(c is cell for c in failed):
                    failed.append(cell)
        return failed


def nbformat_error(ename: str, evalue: str, traceback: str = ""):
    import nbformat
    return nbformat.from_dict({"output_type": "error", "ename": ename, "evalue": evalue,
                               "traceback": ([traceback] if traceback else []) + [evalue]})


def _render_child(render, path, turns) -> None:
    """Wait for a turn, then make (where the notebook passed a function), save and quantise one figure; on failure
    the file holds the traceback, which the notebook's error then shows."""
    code = 1
    try:
        with turns:
            data = render()
        with open(path, "wb") as fh:
            fh.write(data)
        code = 0
    except BaseException:
        import traceback
        with open(path, "w") as fh:
            fh.write(traceback.format_exc())
    finally:
        os._exit(code)


class _Stream:
    """``sys.stdout`` / ``sys.stderr`` during a cell: text becomes stream outputs (consecutive writes merged)."""

    def __init__(self, name, outputs):
        self.name, self.outputs = name, outputs

    def write(self, text):
        if not text:
            return 0
        last = self.outputs[-1] if self.outputs else None
        if last is not None and last.get("output_type") == "stream" and last.get("name") == self.name:
            last["text"] += text
        else:
            self.outputs.append({"output_type": "stream", "name": self.name, "text": text})
        return len(text)

    def flush(self):
        pass

    def isatty(self):
        return False


_SHELL = None


def _shell():
    """The IPython shell of this process, with display, results and tracebacks recorded as notebook outputs and
    matplotlib's inline backend, as in a kernel."""
    global _SHELL
    if _SHELL is not None:
        return _SHELL
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell

    class Publisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs):
            sink = getattr(self.shell, "_ivig_outputs", None)
            if sink is not None:
                sink.append({"output_type": "display_data", "data": dict(data), "metadata": dict(metadata or {})})

        def clear_output(self, wait=False):
            sink = getattr(self.shell, "_ivig_outputs", None)
            if sink is not None:
                sink.clear()

    class Hook(DisplayHook):
        def start_displayhook(self):
            self._md = {}

        def write_output_prompt(self):
            pass

        def write_format_data(self, format_dict, md_dict=None):
            sink = getattr(self.shell, "_ivig_outputs", None)
            if sink is not None:
                sink.append({"output_type": "execute_result", "execution_count": None,   # set after the cell
                             "data": dict(format_dict), "metadata": dict(md_dict or {})})

        def finish_displayhook(self):
            pass

    class Shell(InteractiveShell):
        display_pub_class = Publisher
        displayhook_class = Hook

        def enable_gui(self, gui=None):           # no event loop: figures are only rendered inline
            pass

        def _showtraceback(self, etype, evalue, stb):
            sink = getattr(self, "_ivig_outputs", None)
            if sink is not None:
                sink.append({"output_type": "error", "ename": getattr(etype, "__name__", str(etype)),
                             "evalue": str(evalue), "traceback": list(stb)})

    from traitlets.config import Config
    cfg = Config()
    cfg.HistoryManager.hist_file = ":memory:"    # no history database written under ~/.ipython
    shell = Shell.instance(config=cfg, colors="nocolor")
    shell.enable_matplotlib("inline")
    _SHELL = shell
    return shell
