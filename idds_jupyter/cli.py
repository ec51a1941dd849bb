"""``idds-jupyter``: serve the core, run agents, submit and control workflows."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Sequence
from typing import Any

from idds_jupyter.config import AGENT_ROLES, Config
from idds_jupyter.extras import explain


def _params(items: Sequence[str]) -> dict[str, Any]:
    from idds_jupyter.model.parameter import parse_assignments

    try:
        return parse_assignments(list(items))  # 3 → int, 0.5 → float, [1,2] → list, text → str
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None


def _config(args: argparse.Namespace) -> Config:
    return Config.load(
        getattr(args, "config", None),
        db_url=getattr(args, "db", None),
        bus=getattr(args, "bus", None),
        backend=getattr(args, "backend", None),
        isolation=getattr(args, "isolation", None),
    )


def _orch(args: argparse.Namespace) -> Any:
    from idds_jupyter.bus import make_bus
    from idds_jupyter.core import Orchestrator
    from idds_jupyter.store.engine import make_engine

    cfg = _config(args)
    engine = make_engine(cfg.db_url)
    bus = (
        make_bus(cfg.bus, engine=engine)
        if cfg.bus in ("db",) or cfg.bus.startswith("zmq")
        else None
    )
    return Orchestrator(cfg, engine=engine, bus=bus)


def _progress_waiter(orch: Any, wid: int, quiet: bool) -> str:
    from tqdm import tqdm

    bar = None if quiet else tqdm(total=0, unit="job", desc=f"workflow {wid}", file=sys.stderr)

    def show(counts: dict[str, int]) -> None:
        if bar is None:
            return
        total = sum(counts.values())
        done = sum(counts.get(s, 0) for s in ("finished", "failed", "cancelled"))
        bar.total = total
        bar.n = done
        bar.set_postfix({k: v for k, v in counts.items() if v}, refresh=False)
        bar.refresh()

    try:
        return str(orch.wait(wid, progress=show))
    finally:
        if bar is not None:
            bar.close()


def _print_status(st: dict[str, Any]) -> None:
    print(f"workflow {st['id']} {st['name']!r}: {st['status']}")
    if st.get("error"):
        print(f"  error: {st['error']}")
    for w in st["works"]:
        jobs = " ".join(f"{k}={v}" for k, v in sorted(w["jobs"].items()))
        extra = f" ({w['reason']})" if w.get("reason") else ""
        print(f"  {w['name']:<32} {w['status']:<12} {jobs}{extra}")
    if st.get("conditions"):
        print("  conditions: " + ", ".join(f"{k}={v}" for k, v in st["conditions"].items()))
    if st.get("loop_info") or st.get("loops"):
        print("  loops: " + json.dumps(st.get("loop_info") or st.get("loops")))


def _workflow_of(args: argparse.Namespace) -> Any:
    """The template file, or a notebook (``.ipynb``) exported on the fly (idds_jupyter.export)."""
    if not str(args.file).endswith(".ipynb"):
        if getattr(args, "sweep", None):
            raise ValueError("--sweep applies to a notebook (.ipynb); a template has kwargs_list")
        return args.file
    from idds_jupyter.export import export_template, parse_sweep

    return export_template(
        args.file, mode=args.mode, sweep=parse_sweep(args.sweep or []), group=args.group
    )


def cmd_export(args: argparse.Namespace) -> int:
    """A notebook as a workflow template (YAML), to a file or stdout."""
    from idds_jupyter.export import export_template, parse_sweep, to_yaml
    from idds_jupyter.model import TemplateError

    try:
        text = to_yaml(
            export_template(
                args.file,
                mode=args.mode,
                sweep=parse_sweep(args.sweep),
                group=args.group,
                name=args.name,
            )
        )
    except (TemplateError, ValueError, OSError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 2
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as fh:
            fh.write(text)
        print(f"wrote {args.output}")
    else:
        sys.stdout.write(text)
    return 0


def _export_args(s: argparse.ArgumentParser) -> None:
    s.add_argument(
        "--mode",
        choices=["notebook", "cells"],
        default="notebook",
        help="a notebook: run it whole (papermill-style) or as a DAG of its cells",
    )
    s.add_argument(
        "--sweep",
        action="append",
        default=[],
        metavar="NAME=V1,V2,...",
        help="a notebook, whole-notebook mode: one job per value (several: the product)",
    )
    s.add_argument(
        "--group",
        choices=["cell", "heading"],
        default="cell",
        help="cells mode: one work per code cell, or per markdown heading",
    )


def cmd_submit(args: argparse.Namespace) -> int:
    from idds_jupyter.model import TemplateError

    orch = _orch(args)
    try:
        wid = orch.submit(_workflow_of(args), _params(args.param), backend=args.backend)
    except (TemplateError, ValueError, OSError) as exc:
        print(f"error: {args.file}: {exc}", file=sys.stderr)
        return 2
    print(wid if not args.wait else f"submitted workflow {wid}")
    if not args.wait:
        return 0
    status = _progress_waiter(orch, wid, args.quiet)
    _print_status(orch.status(wid))
    return 0 if status == "finished" else 1


def cmd_run(args: argparse.Namespace) -> int:
    """Embedded: agents in this process, submit, wait, stop."""
    from idds_jupyter.agents.runner import Runner
    from idds_jupyter.core import Orchestrator
    from idds_jupyter.model import TemplateError

    cfg = _config(args)
    with Runner(cfg, tune_gc=True) as runner:
        orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
        try:
            wid = orch.submit(_workflow_of(args), _params(args.param), backend=args.backend)
        except (TemplateError, ValueError, OSError) as exc:
            print(f"error: {args.file}: {exc}", file=sys.stderr)
            return 2
        status = _progress_waiter(orch, wid, args.quiet)
        _print_status(orch.status(wid))
    return 0 if status == "finished" else 1


def cmd_serve(args: argparse.Namespace) -> int:
    """``serve``: agents and the REST API in this process; ``agents``: agents only."""
    import signal
    import threading

    from idds_jupyter.agents.runner import Runner, run_forever
    from idds_jupyter.backends.isolation import IsolationError

    cfg = _config(args)
    roles = args.only or list(AGENT_ROLES)
    if args.cmd == "agents":
        print(f"idds-jupyter: agents {','.join(roles)} on {cfg.db_url} (bus {cfg.bus})", flush=True)
        try:
            run_forever(Runner(cfg, roles=roles, tune_gc=True))
        except IsolationError as exc:  # jobs cannot run as configured: say why, no traceback
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    from idds_jupyter.api.server import start_server

    stop = threading.Event()

    def _stop(*_: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    auth = _serve_auth(args, cfg)
    try:
        handle = start_server(
            cfg,
            ip=args.ip,
            port=args.port,
            base_url=args.base_url,
            roles=roles,
            connection_file=True,
            auth=auth,
            tune_gc=True,
            port_retries=0 if args.port_explicit else 50,
        )
    except OSError as exc:
        print(f"error: cannot serve on {args.ip}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except IsolationError as exc:  # jobs cannot run as configured: say why, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"idds-jupyter: agents {','.join(roles)} on {cfg.db_url} (bus {cfg.bus})", flush=True)
    print(f"idds-jupyter: serving the API at {handle.url}idds/api/v1/", flush=True)
    print(f"idds-jupyter: connection file {handle.connection_file}", flush=True)
    print(f"  export IDDS_URL={handle.url}", flush=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        handle.stop()
    return 0


def _serve_auth(args: argparse.Namespace, cfg: Config) -> Any:
    """Who may call the service, beyond its own tokens: hub users (``--auth hub``, the
    default when a JupyterHub started this process; the address and URL prefix then come
    from the hub unless given) and OIDC access tokens (when ``oidc_issuer`` is set).
    None: the service's tokens only."""
    from idds_jupyter.auth.hub import hub_service_address, in_hub_service

    mode = getattr(args, "auth", "auto") or "auto"
    hub = mode == "hub" or (mode == "auto" and in_hub_service())
    if hub:
        address = hub_service_address()
        if address is None:
            raise SystemExit(
                "error: --auth hub needs JUPYTERHUB_API_TOKEN and JUPYTERHUB_SERVICE_PREFIX "
                "(run as a JupyterHub service)"
            )
        ip, port, prefix = address
        if not args.port_explicit:
            args.ip, args.port, args.port_explicit = ip, port, True
        if args.base_url in ("", "/"):
            args.base_url = prefix
    if not hub and not cfg.oidc_issuer:
        return None

    def make(fallback: Any) -> Any:
        inner = fallback
        if cfg.oidc_issuer:
            from idds_jupyter.auth.oidc import OIDCAuthenticator

            inner = OIDCAuthenticator.from_config(
                cfg, fallback=fallback, executor=fallback.executor
            )
        if hub:
            from idds_jupyter.auth.hub import HubAuthenticator

            return HubAuthenticator(inner, admin_groups=set(cfg.hub_admin_groups))
        return inner

    return make


def cmd_token(args: argparse.Namespace) -> int:
    from idds_jupyter.store import tokens
    from idds_jupyter.store.engine import make_engine
    from idds_jupyter.store.migrate import upgrade

    cfg = _config(args)
    engine = make_engine(cfg.db_url)
    upgrade(engine)
    if args.action == "create":
        try:
            lifetime = tokens.parse_duration(args.expires) if args.expires else None
        except ValueError as exc:
            print(f"error: --expires: {exc}", file=sys.stderr)
            return 2
        row, token = tokens.create_token(
            engine, args.user, args.name or "", admin=args.admin, expires_in=lifetime
        )
        print(token)
        until = (
            time.strftime(", expires %Y-%m-%d %H:%M:%S", time.localtime(row["expires_at"]))
            if row["expires_at"]
            else ""
        )
        print(
            f"token {row['id']} for user {row['user']!r}{' (admin)' if row['admin'] else ''}{until}",
            file=sys.stderr,
        )
        return 0
    if args.action == "list":
        for r in tokens.list_tokens(engine, args.user, include_revoked=args.all):
            created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
            used = (
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["last_used_at"]))
                if r["last_used_at"]
                else "never"
            )
            state = "revoked" if r["revoked_at"] else ("admin" if r["admin"] else "user")
            if r["expires_at"] and not r["revoked_at"] and r["expires_at"] <= time.time():
                state = "expired"
            until = (
                time.strftime("  expires %Y-%m-%d %H:%M:%S", time.localtime(r["expires_at"]))
                if r["expires_at"]
                else ""
            )
            print(
                f"{r['id']:>5}  {r['user']:<16} {state:<8} {created}  last used {used}{until}  {r['name']}"
            )
        return 0
    if tokens.revoke_token(engine, args.id):
        print(f"token {args.id} revoked")
        return 0
    print(f"error: no active token with id {args.id}", file=sys.stderr)
    return 2


def _one(args: argparse.Namespace, op: str) -> int:
    from idds_jupyter.core import UnknownRun
    from idds_jupyter.store.control import ControlError

    orch = _orch(args)
    try:
        if op == "status":
            _print_status(orch.status(args.id))
            return 0
        res = getattr(orch, op)(args.id, args.work)
    except (UnknownRun, ControlError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    what = f"work {args.work!r} of workflow {args.id}" if args.work else f"workflow {args.id}"
    print(f"{op}: {what} {'changed' if res.changed else 'unchanged (already so)'}")
    return 0


def cmd_runs(args: argparse.Namespace) -> int:
    orch = _orch(args)
    for r in orch.runs(limit=args.limit):
        created = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["created_at"]))
        print(f"{r['id']:>6}  {r['status']:<12} {created}  {r['name']}")
    return 0


def _print_counts(counts: dict[str, dict[str, int]]) -> None:
    for work, c in counts.items():
        print(f"  {work:<32} ran={c['ran']} cached={c['cached']} failed={c['failed']}")


def cmd_provenance(args: argparse.Namespace) -> int:
    """A run's provenance: per-work counts (ran / cached / failed), or ``-o`` an RO-Crate."""
    from idds_jupyter.store import provenance as prov
    from idds_jupyter.store.engine import make_engine

    engine = make_engine(_config(args).db_url)
    with engine.connect() as conn:
        run = prov.run_info(conn, args.id)
        if run is None:
            print(f"error: no workflow with id {args.id}", file=sys.stderr)
            return 2
        record = prov.run_provenance(conn, args.id)
    if args.output:
        from idds_jupyter.export.provenance import write_crate

        write_crate(run, record, args.output)
        print(
            f"workflow {args.id}: {len(record['jobs'])} jobs, "
            f"{len(record['environments'])} environment(s) -> {args.output} (RO-Crate)"
        )
        return 0
    print(f"workflow {args.id} {run['name']!r}: {run['status']}")
    _print_counts(record["works"])
    return 0


def cmd_rerun(args: argparse.Namespace) -> int:
    """A new run of a run's template with every work memoized (see docs/provenance.md)."""
    from idds_jupyter.store import provenance as prov

    if args.failed == args.changed:
        print("error: rerun needs one of --failed or --changed", file=sys.stderr)
        return 2

    def submit(orch: Any) -> int | None:
        with orch.engine.connect() as conn:
            req = prov.rerun_request(conn, args.id)
        if req is None:
            print(f"error: no workflow with id {args.id}", file=sys.stderr)
            return None
        return int(
            orch.submit(
                req["template"],
                req["params"],
                owner=req["owner"],
                backend=req["backend"],
                cwd=req["cwd"],
            )
        )

    def report(orch: Any, wid: int) -> int:
        with orch.engine.connect() as conn:
            counts = prov.provenance_summary(conn, wid)
        st = orch.status(wid, with_works=False)
        print(f"workflow {wid} (re-run of {args.id}): {st['status']}")
        _print_counts(counts)
        return 0 if st["status"] == "finished" else 1

    if args.embedded:
        from idds_jupyter.agents.runner import Runner
        from idds_jupyter.core import Orchestrator

        cfg = _config(args)
        with Runner(cfg) as runner:
            orch = Orchestrator(cfg, engine=runner.engine, bus=runner.bus, dispatch=runner.dispatch)
            wid = submit(orch)
            if wid is None:
                return 2
            _progress_waiter(orch, wid, args.quiet)
            return report(orch, wid)
    orch = _orch(args)
    wid = submit(orch)
    if wid is None:
        return 2
    if not args.wait:
        print(wid)
        return 0
    _progress_waiter(orch, wid, args.quiet)
    return report(orch, wid)


def cmd_db(args: argparse.Namespace) -> int:
    from idds_jupyter.store.engine import make_engine
    from idds_jupyter.store.migrate import current, upgrade

    cfg = _config(args)
    engine = make_engine(cfg.db_url)
    if args.action == "upgrade":
        upgrade(engine)
    print(f"{engine.url.render_as_string(hide_password=True)}: schema {current(engine)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="idds-jupyter", description=__doc__)
    p.add_argument("--config", help="YAML config file (also IDDS_CONFIG)")
    p.add_argument(
        "--db", help="database URL (also IDDS_DB_URL); default: SQLite in the Jupyter data dir"
    )
    p.add_argument("--bus", help="event bus: local, none, db, zmq://HOST:PUB:SUB (also IDDS_BUS)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("serve", help="run the core, its agents and the REST API (standalone)")
    s.add_argument("--backend", help="default backend (local, dask)")
    s.add_argument("--only", action="append", choices=AGENT_ROLES)
    s.add_argument("--ip", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default 8765, or the next free one; 0 = any free port)",
    )
    s.add_argument("--base-url", default="/", help="URL prefix of the API (default /)")
    s.add_argument(
        "--auth",
        choices=["auto", "token", "hub"],
        default="auto",
        help="who may call: token (the service's tokens), hub (JupyterHub users, and "
        "tokens); auto: hub when a JupyterHub started this process",
    )
    s.add_argument(
        "--isolation",
        choices=["none", "account", "uid"],
        help="what local jobs run as: none (this account), account (job_account), "
        "uid (the owner's OS account); also IDDS_ISOLATION (docs/security.md)",
    )
    s.set_defaults(func=cmd_serve)
    s = sub.add_parser("token", help="API tokens: create, list, revoke")
    tsub = s.add_subparsers(dest="action", required=True)
    t = tsub.add_parser("create", help="issue a token and print it (shown once)")
    t.add_argument("--user", required=True)
    t.add_argument("--admin", action="store_true", help="may see and control every user's runs")
    t.add_argument("--name", default="", help="a label for the token")
    t.add_argument(
        "--expires",
        metavar="DURATION",
        help="lifetime: seconds or 30m, 1h, 7d, 2w (default: until revoked)",
    )
    t = tsub.add_parser("list", help="list tokens (never their secrets)")
    t.add_argument("--user", help="only this user's tokens")
    t.add_argument("--all", action="store_true", help="include revoked tokens")
    t = tsub.add_parser("revoke", help="revoke a token by id")
    t.add_argument("id", type=int)
    s.set_defaults(func=cmd_token)
    s = sub.add_parser("agents", help="run agents; --only ROLE to split roles over processes")
    s.add_argument("--backend")
    s.add_argument(
        "--isolation",
        choices=["none", "account", "uid"],
        help="what local jobs run as (see serve --isolation)",
    )
    s.add_argument("--only", action="append", choices=AGENT_ROLES)
    s.set_defaults(func=cmd_serve)

    for name, func, helptext in (
        ("submit", cmd_submit, "submit a YAML/JSON workflow template"),
        ("run", cmd_run, "run a template with embedded agents and wait"),
    ):
        s = sub.add_parser(name, help=helptext + " (or a notebook, .ipynb)")
        s.add_argument("file")
        s.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE")
        _export_args(s)
        s.add_argument("--backend")
        s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        if name == "submit":
            s.add_argument(
                "--wait", action="store_true", help="wait for the end, with a progress bar"
            )
        s.set_defaults(func=func)

    s = sub.add_parser("export", help="a notebook as a batch workflow template (YAML)")
    s.add_argument("file", help="the notebook (.ipynb)")
    s.add_argument("-o", "--output", help="the template file to write (default: stdout)")
    s.add_argument("--name", help="the workflow's name (default: from the notebook's file name)")
    _export_args(s)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("runs", help="list workflows, newest first")
    s.add_argument("--limit", type=int, default=50)
    s.set_defaults(func=cmd_runs)
    for op in ("status", "abort", "suspend", "resume", "retry"):
        s = sub.add_parser(
            op, help=f"{op} a workflow" + (" (or --work NAME)" if op != "status" else "")
        )
        s.add_argument("id", type=int)
        if op != "status":
            s.add_argument("--work", help="only this work of the workflow")
        s.set_defaults(func=lambda a, _op=op: _one(a, _op))
    s = sub.add_parser(
        "rerun",
        help="re-run a workflow: unchanged jobs from the cache, the failed "
        "(--failed) or changed (--changed) ones and their downstream run",
    )
    s.add_argument("id", type=int)
    s.add_argument(
        "--failed", action="store_true", help="re-run the failed jobs and their downstream"
    )
    s.add_argument(
        "--changed",
        action="store_true",
        help="re-run the jobs whose code or inputs changed and their downstream",
    )
    s.add_argument("--wait", action="store_true", help="wait for the end and print the counts")
    s.add_argument(
        "--embedded", action="store_true", help="run the agents in this process (like run) and wait"
    )
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_rerun)
    s = sub.add_parser("provenance", help="a run's provenance: counts, or -o FILE an RO-Crate zip")
    s.add_argument("id", type=int)
    s.add_argument(
        "-o",
        "--output",
        metavar="FILE.crate.zip",
        help="write an RO-Crate (Workflow Run Crate) of the run",
    )
    s.set_defaults(func=cmd_provenance)
    s = sub.add_parser("db", help="database schema")
    s.add_argument("action", choices=["upgrade", "current"])
    s.set_defaults(func=cmd_db)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cmd == "serve":
        args.port_explicit = args.port is not None
        args.port = 8765 if args.port is None else args.port
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if args.cmd == "retry":
        args.func = lambda a: _one(a, "retry")
    try:
        return int(args.func(args) or 0)
    except ModuleNotFoundError as e:
        clear = explain(e, f"idds-jupyter {args.cmd}")
        if clear is None:
            raise
        print(f"idds-jupyter: {clear}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
