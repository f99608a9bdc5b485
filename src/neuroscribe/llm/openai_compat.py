"""Any OpenAI-compatible server through the official `openai` package: the OpenAI API, vLLM, llama.cpp's
server, Ollama, OpenRouter.

The backend speaks the plain HTTP API and reads answers as JSON, so servers that extend or bend the
format (llama.cpp returns chat-style `logprobs.content` from the completions endpoint) work too.
Failures become BackendError with `retryable` set the way the client's retry layer needs it: 429 (with
its Retry-After), 5xx, timeouts and dropped connections are retryable; other 4xx are not; a server
that was never reached is not either (it is a wrong URL or a server that is down, and retrying would
only delay the error).

Prompt distributions (the all-at-once simulator) are read from completions logprobs, in one of two ways:

* ``echo``: one request with ``echo=true`` and ``logprobs=k`` returns the top-k alternatives at every
  prompt token (vLLM, the OpenAI API's legacy completion models). One forward pass per prompt.
  Candidates must be single tokens; a longer one (e.g. "10" under a digit-splitting tokenizer) gets
  probability 0, with a warning.
* ``per_position``: for each marked segment, one request for the prompt up to that segment with
  ``max_tokens=1`` and ``logprobs=k`` (llama.cpp, whose server ignores ``echo``). A server with prompt
  caching (llama.cpp does this by default) reuses the shared prefix between these requests. A candidate
  longer than one token is scored as the product of its tokens' probabilities, with one follow-up request
  per first token; when one candidate extends another ("1" and "10"), the shorter one's probability
  excludes the mass that continues into the longer, as in the 'hf' backend.

Either way a candidate outside the top k gets probability 0, as in the paper's implementation (which read
the top 15); ``distribution_top_k`` sets k (OpenAI's completions API allows at most 5, llama.cpp and vLLM
more). ``prompt_logprobs="auto"`` probes once, preferring ``echo``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, cast

from neuroscribe.errors import BackendError, ConfigError
from neuroscribe.llm import BACKENDS
from neuroscribe.llm.base import (
    BackendSpec,
    Capability,
    Choice,
    Completion,
    CompletionRequest,
    DistributionRequest,
    TokenLogprob,
    Usage,
)
from neuroscribe.llm.client import capability_error
from neuroscribe.llm.limits import RateLimitedError, retry_after_seconds
from neuroscribe.llm.options import answer_tag, option_values, require_at_least, require_one_of
from neuroscribe.llm.usage import TokenCounter
from neuroscribe.registry import build_options

if TYPE_CHECKING:
    import openai  # imported when a backend is built, so validating a config never pays for it

logger = logging.getLogger(__name__)

PromptLogprobsMode = Literal["auto", "echo", "per_position", "none"]
TextSchemaField = Literal["response_format", "json_schema"]

DEFAULT_API_KEY_ENV = "OPENAI_API_KEY"
DEFAULT_CONTEXT_LENGTH = 8192
CONNECT_TIMEOUT_S = 10.0
"""Seconds to open a connection; a black-holed address fails this fast, not after the request timeout."""
MAX_MULTI_TOKEN_DEPTH = 4
"""Longest candidate, in tokens, that per-position reading follows (e.g. "10" is two tokens for SmolLM2)."""

ALL_CAPABILITIES = frozenset(Capability)
OPENAI_API_CHAT_CAPABILITIES = frozenset(
    {Capability.CHAT, Capability.GENERATED_LOGPROBS, Capability.JSON_SCHEMA, Capability.SEED}
)
"""The OpenAI API's chat models: no text completions, hence no prompt distributions."""

JsonDict = dict[str, Any]
DEFAULT_DISTRIBUTION_TOP_K = 20


@dataclass(frozen=True, kw_only=True)
class OpenAIOptions:
    """Settings of the 'openai' backend (`[backends.NAME.options]` in a config).

    `prompt_logprobs` and `distribution_top_k` change the probabilities of distribution requests, so when
    either differs from its default the backend's name (part of every response-cache key) says so, e.g.
    'openai:http://host/v1:model[distribution_top_k=5]'; default settings keep the plain name.
    """

    prompt_logprobs: PromptLogprobsMode = "auto"
    """How prompt distributions are read from /completions logprobs: 'echo' (one request per prompt, vLLM and
    the OpenAI API's legacy completion models), 'per_position' (one request per marked segment, llama.cpp),
    'auto' (probe once, preferring echo) or 'none' (the backend does not offer prompt distributions)."""
    distribution_top_k: int = DEFAULT_DISTRIBUTION_TOP_K
    """Alternatives k asked for at each read position (`logprobs=k`); a candidate outside the top k gets
    probability 0. The OpenAI API allows at most 5, llama.cpp and vLLM more."""
    text_schema_field: TextSchemaField = "response_format"
    """How a text-completion request asks for structured output: the OpenAI-style `response_format` (vLLM),
    or llama.cpp's `json_schema` field (its /v1/completions ignores the former)."""

    def __post_init__(self) -> None:
        require_one_of(PromptLogprobsMode, prompt_logprobs=self.prompt_logprobs)
        require_one_of(TextSchemaField, text_schema_field=self.text_schema_field)
        require_at_least(1, distribution_top_k=self.distribution_top_k)


def _api_key(spec_env: str | None, base_url: str | None) -> str:
    env = spec_env or (DEFAULT_API_KEY_ENV if base_url is None else None)
    if env is None:
        return "not-needed"  # local servers (llama.cpp, vLLM, Ollama) usually run without a key
    value = os.environ.get(env, "").strip()
    if not value:
        where = base_url or "the OpenAI API"
        raise ConfigError(
            f"the environment variable {env} is not set; it must hold the API key for {where}. "
            f"Export it (export {env}=...) or name another variable with api_key_env in the backend spec."
        )
    return value


@BACKENDS.register("openai")
class OpenAIBackend:
    """A model behind an OpenAI-compatible HTTP API."""

    options_type: ClassVar[type[OpenAIOptions]] = OpenAIOptions

    def __init__(
        self,
        *,
        model: str,
        base_url: str | None = None,
        api_key_env: str | None = None,
        context_length: int | None = None,
        capabilities: frozenset[Capability] | None = None,
        prompt_logprobs: PromptLogprobsMode = OpenAIOptions.prompt_logprobs,
        distribution_top_k: int = OpenAIOptions.distribution_top_k,
        name: str | None = None,
        validate_model: bool = True,
        text_schema_field: TextSchemaField = OpenAIOptions.text_schema_field,
    ) -> None:
        """`prompt_logprobs`, `distribution_top_k` and `text_schema_field` are the fields of `OpenAIOptions`
        (see there). Constructor-only: `capabilities` (declared up front instead of learnt from the server),
        `name` (replaces the derived name, options tag included) and `validate_model` (list the server's
        models once before the first request)."""
        import openai

        options = build_options(
            OpenAIOptions,
            {
                "prompt_logprobs": prompt_logprobs,
                "distribution_top_k": distribution_top_k,
                "text_schema_field": text_schema_field,
            },
            "openai backend",
        )
        self.options = options
        self.model = model
        self.base_url = base_url.rstrip("/") if base_url else None
        self.api_key_env = api_key_env
        self._client = openai.AsyncOpenAI(
            api_key=_api_key(api_key_env, self.base_url),
            base_url=self.base_url,
            max_retries=0,  # the client layer retries, with backoff that honours Retry-After
            timeout=openai.Timeout(None, connect=CONNECT_TIMEOUT_S),  # the client layer bounds the whole request
        )
        plain_name = f"openai:{model}" if self.base_url is None else f"openai:{self.base_url}:{model}"
        self._name = name or (plain_name + answer_tag(options, "prompt_logprobs", "distribution_top_k"))
        self._context_length = context_length or DEFAULT_CONTEXT_LENGTH
        if capabilities is None:
            capabilities = ALL_CAPABILITIES if self.base_url is not None else _openai_api_capabilities(model)
        if options.prompt_logprobs == "none":
            capabilities = capabilities - {Capability.PROMPT_DISTRIBUTIONS}
        self._capabilities = capabilities
        self._prompt_logprobs: PromptLogprobsMode = options.prompt_logprobs
        self.distribution_top_k = options.distribution_top_k
        self._counter = TokenCounter(model)
        self._validate_model = validate_model
        self._model_check: asyncio.Task[None] | None = None
        self._reached = False
        self._warned_multi_token = False
        self._warned_usage = False
        self._text_schema_field: TextSchemaField = options.text_schema_field

    @classmethod
    def from_spec(cls, spec: BackendSpec, options: OpenAIOptions) -> Self:
        return cls(
            model=spec.model,
            base_url=spec.base_url,
            api_key_env=spec.api_key_env,
            context_length=spec.context_length,
            **option_values(options),
        )

    @property
    def url(self) -> str:
        return str(self._client.base_url).rstrip("/")

    @property
    def name(self) -> str:
        return self._name

    @property
    def capabilities(self) -> frozenset[Capability]:
        return self._capabilities

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def in_process(self) -> bool:
        return False  # requests go over HTTP

    def count_tokens(self, text: str) -> int:
        return self._counter.count(text)

    async def aclose(self) -> None:
        await self._client.close()

    async def complete(self, request: CompletionRequest) -> Completion:
        await self._check_model()
        if request.distributions is not None:
            return await self._distributions(request.distributions)
        if request.messages is not None:
            return await self._chat(request)
        return await self._text(request)

    # -- requests ---------------------------------------------------------------------------------------

    def _sampling_body(self, request: CompletionRequest) -> JsonDict:
        s = request.sampling
        # The OpenAI API's chat endpoint wants max_completion_tokens (newer models refuse max_tokens); every
        # other server and endpoint knows max_tokens.
        length_field = "max_completion_tokens" if self.base_url is None and request.messages else "max_tokens"
        body: JsonDict = {"model": self.model, length_field: s.max_tokens, "temperature": s.temperature}
        if s.n != 1:  # some servers (Ollama) reject n even when it is 1
            body["n"] = s.n
        if s.top_p != 1.0:
            body["top_p"] = s.top_p
        if s.seed is not None and Capability.SEED in self._capabilities:
            body["seed"] = s.seed
        if s.stop:
            body["stop"] = list(s.stop)
        return body

    async def _chat(self, request: CompletionRequest) -> Completion:
        assert request.messages is not None
        body = self._sampling_body(request)
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
        if request.top_logprobs > 0:
            body["logprobs"] = True
            body["top_logprobs"] = request.top_logprobs
        if request.json_schema is not None:
            body["response_format"] = _response_format(request.json_schema)
        data = await self._post("/chat/completions", body, request)
        choices = tuple(
            Choice(
                text=(c.get("message") or {}).get("content") or "",
                logprobs=_parse_logprobs(c.get("logprobs")) if request.top_logprobs > 0 else None,
                finish_reason=c.get("finish_reason"),
            )
            for c in data.get("choices") or []
        )
        prompt_text = "\n".join(m.content for m in request.messages)
        return Completion(choices=choices, usage=self._usage(data, prompt_text, choices), model=self._model_of(data))

    async def _text(self, request: CompletionRequest) -> Completion:
        assert request.prompt is not None
        body = self._sampling_body(request)
        body["prompt"] = request.prompt
        if request.top_logprobs > 0:
            body["logprobs"] = request.top_logprobs
        if request.json_schema is not None:
            response_format = _response_format(request.json_schema)
            if self._text_schema_field == "json_schema":
                body["json_schema"] = response_format["json_schema"]["schema"]
            else:
                body["response_format"] = response_format
        data = await self._post("/completions", body, request)
        choices = tuple(
            Choice(
                text=c.get("text") or "",
                logprobs=_parse_logprobs(c.get("logprobs")) if request.top_logprobs > 0 else None,
                finish_reason=c.get("finish_reason"),
            )
            for c in data.get("choices") or []
        )
        return Completion(choices=choices, usage=self._usage(data, request.prompt, choices), model=self._model_of(data))

    async def _post(self, path: str, body: JsonDict, request: CompletionRequest | None = None) -> JsonDict:
        import openai

        try:
            response = await self._client.post(path, body=body, cast_to=cast(Any, object))
        except openai.APIError as exc:
            raise self._translate(exc, path, request) from exc
        self._reached = True
        if not isinstance(response, dict):
            raise BackendError(f"{self.url}{path} answered with something other than a JSON object: {response!r:.200}")
        return cast(JsonDict, response)

    async def _check_model(self) -> None:
        """Ask the server once which models it serves, so a typo fails with the list instead of later.
        Concurrent first requests share one check, and its verdict (an unknown model) sticks."""
        if not self._validate_model:
            return
        loop = asyncio.get_running_loop()
        if self._model_check is None or self._model_check.get_loop() is not loop:
            self._model_check = loop.create_task(self._list_and_check_model())
        await asyncio.shield(self._model_check)  # a caller's timeout must not cancel the shared check

    async def _list_and_check_model(self) -> None:
        import openai

        try:
            listing = await self._client.get("/models", cast_to=cast(Any, object))
        except openai.APIStatusError:
            return  # the server does not list models; the first request will tell
        except openai.APIError as exc:
            raise self._translate(exc, "/models", None) from exc
        self._reached = True
        known = _listed_models(listing)
        if known and self.model not in known:
            shown = ", ".join(sorted(known)[:20]) + (" ..." if len(known) > 20 else "")
            raise BackendError(
                f"unknown model {self.model!r} at {self.url}; the server offers: {shown}. "
                "Fix the model name in the backend spec."
            )

    def _model_of(self, data: Mapping[str, Any]) -> str:
        return str(data.get("model") or self.model)

    def _usage(self, data: Mapping[str, Any], prompt: str, choices: Sequence[Choice]) -> Usage:
        """The server's token counts; estimated (and said once) when a server leaves `usage` out, so cost
        accounting never silently reads zero."""
        usage = data.get("usage")
        if isinstance(usage, Mapping) and usage.get("prompt_tokens") is not None:
            details = usage.get("prompt_tokens_details") or {}
            return Usage(
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(usage.get("completion_tokens") or 0),
                cached_prompt_tokens=int(details.get("cached_tokens") or 0),
            )
        if not self._warned_usage:
            self._warned_usage = True
            logger.warning("%s returns no usage; token counts and costs are estimated with count_tokens", self.url)
        return Usage(
            prompt_tokens=self.count_tokens(prompt),
            completion_tokens=sum(self.count_tokens(c.text) for c in choices),
        )

    # -- prompt distributions ---------------------------------------------------------------------------

    async def _distributions(self, request: DistributionRequest) -> Completion:
        _check_first_marked_segment(request)
        mode = self._prompt_logprobs
        if mode == "auto":
            echoed = await self._try_echo(request)
            if echoed is not None:
                self._prompt_logprobs = "echo"
                return echoed
            self._prompt_logprobs = mode = "per_position"
        if mode == "echo":
            echoed = await self._try_echo(request)
            if echoed is None:
                raise capability_error(
                    self.name, Capability.PROMPT_DISTRIBUTIONS, f"{self.url} ignored echo=true on /completions"
                )
            return echoed
        return await self._per_position(request)

    def _distribution_body(self, prompt: str) -> JsonDict:
        return {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": self.distribution_top_k,
        }

    async def _try_echo(self, request: DistributionRequest) -> Completion | None:
        """One pass over the whole prompt; None when the server does not echo prompt logprobs."""
        prompt = "".join(s.text for s in request.segments)
        data = await self._post("/completions", {**self._distribution_body(prompt), "echo": True})
        choices = data.get("choices") or []
        logprobs = choices[0].get("logprobs") if choices else None
        if not isinstance(logprobs, Mapping):
            return None
        offsets, tops, tokens = logprobs.get("text_offset"), logprobs.get("top_logprobs"), logprobs.get("tokens")
        if not isinstance(offsets, list) or not isinstance(tops, list) or len(offsets) < 2:
            return None
        position_of_offset = {offset: i for i, offset in enumerate(offsets) if offset < len(prompt)}
        rows = []
        start = 0
        for index, segment in enumerate(request.segments):
            if segment.read_distribution:
                position = position_of_offset.get(start)
                if position is None:
                    raise BackendError(
                        f"{self.url}: no prompt token starts where marked segment {index} ({segment.text!r}) does "
                        "(the server's tokenizer merged it with the text before it). Start marked segments "
                        "after a separator such as a tab or newline, or use prompt_logprobs='per_position'."
                    )
                token = tokens[position] if isinstance(tokens, list) and position < len(tokens) else None
                if isinstance(token, str) and not (segment.text.startswith(token) or token.startswith(segment.text)):
                    raise BackendError(
                        f"{self.url}: the echoed token at character {start} is {token!r}, not the start of marked "
                        f"segment {index} ({segment.text!r}); the server's text_offset does not count characters "
                        "of the prompt (e.g. raw byte-level tokens after non-ASCII text). Use "
                        "prompt_logprobs='per_position'."
                    )
                top = tops[position] if isinstance(tops[position], Mapping) else {}
                rows.append(self._candidate_row(request.candidates, top))
            start += len(segment.text)
        return Completion(distributions=tuple(rows), usage=self._usage(data, prompt, ()), model=self._model_of(data))

    def _candidate_row(self, candidates: Sequence[str], top: Mapping[str, float]) -> tuple[float, ...]:
        row = []
        for candidate in candidates:
            if candidate in top:
                row.append(math.exp(top[candidate]))
                continue
            if not self._warned_multi_token and any(candidate.startswith(t) and t != candidate for t in top):
                self._warned_multi_token = True
                logger.warning(
                    "%s: candidate %r spans several tokens; echo mode reads single tokens, so it gets "
                    "probability 0. Use prompt_logprobs='per_position' to score multi-token candidates.",
                    self.name,
                    candidate,
                )
            row.append(0.0)
        return tuple(row)

    async def _per_position(self, request: DistributionRequest) -> Completion:
        rows = []
        usage = Usage()
        prefix = ""
        for segment in request.segments:
            if segment.read_distribution:
                probabilities, used = await self._candidate_probabilities(prefix, request.candidates, depth=0)
                rows.append(tuple(probabilities[c] for c in request.candidates))
                usage = usage + used
            prefix += segment.text
        return Completion(distributions=tuple(rows), usage=usage, model=self.model)

    async def _candidate_probabilities(
        self, prefix: str, candidates: Sequence[str], depth: int
    ) -> tuple[dict[str, float], Usage]:
        """P(candidate | prefix) from the top-k next tokens, following multi-token candidates token by token."""
        data = await self._post("/completions", self._distribution_body(prefix))
        usage = self._usage(data, prefix, ())
        choices = data.get("choices") or []
        parsed = _parse_logprobs(choices[0].get("logprobs")) if choices else None
        if not parsed:
            self._capabilities = self._capabilities - {Capability.PROMPT_DISTRIBUTIONS}
            raise capability_error(
                self.name, Capability.PROMPT_DISTRIBUTIONS, f"{self.url} returned no logprobs from /completions"
            )
        top = dict(parsed[0].top) or {parsed[0].token: parsed[0].logprob}
        probabilities = {c: math.exp(top[c]) if c in top else 0.0 for c in candidates}
        if depth + 1 >= MAX_MULTI_TOKEN_DEPTH:
            return probabilities, usage
        continuations: dict[str, list[str]] = {}
        for candidate in candidates:
            if candidate in top:
                continue
            for token in top:
                if token and candidate.startswith(token):
                    continuations.setdefault(token, []).append(candidate)
        for token, longer in continuations.items():
            rests = [c[len(token) :] for c in longer]
            tail, used = await self._candidate_probabilities(prefix + token, rests, depth + 1)
            usage = usage + used
            for candidate, rest in zip(longer, rests, strict=True):
                probabilities[candidate] += math.exp(top[token]) * tail[rest]
        return _exclusive(probabilities) if depth == 0 else probabilities, usage

    # -- errors -----------------------------------------------------------------------------------------

    def _translate(self, exc: openai.APIError, path: str, request: CompletionRequest | None) -> BackendError:
        import openai

        where = f"{self.url}{path}"
        if isinstance(exc, openai.APIConnectionError):  # refused, reset, or no connection within CONNECT_TIMEOUT_S
            timed_out = isinstance(exc, openai.APITimeoutError)
            cause = f"no connection within {CONNECT_TIMEOUT_S:g} s" if timed_out else str(exc.__cause__ or exc)
            if not self._reached:
                return BackendError(
                    f"cannot reach {where} ({cause}). Is the server running, and is base_url right?",
                    retryable=False,
                )
            return BackendError(f"lost the connection to {where} ({cause})", retryable=True)
        if not isinstance(exc, openai.APIStatusError):
            return BackendError(f"{where}: {exc}")
        status = exc.status_code
        message = _error_message(exc)
        if status == 429:
            headers = exc.response.headers
            retry_after = retry_after_seconds(headers.get("retry-after"))
            if retry_after is None and headers.get("retry-after-ms"):
                retry_after = (retry_after_seconds(headers.get("retry-after-ms")) or 0.0) / 1000.0
            return RateLimitedError(f"{where} is rate limiting (429): {message}", retry_after_s=retry_after)
        if status >= 500:
            return BackendError(f"{where} failed with {status}: {message}", retryable=True, status_code=status)
        if status in (401, 403):
            env = self.api_key_env or (DEFAULT_API_KEY_ENV if self.base_url is None else "(none)")
            return BackendError(
                f"{where} refused the API key ({status}: {message}). Check the key in the environment variable {env}.",
                status_code=status,
            )
        lowered = message.lower()
        if status == 404 and "model" in lowered:
            return BackendError(
                f"unknown model {self.model!r} at {where} (404: {message}). Fix the model name in the backend spec.",
                status_code=404,
            )
        missing = _missing_capability(status, lowered, path, request)
        if missing is not None:
            self._capabilities = self._capabilities - {missing}
            error = capability_error(self.name, missing, f"{where} answered {status}: {message}")
            error.status_code = status
            return error
        return BackendError(f"{where} rejected the request ({status}): {message}", status_code=status)


def _check_first_marked_segment(request: DistributionRequest) -> None:
    """Nothing predicts a prompt's first token, so a marked segment needs text before it."""
    for index, segment in enumerate(request.segments):
        if segment.read_distribution:
            raise ConfigError(
                f"marked segment {index} ({segment.text!r}) opens the prompt; nothing predicts the first token, "
                "so put at least one non-empty unmarked segment before it"
            )
        if segment.text:
            return


def _exclusive(probabilities: dict[str, float]) -> dict[str, float]:
    """Where one candidate extends another ("1" and "10"), the shorter keeps only the mass that does not
    continue into the longer ("1" means "1" not followed by "0"), as the 'hf' backend defines it, so the
    candidates never count the same continuation twice."""
    exclusive = dict(probabilities)
    for short in probabilities:
        for long in probabilities:
            extends = long != short and long.startswith(short)
            nearest = extends and not any(
                middle not in (short, long) and middle.startswith(short) and long.startswith(middle)
                for middle in probabilities
            )
            if nearest:
                exclusive[short] -= probabilities[long]
    return {c: max(0.0, p) for c, p in exclusive.items()}


def _missing_capability(status: int, message: str, path: str, request: CompletionRequest | None) -> Capability | None:
    """Which capability a 4xx says the server lacks, when the answer makes that clear."""
    if status in (404, 405) and path == "/completions":
        return Capability.PROMPT_DISTRIBUTIONS if request is None else Capability.TEXT_COMPLETION
    if status in (404, 405) and path == "/chat/completions":
        return Capability.CHAT
    if (
        request is not None
        and request.json_schema is not None
        and ("response_format" in message or "json_schema" in message)
    ):
        return Capability.JSON_SCHEMA
    if "echo" in message:
        return Capability.PROMPT_DISTRIBUTIONS
    if request is not None and request.top_logprobs > 0 and "logprobs" in message:
        return Capability.GENERATED_LOGPROBS
    return None


def _openai_api_capabilities(model: str) -> frozenset[Capability]:
    legacy_completion = model.startswith(("davinci", "babbage")) or "instruct" in model
    if legacy_completion:
        return ALL_CAPABILITIES - {Capability.JSON_SCHEMA}
    return OPENAI_API_CHAT_CAPABILITIES


def _response_format(json_schema: str) -> JsonDict:
    try:
        schema = json.loads(json_schema)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"CompletionRequest.json_schema is not valid JSON: {exc}") from exc
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": schema, "strict": True}}


def _error_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, Mapping):
        inner = body.get("error", body)
        if isinstance(inner, Mapping) and inner.get("message"):
            return str(inner["message"])
        if isinstance(inner, str):
            return inner
    return str(exc.message)


def _listed_models(listing: object) -> set[str]:
    if not isinstance(listing, Mapping):
        return set()
    names: set[str] = set()
    for entry in listing.get("data") or []:
        if isinstance(entry, Mapping):
            names.add(str(entry.get("id")))
            names.update(str(alias) for alias in entry.get("aliases") or [])
    return names


def _parse_logprobs(logprobs: object) -> tuple[TokenLogprob, ...] | None:
    """Generated-token logprobs in either shape servers use: chat-style `content` (OpenAI chat, llama.cpp
    everywhere) or the legacy completions arrays (`tokens`, `token_logprobs`, `top_logprobs`)."""
    if not isinstance(logprobs, Mapping):
        return None
    content = logprobs.get("content")
    if isinstance(content, list):
        return tuple(
            TokenLogprob(
                str(item.get("token")),
                float(item.get("logprob")),
                _sorted_top(
                    (str(alt.get("token")), float(alt.get("logprob"))) for alt in item.get("top_logprobs") or []
                ),
            )
            for item in content
        )
    tokens, token_logprobs, tops = logprobs.get("tokens"), logprobs.get("token_logprobs"), logprobs.get("top_logprobs")
    if not isinstance(tokens, list) or not isinstance(token_logprobs, list):
        return None
    tops = tops if isinstance(tops, list) else [None] * len(tokens)
    return tuple(
        TokenLogprob(
            str(token),
            float(lp) if lp is not None else math.nan,
            _sorted_top((str(k), float(v)) for k, v in (top or {}).items()),
        )
        for token, lp, top in zip(tokens, token_logprobs, tops, strict=False)
    )


def _sorted_top(alternatives: Any) -> tuple[tuple[str, float], ...]:
    return tuple(sorted(alternatives, key=lambda pair: -pair[1]))


__all__ = ["OpenAIBackend", "OpenAIOptions", "PromptLogprobsMode", "TextSchemaField"]
