"""The data carousel against a real Rucio server (issue 24).

Real parts: a Rucio 41 server from PyPI (gunicorn, REST API) on loopback with its
database in a real PostgreSQL, two RSEs (TAPE, DISK); a real STOMP broker (coilmq);
the iDDS server with local workers; ``rucio-clients`` and ``stomp.py`` in this process.

Played by the test, because they cannot run here: the transfer tool (FTS, which copies
tape -> disk and reports the outcome: ``fts_*`` — it writes the bytes at the destination
PFN and declares the replica AVAILABLE, or UNAVAILABLE, through Rucio's own API, which
moves the rule's locks to OK or STUCK exactly as the conveyor does) and Rucio's Hermes
daemon (``hermes`` — it sends Rucio-format ``transfer-done`` messages over STOMP).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from postgres import PostgresServer  # noqa: E402
from rucio_server import PASSWORD, Hermes, RucioServer, StompBroker  # noqa: E402

from idds_jupyter.api.server import start_server  # noqa: E402
from idds_jupyter.client import Client  # noqa: E402
from idds_jupyter.config import Config  # noqa: E402
from idds_jupyter.data.rucio import RucioSettings, RucioSource, parse_rucio, pfn_path  # noqa: E402
from idds_jupyter.data.stomp import StompListener  # noqa: E402

FN = "idds_jupyter.data.rucio:process_pfn"


@pytest.fixture(scope="module")
def rucio() -> Iterator[RucioServer]:
    pg = PostgresServer().start()
    srv: RucioServer | None = None
    try:
        srv = RucioServer(pg.create_database("rucio"))
        srv.start()
        yield srv
    finally:
        if srv is not None:
            srv.stop()
        pg.stop()


@pytest.fixture(scope="module")
def broker() -> Iterator[StompBroker]:
    b = StompBroker().start()
    try:
        yield b
    finally:
        b.stop()


NOTIFY_DEST = "/topic/idds.notifications"


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, broker: StompBroker, rucio: RucioServer
) -> Iterator[Any]:
    """The iDDS server (local workers) configured with the Rucio server (it stages the
    rucio:// datasets no one registered) and the broker; its outbound notifications also go
    over STOMP."""
    home = tmp_path_factory.mktemp("rucio-usecases")
    notify = f"stomp://{broker.address}{NOTIFY_DEST}?vhost={broker.vhost}"
    cfg = Config.load(
        None,
        home=home / "home",
        db_url=f"sqlite:///{home}/idds.db",
        workers=4,
        poll_interval=0.5,
        notify_urls=(notify,),
        notify_kinds=("workflow.terminal", "work.terminal", "files.processed"),
        rucio_host=rucio.url,
        rucio_account="root",
        rucio_username="ddmlab",
        rucio_password=PASSWORD,
        rucio_rse_expression="DISK",
        rucio_lifetime=3600,
        rucio_poll_interval=2.0,
        rucio_stomp_brokers=(broker.address,),
        rucio_stomp_vhost=broker.vhost,
    )
    handle = start_server(cfg)
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def client(server: Any) -> Client:
    c = Client(server.url, token=server.token)
    c.runs(1)  # the first request of a fresh server is slow: not in the timings
    return c


def settings(rucio: RucioServer, **kw: Any) -> RucioSettings:
    return RucioSettings(
        host=rucio.url,
        account="root",
        username="ddmlab",
        password="secret-rucio-test",
        rse_expression="DISK",
        lifetime=3600,
        activity="Staging",
        **kw,
    )


def template(uri: str, seconds: float = 0.0) -> dict[str, Any]:
    return {
        "name": "carousel-rucio",
        "works": [
            {
                "name": "process",
                "function": FN,
                "input_dataset": uri,
                "parameters": {"file": "{file}", "seconds": seconds},
            }
        ],
    }


def all_jobs(client: Client, wid: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    while True:
        page = client.jobs(wid, "process", offset=len(out), limit=1000)
        out += page["jobs"]
        if len(out) >= int(page["total"]) or not page["jobs"]:
            return out


def wait_jobs_created(client: Client, wid: int, n: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        works = client.status(wid).get("works") or []
        if works and sum(int(v) for v in (works[0].get("jobs") or {}).values()) >= n:
            return
        time.sleep(0.05)
    raise TimeoutError(f"jobs of run {wid} not created")


def fts_stage_one_by_one(
    rucio: RucioServer, scope: str, names: list[str], period: float, hermes: Hermes | None = None
) -> dict[str, float]:
    """FTS (played by the test) finishes one transfer every ``period`` s; Hermes (played
    too, when given) sends its ``transfer-done``. Returns when each file was on disk."""
    staged: dict[str, float] = {}
    for n in names:
        time.sleep(period)
        pfn = rucio.fts_transfer_done(scope, [n])[0]
        staged[n] = time.time()
        if hermes is not None:
            hermes.transfer_done(scope, n, "DISK", pfn)
    return staged


def start_gaps(client: Client, wid: int, staged: dict[str, float], scope: str) -> list[float]:
    """Per job: seconds from its file on disk to its start."""
    jobs = {j["idx"]: j for j in all_jobs(client, wid)}
    results = client.work_results(wid, "process")
    assert len(jobs) == len(staged) == len(results)
    gaps = []
    for r in results:
        res = r.get("result") or r
        assert res["head"].startswith("data of ")  # the worker read the real file at its PFN
        assert res["path"] == pfn_path(res["path"]) and Path(res["path"]).is_file()
        name = Path(res["path"]).name
        gaps.append(jobs[r["idx"]]["started_at"] - staged[name])
    return gaps


def test_uri_parsing() -> None:
    assert parse_rucio("rucio://data24:raw.0001") == ("data24", "raw.0001")
    for bad in ("data24:raw", "rucio://noscope", "rucio://:x", "rucio://a/b:x"):
        with pytest.raises(ValueError, match="rucio://SCOPE:NAME"):
            parse_rucio(bad)
    # the template validator names the field before anything is submitted
    from idds_jupyter.model.workflow import Workflow

    with pytest.raises(
        ValueError, match=r"field 'input_dataset': a Rucio dataset is rucio://SCOPE:NAME"
    ):
        Workflow.from_dict(
            {
                "name": "x",
                "works": [{"name": "p", "function": FN, "input_dataset": "rucio://noscope"}],
            }
        ).validate()


def test_a_file_learnt_of_by_message_and_poll_at_once_is_marked_once(tmp_path: Path) -> None:
    """Hermes' message and the poll learn of one file in the same moment (CI saw
    ``{'message': 3, 'poll': 3}`` for 5 files): it is marked available once, counted once,
    and a poll's older "staging" does not move it back."""
    from idds_jupyter.data.rucio import CatalogSink, _File
    from idds_jupyter.store.catalog import Catalog
    from idds_jupyter.store.engine import make_engine
    from idds_jupyter.store.migrate import upgrade

    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    upgrade(engine)
    uri = "rucio://test:race"
    catalog = Catalog(engine, "alice")
    catalog.add_dataset(uri, [f"/disk/f{i}" for i in range(5)])
    calls: list[list[str]] = []

    class SlowCatalog:
        """The real catalog; its mark_available takes a while, as over REST under load."""

        def __getattr__(self, name: str) -> Any:
            return getattr(catalog, name)

        def mark_available(self, dataset: str, names: list[str]) -> int:
            calls.append(list(names))
            time.sleep(0.2)
            return int(catalog.mark_available(dataset, names))

    src = RucioSource(CatalogSink(SlowCatalog(), lambda events: None), uri)
    for i in range(5):
        src.files[f"test:f{i}"] = _File(did=f"test:f{i}", pfn=f"/disk/f{i}", size=1)
    dids = list(src.files)
    go = threading.Barrier(2)

    def learn(via: str) -> None:
        go.wait()
        src._mark_available(dids, via=via)

    threads = [threading.Thread(target=learn, args=(v,)) for v in ("message", "poll")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(src.available_via.values()) == 5, src.available_via
    assert sorted(n for c in calls for n in c) == [f"/disk/f{i}" for i in range(5)]
    assert src._set_state(dids, "staging") == 0 and src.done()
    assert {f["status"] for f in catalog.files(uri)} == {"available"}
    engine.dispose()


def test_rucio_50_tape_files_each_job_within_1s_of_its_transfer_done_message_fts_and_hermes_played_by_test(
    rucio: RucioServer, broker: StompBroker, client: Client
) -> None:
    scope, ds = "test", "carousel50"
    names = rucio.make_dataset(scope, ds, 50)
    uri = f"rucio://{scope}:{ds}"
    # polling only every 60 s: the jobs can only start this early through the messages
    src = RucioSource(
        client,
        uri,
        settings(
            rucio, poll_interval=60, stomp_brokers=(broker.address,), stomp_vhost=broker.vhost
        ),
    ).start()
    hermes = Hermes(broker)
    try:
        rule = rucio.client().get_replication_rule(src.rule_id)
        assert (rule["rse_expression"], rule["activity"], rule["state"]) == (
            "DISK",
            "Staging",
            "REPLICATING",
        )
        assert rule["expires_at"] is not None  # the lifetime
        wid = client.submit(template(uri))
        wait_jobs_created(client, wid, 50)
        staged = fts_stage_one_by_one(rucio, scope, names, 0.06, hermes)
        assert client.wait_workflow(wid, 120) == "finished"
    finally:
        hermes.close()
        src.stop()
    gaps = start_gaps(client, wid, staged, scope)
    print(f"by message: first job {min(gaps):.3f} s, worst {max(gaps):.3f} s after its file")
    assert max(gaps) < 1.0, gaps
    assert src.messages >= 50 and src.available_via == {"message": 50}
    jobs = all_jobs(client, wid)
    assert sorted(j["status"] for j in jobs) == ["finished"] * 50
    assert all(int(j.get("attempt", 1)) <= 1 for j in jobs)  # every job once
    assert rucio.client().get_replication_rule(src.rule_id)["state"] == "OK"
    # the catalog shows each file by its PFN at DISK with its DID, available
    listed = client.dataset(uri)["files"]
    assert {f["status"] for f in listed} == {"available"}
    assert {f["meta"]["did"] for f in listed} == {f"{scope}:{n}" for n in names}


def test_rucio_messages_off_jobs_start_within_the_poll_period_fts_played_by_test_run_work_and_files_notified_over_stomp(
    rucio: RucioServer, broker: StompBroker, client: Client
) -> None:
    notified: list[tuple[str, dict[str, Any]]] = []
    follower = StompListener(
        [broker.address], NOTIFY_DEST, lambda k, p: notified.append((k, p)), vhost=broker.vhost
    )  # another service following the carousel
    assert follower.ensure()
    scope, ds = "test", "polled"
    names = rucio.make_dataset(scope, ds, 10)
    uri = f"rucio://{scope}:{ds}"
    period = 0.5
    src = RucioSource(client, uri, settings(rucio, poll_interval=period)).start()  # no broker
    try:
        wid = client.submit(template(uri))
        wait_jobs_created(client, wid, 10)
        staged = fts_stage_one_by_one(rucio, scope, names, 0.1)
        assert client.wait_workflow(wid, 120) == "finished"
    finally:
        src.stop()
    gaps = start_gaps(client, wid, staged, scope)
    print(f"by polling every {period} s: worst {max(gaps):.3f} s after its file")
    assert max(gaps) < period + 1.0, gaps
    assert src.messages == 0 and src.polls >= 2
    deadline = time.time() + 10
    while time.time() < deadline and not any(
        k == "workflow.terminal" and p.get("workflow_id") == wid for k, p in notified
    ):
        time.sleep(0.05)
    follower.close()
    ours = [(k, p) for k, p in notified if p.get("workflow_id") == wid]
    assert ("workflow.terminal", {"workflow_id": wid, "status": "finished"}) in ours
    [(_, work)] = [(k, p) for k, p in ours if k == "work.terminal"]
    assert (work["work"], work["status"]) == ("process", "finished"), work
    processed = [p for k, p in ours if k == "files.processed"]
    assert {p["dataset"] for p in processed} == {uri} and {p["status"] for p in processed} == {
        "finished"
    }, processed
    # every file once, by the name the catalog gives it
    done = sorted(f for p in processed for f in p["files"])
    assert done == sorted(f["name"] for f in client.dataset(uri)["files"]), done
    kinds = [k for k, _ in ours]
    assert kinds.index("work.terminal") < kinds.index("workflow.terminal"), kinds


def test_rucio_stuck_file_fails_its_job_naming_the_rucio_state_then_retry_succeeds_fts_played_by_test(
    rucio: RucioServer, client: Client
) -> None:
    scope, ds = "test", "stuck"
    names = rucio.make_dataset(scope, ds, 5)
    uri = f"rucio://{scope}:{ds}"
    src = RucioSource(client, uri, settings(rucio, poll_interval=0.3, stuck_after=1.0)).start()
    try:
        wid = client.submit(template(uri))
        wait_jobs_created(client, wid, 5)
        rucio.fts_transfer_done(scope, names[:4])
        rucio.fts_transfer_failed(scope, names[4:])  # the transfer failed: lock STUCK
        status = client.wait_workflow(wid, 60)
        assert status in ("failed", "subfinished"), status
        jobs = all_jobs(client, wid)
        assert sorted(j["status"] for j in jobs) == ["failed"] + ["finished"] * 4
        bad = next(j for j in jobs if j["status"] == "failed")
        error = str(bad["error"])
        assert "STUCK" in error and f"{scope}:{names[4]}" in error and "DISK" in error, error
        assert src.states()[f"{scope}:{names[4]}"] == "failed"
        states = {f["meta"]["did"]: f["status"] for f in client.dataset(uri)["files"]}
        assert states[f"{scope}:{names[4]}"] == "failed"
        # Rucio retries by its own terms: now the transfer works; the next poll sees the
        # lock OK and the file available; the run's retry processes it
        rucio.fts_transfer_done(scope, names[4:])
        deadline = time.time() + 10
        while src.states()[f"{scope}:{names[4]}"] != "available" and time.time() < deadline:
            time.sleep(0.1)
        assert src.states()[f"{scope}:{names[4]}"] == "available"
        client.retry(wid)
        assert client.wait_workflow(wid, 60) == "finished"
    finally:
        src.stop()


def test_rucio_server_stopped_mid_run_and_restarted_the_run_finishes_fts_played_by_test(
    rucio: RucioServer, client: Client
) -> None:
    scope, ds = "test", "outage"
    names = rucio.make_dataset(scope, ds, 8)
    uri = f"rucio://{scope}:{ds}"
    src = RucioSource(client, uri, settings(rucio, poll_interval=0.3)).start()
    try:
        wid = client.submit(template(uri))
        wait_jobs_created(client, wid, 8)
        rucio.fts_transfer_done(scope, names[:4])
        rucio.stop_serving()  # Rucio is down
        time.sleep(1.0)
        assert src.last_error is not None  # the polls failed, and went on
        rucio.serve()
        rucio.fts_transfer_done(scope, names[4:])
        assert client.wait_workflow(wid, 60) == "finished"
        assert src.last_error is None
    finally:
        src.stop()


def test_rucio_file_level_vs_dataset_level_on_the_same_staging_fts_played_by_test(
    rucio: RucioServer, client: Client
) -> None:
    """The carousel's figure against real Rucio: file-level processing starts its first job
    sooner and keeps fewer staged-but-unprocessed files than processing the dataset once
    it is all staged."""
    figures = {}
    for mode in ("file", "dataset"):
        scope, ds = "test", f"buffer-{mode}"
        names = rucio.make_dataset(scope, ds, 12)
        uri = f"rucio://{scope}:{ds}"
        src = RucioSource(client, uri, settings(rucio, poll_interval=0.2)).start()
        try:
            wid = None
            if mode == "file":
                wid = client.submit(template(uri, 0.1))
                wait_jobs_created(client, wid, 12)
            t0 = time.time()
            staged: dict[str, float] = {}
            stager = threading.Thread(
                target=lambda n=names, s=scope, out=staged: out.update(
                    fts_stage_one_by_one(rucio, s, n, 0.1)
                )
            )
            stager.start()
            if mode == "dataset":
                stager.join()
                while not src.done():
                    time.sleep(0.05)
                wid = client.submit(template(uri, 0.1))
            assert wid is not None
            assert client.wait_workflow(wid, 120) == "finished"
            stager.join()
        finally:
            src.stop()
        jobs = all_jobs(client, wid)
        first = min(j["started_at"] for j in jobs) - t0
        events = sorted([(t, +1) for t in staged.values()] + [(j["finished_at"], -1) for j in jobs])
        n = peak = 0
        for _, d in events:
            n += d
            peak = max(peak, n)
        figures[mode] = (first, peak)
    print(
        f"first job: file-level {figures['file'][0]:.2f} s, dataset-level {figures['dataset'][0]:.2f} s; "
        f"peak staged-but-unprocessed: {figures['file'][1]} vs {figures['dataset'][1]}"
    )
    assert figures["file"][0] < figures["dataset"][0]
    assert figures["file"][1] < figures["dataset"][1]


def test_template_input_dataset_rucio_is_staged_by_the_service_fts_and_hermes_played_by_test(
    rucio: RucioServer, broker: StompBroker, client: Client
) -> None:
    """Only the template names the dataset: the service (rucio_host configured) lists its
    files, binds the jobs, creates the rule and follows the messages."""
    scope, ds = "test", "by-template"
    names = rucio.make_dataset(scope, ds, 6)
    uri = f"rucio://{scope}:{ds}"
    wid = client.submit(template(uri))
    wait_jobs_created(client, wid, 6, timeout=30)
    deadline = time.time() + 10  # the rule follows the registration
    while not (rules := list(rucio.client().list_did_rules(scope, ds))) and time.time() < deadline:
        time.sleep(0.1)
    assert [(r["rse_expression"], r["account"]) for r in rules] == [("DISK", "root")]
    listed = {d["name"]: d for d in client.datasets()}
    assert listed[uri]["meta"]["source"] == "rucio"  # the catalog lists Rucio-backed datasets
    hermes = Hermes(broker)
    try:
        staged = fts_stage_one_by_one(rucio, scope, names, 0.05, hermes)
    finally:
        hermes.close()
    assert client.wait_workflow(wid, 60) == "finished"
    gaps = start_gaps(client, wid, staged, scope)
    assert max(gaps) < 1.0, gaps  # by message: the service polls only every 2 s
    states = {f["meta"]["did"]: f["status"] for f in client.dataset(uri)["files"]}
    assert states == {f"{scope}:{n}": "available" for n in names}


def test_rucio_conveyor_with_mock_transfer_tool_and_hermes_stages_and_the_run_finishes(
    rucio: RucioServer, broker: StompBroker, client: Client
) -> None:
    """Rucio's own daemons do the staging: the conveyor (submitter, poller, finisher) with
    Rucio's mock transfer tool (FTS cannot run here; it copies no bytes, so the test writes
    them at the destination first) and Hermes delivering over STOMP. Every file ends
    available (by message or by the poll) and the run finishes. How fast Hermes' messages
    arrive after the finisher is Rucio's timing, not ours: the fast path is measured by
    test_rucio_50_tape_files_each_job_within_1s_of_its_transfer_done_message."""
    scope, ds = "test", "conveyor"
    names = rucio.make_dataset(scope, ds, 5)
    uri = f"rucio://{scope}:{ds}"
    rucio.configure_hermes(broker.port, broker.vhost)
    src = RucioSource(
        client,
        uri,
        settings(rucio, poll_interval=5, stomp_brokers=(broker.address,), stomp_vhost=broker.vhost),
    ).start()
    try:
        wid = client.submit(template(uri))
        wait_jobs_created(client, wid, 5)
        rucio.write_at_destination(scope, names)
        # a pass may leave requests for the next one (submitted, not yet polled): passes until
        # the rule is OK, then one more so that Hermes sends what the last finisher wrote
        deadline = time.time() + 60
        while rucio.client().get_replication_rule(src.rule_id)["state"] != "OK":
            assert time.time() < deadline, "Rucio's conveyor did not bring the rule to OK in 60 s"
            rucio.run_daemons()
        rucio.run_daemons()
        assert client.wait_workflow(wid, 60) == "finished"
        assert sum(src.available_via.values()) == 5, src.available_via
        assert set(src.states().values()) == {"available"}
    finally:
        src.stop()


def test_faat_work_input_dataset_rucio_one_call_per_staged_file_fts_played_by_test(
    rucio: RucioServer, client: Client
) -> None:
    """FaaT: ``@work(input_dataset="rucio://…")`` — a call runs the function once per file
    of the dataset, with ``file=`` its PFN, staged by the service (rucio_host configured)."""
    from idds_jupyter.faat.work import work

    scope, ds = "test", "faat"
    names = rucio.make_dataset(scope, ds, 4)

    @work(input_dataset=f"rucio://{scope}:{ds}", client=client)
    def first_line(file: str, upper: bool = False) -> str:
        path = file.split("://", 1)[1]
        path = "/" + path.split("/", 1)[1] if not path.startswith("/") else path
        with open(path) as fh:
            line = fh.readline().strip()
        return line.upper() if upper else line

    def fts() -> None:  # once the service's rule exists, the transfers finish
        deadline = time.time() + 30
        while not list(rucio.client().list_did_rules(scope, ds)) and time.time() < deadline:
            time.sleep(0.1)
        rucio.fts_transfer_done(scope, names)

    staged = threading.Thread(target=fts)
    staged.start()
    values = first_line.over_dataset(timeout=60, upper=True)  # what first_line(upper=True) does
    staged.join()
    assert sorted(values) == sorted(f"DATA OF {n}".upper() for n in names)
