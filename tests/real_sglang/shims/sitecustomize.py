"""TEST-ONLY (see README.md here): drop SGLang's hard-coded `pin_memory=True` on a machine without CUDA.

Imported by every Python process started with tests/real_sglang/shims on PYTHONPATH. It does nothing
unless the CPU engine is on, and it only touches torch once SGLang's LoRA layers are imported, so
other processes (the gateway, the launcher) do not even import torch because of it.
"""

import os
import sys

_TRIGGER = "sglang.srt.lora.layers"


# The factories SGLang's LoRA code calls with pin_memory=True (layers.py, backend/*.py).
_FACTORIES = (
    "tensor",
    "zeros",
    "ones",
    "empty",
    "full",
    "arange",
    "as_tensor",
    "zeros_like",
    "ones_like",
    "empty_like",
)


def _drop_pin_memory() -> None:
    import functools

    import torch

    if torch.cuda.is_available():
        return

    def without_pinning(factory):
        @functools.wraps(factory)
        def call(*args, **kwargs):
            kwargs.pop("pin_memory", None)
            return factory(*args, **kwargs)

        return call

    for name in _FACTORIES:
        if hasattr(torch, name):
            setattr(torch, name, without_pinning(getattr(torch, name)))
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self


class _PatchOnImport:
    """A meta-path finder that patches torch right before SGLang's LoRA layers module is loaded."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != _TRIGGER:
            return None
        sys.meta_path.remove(self)
        _drop_pin_memory()
        return None  # the normal finders load the module


if os.environ.get("SGLANG_USE_CPU_ENGINE") == "1":
    sys.meta_path.insert(0, _PatchOnImport())
