"""Live widgets: a run's status and progress, its DAG, HPO trials, active-learning iterations.

They refresh from the server's push stream, in the client's background
thread, while the kernel is idle: no cell blocks in a loop. Refreshes are
coalesced (at most a few per second) so a 100,000-job run does not flood the
browser.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as W

STATUS_COLORS = {
    "new": "#9e9e9e",
    "pending": "#9e9e9e",
    "ready": "#90caf9",
    "submitted": "#64b5f6",
    "running": "#1e88e5",
    "suspended": "#ffb300",
    "finished": "#43a047",
    "subfinished": "#c0ca33",
    "failed": "#e53935",
    "cancelled": "#8d6e63",
    "aborted": "#6d4c41",
    "skipped": "#e0e0e0",
}
TERMINAL = {"finished", "subfinished", "failed", "aborted"}
DONE_JOBS = ("finished", "failed", "cancelled")


class LiveView:
    """Refreshes ``self.refresh()`` when the stream says the run changed, at most every ``period`` s."""

    period = 0.3

    def __init__(self, client: Any, workflow_id: int) -> None:
        self.client = client
        self.workflow_id = int(workflow_id)
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._remove: Callable[[], None] | None = None
        self.error: str | None = None

    def start(self) -> None:
        try:
            self._remove = self.client.on_message(self._on_message)
        except Exception as exc:  # no stream: the view still shows the state it fetched
            self.error = f"live updates off: {exc}"
        threading.Thread(
            target=self._loop, name=f"idds-view-{self.workflow_id}", daemon=True
        ).start()

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        if self._remove is not None:
            self._remove()

    def _on_message(self, msg: dict[str, Any]) -> None:
        if str(msg.get("key")) == str(self.workflow_id):
            self._dirty.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._dirty.clear()
            try:
                done = self.refresh()
            except Exception as exc:
                self.error = str(exc)
                done = False
            if done:
                self.stop()
                return
            time.sleep(self.period)

    def refresh(self) -> bool:
        """Fetch and redraw; return True once the run is over (stop listening)."""
        raise NotImplementedError


class RunWidget(LiveView):
    """Status line, one progress bar per work, abort and retry buttons."""

    def __init__(self, client: Any, workflow_id: int) -> None:
        super().__init__(client, workflow_id)
        self.header = W.HTML()
        self.bars = W.VBox()
        self.abort_button = W.Button(description="Abort", button_style="danger", icon="stop")
        self.retry_button = W.Button(
            description="Retry failed", button_style="warning", icon="redo"
        )
        self.message = W.HTML()
        self.abort_button.on_click(lambda _b: self._control("abort"))
        self.retry_button.on_click(lambda _b: self._control("retry"))
        self.widget = W.VBox(
            [self.header, self.bars, W.HBox([self.abort_button, self.retry_button]), self.message]
        )
        self._bars: dict[str, W.IntProgress] = {}
        self.status: dict[str, Any] = {}
        self.refresh()
        self.start()

    def _control(self, action: str) -> None:
        try:
            res = getattr(self.client, action)(self.workflow_id)
            self.message.value = f"{action}: {'done' if res.get('changed') else 'nothing to do'}"
        except Exception as exc:
            self.message.value = f"<span style='color:#e53935'>{action} failed: {exc}</span>"
        self._dirty.set()

    def refresh(self) -> bool:
        st = self.client.status(self.workflow_id)
        self.status = st
        color = STATUS_COLORS.get(st["status"], "#000")
        self.header.value = (
            f"<b>{st['name']}</b> &nbsp; run {st['id']} &nbsp; "
            f"<span style='color:{color}'><b>{st['status']}</b></span>"
        )
        children = []
        for w in st["works"]:
            if w.get("kind") in ("workflow",):
                continue
            jobs = w.get("jobs") or {}
            total = max(int(w.get("n_jobs") or sum(jobs.values()) or 0), 1)
            done = sum(int(jobs.get(s, 0)) for s in DONE_JOBS)
            bar = self._bars.get(w["name"])
            if bar is None:
                bar = W.IntProgress(
                    min=0, description=w["name"][:24], style={"description_width": "initial"}
                )
                self._bars[w["name"]] = bar
            bar.max = total
            bar.value = min(done, total)
            bar.bar_style = {
                "finished": "success",
                "failed": "danger",
                "subfinished": "warning",
                "aborted": "danger",
            }.get(w["status"], "info")
            bar.description_tooltip = (
                ", ".join(f"{k} {v}" for k, v in sorted(jobs.items())) or w["status"]
            )
            children.append(W.HBox([bar, W.HTML(f"{done}/{total} &nbsp; {w['status']}")]))
        self.bars.children = tuple(children)
        over = st["status"] in TERMINAL
        self.abort_button.disabled = over
        self.retry_button.disabled = st["status"] not in ("failed", "subfinished")
        return over and st["status"] not in ("failed", "subfinished")


def layers(nodes: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layer of each node (roots at 0); cycles are broken by visit order."""
    ups: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a in ups and b in ups:
            ups[b].append(a)
    layer: dict[str, int] = {}

    def depth(n: str, seen: frozenset[str]) -> int:
        if n in layer:
            return layer[n]
        d = (
            0
            if not ups[n]
            else 1 + max((depth(u, seen | {n}) for u in ups[n] if u not in seen), default=-1)
        )
        layer[n] = d
        return d

    for n in nodes:
        depth(n, frozenset())
    return layer


class DagWidget(LiveView):
    """The run's works as nodes coloured by status (job counts on hover), dependency and branch edges."""

    def __init__(self, client: Any, workflow_id: int) -> None:
        import plotly.graph_objects as go

        super().__init__(client, workflow_id)
        self.figure = go.FigureWidget(
            layout={
                "height": 360,
                "margin": {"l": 10, "r": 10, "t": 30, "b": 10},
                "showlegend": False,
                "xaxis": {"visible": False},
                "yaxis": {"visible": False, "autorange": "reversed"},
                "title": {"text": f"run {workflow_id}", "font": {"size": 13}},
            }
        )
        self.widget = self.figure
        self.refresh()
        self.start()

    def refresh(self) -> bool:
        import plotly.graph_objects as go

        dag = self.client.dag(self.workflow_id)
        nodes = [n["name"] for n in dag["nodes"]]
        edges = [(e["source"], e["target"], e.get("kind", "dep")) for e in dag["edges"]]
        lay = layers(nodes, [(a, b) for a, b, _ in edges])
        rows: dict[int, list[str]] = {}
        for n in nodes:
            rows.setdefault(lay[n], []).append(n)
        pos = {n: (i - (len(r) - 1) / 2, y) for y, r in rows.items() for i, n in enumerate(r)}
        traces = []
        for kind, style in (
            ("dep", {"color": "#9e9e9e"}),
            ("job_dep", {"color": "#616161", "dash": "dot"}),
            ("true", {"color": "#43a047", "dash": "dash"}),
            ("false", {"color": "#e53935", "dash": "dash"}),
            ("on_failure", {"color": "#fb8c00", "dash": "dashdot"}),
        ):
            xs: list[float | None] = []
            ys: list[float | None] = []
            for a, b, k in edges:
                if k == kind and a in pos and b in pos:
                    xs += [pos[a][0], pos[b][0], None]
                    ys += [pos[a][1], pos[b][1], None]
            if xs:
                traces.append(go.Scatter(x=xs, y=ys, mode="lines", line=style, hoverinfo="skip"))
        by_name = {n["name"]: n for n in dag["nodes"]}
        texts = []
        for n in nodes:
            jobs = by_name[n].get("jobs") or {}
            texts.append(
                f"{n}<br>{by_name[n].get('status')}<br>"
                + ", ".join(f"{k} {v}" for k, v in sorted(jobs.items()))
            )
        traces.append(
            go.Scatter(
                x=[pos[n][0] for n in nodes],
                y=[pos[n][1] for n in nodes],
                mode="markers+text",
                text=nodes,
                textposition="top center",
                hovertext=texts,
                hoverinfo="text",
                marker={
                    "size": 22,
                    "line": {"width": 1, "color": "#424242"},
                    "color": [
                        STATUS_COLORS.get(by_name[n].get("status", ""), "#000") for n in nodes
                    ],
                },
            )
        )
        with self.figure.batch_update():
            self.figure.data = []
            for t in traces:
                self.figure.add_trace(t)
            self.figure.layout.title.text = f"run {self.workflow_id}: {dag.get('status', '')}"
        return dag.get("status") in TERMINAL


def trials_of(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials from job results holding an objective: ``{"objective"|"value"|"loss": x, "params": {...}}``."""
    out = []
    for r in results:
        res = r.get("result")
        if isinstance(res, (int, float)) and not isinstance(res, bool):
            out.append({"objective": float(res), "params": {}})
        elif isinstance(res, dict):
            for key in ("objective", "value", "loss"):
                if isinstance(res.get(key), (int, float)):
                    out.append(
                        {"objective": float(res[key]), "params": dict(res.get("params") or {})}
                    )
                    break
    return out


class HpoWidget(LiveView):
    """Objective per trial with the best so far, and parallel coordinates of the parameters."""

    def __init__(
        self, client: Any, workflow_id: int, work: str | None = None, direction: str = "minimize"
    ) -> None:
        import plotly.graph_objects as go

        super().__init__(client, workflow_id)
        self.work = work
        self.direction = direction
        self.trials: list[dict[str, Any]] = []
        self._by_job: dict[tuple[str, int], dict[str, Any]] = {}  # the latest row of each job
        self._cursor: str | None = None
        self.scatter = go.FigureWidget(
            layout={
                "height": 300,
                "margin": {"t": 30},
                "title": {"text": "objective per trial"},
                "xaxis": {"title": "trial"},
            }
        )
        self.parcoords = go.FigureWidget(layout={"height": 300, "margin": {"t": 30}})
        self.widget = W.VBox([self.scatter, self.parcoords])
        self.refresh()
        self.start()

    def refresh(self) -> bool:
        """Read the trials ended since the last refresh (one request, whatever the study's size)."""
        import plotly.graph_objects as go

        while True:
            page = self.client.trials(self.workflow_id, since=self._cursor, work=self.work)
            keys = page["params"]
            for row in page["trials"]:
                t = dict(zip(page["columns"], row, strict=False))
                t["params"] = {k: v for k, v in zip(keys, t["params"], strict=False)}
                self._by_job[(t["work"], t["idx"])] = t
            self._cursor = page["cursor"]
            if not page["more"]:
                break
        ended = sorted(
            (t for t in self._by_job.values() if t["value"] is not None),
            key=lambda t: (t["trial"] is None, t["trial"] or 0, t["segment"] or "", t["job_id"]),
        )
        self.trials = [
            {"objective": float(t["value"]), "params": t["params"], "work": t["work"]}
            for t in ended
        ]
        ys = [t["objective"] for t in self.trials]
        pick = min if self.direction == "minimize" else max
        best = list(itertools.accumulate(ys, pick))
        with self.scatter.batch_update():
            self.scatter.data = []
            self.scatter.add_trace(go.Scatter(y=ys, mode="markers", name="trial"))
            self.scatter.add_trace(go.Scatter(y=best, mode="lines", name="best so far"))
        keys = sorted(
            {k for t in self.trials for k, v in t["params"].items() if isinstance(v, (int, float))}
        )
        with self.parcoords.batch_update():
            self.parcoords.data = []
            if self.trials:
                dims = [
                    {"label": k, "values": [t["params"].get(k) for t in self.trials]} for k in keys
                ]
                dims.append({"label": "objective", "values": ys})
                self.parcoords.add_trace(
                    go.Parcoords(line={"color": ys, "colorscale": "Viridis"}, dimensions=dims)
                )
        return page["status"] in TERMINAL


class ActiveLearningWidget(LiveView):
    """The metric per iteration of a loop (iterations are ``loop[i].work`` instances)."""

    def __init__(self, client: Any, workflow_id: int, metric: str = "metric") -> None:
        import plotly.graph_objects as go

        super().__init__(client, workflow_id)
        self.metric = metric
        self.points: list[tuple[int, float]] = []
        self.figure = go.FigureWidget(
            layout={
                "height": 300,
                "margin": {"t": 30},
                "title": {"text": f"{metric} per iteration"},
                "xaxis": {"title": "iteration"},
            }
        )
        self.widget = self.figure
        self.refresh()
        self.start()

    def refresh(self) -> bool:
        import plotly.graph_objects as go

        st = self.client.status(self.workflow_id)
        points = []
        for w in st["works"]:
            # loop-iteration instances of a template, or works whose result names its
            # iteration (idds_jupyter.al: "iteration_<i>" works of a FaaT run)
            by_name = w.get("iteration") is None and str(w["name"]).startswith("iteration_")
            if (w.get("iteration") is None and not by_name) or w["status"] != "finished":
                continue
            for r in self.client.work_results(self.workflow_id, w["name"]):
                res = r.get("result")
                if isinstance(res, dict) and isinstance(res.get(self.metric), (int, float)):
                    it = w["iteration"] if w.get("iteration") is not None else res.get("iteration")
                    if isinstance(it, int):
                        points.append((int(it), float(res[self.metric])))
        self.points = sorted(points)
        with self.figure.batch_update():
            self.figure.data = []
            self.figure.add_trace(
                go.Scatter(
                    x=[p[0] for p in self.points],
                    y=[p[1] for p in self.points],
                    mode="lines+markers",
                    name=self.metric,
                )
            )
        return st["status"] in TERMINAL
