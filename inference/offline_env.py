"""The environment that keeps HuggingFace libraries off the network once the weights are local.

HF_HUB_OFFLINE makes huggingface_hub answer from its cache only, and with it every library built on it:
transformers, peft, and the `kernels` package, which bitsandbytes asks on import for a CPU kernel from
the Hub (kernels-community). DISABLE_KERNEL_MAPPING stops `kernels` from swapping model layers for Hub
kernels; telemetry is off. Given to the model runtime by the launcher and to every test process.
"""

from __future__ import annotations

HUB_OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DISABLE_KERNEL_MAPPING": "1",
}
