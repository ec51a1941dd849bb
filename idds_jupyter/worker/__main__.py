"""``python -m idds_jupyter.worker --pool`` | ``--job SPEC.json [--out RESULT.json]``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m idds_jupyter.worker", description="idds-jupyter worker wrapper"
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--pool", action="store_true", help="long-lived worker speaking the stdin/stdout protocol"
    )
    mode.add_argument("--job", metavar="SPEC.json", help="run one job spec ('-' = stdin)")
    parser.add_argument("--out", metavar="RESULT.json", help="also write the result here (--job)")
    args = parser.parse_args(argv)
    from idds_jupyter.worker import pool

    if args.pool:
        return pool.serve()
    return pool.run_single(args.job, args.out)


if __name__ == "__main__":
    sys.exit(main())
