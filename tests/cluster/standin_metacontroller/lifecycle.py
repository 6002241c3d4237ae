"""What one sync does with an object, from its state (pure; Metacontroller's syncParentObject order).

* not selected (labels/annotations) and without our finalizer: nothing;
* a finalize hook exists: our finalizer is added first (not to an object being deleted);
* the finalize hook is called instead of sync while the object is being deleted or no longer selected,
  as long as it carries our finalizer; without a finalize hook a deleted object is left to the
  garbage collector and no hook is called;
* children are managed unless the object is being deleted, except while we still hold our finalizer
  and no garbage-collector finalizer (foregroundDeletion/orphan) is present.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

GC_FINALIZERS = ("foregroundDeletion", "orphan")


@dataclass(frozen=True)
class Step:
    add_finalizer: bool = False
    hook: str | None = None  # "sync" | "finalize" | None (nothing to call)
    manage_children: bool = False


def decide(
    *, selected: bool, finalizers: Iterable[str], our_finalizer: str, deleting: bool, has_finalize_hook: bool
) -> Step:
    finalizers = list(finalizers)
    has_ours = our_finalizer in finalizers
    if not selected and not has_ours:
        return Step()
    add = has_finalize_hook and selected and not deleting and not has_ours
    has_ours = has_ours or add
    finalizing = has_finalize_hook and (deleting or not selected)
    if finalizing and not has_ours:
        return Step()
    if deleting and not has_finalize_hook:
        return Step()
    manage = not deleting or (has_ours and not any(f in GC_FINALIZERS for f in finalizers))
    return Step(add_finalizer=add, hook="finalize" if finalizing else "sync", manage_children=manage)
