"""The long-lived pool worker: ``python -m idds_jupyter.worker --pool``.

Protocol (never pickle): length-prefixed JSON messages, a 4-byte big-endian
length followed by that many bytes of UTF-8 JSON.

* parent → worker (stdin): a JSON **list** of job specs (a batch). Batches are
  run in order, jobs one by one, in the main thread, with :func:`run_job`.
* worker → parent (stdout, the original fd 1):

  - ``{"hello": {"pid": int, "python": str}}`` once at start-up;
  - ``{"results": [result, ...]}`` — results are flushed whenever 5 ms have
    passed since the last flush or the batch is done (a 500-job no-op batch is
    one or a few messages; a single slow job is reported as soon as it ends);
  - ``{"started": [[job_id, attempt], ...]}`` for a job still running after
    ~50 ms (fast jobs are never announced);
  - ``{"error": str}`` for a message that could not be decoded (then the worker exits).

Before running anything the worker moves the protocol to private duplicates of
fds 0 and 1, points fd 1 at stderr and fd 0 at ``/dev/null``, so user code
printing to fd 1 (``os.system``) or reading fd 0 cannot corrupt the protocol.

On EOF of stdin the worker finishes the batches it already received and exits;
if its parent died (it was re-parented), it kills the running command and exits
at once. SIGTERM kills the running shell command's process group and exits.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import queue
import signal
import struct
import sys
import threading
import time
from typing import IO, Any, BinaryIO

from idds_jupyter.worker.job import kill_current_command, run_job, share_results

__all__ = ["read_message", "write_message", "encode_message", "serve", "FLUSH_S", "STARTED_S"]

FLUSH_S = 0.005
STARTED_S = 0.05
_HEADER = struct.Struct(">I")
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=True).encode


def encode_message(obj: Any) -> bytes:
    """One protocol frame: 4-byte big-endian length + UTF-8 JSON."""
    data = _dumps(obj).encode("utf-8")
    return _HEADER.pack(len(data)) + data


def write_message(stream: IO[bytes], obj: Any) -> None:
    stream.write(encode_message(obj))
    stream.flush()


def _read_exact(stream: IO[bytes], n: int) -> bytes | None:
    chunks: list[bytes] = []
    while n > 0:
        chunk = stream.read(n)
        if not chunk:
            return None
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_message(stream: IO[bytes]) -> Any:
    """Read one frame; ``EOFError`` at a clean end of stream (or a truncated frame)."""
    header = _read_exact(stream, 4)
    if header is None:
        raise EOFError
    (length,) = _HEADER.unpack(header)
    body = _read_exact(stream, length)
    if body is None:
        raise EOFError
    return json.loads(body)


class _Outbox:
    """Buffered results + a flusher thread (5 ms flush, 50 ms "started" notices).

    The flusher sleeps until its next deadline (a result left buffered, the current job's
    notice), not on a fixed tick: a worker running a job wakes for its notice only, an idle
    one not at all.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._cond = threading.Condition(threading.Lock())
        self._pending: list[dict[str, Any]] = []
        self._last_flush = time.monotonic()
        self._current: tuple[Any, Any, float] | None = None
        self._announced = False
        self._busy = False  # a batch is running
        self.broken = False
        threading.Thread(target=self._loop, name="idds-outbox", daemon=True).start()

    def send(self, obj: Any) -> None:
        frame = encode_message(obj)
        with self._cond:
            self._write(frame)

    def _write(self, frame: bytes) -> None:
        try:
            self._out.write(frame)
            self._out.flush()
        except (BrokenPipeError, OSError):
            # the parent is gone: nobody will read what we produce
            self.broken = True
            kill_current_command()
            os._exit(0)

    def _flush_locked(self) -> None:
        if self._pending:
            frame = encode_message({"results": self._pending})
            self._pending = []
            self._write(frame)
        self._last_flush = time.monotonic()

    def flush(self) -> None:
        with self._cond:
            self._flush_locked()

    def batch_started(self) -> None:
        with self._cond:
            self._busy = True
            self._cond.notify()

    def batch_done(self) -> None:
        with self._cond:
            self._busy = False
            self._flush_locked()

    def begin(self, job_id: Any, attempt: Any) -> None:
        # no wake-up: in a batch, the flusher looks at the current job at least every STARTED_S
        self._current = (job_id, attempt, time.monotonic())
        self._announced = False

    def add(self, result: dict[str, Any]) -> None:
        self._current = None
        with self._cond:
            self._pending.append(result)
            if time.monotonic() - self._last_flush >= FLUSH_S:
                self._flush_locked()
            else:
                self._cond.notify()  # left buffered: the flusher sends it by its deadline

    def _loop(self) -> None:
        with self._cond:
            while True:
                now = time.monotonic()
                if self._pending and now - self._last_flush >= FLUSH_S:
                    self._flush_locked()
                cur = self._current
                if cur is not None and not self._announced and now - cur[2] >= STARTED_S:
                    self._announced = True
                    self._write(encode_message({"started": [[cur[0], cur[1]]]}))
                waits = [self._last_flush + FLUSH_S - now] if self._pending else []
                if self._busy:  # this job's notice, or (announced) a look at the batch's next
                    waits.append(
                        cur[2] + STARTED_S - now
                        if cur is not None and not self._announced
                        else STARTED_S
                    )
                self._cond.wait(max(min(waits), 0.0) if waits else None)


def _protect_stdio() -> tuple[BinaryIO, BinaryIO]:
    """Move the protocol to private fds; fd 1 → stderr, fd 0 → /dev/null."""
    sys.stdout.flush()
    proto_in = os.dup(0)
    proto_out = os.dup(1)
    os.set_inheritable(proto_in, False)
    os.set_inheritable(proto_out, False)
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return os.fdopen(proto_in, "rb"), os.fdopen(proto_out, "wb")


def _on_sigterm(signum: int, frame: Any) -> None:
    kill_current_command()
    os._exit(128 + signum)


def _apply_setup(msg: Any) -> None:
    """``--setup``: the first message, ``{"setup": {"env", "cwd", "umask", "share_results",
    "service_pid"}}``, sets what sudo resets (environment, working directory, umask); the
    worker then leads a session of its own, so that what its jobs start is found and ended
    with it, and watches the service (its parent, sudo, outlives a killed service)."""
    if not isinstance(msg, dict) or not isinstance(msg.get("setup"), dict):
        raise ValueError("the first message of a --setup worker is not its setup")
    setup = msg["setup"]
    env = setup.get("env") or {}
    os.environ.clear()
    os.environ.update({str(k): str(v) for k, v in env.items()})
    for p in reversed(env.get("PYTHONPATH", "").split(os.pathsep)):
        if p and p not in sys.path:
            sys.path.insert(0, p)
    if setup.get("cwd"):
        os.chdir(setup["cwd"])
    os.umask(int(setup.get("umask", 0o077)))
    if setup.get("share_results"):
        share_results()
    global _service_pid
    _service_pid = int(setup.get("service_pid") or 0)
    with contextlib.suppress(OSError):  # already a session leader
        os.setsid()


_service_pid = 0  # --setup: the service's pid (our parent is sudo, which outlives it)


def _service_gone() -> bool:
    """The service (``--setup``) has exited: no such process, or a zombie not reaped yet
    (its pipes close as it dies, before its parent reaps it)."""
    if not _service_pid:
        return False
    try:
        with open(f"/proc/{_service_pid}/stat", "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        return True
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(_service_pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another account's
        return False
    return data[data.rfind(b")") + 2 : data.rfind(b")") + 3] == b"Z"


def serve(
    stdin: BinaryIO | None = None, stdout: BinaryIO | None = None, setup: bool = False
) -> int:
    """Run the pool worker loop until EOF on the protocol input. Returns an exit code.

    ``setup``: read the environment, working directory and umask from a first message
    (a worker started through sudo, which resets them; see :func:`_apply_setup`)."""
    if stdin is None or stdout is None:
        stdin, stdout = _protect_stdio()
    if setup:
        try:
            _apply_setup(read_message(stdin))
        except (EOFError, ValueError, OSError) as exc:
            write_message(stdout, {"error": f"bad setup: {exc}"})
            return 2
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)
    parent = os.getppid()
    outbox = _Outbox(stdout)
    outbox.send({"hello": {"pid": os.getpid(), "python": sys.version.split()[0]}})
    gc.freeze()  # the imports: never walked by a full collection in the middle of a job
    batches: queue.SimpleQueue[list[dict[str, Any]] | None] = queue.SimpleQueue()
    stop = threading.Event()

    def reader() -> None:
        assert stdin is not None
        while True:
            try:
                msg = read_message(stdin)
            except EOFError:
                break
            except (ValueError, OSError) as exc:
                outbox.send({"error": f"bad protocol message: {exc}"})
                break
            if isinstance(msg, list):
                batches.put(msg)
            elif isinstance(msg, dict) and "specs" in msg:
                batches.put(list(msg["specs"]))
            else:
                outbox.send({"error": f"unexpected message of type {type(msg).__name__}"})
        if os.getppid() != parent or _service_gone():
            # our parent (or, through sudo, the service) died: nobody will collect results
            kill_current_command()
            os._exit(0)
        stop.set()
        batches.put(None)

    threading.Thread(target=reader, name="idds-stdin", daemon=True).start()

    while True:
        batch = batches.get()
        if batch is None:
            break
        outbox.batch_started()
        try:
            for spec in batch:
                outbox.begin(spec.get("job_id"), spec.get("attempt", 0))
                outbox.add(run_job(spec))
        finally:
            outbox.batch_done()
    outbox.flush()
    return 0


def run_single(spec_path: str, out_path: str | None = None) -> int:
    """``--job SPEC.json``: run one job, print (or write) the result JSON; exit 0 iff ok."""
    if spec_path == "-":
        spec = json.load(sys.stdin)
    else:
        with open(spec_path, encoding="utf-8") as fh:
            spec = json.load(fh)
    # keep our stdout for the result only
    sys.stdout.flush()
    real_out = os.dup(1)
    os.dup2(2, 1)
    signal.signal(signal.SIGTERM, _on_sigterm)
    result = run_job(spec)
    text = json.dumps(result)
    if out_path:
        tmp = out_path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, out_path)
    with os.fdopen(real_out, "w", encoding="utf-8") as out:
        out.write(text + "\n")
    return 0 if result["ok"] else 1
