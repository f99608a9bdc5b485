"""A scripted in-memory backend for tests of prompt building and answer parsing (no model involved).

It records every request in `requests` and answers with a function of the request (the *responder*), so a
test can check the exact prompt sent and feed back chosen texts, distributions or logprobs. From Python:
`ScriptedBackend(responder)`; from a config: `type = "scripted"` with
`[backends.NAME.options] responder = "package.module:function"`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import ClassVar, Self

from neuroscribe.errors import ConfigError
from neuroscribe.llm import BACKENDS
from neuroscribe.llm.base import BackendSpec, Capability, Completion, CompletionRequest
from neuroscribe.llm.options import require_at_least

Responder = Callable[[CompletionRequest], Completion | Awaitable[Completion]]
"""Returns the answer to a request (a coroutine function works too)."""

ALL_CAPABILITIES = frozenset(Capability)
DEFAULT_CONTEXT_LENGTH = 8192


@dataclass(frozen=True, kw_only=True)
class ScriptedOptions:
    """Settings of the 'scripted' backend (`[backends.NAME.options]` in a config)."""

    responder: str
    """'package.module:function' (importable where the run starts), called with each `CompletionRequest` and
    returning its `Completion`; imported when the backend is built. Required."""
    context_length: int = DEFAULT_CONTEXT_LENGTH
    """Tokens the backend claims to hold (prompt + generated); the spec's `context_length` wins when set."""
    in_process: bool = False
    """Whether the backend claims to compute in this process (then the client sets no timeout on its requests)."""
    capabilities: tuple[str, ...] = tuple(c.value for c in Capability)
    """Capability names it claims (default: all), e.g. ["chat"] to test what a chat-only server gets."""

    def __post_init__(self) -> None:
        module, _, function = self.responder.partition(":")
        if not module.strip() or not function.strip():
            raise ValueError(f"responder must be 'package.module:function', got {self.responder!r}")
        require_at_least(1, context_length=self.context_length)
        known = [c.value for c in Capability]
        for name in self.capabilities:
            if name not in known:
                close = difflib.get_close_matches(str(name), known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"capabilities: unknown capability {name!r}.{hint} Known: {', '.join(known)}")


def load_responder(path: str) -> Responder:
    """The callable named by 'package.module:function' (a dotted attribute after the colon works too)."""
    module_name, _, attribute = path.partition(":")
    where = f"scripted backend: responder {path!r}"
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{where}: cannot import module {module_name!r} ({exc})") from exc
    for part in attribute.split("."):
        if not hasattr(target, part):
            names = [name for name in dir(target) if not name.startswith("_")]
            close = difflib.get_close_matches(part, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: {module_name!r} has no attribute {attribute!r}.{hint}")
        target = getattr(target, part)
    if not callable(target):
        raise ConfigError(f"{where} is not callable (it is of type {type(target).__name__!r})")
    return target


@BACKENDS.register("scripted")
@dataclass
class ScriptedBackend:
    """Answers each request with `responder(request)` and records the requests in `requests`."""

    options_type: ClassVar[type[ScriptedOptions]] = ScriptedOptions

    responder: Responder
    capabilities: frozenset[Capability] = ALL_CAPABILITIES
    context_length: int = DEFAULT_CONTEXT_LENGTH
    name: str = "scripted"
    in_process: bool = False
    requests: list[CompletionRequest] = field(default_factory=list)

    @classmethod
    def from_spec(cls, spec: BackendSpec, options: ScriptedOptions) -> Self:
        """Named 'scripted:<responder>', so two responders never share response-cache entries."""
        return cls(
            load_responder(options.responder),
            capabilities=frozenset(Capability(name) for name in options.capabilities),
            context_length=spec.context_length or options.context_length,
            name=f"scripted:{options.responder}",
            in_process=options.in_process,
        )

    def count_tokens(self, text: str) -> int:
        """Roughly 4 characters a token, deterministic (enough for budgeting tests)."""
        return len(text) // 4 + 1

    async def complete(self, request: CompletionRequest) -> Completion:
        self.requests.append(request)
        answer = self.responder(request)
        return await answer if inspect.isawaitable(answer) else answer

    async def aclose(self) -> None:
        return None


__all__ = ["Responder", "ScriptedBackend", "ScriptedOptions", "load_responder"]
