"""The worker wrapper that runs jobs on compute nodes.

Imports only the standard library (cloudpickle lazily, for blob payloads) —
never the store, the bus, the agents, SQLAlchemy or Jupyter.

* :func:`run_job` runs one job spec in this process and returns a JSON-able result dict.
* :func:`context` gives user code the identity of the job it runs for.
* ``python -m idds_jupyter.worker --pool`` is the long-lived pool worker (see :mod:`.pool`);
  ``python -m idds_jupyter.worker --job SPEC.json`` runs a single job (batch systems).
"""

from idds_jupyter.worker._context import JobContext, context
from idds_jupyter.worker.job import run_job

__all__ = ["JobContext", "context", "run_job"]
