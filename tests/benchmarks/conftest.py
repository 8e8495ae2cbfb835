"""Benchmark fixtures: torch's own thread count, and the table of figures printed after the run."""

from __future__ import annotations

import pytest
import torch

from robustbench_lite.bench import Measurement, format_table

RESULTS = pytest.StashKey[list[Measurement]]()


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """Overrides the suite's one-thread rule (meant for its small, contended tests): throughput is
    measured with torch's default intra-op threads, what a user of the machine gets."""
    yield


@pytest.fixture(scope="session")
def bench_results(pytestconfig: pytest.Config) -> list[Measurement]:
    """The session's measurements, printed as one table at the end."""
    return pytestconfig.stash.setdefault(RESULTS, [])


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    results = config.stash.get(RESULTS, [])
    if results:
        terminalreporter.section("attack throughput (time ratios: below 1, ours is faster)")
        terminalreporter.write_line(f"device {results[0].device}, {torch.get_num_threads()} torch threads")
        terminalreporter.write_line(format_table(results))
