"""Functions used by the worker tests (imported by reference "jobfuncs:...")."""

import os
import sys

from idds_jupyter.worker import context


def record_job(path: str) -> int:
    ctx = context()
    assert ctx is not None
    with open(path, "a") as fh:
        fh.write(f"{ctx.job_id} {ctx.attempt} {ctx.work_id} {ctx.workflow_id}\n")
    return ctx.job_id


def chatty(n: int = 2) -> str:
    for i in range(n):
        print(f"line {i}")
    print("to stderr", file=sys.stderr)
    return "done"


def raising(x: int = 1) -> None:
    value = x * 2
    raise ValueError(f"bad value {value}")  # the raising line


def returns_object() -> object:
    return {1, 2, 3}


def returns_nan() -> float:
    return float("nan")


def env_and_cwd() -> dict:
    return {"var": os.environ.get("IDDS_TEST_VAR"), "cwd": os.getcwd()}


def print_to_fd1() -> str:
    os.system("echo garbage-on-fd-1")
    os.write(1, b"more garbage\n")
    return "ok"


class Nested:
    class Inner:
        @staticmethod
        def method(a: int = 0) -> int:
            return a + 1
