"""A scripted in-memory Backend for unit tests of prompt building and parsing (no model involved).

It records every request and answers with a function of the request, so tests can check the exact
prompt sent and feed back chosen answers, distributions or logprobs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from neuroscribe.llm.base import Capability, Completion, CompletionRequest

Responder = Callable[[CompletionRequest], Completion]

ALL_CAPABILITIES = frozenset(Capability)


@dataclass
class ScriptedBackend:
    responder: Responder
    capabilities: frozenset[Capability] = ALL_CAPABILITIES
    context_length: int = 8192
    name: str = "scripted"
    in_process: bool = False
    requests: list[CompletionRequest] = field(default_factory=list)

    def count_tokens(self, text: str) -> int:
        """Roughly 4 characters a token, deterministic (enough for budgeting tests)."""
        return len(text) // 4 + 1

    async def complete(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        return self.responder(request)

    async def aclose(self) -> None:
        return None
