"""Rewriting the runtime's answers on their way to the client, chunk by chunk: live adapters' internal
names back to the client's, and chat/completions answers held to the OpenAI types and stop strings
(inference.gateway.answers) without waiting for the whole stream.
"""

from __future__ import annotations

from inference.gateway.answers import shape_answer, shape_chunk
from inference.gateway.jsonio import dumps, loads


class ModelRenamer:
    """Gives a live adapter's answers back the name the client used (the runtime echoes its internal
    name, e.g. "phi:fin.3", in `model`). Streams are rewritten across chunk boundaries: a tail that could
    be the start of a name waits for the next chunk."""

    def __init__(self, names: dict[str, str]):
        self.pairs = [(f'"{up}"'.encode(), f'"{client}"'.encode()) for up, client in names.items()]
        self.keep = max((len(old) for old, _ in self.pairs), default=1) - 1
        self.carry = b""

    def __call__(self, chunk: bytes) -> bytes:
        data = self.carry + chunk
        for old, new in self.pairs:
            data = data.replace(old, new)
        if self.keep:
            data, self.carry = data[: -self.keep], data[-self.keep :]
        return data

    def flush(self) -> bytes:
        data, self.carry = self.carry, b""
        return data


class EventShaper:
    """Rewrites a server-sent event stream chunk by chunk (shape_chunk on each `data:` event); bytes
    of an event split across chunks wait for the rest of it."""

    def __init__(self, stops: list[str]):
        self.stops = stops
        self.cutters: dict = {}
        self.buffer = b""

    def __call__(self, data: bytes) -> bytes:
        self.buffer += data
        out = []
        while (end := self.buffer.find(b"\n\n")) >= 0:
            event, self.buffer = self.buffer[: end + 2], self.buffer[end + 2 :]
            out.append(self._event(event))
        return b"".join(out)

    def _event(self, event: bytes) -> bytes:
        if not event.startswith(b"data: ") or event.startswith(b"data: [DONE]"):
            return event
        try:
            chunk = loads(event[6:])
        except ValueError:
            return event
        return b"data: " + dumps(chunk) + b"\n\n" if shape_chunk(chunk, self.stops, self.cutters) else event

    def flush(self) -> bytes:
        data, self.buffer = self.buffer, b""
        return data


def shaped_answer(data: bytes, stops: list[str]) -> bytes:
    try:
        answer = loads(data)
    except ValueError:
        return data
    return dumps(answer) if shape_answer(answer, stops) else data
