"""``python -m idds_jupyter.worker --pool [--setup]`` | ``--job SPEC.json [--out RESULT.json]``
| ``--http`` | ``--reap SID`` (also installed as ``idds-jupyter-worker``)."""

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
    mode.add_argument(
        "--reap",
        metavar="SID",
        type=int,
        help="SIGKILL what is left of session SID (a dead worker's, run through sudo as "
        "the account it ran as)",
    )
    parser.add_argument(
        "--setup",
        action="store_true",
        help="--pool: take the environment, working directory and umask from a first "
        "protocol message (a worker started through sudo)",
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
    if args.reap is not None:
        from idds_jupyter.worker.job import kill_session

        if args.reap <= 1:
            parser.error("--reap: not a worker's session")
        kill_session(args.reap)
        return 0
    from idds_jupyter.worker import pool

    if args.pool:
        return pool.serve(setup=args.setup)
    return pool.run_single(args.job, args.out)


if __name__ == "__main__":
    sys.exit(main())
