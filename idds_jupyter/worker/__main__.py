"""``python -m idds_jupyter.worker --pool`` | ``--job SPEC.json [--out RESULT.json]`` | ``--http``."""

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
    mode.add_argument(
        "--http",
        action="store_true",
        help="run one job fetched from the service over HTTP and post its result back "
        "(transfer 'http'; IDDS_SERVER_URL, IDDS_JOB_ID, IDDS_JOB_TOKEN)",
    )
    parser.add_argument("--out", metavar="RESULT.json", help="also write the result here (--job)")
    parser.add_argument(
        "--server", metavar="URL", help="the service URL (--http; default $IDDS_SERVER_URL)"
    )
    parser.add_argument("--job-id", metavar="ID", help="the job (--http; default $IDDS_JOB_ID)")
    parser.add_argument(
        "--keep-scratch",
        action="store_true",
        help="keep the job's scratch directory (--http; debugging)",
    )
    args = parser.parse_args(argv)
    if args.http:
        # the token comes from the environment only: never on a command line others can read
        from idds_jupyter.worker.remote import run_http

        return run_http(args.server, args.job_id, keep=args.keep_scratch)
    from idds_jupyter.worker import pool

    if args.pool:
        return pool.serve()
    return pool.run_single(args.job, args.out)


if __name__ == "__main__":
    sys.exit(main())
