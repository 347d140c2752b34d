"""Command line.

    python -m ivighelpers report                      build the whole review (what `make report` runs)
    python -m ivighelpers run strength -p method DL   one domain with other parameters
    python -m ivighelpers notebooks                   execute the notebooks in place (what `make notebooks` runs)
    python -m ivighelpers release                     record the current build as a dated release (data/releases/)
    python -m ivighelpers diff [--since VERSION]      what changed since a release; exit 1 if a conclusion changed
    python -m ivighelpers parity                      metafor parity report
    python -m ivighelpers server stop|status          the warm process that serves `run` (IVIG_SERVER=0: none)
"""

from __future__ import annotations

import os
import sys


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    cmd, rest = argv[0], argv[1:]
    if cmd == "report":
        from .report import build_report
        try:
            code = build_report()
            if code == 0 and __name__ == "__main__":
                from . import server
                if server.start():
                    print("re-runs (python -m ivighelpers run ...) are served by a warm process from now on; it leaves "
                          f"after {server.idle_seconds() / 60:g} min without one (python -m ivighelpers server stop; "
                          "IVIG_SERVER=0: none)", flush=True)
            return _leave(code)
        except KeyboardInterrupt:
            # the notebooks' processes are already stopped and the staging folder removed; leave at once (the
            # process pool's exit hook would otherwise wait on the killed workers)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
    if cmd == "notebooks":
        from .report import execute_in_place
        return execute_in_place()
    if cmd == "run":
        from . import server
        if server.enabled():
            code = server.request(["run", *rest])     # a warm process runs it (ivighelpers/server.py)
            if code is not None:
                return _leave(code)
        from .report import main_run
        return _leave(main_run(rest))
    if cmd == "server":
        from . import server
        if rest not in (["stop"], ["status"]):
            print("usage: python -m ivighelpers server stop|status", file=sys.stderr)
            return 2
        return server.stop() if rest == ["stop"] else server.status()
    if cmd == "release":
        from .releases import main_release
        return main_release(rest)
    if cmd == "diff":
        from .releases import main_diff
        return main_diff(rest)
    if cmd == "parity":
        from .parity import main as parity_main
        return parity_main(rest)
    print(f"unknown command {cmd!r}; allowed: report, run, notebooks, release, diff, parity, server", file=sys.stderr)
    return 2


def _leave(code: int) -> int:
    """Exit at once when run as the command: every output is written and closed by now, and tearing down the
    imported analysis stack costs about 0.4 s of a re-run. Called as a function (tests), it just returns."""
    if __name__ == "__main__":
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
