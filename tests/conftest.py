"""Shared test set-up."""

import pytest

from systolic_conv import progress


@pytest.fixture(autouse=True)
def _quiet_flag_restored():
    """The CLI's --quiet sets a process-wide flag (progress.set_quiet); a test that runs
    the CLI must not silence the output of the tests after it."""
    saved = progress._quiet
    yield
    progress._quiet = saved
