"""Tokens: a streaming model. ``predict`` is a generator: each yielded item goes to the
client as it is made, as a server-sent event (``Accept: text/event-stream``) or a JSON line
(``Accept: application/x-ndjson``); without either, the items come back gathered as
``{"predictions": [...]}``.

A stand-in for token-by-token generation: every word of the prompt, upper-cased, one per
``TOKENS_DELAY_SECONDS`` (default 0.05), then a final ``{"done": true}``.

Serve it: ``serve-gateway worker gateway.examples.tokens:Tokens --port 9000``, then
``curl -N -H 'Accept: text/event-stream' localhost:9000/predict -d '{"prompt": "a b c"}'``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from pydantic import BaseModel, Field


class Prompt(BaseModel):
    prompt: str = Field(max_length=10_000)
    max_tokens: int = Field(default=256, ge=1, le=4096)


class Token(BaseModel):
    index: int = 0
    token: str = ""
    done: bool = False


class Tokens:
    def __init__(self) -> None:
        self.delay = 0.05

    def load(self) -> None:
        self.delay = float(os.environ.get("TOKENS_DELAY_SECONDS", "0.05") or 0)

    def predict(self, prompts: list[Prompt]) -> Iterator[Token]:
        # One stream per request: the gateway never batches streaming requests together, so
        # ``prompts`` holds what one caller sent (usually one prompt); each is generated in turn.
        n = 0
        for p in prompts:
            for word in p.prompt.split()[:p.max_tokens]:
                time.sleep(self.delay)       # the "forward pass" for one token
                yield Token(index=n, token=word.upper())
                n += 1
        yield Token(index=n, done=True)
