"""Distributed hyper-parameter optimisation on Optuna's samplers: :class:`Study`.

Each trial is a job of the study's run; see :mod:`idds_jupyter.hpo.study`.
"""

from idds_jupyter.hpo.study import Study
from idds_jupyter.hpo.trial import run_trial
from idds_jupyter.model.space import (
    SAMPLERS,
    categorical,
    integer,
    loguniform,
    make_sampler,
    uniform,
)

__all__ = [
    "SAMPLERS",
    "Study",
    "categorical",
    "integer",
    "loguniform",
    "make_sampler",
    "run_trial",
    "uniform",
]
