"""Serving runtime: launcher, adapter preparation, Kaito /chat + OpenAI gateway, transformers fallback.

Nothing heavy is imported here: the launcher's --dry-run must work without torch or sglang.
"""

# The one SGLang release this project is built and tested against. The runtime image's base tag
# (inference/Dockerfile) must name the same release.
SGLANG_VERSION = "0.5.23"
SGLANG_IMAGE = f"lmsysorg/sglang:v{SGLANG_VERSION}"

# Ports inside the pod: clients talk to the gateway; the model server listens on loopback only.
GATEWAY_PORT = 5000
UPSTREAM_HOST = "127.0.0.1"
UPSTREAM_PORT = 30000
