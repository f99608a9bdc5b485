"""Language-model backends behind one small interface, plus the client layers every backend shares."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from neuroscribe.errors import ConfigError
from neuroscribe.llm.base import (
    Backend,
    BackendSpec,
    Capability,
    Choice,
    Completion,
    CompletionRequest,
    DistributionRequest,
    Message,
    PromptSegment,
    SamplingParams,
    TokenLogprob,
    TransportSettings,
    Usage,
)
from neuroscribe.registry import Registry, build_options

if TYPE_CHECKING:
    from neuroscribe.llm.client import LLMClient
    from neuroscribe.llm.usage import UsageLedger

BACKENDS: Registry[Backend] = Registry("backend")

BUILTIN_BACKEND_MODULES = {
    "hf": "neuroscribe.llm.hf",
    "openai": "neuroscribe.llm.openai_compat",
    "llamacpp": "neuroscribe.llm.llamacpp",
    "scripted": "neuroscribe.llm.scripted",
}
"""Imported only when a spec names them, so `import neuroscribe` never loads torch or starts a server."""


class _BuildsFromSpec(Protocol):
    options_type: ClassVar[type]

    @classmethod
    def from_spec(cls, spec: BackendSpec, options: Any) -> Backend: ...


def _backend_class(type_name: str) -> type[_BuildsFromSpec]:
    module = BUILTIN_BACKEND_MODULES.get(type_name)
    if module is not None and type_name not in BACKENDS:
        importlib.import_module(module)
    backend_class = BACKENDS.get(type_name)
    if not isinstance(getattr(backend_class, "options_type", None), type):
        raise ConfigError(
            f"backend {type_name!r} ({backend_class.__qualname__}) declares no options_type; a backend class needs "
            "`options_type` (a frozen options dataclass) and `from_spec(cls, spec, options)`"
        )
    return cast("type[_BuildsFromSpec]", backend_class)


def backend_options_type(type_name: str) -> type:
    """The options dataclass of the backend registered as `type_name` (what `[backends.NAME.options]` is
    checked against). Imports a built-in backend's module, which never loads torch or starts a server;
    an unknown name is a ConfigError suggesting the closest known one."""
    return _backend_class(type_name).options_type


def create_backend(
    spec: BackendSpec,
    transport: TransportSettings | None = None,
    cache_dir: Path | None = None,
    ledger: UsageLedger | None = None,
    options: Mapping[str, object] | None = None,
    sampling_salt: int = 0,
) -> LLMClient:
    """The backend `spec` names, wrapped in the client layers (cache -> limits -> retries -> usage).

    `cache_dir=None` disables the response cache; pass a directory (e.g. one per run, or one shared by
    runs) to make re-runs free. Prices in the spec turn token counts into cost estimates in `ledger`.
    `options` (a config's `[backends.NAME.options]`) are checked against the backend's options dataclass
    (see `backend_options_type`): an unknown key, a wrong type or a bad value is a ConfigError naming it.
    `sampling_salt` (a run's repeat number) reseeds every sampled request (see `LLMClient`).
    """
    from neuroscribe.llm.cache import ResponseCache
    from neuroscribe.llm.client import LLMClient
    from neuroscribe.llm.usage import Pricing

    backend_class = _backend_class(spec.type)
    built: object = build_options(backend_class.options_type, options or {}, f"[backends] {spec.type} options")
    backend = backend_class.from_spec(spec, built)
    return LLMClient(
        backend,
        transport=transport,
        cache=ResponseCache(cache_dir) if cache_dir is not None else None,
        ledger=ledger,
        pricing=Pricing(
            per_million_prompt_tokens=spec.price_per_million_prompt_tokens,
            per_million_completion_tokens=spec.price_per_million_completion_tokens,
        ),
        sampling_salt=sampling_salt,
    )


__all__ = [
    "BACKENDS",
    "Backend",
    "BackendSpec",
    "Capability",
    "Choice",
    "Completion",
    "CompletionRequest",
    "DistributionRequest",
    "Message",
    "PromptSegment",
    "SamplingParams",
    "TokenLogprob",
    "TransportSettings",
    "Usage",
    "backend_options_type",
    "create_backend",
]
