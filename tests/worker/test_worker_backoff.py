"""The one backoff helper shared by the agents, the client's push channel and the worker."""

from __future__ import annotations

import subprocess
import sys

import pytest

from idds_jupyter.backoff import Backoff


def test_delays_double_up_to_the_maximum_and_reset_after_a_success() -> None:
    b = Backoff(0.5, maximum=3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5
    assert [Backoff(0.1, 1.0, factor=3).next() for _ in range(2)] == [0.1, 0.1]  # each one new


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="initial <= maximum"):
        Backoff(2.0, maximum=1.0)
    with pytest.raises(ValueError, match="factor"):
        Backoff(1.0, maximum=2.0, factor=0.5)


def test_it_imports_nothing_but_the_standard_library() -> None:
    """The worker (on compute nodes) and the client both import it: it must stay that light."""
    code = (
        "import sys; before = set(sys.modules); import idds_jupyter.backoff; "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] != 'idds_jupyter' "
        "and m not in sys.stdlib_module_names and m.split('.')[0] not in sys.stdlib_module_names)); "
        "print(sorted(m for m in sys.modules if m.startswith('idds_jupyter')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    third_party, ours = out.splitlines()
    assert third_party == "[]"
    assert ours == "['idds_jupyter', 'idds_jupyter.backoff']"
