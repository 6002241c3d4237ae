"""Live LoRA adapters: the pod follows a desired adapter set without restarting the model server.

The Workspace hook publishes the desired set in a ConfigMap that the pod mounts as a directory (the pod
template names only the ConfigMap, so it never changes when adapters do). Each adapter's files arrive
in a per-adapter folder under the files root, keyed by the adapter image (a fetch pod that the kubelet
runs from the adapter image copies them there and writes FILES_COMPLETE last).

The agent (it runs in the gateway process) reconciles what the runtime serves with that set:
- a new or changed adapter (other image, other strength) is prepared (a copy with the strength and any
  rsLoRA factor folded into lora_B) under a fresh internal name, checked against what the runtime was
  started with (rank, target modules, count), loaded (`POST /load_lora_adapter`, SGLang's API; the
  transformers runtime offers the same), then the gateway's name -> internal name mapping switches, and
  only then the old copy is unloaded and deleted: the adapter's name never serves the wrong weights and
  never fails during a re-weight;
- a removed adapter first leaves the mapping (the gateway refuses its name), then is unloaded and its
  files deleted: SGLang 0.5.23 reloads an unloaded adapter from its old path when a request names it;
- with two or more Ready adapters, the combined adapter (all of them at their strengths: Kaito's /chat
  default) is rebuilt and swapped the same way.
Per-adapter state (Pending, Loading, Ready, Failed with a reason) is kept for the pod's report.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

from inference.adapter_files import UnsafeAdapterFiles, is_regular_file, snapshot
from inference.adapters import (
    ALL_MODULES,
    SGLANG_TARGET_MODULES,
    AdapterError,
    PreparedAdapter,
    lora_b_factor,
    read_adapter_info,
    scale_lora_b,
    write_combination,
)
from workload_contract.adapter_names import COMBINED_ADAPTER

DESIRED_FILE = "adapters.json"
FILES_COMPLETE = ".kaito-complete"
# Room for growth: what a runtime started for live adapters accepts without a restart (overridable).
DEFAULT_MAX_LORA_RANK = 64
DEFAULT_MAX_ADAPTERS = 10

PENDING, LOADING, READY, FAILED = "Pending", "Loading", "Ready", "Failed"


@dataclass(frozen=True)
class DesiredAdapter:
    name: str
    key: str  # the files folder under the files root (derived from the image by the hook)
    strength: float = 1.0


@dataclass(frozen=True)
class Capacity:
    """What the runtime was started with; an adapter beyond it needs a restart with other flags."""

    max_rank: int = DEFAULT_MAX_LORA_RANK
    target_modules: frozenset[str] = frozenset({ALL_MODULES})
    max_adapters: int = DEFAULT_MAX_ADAPTERS


@dataclass(frozen=True)
class AdapterState:
    name: str
    state: str
    reason: str = ""
    message: str = ""

    def as_dict(self) -> dict:
        out = {"name": self.name, "state": self.state}
        if self.reason:
            out["reason"] = self.reason
        if self.message:
            out["message"] = self.message
        return out


@dataclass(frozen=True)
class Loaded:
    name: str
    internal: str  # the name the runtime knows it by
    key: str
    strength: float
    path: str
    rank: int
    target_modules: tuple[str, ...]


class DesiredSetError(ValueError):
    """The published desired set cannot be read; the message names the file and the field."""


def read_desired(path: str) -> list[DesiredAdapter]:
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as e:
        raise DesiredSetError(f"{path}: {e}") from None
    items = doc.get("adapters") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise DesiredSetError(f'{path}: expected {{"adapters": [...]}}')
    out = []
    for i, item in enumerate(items):
        try:
            out.append(DesiredAdapter(str(item["name"]), str(item["key"]), float(item.get("strength", 1.0))))
        except (KeyError, TypeError, ValueError) as e:
            raise DesiredSetError(f"{path}: adapters[{i}]: {e!r}") from None
    names = [a.name for a in out]
    if len(set(names)) != len(names) or (COMBINED_ADAPTER in names and len(names) > 1):
        raise DesiredSetError(f"{path}: adapter names must be unique and not {COMBINED_ADAPTER!r}")
    return out


def desired_revision(path: str) -> str | None:
    """The hook's revision of the desired set (a hash of it), echoed in the pod's report so the hook can
    tell a report about the current set from one about an older set."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError):
        return None
    revision = doc.get("revision") if isinstance(doc, dict) else None
    return revision if isinstance(revision, str) else None


def files_ready(files_root: str, key: str) -> bool:
    return is_regular_file(os.path.join(files_root, key, FILES_COMPLETE))


def fit_problem(name: str, rank: int, targets: tuple[str, ...], capacity: Capacity) -> str | None:
    """Why the running server cannot take this adapter (None: it can); the text says what to change."""
    if rank > capacity.max_rank:
        return (
            f"adapter {name!r} has rank {rank} but the model server was started with --max-lora-rank "
            f"{capacity.max_rank}: set a larger max-lora-rank in inference.config's sglang: map (this "
            "restarts the model server) or use an adapter of rank <= "
            f"{capacity.max_rank}"
        )
    allowed = SGLANG_TARGET_MODULES if ALL_MODULES in capacity.target_modules else capacity.target_modules
    outside = sorted(set(targets) - allowed)
    if outside:
        return (
            f"adapter {name!r} targets {outside}, which the model server was not started for "
            f"(--lora-target-modules {' '.join(sorted(capacity.target_modules))}): set lora-target-modules "
            "in inference.config's sglang: map (this restarts the model server)"
        )
    return None


def combination_key(loaded: list[Loaded]) -> str:
    """Identifies the combined adapter's content: the members' files and strengths."""
    text = json.dumps(sorted((a.name, a.key, a.strength) for a in loaded))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class RuntimeRefused(RuntimeError):
    """The model server refused to load or unload an adapter; the message is its answer."""


@dataclass
class Published:
    """What the gateway serves: adapter name -> the runtime's internal name, and /chat's default."""

    names: dict[str, str] = field(default_factory=dict)
    chat_default: str | None = None


class Agent:
    """Follows the desired set. `load(internal, path)` / `unload(internal)` talk to the runtime;
    `publish(Published)` switches the gateway's mapping. Runs one reconcile at a time."""

    def __init__(
        self,
        desired_file: str,
        files_root: str,
        work_dir: str,
        capacity: Capacity,
        load: Callable[[str, str], None],
        unload: Callable[[str], None],
        publish: Callable[[Published], None],
    ):
        self.desired_file, self.files_root, self.work_dir = desired_file, files_root, work_dir
        self.capacity = capacity
        self._load, self._unload, self._publish = load, unload, publish
        self.loaded: dict[str, Loaded] = {}
        self.combined: Loaded | None = None
        self.states: dict[str, AdapterState] = {}
        self.desired_error: str | None = None
        self._generation = 0
        self._failed: dict[str, str] = {}  # adapter name -> the attempt (files@strength) that failed
        self.synced = False  # the last reconcile left nothing to wait for (files, loads)
        self.revision: str | None = None  # of the desired set the states are about

    # --- what the pod reports -------------------------------------------------------------------
    def report(self) -> dict:
        out: dict = {"adapters": [s.as_dict() for s in self.states.values()], "synced": self.synced}
        if self.revision is not None:
            out["revision"] = self.revision
        if self.desired_error:
            out["error"] = self.desired_error
        return out

    def published(self) -> Published:
        names = {n: a.internal for n, a in self.loaded.items()}
        default: str | None
        if self.combined is not None:
            names[COMBINED_ADAPTER] = self.combined.internal
            default = COMBINED_ADAPTER
        else:
            default = next(iter(names), None)
        return Published(names, default)

    # --- reconcile ------------------------------------------------------------------------------
    def reconcile(self) -> None:
        try:
            desired = read_desired(self.desired_file)
            revision = desired_revision(self.desired_file)
            self.desired_error = None
        except DesiredSetError as e:
            self.desired_error = str(e)  # keep serving what is loaded
            return
        wanted = {d.name: d for d in desired}
        waiting = False
        for name in [n for n in self.loaded if n not in wanted]:
            self._remove(name)
        self.states = {n: s for n, s in self.states.items() if n in wanted or n == COMBINED_ADAPTER}
        self._failed = {n: a for n, a in self._failed.items() if n in wanted}
        for d in desired:
            current = self.loaded.get(d.name)
            if current is not None and current.key == d.key and current.strength == d.strength:
                self.states[d.name] = AdapterState(d.name, READY)
                continue
            if self._failed.get(d.name) == _attempt(d):
                continue  # these files at this strength failed already: wait for a change
            if not files_ready(self.files_root, d.key):
                self.states[d.name] = AdapterState(
                    d.name, PENDING, "FilesNotReady", "waiting for the adapter image's files on this node"
                )
                waiting = True
                continue
            if current is None and len(self.loaded) >= self.capacity.max_adapters:
                self.states[d.name] = AdapterState(
                    d.name,
                    FAILED,
                    "TooManyAdapters",
                    f"the model server serves at most {self.capacity.max_adapters} adapters at once: remove one",
                )
                waiting = True  # retried when another adapter goes
                continue
            self.states[d.name] = AdapterState(d.name, LOADING)
            self._put(d, current)
        self._recombine()
        self.synced = not waiting
        self.revision = revision

    def _put(self, d: DesiredAdapter, current: Loaded | None) -> None:
        internal = self._internal_name(d.name)
        path = os.path.join(self.work_dir, internal)
        # The image's files are untrusted: read only a private snapshot of them (no symlinks, bounded sizes).
        incoming = os.path.join(self.work_dir, f".incoming-{internal}")
        try:
            shutil.rmtree(incoming, ignore_errors=True)
            snapshot(os.path.join(self.files_root, d.key), incoming, skip=frozenset({FILES_COMPLETE}))
            info = read_adapter_info(d.name, incoming)
            problem = fit_problem(d.name, info.rank, info.target_modules, self.capacity)
            if problem:
                raise AdapterError(problem)
            # Always a private copy: the runtime's path must vanish on removal, whatever mounts it came from.
            scale_lora_b(incoming, path, lora_b_factor(info, d.strength))
            self._load(internal, path)
        except Exception as e:  # noqa: BLE001 - one broken adapter fails alone; the others keep serving
            shutil.rmtree(path, ignore_errors=True)
            self.states[d.name] = AdapterState(d.name, FAILED, _failure_reason(e), _failure_message(e))
            self._failed[d.name] = _attempt(d)
            return
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        self._failed.pop(d.name, None)
        self.loaded[d.name] = Loaded(d.name, internal, d.key, d.strength, path, info.rank, info.target_modules)
        self._publish(self.published())
        if current is not None:
            self._drop(current)
        self.states[d.name] = AdapterState(d.name, READY)

    def _remove(self, name: str) -> None:
        gone = self.loaded.pop(name)
        self._publish(self.published())
        self._drop(gone)

    def _drop(self, adapter: Loaded) -> None:
        with contextlib.suppress(RuntimeRefused):  # not loaded any more: nothing serves it either way
            self._unload(adapter.internal)
        shutil.rmtree(adapter.path, ignore_errors=True)

    def _recombine(self) -> None:
        old: Loaded | None
        members = list(self.loaded.values())
        if len(members) < 2:
            if self.combined is not None:
                old = self.combined
                self.combined = None
                self._publish(self.published())
                self._drop(old)
            return
        key = combination_key(members)
        if self.combined is not None and self.combined.key == key:
            return
        internal = self._internal_name(COMBINED_ADAPTER)
        path = os.path.join(self.work_dir, internal)
        rank = sum(a.rank for a in members)
        targets = tuple(sorted({t for a in members for t in a.target_modules}))
        prepared = [PreparedAdapter(a.name, a.path, a.rank, a.target_modules, a.strength) for a in members]
        try:
            problem = fit_problem(COMBINED_ADAPTER, rank, targets, self.capacity)
            if problem:
                raise AdapterError(problem + " (the combined adapter's rank is the sum of the adapters' ranks)")
            write_combination(prepared, path)
            self._load(internal, path)
        except Exception as e:  # noqa: BLE001 - /chat falls back to one adapter; every adapter keeps serving
            shutil.rmtree(path, ignore_errors=True)
            self.states[COMBINED_ADAPTER] = AdapterState(COMBINED_ADAPTER, FAILED, "CombinationFailed", str(e))
            old = self.combined
            self.combined = None
            self._publish(self.published())  # /chat falls back to the first adapter
            if old is not None:
                self._drop(old)
            return
        self.states.pop(COMBINED_ADAPTER, None)
        old = self.combined
        self.combined = Loaded(COMBINED_ADAPTER, internal, key, 1.0, path, rank, targets)
        self._publish(self.published())
        if old is not None:
            self._drop(old)

    def _internal_name(self, name: str) -> str:
        # "." cannot occur in an adapter name (a DNS label), so an internal name never shadows a user's.
        self._generation += 1
        return f"{name}.{self._generation}"


def _failure_reason(error: Exception) -> str:
    if isinstance(error, RuntimeRefused):
        return "RuntimeRefused"
    if isinstance(error, UnsafeAdapterFiles):
        return "UnsafeFiles"
    return "InvalidAdapter"


def _failure_message(error: Exception) -> str:
    if isinstance(error, (AdapterError, RuntimeRefused, UnsafeAdapterFiles, OSError)):
        return str(error)
    return f"{type(error).__name__} while preparing the adapter: {error}"  # e.g. a tensor file that is not one


def _attempt(d: DesiredAdapter) -> str:
    return f"{d.key}@{d.strength:g}"
