"""The ``payment-examples`` console script."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from payment_examples.errors import PaymentExamplesError


def _local(args: argparse.Namespace) -> int:
    from payment_examples.local import local_aws

    with local_aws() as endpoint:
        from payment_examples.config import get_settings

        settings = get_settings()
        print(f"embedded engine (local moto server process) at {endpoint}", flush=True)
        print("point other shells or notebooks at it with:")
        print(f"  export AWS_ENDPOINT_URL={endpoint} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing")
        print(f"tables created with prefix {settings.table_prefix!r}; Ctrl-C stops the engine", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", flush=True)
    return 0


def _create_tables(args: argparse.Namespace) -> int:
    from payment_examples.models import create_tables

    for name in create_tables():
        print(name)
    return 0


def _reports(args: argparse.Namespace) -> int:
    from payment_examples.reports import run_notebooks

    for path in run_notebooks(args.notebooks, args.output, params_file=args.params, html=not args.no_html):
        print(path)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="payment-examples", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    local = commands.add_parser("local", help="run the embedded engine in the foreground until Ctrl-C")
    local.set_defaults(run=_local)

    tables = commands.add_parser("create-tables", help="create the tables on the configured endpoint or account")
    tables.set_defaults(run=_create_tables)

    reports = commands.add_parser("reports", help="execute every notebook with papermill into a reports folder")
    reports.add_argument("--notebooks", default="notebooks", help="folder of .ipynb sources (default: notebooks)")
    reports.add_argument("--output", default="reports", help="output folder (default: reports)")
    reports.add_argument("--params", default=None, help="YAML file of parameters (top level: all notebooks)")
    reports.add_argument("--no-html", action="store_true", help="write executed notebooks only")
    reports.set_defaults(run=_reports)

    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except PaymentExamplesError as error:
        print(f"payment-examples: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
