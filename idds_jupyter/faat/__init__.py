"""Function-as-a-Task: ``@work`` and ``@workflow``, serialization, futures, remote errors.

One concept per module: :mod:`~idds_jupyter.faat.work` (``@work``),
:mod:`~idds_jupyter.faat.workflow` (``@workflow``, ``Run``, ``get_run``, ``runs``),
:mod:`~idds_jupyter.faat.serialize` (cloudpickle, sandbox, uploads),
:mod:`~idds_jupyter.faat.future` (``JobFuture``), :mod:`~idds_jupyter.faat.results`
(routing pushed results), :mod:`~idds_jupyter.faat.remote_error` (``RemoteError``),
:mod:`~idds_jupyter.faat.context` (the current run), :mod:`~idds_jupyter.faat.runner`
(server-side bodies). Import the user API from :mod:`idds_jupyter`.
"""
