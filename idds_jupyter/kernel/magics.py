"""``%idds`` and ``%%idds``: run a cell as a Work, define workflows and templates, inspect runs.

Every mistake is one line (IPython's ``UsageError``): an unknown run, no server
reachable, a bad option, a template error with its line and field.
"""

from __future__ import annotations

import argparse
import shlex
from typing import Any

import yaml
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class
from IPython.display import HTML, display

from idds_jupyter.export.analysis import cell_names
from idds_jupyter.kernel.export_magics import export_notebook, submit_notebook

USAGE = """\
%%idds work [--name N] [--map VAR] [--out VAR ...] [--cores N] [--backend B] [--retries N]
%%idds workflow [--name N] [--submit]
%%idds template [--name N] [--submit] [--form] [--param K=V ...]
%idds runs | status ID | abort ID | retry ID | logs ID [WORK [JOB]] | dag ID | hpo ID | al ID
%idds connect URL [--token T] | form NAME
%idds export NB.ipynb [--mode notebook|cells] [-o FILE] [--sweep K=V1,V2]
%idds submit-notebook NB.ipynb [--mode notebook|cells] [-p K=V ...] [--sweep K=V1,V2]"""


class _Parser(argparse.ArgumentParser):
    """argparse that reports instead of exiting the kernel."""

    def error(self, message: str) -> Any:
        raise UsageError(f"%idds {self.prog.split()[-1]}: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> Any:
        raise _Help(message or "")


class _Help(Exception):
    pass


def _parser(name: str, description: str) -> _Parser:
    return _Parser(prog=f"%idds {name}", description=description, add_help=True)


def _params(items: list[str]) -> dict[str, Any]:
    from idds_jupyter.model.parameter import parse_assignments

    try:
        return parse_assignments(items)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


@magics_class
class IddsMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.templates: dict[str, str] = {}
        self._client: Any = None

    @property
    def ns(self) -> dict[str, Any]:
        assert self.shell is not None
        return self.shell.user_ns

    # ---------------------------------------------------------------- client
    @property
    def client(self) -> Any:
        if self._client is None:
            from idds_jupyter.client import IddsError, get_client

            try:
                self._client = get_client()
            except (IddsError, LookupError, OSError, ValueError) as exc:
                raise UsageError(
                    f"no iDDS server reachable: {exc} (use %idds connect URL)"
                ) from None
        return self._client

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        from idds_jupyter.client import IddsError

        try:
            return fn(*args, **kw)
        except IddsError as exc:
            raise UsageError(str(exc)) from None

    # ----------------------------------------------------------------- entry
    @line_cell_magic
    def idds(self, line: str, cell: str | None = None) -> Any:
        try:
            argv = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%idds: {exc}") from None
        if not argv or argv[0] in ("-h", "--help", "help"):
            print(USAGE)
            return None
        cmd, rest = argv[0], argv[1:]
        try:
            handler: Any
            if cell is not None:
                handler = {
                    "work": self._work,
                    "workflow": self._workflow,
                    "template": self._template,
                }.get(cmd)
                if handler is None:
                    raise UsageError(
                        f"%%idds {cmd}: unknown cell command; expected work, workflow or template"
                    )
                return handler(rest, cell)
            handler = {
                "runs": self._runs,
                "status": self._status,
                "abort": self._abort,
                "retry": self._retry,
                "logs": self._logs,
                "dag": self._dag,
                "hpo": self._hpo,
                "al": self._al,
                "connect": self._connect,
                "form": self._form,
                "export": lambda a: export_notebook(self, a),
                "submit-notebook": lambda a: submit_notebook(self, a),
            }.get(cmd)
            if handler is None:
                raise UsageError(f"%idds {cmd}: unknown command; %idds --help lists them")
            return handler(rest)
        except _Help as h:
            print(str(h) or USAGE)
            return None

    # ------------------------------------------------------------ cell: work
    def _work(self, argv: list[str], cell: str) -> None:
        p = _parser("work", "Run this cell as a Work; the variables it assigns come back.")
        p.add_argument("--name", default="cell")
        p.add_argument("--map", dest="map_var", help="one job per item of this variable")
        p.add_argument(
            "--out", action="append", default=None, help="only these variables come back"
        )
        p.add_argument("--cores", type=int)
        p.add_argument("--memory-mb", type=int)
        p.add_argument("--backend")
        p.add_argument("--retries", type=int, default=0)
        a = p.parse_args(argv)
        try:
            reads, assigns = cell_names(cell)
        except SyntaxError as exc:
            raise UsageError(f"%%idds work: syntax error on line {exc.lineno}: {exc.msg}") from None
        ns = self.ns
        inputs = {k: ns[k] for k in reads if k in ns and not k.startswith("_")}
        outputs = a.out or [n for n in assigns if not n.startswith("_")]
        from idds_jupyter.faat.work import work
        from idds_jupyter.kernel.cell import run_cell

        fn = work(
            run_cell,
            name=a.name,
            backend=a.backend,
            cores=a.cores,
            memory_mb=a.memory_mb,
            retries=a.retries,
        )
        if a.map_var:
            if a.map_var not in ns:
                raise UsageError(
                    f"%%idds work --map {a.map_var}: no variable {a.map_var!r} in the notebook"
                )
            items = list(ns[a.map_var])
            calls = [
                {"inputs": {**inputs, a.map_var: item}, "body": cell, "outputs": outputs}
                for item in items
            ]
            results = self._call(fn.map, kwargs_list=calls)
            for name in outputs:
                ns[name] = [r.get(name) for r in results]
        else:
            result = self._call(fn, inputs, cell, outputs)
            ns.update(result)

    # -------------------------------------------------------- cell: workflow
    def _workflow(self, argv: list[str], cell: str) -> Any:
        p = _parser(
            "workflow", "Define a workflow whose body is this cell (its @work calls become works)."
        )
        p.add_argument("--name", default="workflow")
        p.add_argument("--submit", action="store_true")
        p.add_argument("--where", choices=["local", "server"], default="local")
        a = p.parse_args(argv)
        try:
            code = compile(cell, f"<%%idds workflow {a.name}>", "exec")
        except SyntaxError as exc:
            raise UsageError(
                f"%%idds workflow: syntax error on line {exc.lineno}: {exc.msg}"
            ) from None
        from idds_jupyter.faat.workflow import workflow

        ns = self.ns

        def body(**params: Any) -> Any:
            scope = dict(ns)
            scope.update(params)
            exec(code, scope)
            return scope.get("result")

        body.__name__ = a.name
        wf = workflow(body, name=a.name, where=a.where)
        ns[a.name] = wf
        if a.submit:
            run = self._call(wf.submit)
            ns[f"{a.name}_run"] = run
            return run
        return None

    # -------------------------------------------------------- cell: template
    def _template(self, argv: list[str], cell: str) -> Any:
        p = _parser("template", "A YAML workflow template: validated now, stored under its name.")
        p.add_argument("--name")
        p.add_argument("--submit", action="store_true")
        p.add_argument("--form", action="store_true", help="show a form to fill and submit it")
        p.add_argument("--param", action="append", default=[], metavar="K=V")
        a = p.parse_args(argv)
        wf = load_template(cell, a.name)
        self.templates[wf.name] = cell
        self.ns[_identifier(wf.name)] = wf
        if a.form:
            return template_form(self, wf)
        if a.submit:
            return self.submit_template(wf, _params(a.param))
        print(f"template {wf.name!r}: {len(wf.works)} works, valid")
        return None

    def submit_template(self, wf: Any, params: dict[str, Any]) -> Any:
        from idds_jupyter.model import TemplateError

        try:
            wf.validate({**wf.parameters, **params})
        except TemplateError as exc:
            raise UsageError(f"template {wf.name!r}: {exc}") from None
        wid = self._call(self.client.submit, wf.to_dict(), params)
        from idds_jupyter.faat.workflow import Run

        return Run(self.client, wid, name=wf.name)

    # ----------------------------------------------------------- line magics
    def _id(self, argv: list[str], what: str, extra: int = 0) -> tuple[int, list[str]]:
        if not argv:
            raise UsageError(f"%idds {what}: a run id is required")
        try:
            return int(argv[0]), argv[1:]
        except ValueError:
            raise UsageError(f"%idds {what}: {argv[0]!r} is not a run id") from None

    def _runs(self, argv: list[str]) -> None:
        p = _parser("runs", "Your runs, newest first.")
        p.add_argument("--limit", type=int, default=20)
        a = p.parse_args(argv)
        runs = self._call(self.client.runs, limit=a.limit)
        rows = "".join(
            f"<tr><td>{r['id']}</td><td>{r['name']}</td><td>{r['status']}</td></tr>" for r in runs
        )
        display(HTML(f"<table><tr><th>id</th><th>name</th><th>status</th></tr>{rows}</table>"))

    def _status(self, argv: list[str]) -> Any:
        wid, _ = self._id(argv, "status")
        from idds_jupyter.kernel.widgets import RunWidget

        self._call(self.client.status, wid)  # unknown run → one line
        return RunWidget(self.client, wid).widget

    def _abort(self, argv: list[str]) -> None:
        wid, _ = self._id(argv, "abort")
        res = self._call(self.client.abort, wid)
        print(f"run {wid}: {'aborted' if res.get('changed') else 'already over'}")

    def _retry(self, argv: list[str]) -> None:
        wid, _ = self._id(argv, "retry")
        res = self._call(self.client.retry, wid)
        print(f"run {wid}: {'failed jobs retried' if res.get('changed') else 'nothing to retry'}")

    def _logs(self, argv: list[str]) -> None:
        wid, rest = self._id(argv, "logs")
        st = self._call(self.client.status, wid)
        if not rest:
            for w in st["works"]:
                print(f"{w['name']:<32} {w['status']:<12} {w.get('jobs')}")
            return
        work = rest[0]
        results = self._call(self.client.work_results, wid, work)
        if len(rest) > 1:
            try:
                idx = int(rest[1])
            except ValueError:
                raise UsageError(f"%idds logs: job {rest[1]!r} is not a job index") from None
            chosen = [r for r in results if r["idx"] == idx]
            if not chosen:
                raise UsageError(f"%idds logs: work {work!r} has no job {idx}")
        else:
            chosen = [r for r in results if r["status"] == "failed"][:1] or results[:1]
        for r in chosen:
            print(f"--- job {r['idx']} (id {r['job_id']}, attempt {r['attempt']}): {r['status']}")
            if r.get("error"):
                print(r["error"])
            print(self._call(self.client.log, r["job_id"]) if r.get("log_path") else "(no output)")

    def _dag(self, argv: list[str]) -> Any:
        wid, _ = self._id(argv, "dag")
        from idds_jupyter.kernel.widgets import DagWidget

        self._call(self.client.status, wid)
        return DagWidget(self.client, wid).widget

    def _hpo(self, argv: list[str]) -> Any:
        wid, rest = self._id(argv, "hpo")
        from idds_jupyter.kernel.widgets import HpoWidget

        self._call(self.client.status, wid)
        return HpoWidget(self.client, wid, work=rest[0] if rest else None).widget

    def _al(self, argv: list[str]) -> Any:
        wid, rest = self._id(argv, "al")
        from idds_jupyter.kernel.widgets import ActiveLearningWidget

        self._call(self.client.status, wid)
        return ActiveLearningWidget(self.client, wid, metric=rest[0] if rest else "metric").widget

    def _connect(self, argv: list[str]) -> None:
        p = _parser("connect", "Use the iDDS server at URL.")
        p.add_argument("url")
        p.add_argument("--token", default=None)
        a = p.parse_args(argv)
        from idds_jupyter.client import Client, set_client

        client = Client(a.url, a.token)
        who = self._call(client.whoami)
        set_client(client)
        self._client = client
        print(f"connected to {a.url} as {who.get('user')}")

    def _form(self, argv: list[str]) -> Any:
        if not argv or argv[0] not in self.templates:
            known = ", ".join(sorted(self.templates)) or "none yet"
            raise UsageError(
                f"%idds form: no template named {argv[0] if argv else ''!r} (known: {known})"
            )
        return template_form(self, load_template(self.templates[argv[0]], argv[0]))


def _identifier(name: str) -> str:
    import re

    ident = re.sub(r"\W+", "_", name).strip("_") or "template"
    return ident if not ident[0].isdigit() else f"t_{ident}"


def load_template(text: str, name: str | None) -> Any:
    """Parse and validate YAML; an error names its line and field."""
    from idds_jupyter.model import TemplateError, Workflow

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        raise UsageError(f"template: {where}{getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict):
        raise UsageError("template: expected a YAML mapping with name and works")
    if name:
        data["name"] = name
    if not data.get("name"):
        raise UsageError("template: give it a name (name: ... or --name)")
    try:
        return Workflow.from_dict(data)
    except TemplateError as exc:
        line = error_line(text, exc.work, exc.field)
        raise UsageError(
            f"template {data['name']!r}, line {line}: {exc}"
            if line
            else f"template {data['name']!r}: {exc}"
        ) from None


def error_line(text: str, work: str | None, field: str | None) -> int | None:
    """The 1-based line of ``field`` in the works entry named ``work`` (or of the work itself)."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return None
    if root is None or not isinstance(root, yaml.MappingNode):
        return None
    top = root.value
    leaf = (field or "").split(".")[0].split("[")[0]
    for section in ("works", "conditions", "loops"):
        seq = next((v for k, v in top if k.value == section), None)
        if not isinstance(seq, yaml.SequenceNode):
            continue
        for item in seq.value:
            if not isinstance(item, yaml.MappingNode):
                continue
            fields = {k.value: (k, v) for k, v in item.value}
            if (
                work is not None
                and "name" in fields
                and fields["name"][1].value == work.split(".")[-1]
            ):
                if leaf in fields:
                    return int(fields[leaf][0].start_mark.line) + 1
                return int(item.start_mark.line) + 1
    for k, _v in top:
        if k.value == leaf:
            return int(k.start_mark.line) + 1
    return None


def template_form(magics: IddsMagics, wf: Any) -> Any:
    """One field per parameter (typed by its default or its declared type) and a Submit button."""
    import ipywidgets as W

    specs = {s.name: s for s in getattr(wf, "parameter_specs", []) or []}
    names = list(dict.fromkeys([*wf.parameters, *specs]))
    fields: dict[str, Any] = {}
    for n in names:
        default = wf.parameters.get(n, getattr(specs.get(n), "default", None))
        kind = getattr(specs.get(n), "type", None) or type(default).__name__
        if kind == "bool":
            fields[n] = W.Checkbox(value=bool(default), description=n)
        elif kind == "int":
            fields[n] = W.IntText(value=int(default or 0), description=n)
        elif kind == "float":
            fields[n] = W.FloatText(value=float(default or 0.0), description=n)
        else:
            fields[n] = W.Text(value="" if default is None else str(default), description=n)
    button = W.Button(description=f"Submit {wf.name}", button_style="primary")
    out = W.Output()

    def submit(_b: Any) -> None:
        params = {
            n: (
                f.value if not isinstance(f, W.Text) else yaml.safe_load(f.value) if f.value else ""
            )
            for n, f in fields.items()
        }
        with out:
            out.clear_output()
            try:
                display(magics.submit_template(wf, params))
            except UsageError as exc:
                print(f"error: {exc}")

    button.on_click(submit)
    box = W.VBox([W.HTML(f"<b>{wf.name}</b>"), *fields.values(), button, out])
    box.fields = fields
    box.submit_button = button
    return box
