"""Repository-wide pytest configuration: nbval's kernels talk to it over IPC, not TCP (``payment_examples.reports.kernels``),
like the kernels of ``run_notebooks``: no loopback port per channel, so kernels that start at the same moment (nbval
beside papermill, one per pytest-xdist worker) cannot race for one."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    import nbval.kernel

    from payment_examples.reports.kernels import IpcKernelManager

    # nbval has no option for its kernel manager: its start_new_kernel() builds the module's KernelManager.
    nbval.kernel.KernelManager = IpcKernelManager
