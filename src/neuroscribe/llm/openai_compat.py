"""Any OpenAI-compatible server through the official `openai` package: the OpenAI API, vLLM, llama.cpp's
server, Ollama, OpenRouter.

The backend speaks the plain HTTP API and reads answers as JSON, so servers that extend or bend the
format (llama.cpp returns chat-style `logprobs.content` from the completions endpoint) work too.
Failures become BackendError with `retryable` set the way the client's retry layer needs it: 429 (with
its Retry-After), 5xx, timeouts and dropped connections are retryable; other 4xx are not; a server
that was never reached is not either (it is a wrong URL or a server that is down, and retrying would
only delay the error).

Prompt distributions (the all-at-once simulator) are read from completions logprobs, in one of three ways:

* ``prompt_logprobs`` (vLLM): the prompt goes as token ids (from the server's ``/tokenize``, or the model's own
  tokenizer when the model is a local directory), so every read position is known by construction, and
  ``prompt_logprobs=k`` returns, for every prompt token, its log-probability and the top-k alternatives keyed
  by token id. One forward pass per prompt reads every position; a candidate of several tokens ("10" under
  a digit-splitting tokenizer) is followed with one more batched request of next-token logprobs (by token id)
  at the slots where its first token has probability, exactly as the 'hf' backend scores it. The answer is
  checked against the ids sent (one entry per token, each holding its token, at least k alternatives), so a
  server that re-tokenizes or truncates is an error, never a silent zero.
* ``echo``: one request with ``echo=true`` and ``logprobs=k`` returns the top-k alternatives at every
  prompt token (vLLM, the OpenAI API's legacy completion models). One forward pass per prompt.
  Candidates must be single tokens; a longer one (e.g. "10" under a digit-splitting tokenizer) gets
  probability 0, with a warning.
* ``per_position``: for each marked segment, one request for the prompt up to that segment with
  ``max_tokens=1`` and ``logprobs=k`` (llama.cpp, whose server ignores ``echo``). A server with prompt
  caching (llama.cpp does this by default) reuses the shared prefix between these requests. A candidate
  longer than one token is scored as the product of its tokens' probabilities, with one follow-up request
  per first token; when one candidate continues another's token ("1" then "0"), the shorter one's probability
  excludes the mass that continues into the longer, as in the 'hf' backend (where "10" is one token, the
  token "1" keeps its own probability).

Either way a candidate outside the top k gets probability 0, as in the paper's implementation (which read
the top 15); ``distribution_top_k`` sets k (OpenAI's completions API allows at most 5, llama.cpp and vLLM
more). ``prompt_logprobs="auto"`` probes once per backend, preferring ``prompt_logprobs``, then ``echo``
(the OpenAI API has no ``prompt_logprobs``: ``echo`` is tried first there).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self, TypeVar, cast

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
    candidate_token_ids,
)
from neuroscribe.llm.client import capability_error
from neuroscribe.llm.limits import RateLimitedError, retry_after_seconds
from neuroscribe.llm.options import answer_tag, option_values, require_at_least, require_one_of
from neuroscribe.llm.usage import TokenCounter
from neuroscribe.registry import build_options

if TYPE_CHECKING:
    import openai  # imported when a backend is built, so validating a config never pays for it

logger = logging.getLogger(__name__)

PromptLogprobsMode = Literal["auto", "prompt_logprobs", "echo", "per_position", "none"]
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
_Key = TypeVar("_Key", str, tuple[int, ...])
"""A candidate as text (echo, per_position) or as token ids (prompt_logprobs)."""
DEFAULT_DISTRIBUTION_TOP_K = 20
"""Alternatives read per position where the server allows it (vLLM's default --max-logprobs is 20)."""
OPENAI_API_MAX_LOGPROBS = 5
"""The OpenAI API's completions endpoint returns at most 5 alternatives per token."""
TOKEN_ID_PREFIX = "token_id:"
"""How vLLM names a token in logprobs under `return_tokens_as_token_ids`."""
TOKENIZE_CACHE_SIZE = 65536
"""Distinct texts whose token ids are remembered (segments repeat: 'unknown', a tab, common tokens)."""
TOKENIZE_CONCURRENCY = 16
"""/tokenize requests in flight at once for one distribution request."""
_MAX_ALLOWED = re.compile(r"greater than max allowed:\s*(\d+)")


@dataclass(frozen=True, kw_only=True)
class OpenAIOptions:
    """Settings of the 'openai' backend (`[backends.NAME.options]` in a config).

    `prompt_logprobs` and `distribution_top_k` change the probabilities of distribution requests, so when
    either differs from its default the backend's name (part of every response-cache key) says so, e.g.
    'openai:http://host/v1:model[distribution_top_k=5]'; default settings keep the plain name.
    """

    prompt_logprobs: PromptLogprobsMode = "auto"
    """How prompt distributions are read from /completions logprobs: 'prompt_logprobs' (the prompt as token
    ids with `prompt_logprobs=k`, read by token id: vLLM; exact positions), 'echo' (one request per prompt with
    `echo=true`, located by text offsets: vLLM and the OpenAI API's legacy completion models), 'per_position'
    (one request per marked segment, llama.cpp), 'auto' (probe once, in that order) or 'none' (the backend does
    not offer prompt distributions)."""
    distribution_top_k: int | None = None
    """Alternatives k asked for at each read position (`prompt_logprobs=k` or `logprobs=k`); a candidate
    outside the top k gets probability 0. None: 5 for the OpenAI API (its cap), 20 for other servers (vLLM's
    default --max-logprobs). A server that allows fewer is an error that names its cap."""
    tokenizer: str = "auto"
    """Where 'prompt_logprobs' mode gets token ids: 'server' (its /tokenize), a local tokenizer directory (the
    one the server loaded), or 'auto': the model's own directory when the model name is one (vLLM serving
    `--model DIR` names the model DIR), else the server."""
    text_schema_field: TextSchemaField = "response_format"
    """How a text-completion request asks for structured output: the OpenAI-style `response_format` (vLLM),
    or llama.cpp's `json_schema` field (its /v1/completions ignores the former)."""

    def __post_init__(self) -> None:
        require_one_of(PromptLogprobsMode, prompt_logprobs=self.prompt_logprobs)
        require_one_of(TextSchemaField, text_schema_field=self.text_schema_field)
        require_at_least(1, distribution_top_k=self.distribution_top_k)
        if not self.tokenizer.strip():
            raise ValueError("tokenizer must be 'auto', 'server' or a tokenizer directory; got ''")


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
        distribution_top_k: int | None = OpenAIOptions.distribution_top_k,
        name: str | None = None,
        validate_model: bool = True,
        text_schema_field: TextSchemaField = OpenAIOptions.text_schema_field,
        tokenizer: str = OpenAIOptions.tokenizer,
    ) -> None:
        """`prompt_logprobs`, `distribution_top_k`, `text_schema_field` and `tokenizer` are the fields of
        `OpenAIOptions` (see there). Constructor-only: `capabilities` (declared up front instead of learnt from
        the server), `name` (replaces the derived name, options tag included) and `validate_model` (list the
        server's models once before the first request)."""
        import openai

        options = build_options(
            OpenAIOptions,
            {
                "prompt_logprobs": prompt_logprobs,
                "distribution_top_k": distribution_top_k,
                "text_schema_field": text_schema_field,
                "tokenizer": tokenizer,
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
        self._context_length = context_length or DEFAULT_CONTEXT_LENGTH
        if capabilities is None:
            capabilities = ALL_CAPABILITIES if self.base_url is not None else _openai_api_capabilities(model)
        if options.prompt_logprobs == "none":
            capabilities = capabilities - {Capability.PROMPT_DISTRIBUTIONS}
        self._capabilities = capabilities
        self._prompt_logprobs: PromptLogprobsMode = options.prompt_logprobs
        self.distribution_top_k = self._alternatives(options)
        """Alternatives read at each position; part of the name whenever it is not 20."""
        plain_name = f"openai:{model}" if self.base_url is None else f"openai:{self.base_url}:{model}"
        read = replace(options, distribution_top_k=None if self.distribution_top_k == DEFAULT_DISTRIBUTION_TOP_K
                       else self.distribution_top_k)
        self._name = name or (plain_name + answer_tag(read, "prompt_logprobs", "distribution_top_k"))
        self._counter = TokenCounter(model)
        self._validate_model = validate_model
        self._model_check: asyncio.Task[None] | None = None
        self._reached = False
        self._warned_multi_token = False
        self._warned_usage = False
        self._text_schema_field: TextSchemaField = options.text_schema_field
        self._tokenizer_source = _tokenizer_source(options.tokenizer, model)
        self._local_tokenizer: Any = None
        self._token_ids_cache: dict[str, tuple[int, ...]] = {}
        self._lead_ids: tuple[int, ...] | None = None
        self._probe: tuple[asyncio.AbstractEventLoop, asyncio.Lock] | None = None

    def _alternatives(self, options: OpenAIOptions) -> int:
        """k: the option, else the server's usual cap; more than the OpenAI API allows is refused here."""
        openai_api = self.base_url is None and Capability.PROMPT_DISTRIBUTIONS in self._capabilities
        if options.distribution_top_k is None:
            return OPENAI_API_MAX_LOGPROBS if openai_api else DEFAULT_DISTRIBUTION_TOP_K
        if openai_api and options.distribution_top_k > OPENAI_API_MAX_LOGPROBS:
            raise ConfigError(
                f"openai backend: distribution_top_k = {options.distribution_top_k}, but the OpenAI API returns at "
                f"most {OPENAI_API_MAX_LOGPROBS} alternatives per token; set it to {OPENAI_API_MAX_LOGPROBS} or less "
                "(or leave it unset)"
            )
        return options.distribution_top_k

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
        except ValueError as exc:  # a body that is not JSON (json.JSONDecodeError is a ValueError)
            raise _not_json(self._where(path), exc) from exc
        self._reached = True
        if not isinstance(response, dict):
            raise BackendError(
                f"{self._where(path)} answered with something other than a JSON object: {response!r:.200}"
            )
        return cast(JsonDict, response)

    def _where(self, path: str) -> str:
        """The URL of `path`: relative to base_url, or absolute (/tokenize lives beside /v1, not under it)."""
        return path if "://" in path else f"{self.url}{path}"

    async def prepare(self) -> None:
        """The one-time model check, which the client runs before (and timed apart from) the first request."""
        await self._check_model()

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
        except ValueError as exc:
            raise _not_json(self._where("/models"), exc) from exc
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
        if self._prompt_logprobs == "auto":
            async with self._probe_lock():  # concurrent first requests wait for one probe
                if self._prompt_logprobs == "auto":
                    return await self._probe_prompt_logprobs(request)
        mode = self._prompt_logprobs
        if mode == "prompt_logprobs":
            read = await self._try_prompt_logprobs(request)
            if isinstance(read, str):
                raise capability_error(self.name, Capability.PROMPT_DISTRIBUTIONS, read)
            return read
        if mode == "echo":
            echoed = await self._try_echo(request)
            if echoed is None:
                raise capability_error(
                    self.name, Capability.PROMPT_DISTRIBUTIONS, f"{self.url} ignored echo=true on /completions"
                )
            return echoed
        return await self._per_position(request)

    def _probe_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._probe is None or self._probe[0] is not loop:
            self._probe = (loop, asyncio.Lock())
        return self._probe[1]

    async def _probe_prompt_logprobs(self, request: DistributionRequest) -> Completion:
        """Answer the first request in the most exact mode the server has, and keep that mode."""
        modes: list[PromptLogprobsMode] = ["echo"] if self.base_url is None else ["prompt_logprobs", "echo"]
        for mode in modes:
            try:
                read = await (self._try_prompt_logprobs(request) if mode == "prompt_logprobs"
                              else self._try_echo(request))
            except BackendError as error:  # a server that refuses token-id prompts or the field: try the next mode
                if mode != "prompt_logprobs" or error.status_code not in (400, 422) or _MAX_ALLOWED.search(str(error)):
                    raise
                read = str(error)
            if isinstance(read, Completion):
                self._prompt_logprobs = mode
                logger.info("%s: prompt distributions read with %s (%d alternatives)", self.name, mode,
                            self.distribution_top_k)
                return read
            logger.info("%s: no %s mode (%s)", self.name, mode, read or "no echoed logprobs")
        self._prompt_logprobs = "per_position"
        return await self._per_position(request)

    # -- prompt_logprobs mode (token ids in, alternatives by token id out) ------------------------------------------

    async def _try_prompt_logprobs(self, request: DistributionRequest) -> Completion | str:
        """Every marked position read by token id from one `prompt_logprobs` pass over the token-id prompt, then
        multi-token candidates followed; a string says why the server has no such mode."""
        texts = [segment.text for segment in request.segments]
        encoded = await self._token_ids([*texts, *request.candidates])
        if isinstance(encoded, str):
            return encoded
        lead = await self._leading_special_ids()
        if isinstance(lead, str):
            return lead
        ids, slots = list(lead), []
        for segment, segment_ids in zip(request.segments, encoded[: len(texts)], strict=True):
            if segment.read_distribution:
                slots.append(len(ids))
            ids.extend(segment_ids)
        candidates = candidate_token_ids(request.candidates, encoded[len(texts) :])
        body = {"model": self.model, "prompt": ids, "max_tokens": 1, "temperature": 0.0,
                "prompt_logprobs": self.distribution_top_k}
        data = await self._post("/completions", body)
        choices = data.get("choices") or []
        entries = choices[0].get("prompt_logprobs") if choices else None
        if not isinstance(entries, list):
            return (f"{self.url}/completions ignored prompt_logprobs: its answer has no choices[0].prompt_logprobs, "
                    f"expected one entry per prompt token ({len(ids)})")
        self._check_prompt_entries(entries, ids, slots, request)
        first_tokens = sorted({c[0] for c in candidates})
        probability: dict[tuple[int, ...], list[float]] = {
            (t,): [_entry_probability(entries[slot], t) for slot in slots] for t in first_tokens
        }
        usage = self._usage(data, "".join(texts), ())
        usage = usage + await self._follow_candidates(ids, slots, candidates, probability)
        rows = [_exclusive({c: probability[c][i] for c in candidates}) for i in range(len(slots))]
        return Completion(
            distributions=tuple(tuple(row[c] for c in candidates) for row in rows),
            usage=usage,
            model=self._model_of(data),
        )

    def _check_prompt_entries(
        self, entries: list[Any], ids: Sequence[int], slots: Sequence[int], request: DistributionRequest
    ) -> None:
        """The answer must be the prompt that was sent, read with the alternatives asked for: else an error naming
        the position, never a probability of 0 read from a misaligned or truncated answer."""
        where = f"{self.url}/completions (prompt_logprobs)"
        if len(entries) != len(ids):
            raise BackendError(
                f"{where} returned {len(entries)} entries for a prompt of {len(ids)} token ids; the server did not "
                "read the prompt as the ids sent (a proxy that re-tokenizes text?). Use prompt_logprobs='echo'."
            )
        for position in range(1, len(ids)):
            entry = entries[position]
            if not isinstance(entry, Mapping):
                raise BackendError(
                    f"{where}: the entry at prompt position {position} is {entry!r}; only the first token may have "
                    f"none. Expected the log-probability of token {ids[position]} and its top "
                    f"{self.distribution_top_k} alternatives."
                )
            if str(ids[position]) not in entry:
                raise BackendError(
                    f"{where}: the entry at prompt position {position} does not hold the prompt's token "
                    f"{ids[position]} (it holds {', '.join(list(entry)[:5])}); the server's tokenization differs "
                    "from the prompt's."
                )
        marked = [i for i, segment in enumerate(request.segments) if segment.read_distribution]
        for index, slot in zip(marked, slots, strict=True):
            self._check_read_position(entries[slot], ids[slot], slot, request.segments[index].text, where)

    def _check_read_position(self, entry: Mapping[str, Any], token: int, position: int, text: str, where: str) -> None:
        actual = entry[str(token)]
        decoded = actual.get("decoded_token") if isinstance(actual, Mapping) else None
        seen, wanted = (decoded.strip(), text.strip()) if isinstance(decoded, str) else ("", "")
        if seen and "\ufffd" not in seen and not (wanted.startswith(seen) or seen.startswith(wanted)):
            raise BackendError(
                f"{where}: the server reads prompt position {position} as {decoded!r}, but the marked segment there is "
                f"{text!r}; the tokenizer that built the prompt ({self._tokenizer_source}) is not the server's. Set "
                "tokenizer = 'server' in the backend options."
            )
        rank = actual.get("rank") if isinstance(actual, Mapping) else None
        alternatives = len(entry) - (1 if isinstance(rank, int) and rank > self.distribution_top_k else 0)
        if alternatives < self.distribution_top_k:
            raise BackendError(
                f"{where}: {alternatives} alternatives at prompt position {position} (marked segment {text!r}), "
                f"{self.distribution_top_k} were asked for; a candidate outside them would read as probability 0. "
                "Set distribution_top_k to what the server returns."
            )

    async def _follow_candidates(
        self,
        ids: Sequence[int],
        slots: Sequence[int],
        candidates: Sequence[tuple[int, ...]],
        probability: dict[tuple[int, ...], list[float]],
    ) -> Usage:
        """Extend `probability` (token prefix -> its probability at each slot) to every candidate by the chain
        rule: for a prefix that a longer candidate continues, one prompt per slot where the prefix has
        probability (the prompt up to the slot, then the prefix) asks for the next token's top k by token id.
        All prompts of one prefix length go in one batched request; the server's prefix cache shares their
        common start."""
        usage = Usage()
        for length in range(1, max(len(c) for c in candidates)):
            extended = sorted({c[: length + 1] for c in candidates if len(c) > length})
            asks = [(p, i) for p in sorted({q[:length] for q in extended})
                    for i in range(len(slots)) if probability[p][i] > 0.0]
            tops: dict[tuple[tuple[int, ...], int], dict[int, float]] = {}
            if asks:
                found, used = await self._next_token_tops([[*ids[: slots[i]], *p] for p, i in asks])
                tops = dict(zip(asks, found, strict=True))
                usage = usage + used
            for q in extended:
                parent, token = q[:length], q[length]
                probability[q] = [
                    probability[parent][i] * math.exp(tops[(parent, i)][token])
                    if token in tops.get((parent, i), {}) else 0.0
                    for i in range(len(slots))
                ]
        return usage

    async def _next_token_tops(self, prompts: list[list[int]]) -> tuple[list[dict[int, float]], Usage]:
        """The top-k next tokens (id -> log-probability) after each token-id prompt, in one request."""
        body = {"model": self.model, "prompt": prompts, "max_tokens": 1, "temperature": 0.0,
                "logprobs": self.distribution_top_k, "return_tokens_as_token_ids": True}
        data = await self._post("/completions", body)
        where = f"{self.url}/completions (next-token logprobs of a multi-token candidate)"
        choices = sorted(data.get("choices") or [], key=lambda c: int(c.get("index") or 0))
        if len(choices) != len(prompts):
            raise BackendError(f"{where}: {len(choices)} choices for {len(prompts)} prompts")
        tops = []
        for prompt, choice in zip(prompts, choices, strict=True):
            listed = (choice.get("logprobs") or {}).get("top_logprobs") or [None]
            top = listed[0] if isinstance(listed[0], Mapping) else {}
            if any(not str(key).startswith(TOKEN_ID_PREFIX) for key in top):
                raise BackendError(
                    f"{where}: alternatives named {', '.join(list(top)[:3])}, not by token id; the server ignored "
                    "return_tokens_as_token_ids. Use prompt_logprobs='echo' or 'per_position'."
                )
            if len(top) < self.distribution_top_k:
                raise BackendError(
                    f"{where}: {len(top)} alternatives after prompt position {len(prompt) - 1}, "
                    f"{self.distribution_top_k} were asked for. Set distribution_top_k to what the server returns."
                )
            tops.append({int(str(key)[len(TOKEN_ID_PREFIX) :]): float(value) for key, value in top.items()})
        return tops, self._usage(data, "", ())

    async def _token_ids(self, texts: Sequence[str]) -> list[tuple[int, ...]] | str:
        """Each text's token ids without special tokens (remembered); a string says why there are none."""
        cache = self._token_ids_cache
        missing = sorted({t for t in texts if t not in cache})
        if missing:
            found = await self._tokenize(missing, special=False)
            if isinstance(found, str):
                return found
            if len(cache) + len(missing) > TOKENIZE_CACHE_SIZE:
                cache.clear()
            cache.update(zip(missing, found, strict=True))
        return [cache[t] for t in texts]

    async def _leading_special_ids(self) -> tuple[int, ...] | str:
        """What the tokenizer puts before any text (BOS where the model uses one): the ids of a text with special
        tokens, up to where its ids without them begin (so a trailing EOS is left out)."""
        if self._lead_ids is None:
            special = await self._tokenize(["x"], special=True)
            bare = await self._token_ids(["x"])
            if isinstance(special, str):
                return special
            if isinstance(bare, str):
                return bare
            with_special, plain = special[0], bare[0]
            starts = [i for i in range(len(with_special) - len(plain) + 1)
                      if with_special[i : i + len(plain)] == plain]
            self._lead_ids = with_special[: starts[0]] if starts else ()
        return self._lead_ids

    async def _tokenize(self, texts: Sequence[str], *, special: bool) -> list[tuple[int, ...]] | str:
        """Token ids from the local tokenizer or the server's /tokenize; a string says why there are none."""
        if self._tokenizer_source != "server":
            tokenizer = await self._load_tokenizer()
            return [tuple(tokenizer(t, add_special_tokens=special)["input_ids"]) for t in texts]
        url = (self.url[: -len("/v1")] if self.url.endswith("/v1") else self.url) + "/tokenize"
        gate = asyncio.Semaphore(TOKENIZE_CONCURRENCY)

        async def one(text: str) -> JsonDict:
            async with gate:
                return await self._post(url, {"model": self.model, "prompt": text, "add_special_tokens": special})

        try:  # the first alone: a server without /tokenize says so once
            answers = [await one(texts[0]), *await asyncio.gather(*(one(t) for t in texts[1:]))]
        except BackendError as error:
            if error.status_code in (404, 405, 501):
                return f"{url} is not there ({error.status_code}), so prompts cannot be sent as token ids"
            raise
        ids = []
        for text, answer in zip(texts, answers, strict=True):
            tokens = answer.get("tokens")
            if not isinstance(tokens, list) or (text and not tokens) or not all(isinstance(t, int) for t in tokens):
                return f"{url} does not answer with token ids (expected {{'tokens': [...]}}, got {answer!r:.120})"
            ids.append(tuple(tokens))
        return ids

    async def _load_tokenizer(self) -> Any:
        if self._local_tokenizer is None:
            self._local_tokenizer = await asyncio.to_thread(_load_local_tokenizer, self._tokenizer_source)
        return self._local_tokenizer

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
                through_token = math.exp(top[token]) * tail[rest]
                probabilities[candidate] += through_token
                if token in probabilities:  # "1" means "1" not followed by "0" ...
                    probabilities[token] -= through_token
        # ... but where "10" is a token of its own, its mass never went through the token "1": nothing to take
        # away from "1" (the by-token-id mode reads it the same way).
        return {c: max(0.0, p) for c, p in probabilities.items()}, usage

    # -- errors -----------------------------------------------------------------------------------------

    def _translate(self, exc: openai.APIError, path: str, request: CompletionRequest | None) -> BackendError:
        import openai

        where = self._where(path)
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
        cap = _MAX_ALLOWED.search(message)
        if status == 400 and cap is not None and "logprobs" in lowered:
            return BackendError(
                f"{where} allows at most {cap.group(1)} log-probabilities per token (vLLM: its --max-logprobs), but "
                f"distribution_top_k is {self.distribution_top_k}: set distribution_top_k = {cap.group(1)} in the "
                f"backend's options, or start the server with --max-logprobs {self.distribution_top_k} ({message})",
                status_code=status,
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


def _exclusive(probabilities: dict[_Key, float]) -> dict[_Key, float]:
    """Where one candidate extends another ("1" and "10"; as texts, or as token ids), the shorter keeps only
    the mass that does not continue into the longer ("1" means "1" not followed by "0"), as the 'hf' backend
    defines it, so the candidates never count the same continuation twice."""
    def starts(long: _Key, short: _Key) -> bool:
        return long != short and long[: len(short)] == short

    exclusive = dict(probabilities)
    for short in probabilities:
        for long in probabilities:
            nearest = starts(long, short) and not any(
                middle not in (short, long) and starts(middle, short) and starts(long, middle)
                for middle in probabilities
            )
            if nearest:
                exclusive[short] -= probabilities[long]
    return {c: max(0.0, p) for c, p in exclusive.items()}


def _tokenizer_source(option: str, model: str) -> str:
    """'server', or the local tokenizer directory to load (see `OpenAIOptions.tokenizer`)."""
    if option == "auto":
        return model if Path(model).expanduser().is_dir() else "server"
    return option


def _load_local_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(Path(source).expanduser()), local_files_only=True)
    except (OSError, ValueError) as error:
        raise ConfigError(
            f"openai backend: cannot load the tokenizer {source!r} to build token-id prompts ({error}); give the "
            "directory the server loaded its tokenizer from, or tokenizer = 'server' to use the server's /tokenize"
        ) from error


def _entry_probability(entry: Mapping[str, Any], token: int) -> float:
    """P(token) from one `prompt_logprobs` entry (token-id string -> {logprob, rank, decoded_token}, or a bare
    log-probability); 0 when the token is not among the alternatives."""
    value = entry.get(str(token))
    if isinstance(value, Mapping):
        value = value.get("logprob")
    return math.exp(float(value)) if isinstance(value, int | float) else 0.0


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


def _not_json(where: str, error: ValueError) -> BackendError:
    return BackendError(f"{where} answered with a body that is not JSON ({error}); a proxy or a server fault? "
                        "Retried; check the server's log if it persists.", retryable=True)


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
