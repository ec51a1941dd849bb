"""The data carousel: a simulated tape staging files over time.

The files are processed file by file, or dataset by dataset.

A :class:`TapeStaging` describes the tape: a ``latency_s`` before the first file
comes (mount, seek) and a ``throughput`` (files per second, or MB/s when file
sizes are given). A :class:`StagingSource` plays it against the catalog in a
background thread: each file, when its time comes, is marked available
(``client.mark_available``), which releases the jobs waiting on it.

:func:`run_carousel` processes one dataset on that staging:

- ``mode="file"`` — the carousel: the processing work is bound to the dataset
  (``input_dataset``) before staging starts; each job starts as soon as *its*
  file is on disk, and the file can leave the disk buffer once processed;
- ``mode="dataset"`` — the classic way: the task is created once the whole
  dataset is staged, then all its jobs run.

and measures time to first job, total time and the staged-but-unprocessed
files over time (the disk buffer the processing needs).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TapeStaging", "StagingSource", "CarouselResult", "run_carousel", "process_file"]


def process_file(
    path: str | None = None, seconds: float = 0.1, file: str | None = None, **_: Any
) -> dict[str, Any]:
    """The demo processing of one file (runs on workers): takes ``seconds``."""
    time.sleep(float(seconds))
    return {"path": path or file, "seconds": seconds}


@dataclass
class TapeStaging:
    """A simulated tape.

    ``latency_s`` before the first file, then ``throughput`` files/s (MB/s when
    ``sizes_mb`` are given), one file after the other.
    """

    latency_s: float = 1.0
    throughput: float = 10.0
    sizes_mb: Sequence[float] | None = None

    def __post_init__(self) -> None:
        if self.latency_s < 0 or self.throughput <= 0:
            raise ValueError(
                f"latency_s must be >= 0 and throughput > 0, got "
                f"{self.latency_s} and {self.throughput}"
            )

    def schedule(self, n: int) -> list[float]:
        """When each of ``n`` files is on disk, in seconds from the start of staging."""
        sizes = list(self.sizes_mb) if self.sizes_mb is not None else [1.0] * n
        if len(sizes) != n:
            raise ValueError(f"sizes_mb has {len(sizes)} entries for {n} files")
        t = self.latency_s
        out = []
        for size in sizes:
            t += size / self.throughput
            out.append(t)
        return out

    def duration(self, n: int) -> float:
        """Seconds until ``n`` files are staged."""
        return self.schedule(n)[-1] if n else 0.0


class StagingSource:
    """Plays a :class:`TapeStaging` against a dataset of the catalog, in a background thread."""

    def __init__(self, client: Any, dataset: str, files: Sequence[str], tape: TapeStaging) -> None:
        self.client = client
        self.dataset = dataset
        self.files = list(files)
        self.tape = tape
        self.staged_at: dict[str, float] = {}
        self.released = 0
        self.started_at: float | None = None
        self.done = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._run, name=f"idds-staging-{dataset}", daemon=True
        )

    def start(self, t0: float | None = None) -> StagingSource:
        """Start staging (at ``t0``, by default now) in a background thread."""
        self.started_at = time.time() if t0 is None else t0
        self._thread.start()
        return self

    def wait(self, timeout: float | None = None) -> None:
        """Wait until every file is staged; raises what the staging thread raised."""
        if not self.done.wait(timeout):
            raise TimeoutError(f"staging of {self.dataset} not done after {timeout} s")
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        assert self.started_at is not None
        try:
            due = list(zip(self.tape.schedule(len(self.files)), self.files, strict=True))
            i = 0
            while i < len(due):
                now = time.time() - self.started_at
                if due[i][0] > now:
                    time.sleep(min(due[i][0] - now, 0.5))
                    continue
                batch = []
                while i < len(due) and due[i][0] <= now:  # all files due by now, in one call
                    batch.append(due[i][1])
                    i += 1
                self.released += self.client.mark_available(self.dataset, batch)
                t = time.time()
                for name in batch:
                    self.staged_at[name] = t
        except BaseException as exc:
            self.error = exc
        finally:
            self.done.set()


@dataclass
class CarouselResult:
    """What one carousel run measured (times in seconds from the start of staging)."""

    mode: str
    workflow_id: int
    n_files: int
    time_to_first_job: float
    total_time: float
    staging_time: float
    peak_unprocessed: int
    timeline: list[tuple[float, int]] = field(default_factory=list)  # (t, staged-but-unprocessed)

    def as_dict(self) -> dict[str, Any]:
        """The figures as a JSON-ready dict."""
        return {
            "mode": self.mode,
            "workflow_id": self.workflow_id,
            "n_files": self.n_files,
            "time_to_first_job_s": round(self.time_to_first_job, 3),
            "total_time_s": round(self.total_time, 3),
            "staging_time_s": round(self.staging_time, 3),
            "peak_staged_unprocessed": self.peak_unprocessed,
        }


def _all_jobs(client: Any, wid: int, work: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = client.jobs(wid, work, offset=len(out), limit=1000)
        out += page["jobs"]
        if len(out) >= int(page["total"]) or not page["jobs"]:
            return out


def run_carousel(
    client: Any,
    files: Sequence[str],
    tape: TapeStaging,
    mode: str = "file",
    process_s: float = 0.1,
    dataset: str | None = None,
    function: str = "idds_jupyter.data.carousel:process_file",
    timeout: float = 600.0,
) -> CarouselResult:
    """Stage ``files`` with ``tape`` and process them file by file or as a whole dataset."""
    if mode not in ("file", "dataset"):
        raise ValueError(f"mode must be 'file' or 'dataset', got {mode!r}")
    name = dataset or f"tape:{mode}-{time.time_ns()}"
    client.add_dataset(name, list(files))
    template = {
        "name": f"carousel-{mode}",
        "works": [
            {
                "name": "process",
                "function": function,
                "input_dataset": name,
                "parameters": {"path": "{file}", "seconds": process_s},
            }
        ],
    }
    source = StagingSource(client, name, files, tape)
    wid = None
    if mode == "file":  # bound to the dataset before anything is staged
        wid = client.submit(template)
        _wait_jobs_created(client, wid, len(files), timeout)
    t0 = time.time()
    source.start(t0)
    if mode == "dataset":
        source.wait(timeout)
        wid = client.submit(template)
    assert wid is not None
    status = client.wait_workflow(wid, timeout)
    source.wait(timeout)
    if status != "finished":
        st = client.status(wid)
        raise RuntimeError(
            f"carousel run {wid} ended {status}: {st.get('error')} "
            f"{[(w['name'], w.get('reason'), w.get('jobs')) for w in st['works']]}"
        )
    jobs = _all_jobs(client, wid, "process")
    starts = [j["started_at"] for j in jobs if j.get("started_at")]
    ends = sorted(j["finished_at"] for j in jobs if j.get("finished_at"))
    events = [(t - t0, +1) for t in source.staged_at.values()] + [(t - t0, -1) for t in ends]
    events.sort(key=lambda e: (e[0], e[1]))  # a file processed at its staging instant never counts
    timeline, n, peak = [(0.0, 0)], 0, 0
    for t, d in events:
        n += d
        peak = max(peak, n)
        timeline.append((t, n))
    return CarouselResult(
        mode=mode,
        workflow_id=wid,
        n_files=len(files),
        time_to_first_job=min(starts) - t0,
        total_time=max(ends) - t0,
        staging_time=max(source.staged_at.values()) - t0,
        peak_unprocessed=peak,
        timeline=timeline,
    )


def _wait_jobs_created(client: Any, wid: int, n: int, timeout: float) -> None:
    """Until the file-bound work's jobs exist (pending on their files)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        works = client.status(wid).get("works") or []
        if works and sum(int(v) for v in (works[0].get("jobs") or {}).values()) >= n:
            return
        time.sleep(0.05)
    raise TimeoutError(f"the jobs of run {wid} were not created in {timeout} s")
