"""Which model a request names, in the runtime's terms: the served preset and adapters (Served), a
client's `model` or `lora_path` turned into the name the runtime loaded (live adapters are loaded
under internal names), and the OpenAI model listing with the runtime's context length.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference.gateway.validation import RequestError, check_limits, check_messages
from inference.hf_protocol import SUFFIX_UNSUPPORTED


@dataclass(frozen=True)
class Served:
    preset: str
    adapters: tuple[str, ...] = ()
    # The adapter /chat uses when the request names none (Kaito applies all adapters): the launcher's
    # combined adapter, or the only adapter; None means the first adapter (or the base model).
    chat_default: str | None = None
    # Live adapters (inference.live_adapters): adapter name -> the name the runtime loaded it under.
    upstream_names: tuple[tuple[str, str], ...] = ()

    def upstream_adapter(self, adapter: str) -> str:
        return next((internal for name, internal in self.upstream_names if name == adapter), adapter)

    def client_model_names(self) -> dict[str, str]:
        """Upstream model id -> the id the client asked for, for the renamed (live) adapters."""
        return {
            f"{self.preset}:{internal}": f"{self.preset}:{name}"
            for name, internal in self.upstream_names
            if internal != name
        }


def resolve_model(model, served: Served) -> str:
    """The `model` to send upstream: the preset, or "<preset>:<adapter>" for a known adapter.

    Accepts the bare adapter name too (Kaito's vLLM runtime addresses adapters that way).
    SGLang 0.5.23 refuses an unknown adapter itself, but not an unknown base name: it answers
    `gpt-4` with the base model and `other:fin` with adapter fin. So both parts are checked here.
    """
    if model is None or model == "" or model == served.preset:
        return served.preset
    if not isinstance(model, str):
        raise RequestError("`model` must be a string")
    base, sep, adapter = model.partition(":")
    if sep:
        if base != served.preset:
            raise RequestError(
                f"unknown model {model!r}: this server serves {served.preset!r} "
                f"(adapters as {served.preset!r}:<adapter>)"
            )
        return adapter_model(adapter, served)
    if model in served.adapters:
        return f"{served.preset}:{served.upstream_adapter(model)}"
    raise RequestError(f"unknown model {model!r}: available: {', '.join(model_ids(served))}")


def adapter_model(adapter: str, served: Served) -> str:
    """`<preset>:<name the runtime loaded it under>` for a served adapter; a RequestError naming the
    loaded adapters otherwise."""
    if adapter not in served.adapters:
        known = ", ".join(served.adapters) if served.adapters else "none"
        raise RequestError(f"unknown adapter {adapter!r} for model {served.preset!r} (loaded adapters: {known})")
    return f"{served.preset}:{served.upstream_adapter(adapter)}"


def check_lora_path(value, served: Served):
    """SGLang's own `lora_path` field selects an adapter too: hold it to the same rule; returns the
    value to forward (live adapters by the name the runtime knows)."""
    values = value if isinstance(value, list) else [value]
    for v in values:
        if v is not None and v not in served.adapters:
            adapter_model(str(v), served)
    if not served.upstream_names:
        return value
    mapped = [None if v is None else served.upstream_adapter(v) for v in values]
    return mapped if isinstance(value, list) else mapped[0]


def route_openai(body, served: Served, max_model_len: int | None = None) -> tuple[dict, bool]:
    """Validate an OpenAI request body; return (body to forward, changed?). `max_model_len`: the
    runtime's context length once known (it bounds the token budgets)."""
    if not isinstance(body, dict):
        raise RequestError("request body must be a JSON object")
    model = resolve_model(body.get("model"), served)
    if "messages" in body:
        check_messages(body["messages"])
    lora_path = check_lora_path(body["lora_path"], served) if "lora_path" in body else None
    check_limits(body, max_model_len)
    if body.get("suffix") not in (None, ""):
        raise RequestError(SUFFIX_UNSUPPORTED)
    if lora_path is not None and lora_path != body["lora_path"]:
        return {**body, "model": model, "lora_path": lora_path}, True
    if body.get("model") == model:
        return body, False
    return {**body, "model": model}, True


def model_ids(served: Served) -> list[str]:
    return [served.preset] + [f"{served.preset}:{a}" for a in served.adapters]


def models_listing(served: Served, created: int, max_model_len: int | None = None) -> dict:
    """OpenAI's model list; max_model_len (the runtime's context length) as SGLang lists it."""
    extra = {"max_model_len": max_model_len} if max_model_len else {}
    data = [
        {
            "id": served.preset,
            "object": "model",
            "created": created,
            "owned_by": "kaito",
            "root": served.preset,
            "parent": None,
            **extra,
        }
    ]
    data += [
        {
            "id": f"{served.preset}:{a}",
            "object": "model",
            "created": created,
            "owned_by": "kaito",
            "root": a,
            "parent": served.preset,
            **extra,
        }
        for a in served.adapters
    ]
    return {"object": "list", "data": data}


def model_entry(served: Served, created: int, model_id: str, max_model_len: int | None = None) -> dict | None:
    """GET /v1/models/{id}: the listing's entry for the id ("<preset>:<adapter>" or the bare adapter name)."""
    try:
        wanted = resolve_model(model_id, served)
    except RequestError:
        return None
    wanted = served.client_model_names().get(wanted, wanted)  # a live adapter is listed by its own name
    return next(m for m in models_listing(served, created, max_model_len)["data"] if m["id"] == wanted)


def max_model_len_of(listing) -> int | None:
    """The runtime's context length from its own /v1/models answer (SGLang and hf_server list it)."""
    try:
        for m in listing["data"]:
            if isinstance(m.get("max_model_len"), int):
                return m["max_model_len"]
    except (KeyError, TypeError, AttributeError):
        pass
    return None
