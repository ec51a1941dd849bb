"""The environment a job starts with: an allow-list, never the service's own.

A job (a worker process, the shell commands it runs, a batch task) sees only
:data:`ALLOWED` and ``LC_*`` from the environment it is started from, the
names an operator adds (``env_allow`` in the configuration), ``HOME``/``USER``
of the account it runs as, and what its work declares in ``env``. Nothing else
of the service passes: not ``IDDS_TOKEN``, ``JUPYTER_TOKEN``,
``JUPYTERHUB_API_TOKEN``, ``IDDS_DB_URL``, cloud credentials, ….

Rucio and grid credentials (``RUCIO_*``, ``X509_*``) are never taken from the service's
environment either: a job that downloads its Rucio file (``transfer: http`` workers, see
:mod:`idds_jupyter.worker.remote`) uses the identity of the user who submitted it — the
``RUCIO_*``/``X509_*`` variables that user declares in the work's ``env`` (a path to their
own ``rucio.cfg``, proxy or token file), or, on worker hosts set up for it, the operator's
``env_allow`` entries such as ``RUCIO_*`` (a name ending in ``*`` passes every name with that
prefix).

Every backend builds a job's environment with :func:`job_environment`
(re-exported by :mod:`idds_jupyter.backends.base`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

__all__ = ["ALLOWED", "job_environment", "account_home"]

#: variables passed from the starting environment (and every ``LC_*``)
ALLOWED = ("PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "PYTHONPATH")


def account_home(user: str | None = None) -> tuple[str, str] | None:
    """``(name, home)`` of the OS account ``user`` (default: the current one), if known."""
    try:
        import pwd

        pw = pwd.getpwnam(user) if user else pwd.getpwuid(os.getuid())
    except (ImportError, KeyError):
        return None
    return pw.pw_name, pw.pw_dir


def job_environment(
    declared: Mapping[str, object] | None = None,
    *,
    base: Mapping[str, str] | None = None,
    allow: Iterable[str] = (),
    user: str | None = None,
    home: str | None = None,
    pythonpath: str | None = None,
) -> dict[str, str]:
    """The environment of a job.

    :param declared: what the work declares in its ``env`` (wins over everything)
    :param base: the environment to take the allowed names from (default ``os.environ``)
    :param allow: more names to pass from ``base`` (the operator's ``env_allow``; ``NAME*``
        passes every name starting with ``NAME``)
    :param user: the OS account the job runs as (sets ``HOME``, ``USER``, ``LOGNAME``;
        default: the current account)
    :param home: ``HOME`` of the job instead of the account's
    :param pythonpath: put first on ``PYTHONPATH`` (the directory holding ``idds_jupyter``)
    """
    src = os.environ if base is None else base
    allow = tuple(allow)
    extra = {a for a in allow if not a.endswith("*")}
    prefixes = ("LC_", *(a[:-1] for a in allow if a.endswith("*") and len(a) > 1))
    env = {k: v for k, v in src.items() if k in ALLOWED or k in extra or k.startswith(prefixes)}
    env.setdefault("PATH", os.defpath)
    acct = account_home(user)
    if acct is not None:
        env["USER"] = env["LOGNAME"] = acct[0]
        env["HOME"] = acct[1]
    if home:
        env["HOME"] = home
    if pythonpath:
        parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != pythonpath]
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, *parts])
    if declared:
        env.update({str(k): str(v) for k, v in declared.items()})
    return env
