"""Data-aware use cases: the data carousel (tape staging feeding the catalog) and
Rubin-like job DAGs. Datasets and files themselves live in the catalog
(:mod:`idds_jupyter.store.catalog`, ``client.add_dataset`` / ``mark_available``)."""

from idds_jupyter.data.carousel import (
    CarouselResult,
    StagingSource,
    TapeStaging,
    process_file,
    run_carousel,
)
from idds_jupyter.data.rubin import rubin_dag

__all__ = [
    "CarouselResult",
    "StagingSource",
    "TapeStaging",
    "process_file",
    "rubin_dag",
    "run_carousel",
]
