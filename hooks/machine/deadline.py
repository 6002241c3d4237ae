"""One time budget for every ARM call of one hook request.

Metacontroller gives a hook 10 s. Per-socket timeouts do not bound a call (an answer trickling in a
byte a second never times out a read), and two calls each just under their own limit add up past 10 s.
So each call runs on a helper thread and the hook waits only for what is left of one budget shared by
the request's calls; past it the call counts as ARM being unreachable (a 500: Metacontroller keeps the
status and retries). A call left running finishes or fails on its own; its result is not used.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from hooks.machine.pools import ArmUnreachable, Pool, PoolsAPI

ARM_BUDGET_S = 8.0  # leaves Metacontroller's 10 s hook timeout room for the rest of the request

T = TypeVar("T")


class DeadlinePools:
    """A PoolsAPI whose calls all finish before one deadline (made per hook request)."""

    def __init__(self, pools: PoolsAPI, budget_s: float = ARM_BUDGET_S, clock: Callable[[], float] = time.monotonic):
        self._pools = pools
        self.install_id = pools.install_id
        self._budget_s = budget_s
        self._clock = clock
        self._deadline = clock() + budget_s

    def _call(self, what: str, call: Callable[[], T]) -> T:
        remaining = self._deadline - self._clock()
        if remaining <= 0:
            raise ArmUnreachable(f"no time left for {what}: this hook call's {self._budget_s:g} s ARM budget is spent")
        outcome: dict[str, Any] = {}
        done = threading.Event()

        def run() -> None:
            try:
                outcome["value"] = call()
            except BaseException as error:  # noqa: BLE001 - handed to the waiting request thread
                outcome["error"] = error
            finally:
                done.set()

        threading.Thread(target=run, name=f"arm: {what}", daemon=True).start()
        if not done.wait(remaining):
            raise ArmUnreachable(
                f"ARM did not answer {what} within this hook call's {self._budget_s:g} s budget "
                "(Metacontroller's hook timeout is 10 s); the call is retried"
            )
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def get(self, name: str) -> Pool | None:
        return self._call(f"GET agent pool {name}", lambda: self._pools.get(name))

    def create(self, name: str, body: dict[str, Any]) -> None:
        return self._call(f"PUT agent pool {name}", lambda: self._pools.create(name, body))

    def update(self, name: str, body: dict[str, Any]) -> None:
        return self._call(f"PUT agent pool {name} (update)", lambda: self._pools.update(name, body))

    def delete(self, name: str) -> bool:
        return self._call(f"DELETE agent pool {name}", lambda: self._pools.delete(name))

    def list(self) -> list[Pool]:
        return self._call("LIST agent pools", self._pools.list)
