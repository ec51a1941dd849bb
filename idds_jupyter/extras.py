"""Optional dependencies (the ``pip install 'idds-jupyter[EXTRA]'`` extras) and their errors.

A base install (no extras) runs workflows on local worker processes with SQLite.
Everything else is imported where it is used, and a missing package surfaces as
one :class:`ModuleNotFoundError` naming the extra that brings it, not as a bare
``No module named 'distributed'`` from deep inside a backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

#: top-level module -> the extra that installs it (pyproject.toml ``optional-dependencies``)
EXTRAS = {
    "optuna": "hpo",
    "cmaes": "hpo",
    "pandas": "hpo",
    "sklearn": "al",
    "numpy": "al",
    "torch": "hpo-gp",
    "dask": "dask",
    "distributed": "dask",
    "psycopg": "postgres",
    "psycopg_binary": "postgres",
    "htcondor2": "htcondor",
    "classad2": "htcondor",
    "pandaclient": "panda",
    "nbclient": "export",
    "nbformat": "export",
    "rocrate": "provenance",
}


def install_hint(extra: str) -> str:
    return f"pip install 'idds-jupyter[{extra}]'"


def explain(err: ModuleNotFoundError, what: str | None = None) -> ModuleNotFoundError | None:
    """The clear error for a missing optional package, or None if ``err`` is not one."""
    root = (err.name or "").partition(".")[0]
    extra = EXTRAS.get(root)
    if extra is None:
        return None
    if install_hint(extra) in str(err):  # already explained further down
        return err
    subject = f"{what} needs" if what else "this needs"
    return ModuleNotFoundError(
        f"{subject} the {root!r} package, which is not installed: {install_hint(extra)}",
        name=err.name,
    )


@contextmanager
def needs_extras(what: str | None = None) -> Iterator[None]:
    """Re-raise a missing optional package met inside the block as the error naming its extra."""
    try:
        yield
    except ModuleNotFoundError as e:
        clear = explain(e, what)
        if clear is None or clear is e:
            raise
        raise clear from e
