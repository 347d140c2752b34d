"""Command line: ``python -m ivighelpers report`` (what ``make report`` runs)."""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ivighelpers", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("report", help="build the review under reports/")
    sub.add_parser("parity", help="metafor parity report")
    args = parser.parse_args(argv)
    if args.command == "parity":
        from .parity import main as parity_main
        return parity_main([])
    if args.command == "report":
        from .report import build_report
        return build_report()
    return 2


if __name__ == "__main__":
    sys.exit(main())
