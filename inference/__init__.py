"""Serving runtime: launcher, adapter preparation, Kaito /chat + OpenAI gateway, transformers fallback.

Nothing heavy is imported here: the launcher's --dry-run must work without torch or sglang.
"""

# The one SGLang release this project is built and tested against. The runtime image's base tag
# (inference/Dockerfile) must name the same release.
SGLANG_VERSION = "0.5.23"
SGLANG_IMAGE = f"lmsysorg/sglang:v{SGLANG_VERSION}"
# sglang-router (PyPI), the load balancer across a Workspace's replicas: inference/Dockerfile's router target.
SGLANG_ROUTER_VERSION = "0.3.2"

# Ports inside the pod: clients talk to the gateway; the model server listens on loopback only.
GATEWAY_PORT = 5000
UPSTREAM_HOST = "127.0.0.1"
UPSTREAM_PORT = 30000
