"""How IPython shows runs and views: as the live widgets of :mod:`.widgets`.

:func:`register` gives IPython's mimebundle formatter one printer per type, by
module and class name, so that neither the types' modules nor the widgets are
imported before something is displayed. It runs when ``idds_jupyter`` is first
imported inside IPython and when the extension loads. A printer that cannot
build its widget (no ipywidgets, no server) returns nothing, and IPython shows
the object's text.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["register", "widget"]


def widget(view: Any) -> Any:
    """The ipywidget of a :class:`idds_jupyter.views.View`."""
    from idds_jupyter.kernel.widgets import ActiveLearningWidget, DagWidget, HpoWidget, RunWidget

    factories: dict[str, Callable[..., Any]] = {
        "run": RunWidget,
        "dag": DagWidget,
        "hpo": HpoWidget,
        "al": ActiveLearningWidget,
    }
    return factories[view.kind](view.client, view.run_id, **view.options).widget


def _bundle(view: Any, text: str) -> dict[str, Any] | None:
    try:
        bundle = dict(widget(view)._repr_mimebundle_() or {})
    except Exception:  # no widget support (plain Python, no server): IPython shows the text
        return None
    bundle["text/plain"] = text  # where widgets do not render: the object, not the VBox
    return bundle


def _view_bundle(view: Any) -> dict[str, Any] | None:
    return _bundle(view, repr(view))


def _run_bundle(run: Any) -> dict[str, Any] | None:
    """A FaaT run: a live widget (status, a progress bar per work, abort and retry)."""
    from idds_jupyter.views import View

    return _bundle(View("run", run.client, run.id), repr(run))


#: (module, class name) -> printer
PRINTERS: dict[tuple[str, str], Callable[[Any], dict[str, Any] | None]] = {
    ("idds_jupyter.views", "View"): _view_bundle,
    ("idds_jupyter.faat.workflow", "Run"): _run_bundle,
}


def register(ipython: Any = None) -> bool:
    """Register the printers with ``ipython`` (the running shell by default); False without one."""
    if ipython is None:
        try:
            from IPython import get_ipython
        except ImportError:
            return False
        ipython = get_ipython()
    formatter = getattr(getattr(ipython, "display_formatter", None), "mimebundle_formatter", None)
    if formatter is None:
        return False
    for (module, name), printer in PRINTERS.items():
        formatter.for_type_by_name(module, name, printer)
    return True
