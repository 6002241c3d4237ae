"""List+watch loops, one thread per resource, with a local copy of the objects for event routing.

Each loop lists (reporting every object as ADDED/MODIFIED, and objects gone since the last list as
DELETED), then watches from the list's resourceVersion; on any watch error it lists again. A resource
that does not exist yet (CRD not applied) is retried every second.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from .kube import Kube, ResourceNotFoundError

log = logging.getLogger("standin_metacontroller")
Handler = Callable[[str, str, str, dict[str, Any], "dict[str, Any] | None"], None]
WATCH_TIMEOUT_S = 30


def _ident(obj: dict[str, Any]) -> tuple[str, str]:
    m = obj.get("metadata") or {}
    return m.get("namespace") or "", m.get("name") or ""


class Watches:
    def __init__(self, kube: Kube, handler: Handler, stop: threading.Event):
        self.kube = kube
        self.handler = handler  # (apiVersion, plural, type, obj, old)
        self.stop = stop
        self._lock = threading.Lock()
        self._stores: dict[tuple[str, str], dict[tuple[str, str], dict[str, Any]]] = {}
        self._threads: dict[tuple[str, str], threading.Thread] = {}

    def ensure(self, api_version: str, plural: str) -> None:
        key = (api_version, plural)
        with self._lock:
            if key in self._threads:
                return
            self._stores[key] = {}
            thread = threading.Thread(target=self._run, args=key, name=f"watch {plural}.{api_version}", daemon=True)
            self._threads[key] = thread
        thread.start()

    def objects(self, api_version: str, plural: str) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._stores.get((api_version, plural), {}).values())

    def _put(self, key, obj) -> dict[str, Any] | None:
        with self._lock:
            store = self._stores[key]
            old = store.get(_ident(obj))
            store[_ident(obj)] = obj
            return old

    def _emit(self, key, kind: str, obj, old) -> None:
        try:
            self.handler(key[0], key[1], kind, obj, old)
        except Exception:
            log.exception("event handler failed for %s %s", kind, _ident(obj))

    def _relist(self, key) -> str:
        items, version = self.kube.list(*key)
        seen = set()
        for obj in items:
            seen.add(_ident(obj))
            old = self._put(key, obj)
            if old is None or old["metadata"].get("resourceVersion") != obj["metadata"].get("resourceVersion"):
                self._emit(key, "ADDED" if old is None else "MODIFIED", obj, old)
        with self._lock:
            gone = [o for ident, o in self._stores[key].items() if ident not in seen]
            for obj in gone:
                del self._stores[key][_ident(obj)]
        for obj in gone:
            self._emit(key, "DELETED", obj, None)
        return version

    def _run(self, api_version: str, plural: str) -> None:
        key = (api_version, plural)
        while not self.stop.is_set():
            try:
                version = self._relist(key)
                while not self.stop.is_set():
                    for kind, obj in self.kube.watch(api_version, plural, version, WATCH_TIMEOUT_S):
                        if self.stop.is_set():
                            return
                        meta = obj.get("metadata") or {}
                        version = meta.get("resourceVersion") or version
                        if kind == "BOOKMARK":
                            continue
                        if kind == "ERROR":
                            raise RuntimeError(f"watch error: {obj}")
                        if kind == "DELETED":
                            with self._lock:
                                self._stores[key].pop(_ident(obj), None)
                            self._emit(key, kind, obj, None)
                        else:
                            old = self._put(key, obj)
                            self._emit(key, kind, obj, old)
            except ResourceNotFoundError:
                self.stop.wait(1.0)
            except Exception as err:  # noqa: BLE001 - relist after any watch failure
                if not self.stop.is_set():
                    log.info("watch %s.%s restarts after: %s", plural, api_version, str(err).splitlines()[0][:300])
                    self.stop.wait(1.0)
