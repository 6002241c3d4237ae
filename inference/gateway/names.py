"""The router pod's gateway serves the live adapters' names only (each replica's gateway maps them to
what its runtime loaded): it follows the desired set's ConfigMap, mounted as a file.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from aiohttp import web

from inference.gateway.translation import Served


def served_names_from(base: Served, desired_file: str) -> Served:
    """The router pod's view of the live adapter set: the names only (each replica's gateway maps them to
    what its runtime loaded); /chat's default is the combined adapter with two or more, as on a replica."""
    from inference.adapters import COMBINED_ADAPTER
    from inference.live_adapters import DesiredSetError, read_desired

    try:
        names = [d.name for d in read_desired(desired_file)]
    except DesiredSetError:
        return base  # keep serving the names it had
    if len(names) > 1:
        return Served(base.preset, (*names, COMBINED_ADAPTER), COMBINED_ADAPTER)
    return Served(base.preset, tuple(names), names[0] if names else None)


class NamesFollower:
    """Re-reads the desired set's names once a second (kubelet updates the mounted ConfigMap in place)."""

    def __init__(self, base: Served, desired_file: str, publish: Callable[[Served], None]):
        self.base, self.desired_file, self._publish = base, desired_file, publish
        publish(served_names_from(base, desired_file))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self._publish(served_names_from(self.base, self.desired_file))

    async def ctx(self, app: web.Application):
        task = asyncio.get_running_loop().create_task(self.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
