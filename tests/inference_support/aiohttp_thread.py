"""An aiohttp application served on loopback from a background thread, for stand-in servers in tests."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web


class BackgroundApp:
    """`app` on 127.0.0.1:`port`, started by start() (which returns once it listens) and ended by stop()."""

    def __init__(self, app: web.Application, port: int):
        self.app, self.port = app, port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> BackgroundApp:
        started = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            runner = self._runner = web.AppRunner(self.app, access_log=None)
            loop.run_until_complete(runner.setup())
            loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
            started.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None or self._runner is None or self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
