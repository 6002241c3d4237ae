"""Fallback runtime for GPUs SGLang does not support (before Ampere: V100, T4): transformers + peft
behind the same OpenAI-style API SGLang offers (the gateway in front adds /chat). Single node.

`model` "<served>:<adapter>" selects a LoRA adapter loaded with peft (strengths are already baked
into the adapter copies by the launcher); the served name alone means the base model. One request
generates at a time: peft switches adapters on the shared model, which is not safe concurrently.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
import uuid
from typing import Any

from aiohttp import web

from inference import UPSTREAM_HOST, UPSTREAM_PORT, egress_guard
from inference import hf_protocol as protocol
from inference.hf_protocol import BadRequest


class Engine:
    def __init__(self, model_path: str, served: str, loras: list[tuple[str, str]]):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        self.served = served
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        cuda = torch.cuda.is_available()
        dtype = torch.float16 if cuda else torch.float32  # pre-Ampere GPUs have no fast bf16
        model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, device_map="auto" if cuda else None)
        self.max_model_len = int(getattr(model.config, "max_position_embeddings", 0) or 0) or None
        eos = model.generation_config.eos_token_id
        eos = eos if isinstance(eos, list) else [eos]
        self.eos_ids = {int(e) for e in eos + [self.tokenizer.eos_token_id] if e is not None}
        self.adapters = [name for name, _ in loras]
        # peft turns adapter names into module attributes: a user's name such as "half" or "to"
        # would collide with torch.nn.Module's, so peft sees index-based names.
        self._peft_name = {name: f"kaito_adapter_{i}" for i, (name, _) in enumerate(loras)}
        if loras:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, loras[0][1], adapter_name=self._peft_name[loras[0][0]])
            for name, path in loras[1:]:
                model.load_adapter(path, adapter_name=self._peft_name[name])
        self.model = model.eval()
        self.device = next(model.parameters()).device
        self.lock = threading.Lock()
        self._next_peft_index = len(loras)

    def load_adapter(self, name: str, path: str) -> None:
        """Live adapters (inference.live_adapters): SGLang's /load_lora_adapter, with peft."""
        from peft import PeftModel

        with self.lock:
            if name in self._peft_name:
                raise BadRequest(f"adapter {name!r} is already loaded")
            peft_name = f"kaito_adapter_{self._next_peft_index}"
            self._next_peft_index += 1
            try:
                if self.adapters:
                    self.model.load_adapter(path, adapter_name=peft_name)
                else:
                    self.model = PeftModel.from_pretrained(self.model, path, adapter_name=peft_name).eval()
            except (OSError, ValueError, KeyError, RuntimeError) as e:
                raise BadRequest(f"cannot load adapter {name!r} from {path}: {type(e).__name__}: {e}") from None
            self._peft_name[name] = peft_name
            self.adapters.append(name)

    def unload_adapter(self, name: str) -> None:
        with self.lock:
            if name not in self._peft_name:
                raise BadRequest(f"adapter {name!r} is not loaded")
            peft_name = self._peft_name.pop(name)
            self.adapters.remove(name)
            if not self.adapters:
                self.model = self.model.unload().eval()  # the plain base model again
                return
            if peft_name in self.model.active_adapters:
                self.model.set_adapter(self._peft_name[self.adapters[0]])
            self.model.delete_adapter(peft_name)

    def adapter_for(self, model: str | None) -> str | None:
        if not model or model == self.served:
            return None
        base, _, adapter = model.partition(":")
        if base != self.served or adapter not in self.adapters:
            raise BadRequest(f"unknown model {model!r}; served: {self.served!r} and adapters {self.adapters}")
        return adapter

    def chat_prompt(self, messages: list[dict]) -> str:
        if getattr(self.tokenizer, "chat_template", None):
            return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))
        return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "

    def count_tokens(self, prompt: str) -> int:
        return len(self.tokenizer(prompt)["input_ids"])

    def token_budget(self, prompt: str, body: dict, chat: bool) -> int:
        """New tokens for this prompt; BadRequest when it does not fit the context. Completions ask for
        16 unless told (OpenAI's default, which SGLang counts as requested); chat fills what is left,
        up to 256."""
        requested = protocol.max_new_tokens(body, None if chat else 16)
        return protocol.token_budget(self.count_tokens(prompt), requested, 256, self.max_model_len)

    def _gen_kwargs(self, body: dict, max_new: int) -> dict:
        kw: dict[str, Any] = {"max_new_tokens": max_new}
        temperature = body.get("temperature", 1.0)
        if temperature is not None and float(temperature) <= 0.0:
            kw["do_sample"] = False
        else:
            kw["do_sample"] = True
            kw["temperature"] = float(temperature or 1.0)
            for k in ("top_p", "top_k", "min_p"):
                if body.get(k) is not None and body[k] != -1:
                    kw[k] = body[k]
        if body.get("repetition_penalty") is not None:
            kw["repetition_penalty"] = float(body["repetition_penalty"])
        if body.get("min_tokens"):
            kw["min_new_tokens"] = int(body["min_tokens"])
        stops = protocol.stop_strings(body)
        if stops:
            kw["stop_strings"] = stops
            kw["tokenizer"] = self.tokenizer
        pad = self.tokenizer.pad_token_id
        kw["pad_token_id"] = pad if pad is not None else self.tokenizer.eos_token_id
        return kw

    def _run(self, adapter: str | None, prompt: str, kw: dict, seed, streamer=None) -> dict:
        torch = self.torch
        # The chat template already holds any special tokens; a plain prompt gets the tokenizer's own.
        enc = self.tokenizer(prompt, return_tensors="pt").to(self.device)
        with self.lock, torch.inference_mode():
            if seed is not None:
                torch.manual_seed(int(seed))
            if adapter is None and self.adapters:
                with self.model.disable_adapter():
                    out = self.model.generate(**enc, **kw, streamer=streamer)
            else:
                if adapter is not None:
                    self.model.set_adapter(self._peft_name[adapter])
                out = self.model.generate(**enc, **kw, streamer=streamer)
        new = out[0][enc["input_ids"].shape[1] :].tolist()
        text = str(self.tokenizer.decode(new, skip_special_tokens=True))
        text, stopped = protocol.cut_at_stop(text, kw.get("stop_strings", []))
        return {
            "text": text,
            "prompt_tokens": int(enc["input_ids"].shape[1]),
            "completion_tokens": len(new),
            "finish_reason": protocol.finish_reason(new, self.eos_ids, kw["max_new_tokens"], stopped),
        }

    def generate(self, adapter, prompt, body, max_new: int) -> dict:
        return self._run(adapter, prompt, self._gen_kwargs(body, max_new), body.get("seed"))

    def stream(self, adapter, prompt, body, max_new: int, result: dict):
        """Start generating in a thread; the returned streamer yields text; `result` gets _run's answer
        (or "error") once the returned thread ends."""
        from transformers import TextIteratorStreamer

        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=600)
        kw = self._gen_kwargs(body, max_new)

        def work():
            try:
                result.update(self._run(adapter, prompt, kw, body.get("seed"), streamer))
            except Exception as e:  # noqa: BLE001 -- any failure must end the stream, not leave the reader waiting
                print(f"hf_server: generation failed: {type(e).__name__}: {e}", flush=True)
                result["error"] = f"{type(e).__name__}: {e}"
                streamer.end()

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        return streamer, thread


ENGINE = web.AppKey("engine", Engine)


def _error(message: str, status: int = 400) -> web.Response:
    return web.json_response(
        {"object": "error", "message": message, "type": "BadRequestError", "code": status}, status=status
    )


async def _body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except ValueError:
        raise BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("request body must be a JSON object")
    return body


def _sse(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


async def _stream(request, engine, adapter, prompt, body, max_new: int, chat, head: dict, echo: str):
    """Server-sent events as OpenAI streams them: the role first (chat), text deltas, a last chunk with
    finish_reason, a usage chunk when stream_options.include_usage, then [DONE]."""
    loop = asyncio.get_running_loop()
    want_usage = protocol.include_usage(body)
    result: dict = {}
    streamer, thread = engine.stream(adapter, prompt, body, max_new, result)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)

    def chunk(delta: dict | None = None, text: str | None = None, finish=None) -> bytes:
        choice = {"index": 0, "delta": delta or {}} if chat else {"index": 0, "text": text or ""}
        choice.update({"logprobs": None, "finish_reason": finish})
        return _sse({**head, "choices": [choice]})

    if chat:
        await resp.write(chunk({"role": "assistant", "content": ""}))
    elif echo:
        await resp.write(chunk(text=echo))
    cutter = protocol.StopStringCutter(protocol.stop_strings(body))
    it = iter(streamer)
    while True:
        piece = await loop.run_in_executor(None, next, it, None)
        if piece is None:
            break
        out = cutter.feed(piece)
        if out:
            await resp.write(chunk({"content": out}, out))
    out = cutter.finish()
    if out:
        await resp.write(chunk({"content": out}, out))
    await loop.run_in_executor(None, thread.join)
    if "error" in result:
        await resp.write(_sse({"error": {"message": result["error"], "type": "InternalServerError", "code": 500}}))
    else:
        await resp.write(chunk(finish=result["finish_reason"]))
        if want_usage:
            await resp.write(
                _sse(
                    {
                        **head,
                        "choices": [],
                        "usage": protocol.usage(result["prompt_tokens"], result["completion_tokens"]),
                    }
                )
            )
    await resp.write(b"data: [DONE]\n\n")
    await resp.write_eof()
    return resp


def _handler(chat: bool):
    async def handler(request: web.Request) -> web.StreamResponse:
        engine = request.app[ENGINE]
        try:
            body = await _body(request)
            adapter = engine.adapter_for(body.get("model"))
            prompts = protocol.check_request(body, chat)
            if chat:
                prompts = [engine.chat_prompt(body["messages"])]
            # Before generating: a prompt longer than the context is refused, not answered with garbage.
            budgets = [engine.token_budget(p, body, chat) for p in prompts]
            protocol.stop_strings(body)
            protocol.include_usage(body)
        except BadRequest as e:
            return _error(str(e))
        model = body.get("model") or engine.served
        rid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())
        kind = "chat.completion" if chat else "text_completion"
        echo = bool(body.get("echo")) and not chat
        if body.get("stream"):
            head = {"id": rid, "object": "chat.completion.chunk" if chat else kind, "created": created, "model": model}
            return await _stream(
                request, engine, adapter, prompts[0], body, budgets[0], chat, head, prompts[0] if echo else ""
            )
        loop = asyncio.get_running_loop()
        choices, n_in, n_out = [], 0, 0
        n = protocol.choices_per_prompt(body)
        runs = [(p, budget, k) for p, budget in zip(prompts, budgets, strict=True) for k in range(n)]
        for i, (prompt, budget, k) in enumerate(runs):
            r = await loop.run_in_executor(None, engine.generate, adapter, prompt, body, budget)
            # OpenAI counts each prompt once, however many choices it gets.
            n_in, n_out = n_in + (r["prompt_tokens"] if k == 0 else 0), n_out + r["completion_tokens"]
            if chat:
                choices.append(
                    {
                        "index": i,
                        "message": {"role": "assistant", "content": r["text"]},
                        "logprobs": None,
                        "finish_reason": r["finish_reason"],
                    }
                )
            else:
                choices.append(
                    {
                        "index": i,
                        "text": (prompt if echo else "") + r["text"],
                        "logprobs": None,
                        "finish_reason": r["finish_reason"],
                    }
                )
        return web.json_response(
            {
                "id": rid,
                "object": kind,
                "created": created,
                "model": model,
                "choices": choices,
                "usage": protocol.usage(n_in, n_out),
            }
        )

    return handler


async def health(request: web.Request) -> web.Response:
    return web.Response(text="")


async def models(request: web.Request) -> web.Response:
    e = request.app[ENGINE]
    data = [
        {
            "id": e.served,
            "object": "model",
            "owned_by": "kaito",
            "root": e.served,
            "parent": None,
            "max_model_len": e.max_model_len,
        }
    ]
    data += [
        {"id": f"{e.served}:{a}", "object": "model", "owned_by": "kaito", "root": a, "parent": e.served}
        for a in e.adapters
    ]
    return web.json_response({"object": "list", "data": data})


def _adapter_admin(action: str):
    async def handler(request: web.Request) -> web.Response:
        engine = request.app[ENGINE]
        try:
            body = await _body(request)
            name = body.get("lora_name")
            if not isinstance(name, str) or not name:
                raise BadRequest("`lora_name` must be a non-empty string")
            loop = asyncio.get_running_loop()
            if action == "load":
                path = body.get("lora_path")
                if not isinstance(path, str) or not path:
                    raise BadRequest("`lora_path` must be a non-empty string")
                await loop.run_in_executor(None, engine.load_adapter, name, path)
            else:
                await loop.run_in_executor(None, engine.unload_adapter, name)
        except BadRequest as e:
            return _error(str(e))
        return web.json_response({"success": True, "error_message": ""})

    return handler


def make_app(engine: Engine) -> web.Application:
    app = web.Application()
    app[ENGINE] = engine
    app.router.add_post("/load_lora_adapter", _adapter_admin("load"))
    app.router.add_post("/unload_lora_adapter", _adapter_admin("unload"))
    app.router.add_get("/health", health)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", _handler(chat=True))
    app.router.add_post("/v1/completions", _handler(chat=False))
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m inference.hf_server")
    p.add_argument("--model-path", required=True)
    p.add_argument("--served-model-name", required=True)
    p.add_argument("--lora", action="append", default=[], metavar="NAME=PATH")
    p.add_argument("--host", default=UPSTREAM_HOST)
    p.add_argument("--port", type=int, default=UPSTREAM_PORT)
    ns = p.parse_args(argv)
    loras = [tuple(x.split("=", 1)) for x in ns.lora]
    # Single node, local weights and adapters: nothing this process does may leave the pod.
    egress_guard.install()
    engine = Engine(ns.model_path, ns.served_model_name, loras)  # load first: /health answers only once ready
    web.run_app(make_app(engine), host=ns.host, port=ns.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
