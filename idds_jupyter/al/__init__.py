"""Active learning with a scikit-learn Gaussian-process surrogate; see :mod:`idds_jupyter.al.loop`."""

from idds_jupyter.al.loop import ACQUISITIONS, ActiveLearning, ALResult, fit_and_propose

__all__ = ["ACQUISITIONS", "ALResult", "ActiveLearning", "fit_and_propose"]
