"""A stub of SGLang's OpenAI-compatible HTTP API, for tests and the gateway benchmark.

It stands in for the GPU engine (the one boundary that cannot exist on a CPU-only machine). It
answers the way SGLang 0.5.x does: `model` "<served>:<adapter>" selects the adapter (split after the
served name, adapter names NOT checked), chat/completion JSON shapes, and SSE streaming with
`data: {...}` chunks ending in `data: [DONE]`. Every request body is recorded in `requests`.
If `release` is set, a streamed answer sends its first chunk and then waits for release.set().
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

from aiohttp import web
from loopback_support import free_port

from inference_support.aiohttp_thread import BackgroundApp


class StubSGLang:
    def __init__(self, served: str):
        self.served = served
        self.requests: list[tuple[str, dict]] = []
        self.loaded_loras: dict[str, str] = {}
        self.release: threading.Event | None = None
        self.release_timed_out = False
        self.port = free_port()
        self._server: BackgroundApp | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _adapter(self, model: str | None) -> str | None:
        if model and model.startswith(self.served + ":"):
            return model[len(self.served) + 1 :] or None
        return None

    def _text(self, body: dict, prompt_text: str) -> str:
        tag = self._adapter(body.get("model")) or body.get("lora_path") or "base"
        return f"[{tag}] reply to: {prompt_text}"

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(("/v1/chat/completions", body))
        return await self._answer(request, body, self._text(body, body["messages"][-1]["content"]), chat=True)

    async def _completion(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(("/v1/completions", body))
        return await self._answer(request, body, self._text(body, body["prompt"]), chat=False)

    async def _answer(self, request, body, text, chat: bool) -> web.StreamResponse:
        """The whole answer, or a stream of it when the request asks for one, shaped as SGLang's."""
        if body.get("stream"):
            return await self._stream(request, body, text, chat=chat)
        content = {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        return web.json_response(
            {
                "id": "cmpl-1" if chat else "cmpl-2",
                "object": "chat.completion" if chat else "text_completion",
                "created": 1,
                "model": body.get("model"),
                "choices": [{"index": 0, **content, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
            }
        )

    async def _stream(self, request, body, text, chat: bool) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, word in enumerate(text.split(" ")):
            piece = word if i == 0 else " " + word
            choice = {"index": 0, "delta": {"content": piece}} if chat else {"index": 0, "text": piece}
            chunk = {
                "id": "s",
                "object": "chat.completion.chunk" if chat else "text_completion",
                "model": body.get("model"),
                "choices": [choice],
            }
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if i == 0 and self.release is not None:
                ok = await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 10)
                self.release_timed_out = not ok
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _health(self, request):
        return web.Response(text="")

    async def _load_lora(self, request):
        """SGLang's /load_lora_adapter: the stub only remembers the names (live adapters load through it)."""
        body = await request.json()
        self.loaded_loras[body["lora_name"]] = body["lora_path"]
        return web.json_response({"success": True})

    async def _unload_lora(self, request):
        body = await request.json()
        if self.loaded_loras.pop(body["lora_name"], None) is None:
            return web.json_response({"success": False, "error_message": "not loaded"}, status=400)
        return web.json_response({"success": True})

    async def _metrics(self, request):
        return web.Response(text="sglang:num_running_reqs 0\n", content_type="text/plain")

    def start(self) -> StubSGLang:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._completion)
        app.router.add_get("/health", self._health)
        app.router.add_post("/load_lora_adapter", self._load_lora)
        app.router.add_post("/unload_lora_adapter", self._unload_lora)
        app.router.add_get("/metrics", self._metrics)
        self._server = BackgroundApp(app, self.port).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()


def wait_http(url: str, timeout: float = 20.0) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
