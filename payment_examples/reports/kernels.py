"""Jupyter kernels that talk to their client over IPC (Unix domain sockets), not TCP.

papermill (`make reports`) and nbval (`make test`) start one kernel per notebook on this machine. jupyter_client's
default transport is TCP on loopback, about which every kernel logs "Kernel is running over TCP without encryption"
(its messages, code and outputs included, would be readable by anything on the host that can reach the port). Over
IPC the five channels are sockets in the temporary folder, with the file permissions of their owner, no port is
taken, and two kernels starting at the same moment cannot race for one.

``kernel_manager_class=AsyncIpcKernelManager`` is what ``run_notebooks`` hands papermill (nbclient); the test
configuration gives nbval ``IpcKernelManager``."""

from __future__ import annotations

import os
import tempfile
import uuid

from jupyter_client.manager import AsyncKernelManager, KernelManager
from traitlets import default


class _IpcTransport:
    """The transport and socket path of a kernel manager: IPC, under a name no other kernel has."""

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc"

    @default("ip")
    def _ip_default(self) -> str:
        # The sockets are "<this path>-<channel number>"; jupyter_client removes them when the kernel shuts down.
        # (Its own default, "kernel-ipc" in the working directory, would put them beside the notebooks.)
        return os.path.join(tempfile.gettempdir(), f"kernel-{uuid.uuid4().hex[:12]}")


class IpcKernelManager(_IpcTransport, KernelManager):
    """A blocking kernel manager over IPC (nbval's)."""


class AsyncIpcKernelManager(_IpcTransport, AsyncKernelManager):
    """An asyncio kernel manager over IPC (nbclient's, and so papermill's)."""
