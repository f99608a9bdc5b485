"""In-process Hugging Face transformers backend: the embedded model, any hub id or local checkpoint.

Distribution requests (the all-at-once simulator's "what value goes here" at every marked slot) are
answered from one forward pass per prompt, with three savings that never change an answer:

* Batching. Requests arriving together (e.g. `asyncio.gather` over the excerpts of one explanation)
  are gathered by a single worker thread into batched forward passes; the event loop stays free.
* Shared prefixes. Requests are grouped by their common leading tokens (the few-shot examples and
  the explanation); a group's prefix is computed once and its key/value cache reused for every
  member. Recently computed key/values are also kept (bounded by `prefix_cache_tokens`) so a request
  arriving later reuses whatever leading tokens it shares with them.
* Multi-token candidates in the same pass. SmolLM2's tokenizer splits digits, so "10" is "1","0".
  Its probability is computed exactly by the chain rule: for every marked slot, extra tokens are
  appended to the pass that sit at the slot's positions, see only the prompt before the slot and the
  candidate's own earlier tokens (a tree attention mask), and give P("0" | prompt, "1"). When one
  candidate is a prefix of another ("1" and "10"), the shorter one's probability excludes the mass
  that continues into the longer ("1" means "1" not followed by "0"), so candidates never double
  count. Continuations into non-candidates ("15") stay in the shorter candidate's mass.

Segments are tokenized one by one (no special tokens) and concatenated after the tokenizer's own
leading special tokens (BOS where the model uses one), so marked positions are exact. Candidates are
tokenized on their own the same way.

Generation (text or chat) goes through `model.generate` in the same worker, on the same shared and
cached prefixes (the one-at-a-time simulator's 64 prompts per excerpt differ only in their last
line). Greedy requests that arrive together with the same settings run as one batch; sampled requests
run alone, so a seed always gives the same text whatever else is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import os
import queue
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Self

from neuroscribe.assets import EMBEDDED_MODEL, resolve_model_path
from neuroscribe.errors import BackendError, CapabilityError, ConfigError, NeuroscribeError
from neuroscribe.llm import BACKENDS, hf_schema
from neuroscribe.llm.base import (
    BackendSpec,
    Capability,
    Choice,
    Completion,
    CompletionRequest,
    Message,
    TokenLogprob,
    Usage,
    candidate_token_ids,
)
from neuroscribe.llm.options import answer_tag, option_values, require_at_least, require_one_of
from neuroscribe.registry import build_options

if TYPE_CHECKING:
    import torch

_HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?")


@dataclass(kw_only=True)
class HFStats:
    """Work the backend did since it was created; benchmarks compare these with the naive token counts."""

    requests: int = 0
    forward_passes: int = 0
    prompt_tokens: int = 0
    """Tokens of the requests' prompts (what independent full passes would compute)."""
    computed_tokens: int = 0
    """Tokens actually run through the model (shared prefixes once, reused prefixes not at all, plus the
    extra tokens for multi-token candidates)."""
    reused_tokens: int = 0
    """Prompt tokens served from a shared or cached prefix."""


@dataclass
class _Job:
    request: CompletionRequest
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Completion]


@dataclass
class _TreeToken:
    """An appended token that continues a multi-token candidate at one marked slot."""

    token_id: int
    position: int
    slot_start: int
    """Absolute position of the slot's first token: the tree token sees the prompt before it."""
    ancestors: tuple[int, ...]
    """Indices (into the plan's tree tokens) of the candidate's earlier appended tokens."""


@dataclass
class _Plan:
    """One distribution request laid out as token ids, read positions and appended tree tokens."""

    job: _Job
    ids: list[int]
    slots: list[int]
    """Absolute position of each marked segment's first token."""
    tree: list[_TreeToken]
    tree_index: dict[tuple[int, tuple[int, ...]], int]
    """(slot number, candidate token prefix) -> index into `tree`."""
    candidates: list[tuple[int, ...]]
    reused: int = 0


@dataclass
class _PrefixEntry:
    ids: tuple[int, ...]
    kv: list[tuple[torch.Tensor, torch.Tensor]]


@dataclass
class _PrefixCache:
    """Recently computed key/values, so a request can reuse the leading tokens it shares with them.

    Key/values are exact per position, so an entry serves any request sharing its first r tokens by
    slicing to r. Bounded by total tokens held; least recently used entries go first.
    """

    budget_tokens: int
    entries: OrderedDict[tuple[int, ...], _PrefixEntry] = field(default_factory=OrderedDict)

    def longest(self, ids: Sequence[int], limit: int) -> tuple[int, _PrefixEntry | None]:
        best, best_entry = 0, None
        for entry in self.entries.values():
            shared = _common_prefix_length(entry.ids, ids, limit)
            if shared > best:
                best, best_entry = shared, entry
        if best_entry is not None:
            self.entries.move_to_end(best_entry.ids)
        return best, best_entry

    def add(self, entry: _PrefixEntry) -> None:
        if len(entry.ids) > self.budget_tokens:
            return
        self.entries.pop(entry.ids, None)
        self.entries[entry.ids] = entry
        while sum(len(key) for key in self.entries) > self.budget_tokens:
            self.entries.popitem(last=False)


def _common_prefix_length(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


_STOP = object()
_UNEMBEDDING_ROWS = 512


HFDtype = Literal["float32", "bfloat16", "float16"]


@dataclass(frozen=True, kw_only=True)
class HFOptions:
    """Settings of the 'hf' backend (`[backends.NAME.options]` in a config).

    None of them changes an answer beyond float noise except `dtype`: device and batching settings leave the
    backend's name (and so its response-cache keys) alone, a `dtype` other than float32 is added to the name.
    """

    device: str | None = None
    """torch device ('cpu', 'cuda', 'cuda:1', 'mps'); None: CUDA when available, else CPU."""
    dtype: HFDtype = "float32"
    """Weights and activations: 'float32' (default), or 'bfloat16'/'float16' (half the memory and faster on
    a GPU, answers differ slightly, so the backend's name says so and the cache keeps them apart)."""
    max_batch_size: int = 16
    """Most requests in one batched forward pass (and gathered by the worker at once)."""
    max_batch_tokens: int | None = None
    """Most query tokens (rows x longest row) in one batched distribution pass; bounds memory. None: 1,536 on
    CPU (larger passes ran their matrix products ~30% slower per token there, see BENCHMARKS.md), 8,192 on a
    GPU."""
    prefix_reuse: bool = True
    """Share the leading key/values of requests and keep them for later ones; False gives one independent
    pass per request."""
    prefix_cache_tokens: int = 4096
    """Tokens of key/values kept for later requests (46 KB each for SmolLM2-135M in float32); 0 keeps none."""
    min_shared_prefix: int = 16
    """Fewer shared leading tokens than this are recomputed rather than reused."""
    batch_window_s: float = 0.005
    """Seconds the worker waits for more requests after the first before it runs a batch."""

    def __post_init__(self) -> None:
        require_one_of(HFDtype, dtype=self.dtype)
        require_at_least(
            1,
            max_batch_size=self.max_batch_size,
            max_batch_tokens=self.max_batch_tokens,
            min_shared_prefix=self.min_shared_prefix,
        )
        require_at_least(0, prefix_cache_tokens=self.prefix_cache_tokens, batch_window_s=self.batch_window_s)
        if self.device is not None and not self.device.strip():
            raise ValueError("device must be a torch device such as 'cpu' or 'cuda', or unset; got ''")


@BACKENDS.register("hf")
class HFBackend:
    """A causal language model run in this process with transformers (CPU or GPU)."""

    options_type: ClassVar[type[HFOptions]] = HFOptions

    def __init__(
        self,
        model: str = "embedded",
        *,
        context_length: int | None = None,
        device: str | None = HFOptions.device,
        dtype: HFDtype = HFOptions.dtype,
        max_batch_size: int = HFOptions.max_batch_size,
        max_batch_tokens: int | None = HFOptions.max_batch_tokens,
        prefix_reuse: bool = HFOptions.prefix_reuse,
        prefix_cache_tokens: int = HFOptions.prefix_cache_tokens,
        min_shared_prefix: int = HFOptions.min_shared_prefix,
        batch_window_s: float = HFOptions.batch_window_s,
    ) -> None:
        """
        Args:
            model: 'embedded' (SmolLM2-135M-Instruct, fetched once), a local checkpoint directory or a hub id.
            context_length: override of the model's maximum tokens (prompt + generated).
            The other keywords are the fields of `HFOptions` (see there); they are checked before the model loads.
        """
        options = build_options(
            HFOptions,
            {
                "device": device,
                "dtype": dtype,
                "max_batch_size": max_batch_size,
                "max_batch_tokens": max_batch_tokens,
                "prefix_reuse": prefix_reuse,
                "prefix_cache_tokens": prefix_cache_tokens,
                "min_shared_prefix": min_shared_prefix,
                "batch_window_s": batch_window_s,
            },
            "hf backend",
        )
        self.options = options
        self.model_ref = model
        self._max_batch_size = options.max_batch_size
        self._prefix_reuse = options.prefix_reuse
        self._min_shared_prefix = options.min_shared_prefix
        self._batch_window_s = options.batch_window_s
        self._prefix_cache = _PrefixCache(options.prefix_cache_tokens if options.prefix_reuse else 0)
        self._counters = HFStats()
        self._loaded = _load(model, options.device, options.dtype)
        self._tokenizer, self._model, self._device = self._loaded.tokenizer, self._loaded.model, self._loaded.device
        max_batch_tokens = options.max_batch_tokens
        if max_batch_tokens is None:
            max_batch_tokens = 1536 if self._device.type == "cpu" else 8192
        self._max_batch_tokens = max_batch_tokens
        self._lead_ids = _leading_special_ids(self._tokenizer)
        self._context_length = context_length or _model_context_length(self._model, self._tokenizer)
        window = getattr(self._model.config.get_text_config(), "sliding_window", None)
        self._sliding_window: int | None = window if isinstance(window, int) and window > 0 else None
        self._has_chat_template = bool(getattr(self._tokenizer, "chat_template", None))
        self._jobs: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._schemas: hf_schema.SchemaCompiler | None = None

    @classmethod
    def from_spec(cls, spec: BackendSpec, options: HFOptions) -> Self:
        return cls(spec.model, context_length=spec.context_length, **option_values(options))

    # -- the Backend protocol -------------------------------------------------------------------

    @property
    def name(self) -> str:
        """'hf:<model>', plus '[dtype=...]' for a dtype other than float32 (the only answer-changing option)."""
        model = f"embedded-{EMBEDDED_MODEL.sha256[:12]}" if self.model_ref == "embedded" else self.model_ref
        return f"hf:{model}{answer_tag(self.options, 'dtype')}"

    @property
    def capabilities(self) -> frozenset[Capability]:
        always = {
            Capability.TEXT_COMPLETION,
            Capability.GENERATED_LOGPROBS,
            Capability.PROMPT_DISTRIBUTIONS,
            Capability.SEED,
        }
        if self._has_chat_template:
            always.add(Capability.CHAT)
        if hf_schema.available():
            always.add(Capability.JSON_SCHEMA)
        return frozenset(always)

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def in_process(self) -> bool:
        return True

    @property
    def stats(self) -> HFStats:
        """A snapshot (the worker keeps counting in its own copy)."""
        return copy.copy(self._counters)

    def count_tokens(self, text: str) -> int:
        return len(self._encode(text))

    async def complete(self, request: CompletionRequest) -> Completion:
        if request.json_schema is not None and not hf_schema.available():
            raise CapabilityError(f"backend {self.name!r} constrains output to a JSON schema only with xgrammar "
                                  "installed: pip install 'neuroscribe[schema]'")
        if request.messages is not None and not self._has_chat_template:
            raise CapabilityError(f"backend {self.name!r}: the model's tokenizer has no chat template")
        loop = asyncio.get_running_loop()
        job = _Job(request=request, loop=loop, future=loop.create_future())
        self._ensure_worker()
        self._jobs.put(job)
        return await job.future

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """Stop the worker thread after the requests already queued (for sync owners such as fixtures)."""
        with self._worker_lock:
            worker, self._worker = self._worker, None
        if worker is not None:
            self._jobs.put(_STOP)
            worker.join()

    # -- worker ---------------------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        with self._worker_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._serve, name=f"neuroscribe-{self.name}", daemon=True)
                self._worker.start()

    def _serve(self) -> None:
        import torch

        while True:
            first = self._jobs.get()
            if first is _STOP:
                return
            assert isinstance(first, _Job)
            batch = [first]
            deadline = time.monotonic() + self._batch_window_s
            while len(batch) < self._max_batch_size:
                try:
                    item = self._jobs.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is _STOP:
                    self._jobs.put(_STOP)  # finish this batch, then stop
                    break
                assert isinstance(item, _Job)
                batch.append(item)
            with torch.inference_mode():
                distribution_jobs = [job for job in batch if job.request.distributions is not None]
                if distribution_jobs:
                    self._settle_all(distribution_jobs, self._run_distributions)
                generation_jobs = [job for job in batch if job.request.distributions is None]
                if generation_jobs:
                    self._settle_all(generation_jobs, self._run_generation)

    def _settle_all(self, jobs: list[_Job], run: Callable[[list[_Job]], list[Completion | Exception]]) -> None:
        try:
            outcomes = run(jobs)
        except Exception as error:  # deliver every failure to the awaiting callers, never kill the worker
            outcomes = [error] * len(jobs)
        for job, outcome in zip(jobs, outcomes, strict=True):
            if isinstance(outcome, Completion):
                _deliver(job, result=outcome)
            elif isinstance(outcome, NeuroscribeError):
                _deliver(job, error=outcome)
            else:
                _deliver(job, error=BackendError(f"backend {self.name!r} failed: {type(outcome).__name__}: {outcome}"))

    # -- tokenization ---------------------------------------------------------------------------

    def _encode(self, text: str) -> list[int]:
        return list(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    def _prompt_ids(self, request: CompletionRequest) -> list[int]:
        if request.messages is not None:
            text = self._tokenizer.apply_chat_template(
                [_message_dict(m) for m in request.messages], tokenize=False, add_generation_prompt=True
            )
            return self._encode(str(text))
        assert request.prompt is not None
        return self._lead_ids + self._encode(request.prompt)

    def _check_fits(self, n_tokens: int, what: str) -> None:
        if n_tokens > self._context_length:
            raise BackendError(
                f"{what} needs {n_tokens} tokens but {self.name!r} has a context of {self._context_length}; "
                "shorten the prompt (fewer or shorter excerpts/examples) or use a longer-context model"
            )

    # -- distributions --------------------------------------------------------------------------

    def _plan(self, job: _Job) -> _Plan:
        request = job.request.distributions
        assert request is not None
        candidates = candidate_token_ids(request.candidates, [tuple(self._encode(c)) for c in request.candidates])
        ids = list(self._lead_ids)
        slots = []
        for segment in request.segments:
            if segment.read_distribution:
                if not ids:
                    raise ConfigError(
                        "a distribution request's first marked segment has no text before it; a model can only "
                        "predict a position that follows at least one token"
                    )
                slots.append(len(ids))
            ids.extend(self._encode(segment.text))
        internal = sorted({c[:k] for c in candidates for k in range(1, len(c))}, key=len)
        tree: list[_TreeToken] = []
        tree_index: dict[tuple[int, tuple[int, ...]], int] = {}
        for slot_number, start in enumerate(slots):
            for prefix in internal:
                ancestors = tuple(tree_index[(slot_number, prefix[:k])] for k in range(1, len(prefix)))
                tree_index[(slot_number, prefix)] = len(tree)
                tree.append(_TreeToken(prefix[-1], start + len(prefix) - 1, start, ancestors))
        needed = len(ids) + max((len(c) for c in candidates), default=1) - 1
        self._check_fits(needed, "the distribution prompt")
        if self._sliding_window is not None and needed > self._sliding_window:
            raise BackendError(
                f"the distribution prompt needs {needed} tokens, more than {self.name!r}'s sliding attention window "
                f"({self._sliding_window}); distribution requests assume full attention, so shorten the prompt"
            )
        return _Plan(job=job, ids=ids, slots=slots, tree=tree, tree_index=tree_index, candidates=candidates)

    def _run_distributions(self, jobs: list[_Job]) -> list[Completion | Exception]:
        """Answer a batch of distribution requests; a malformed request fails alone, not its batch."""
        outcomes: dict[int, Completion | Exception] = {}
        plans = []
        for job in jobs:
            try:
                plans.append(self._plan(job))
            except NeuroscribeError as error:
                outcomes[id(job)] = error
        answers: dict[int, tuple[tuple[float, ...], ...]] = {}
        for group in self._groups([plan for plan in plans if plan.slots]):
            for plan, distributions in zip(group, self._run_group(group), strict=True):
                answers[id(plan)] = distributions
        for plan in plans:
            self._counters.requests += 1
            self._counters.prompt_tokens += len(plan.ids)
            self._counters.reused_tokens += plan.reused
            outcomes[id(plan.job)] = Completion(
                distributions=answers.get(id(plan), ()),
                usage=Usage(prompt_tokens=len(plan.ids), cached_prompt_tokens=plan.reused),
                model=self.name,
            )
        return [outcomes[id(job)] for job in jobs]

    def _groups(self, plans: list[_Plan]) -> list[list[_Plan]]:
        """Greedy grouping of requests by shared leading tokens, in sorted order.

        A request joins the current group when sharing its (possibly shorter) prefix costs fewer
        recomputed tokens than starting a new group: (members - 1) * lost < kept.
        """
        if not self._prefix_reuse:
            return [[plan] for plan in plans]
        groups: list[list[_Plan]] = []
        shared = 0
        for plan in sorted(plans, key=lambda p: p.ids):
            if groups:
                kept = _common_prefix_length(groups[-1][0].ids, plan.ids, shared)
                if kept >= self._min_shared_prefix and (len(groups[-1]) - 1) * (shared - kept) < kept:
                    groups[-1].append(plan)
                    shared = kept
                    continue
            groups.append([plan])
            shared = len(plan.ids)
        return groups

    def _run_group(self, group: list[_Plan]) -> list[tuple[tuple[float, ...], ...]]:
        """Prefix once (from the cache where possible), then the members' remaining tokens in batches."""
        # Every member's first read needs the hidden state of the token before its slot, so that token
        # must be computed in the member's own pass: the shared part stops before it.
        reused, start, past = self._shared_prefix(
            [plan.ids for plan in group], min(plan.slots[0] - 1 for plan in group), compute_alone=False
        )
        for i, plan in enumerate(group):
            # the first member pays for the freshly computed shared part; everyone reuses the cached part
            plan.reused = reused if i == 0 else start
        results: list[tuple[tuple[float, ...], ...]] = []
        for chunk in self._chunks(group, start):
            results.extend(self._suffix_pass(chunk, start, past))
        return results

    def _shared_prefix(
        self, sequences: list[list[int]], limit: int, *, compute_alone: bool
    ) -> tuple[int, int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """Key/values for the leading tokens all `sequences` share (at most `limit`), computed once.

        Returns (tokens taken from the prefix cache, tokens covered by the returned key/values, key/values).
        A single sequence's prefix is computed apart only with `compute_alone` (so later requests can reuse it).
        """
        if not self._prefix_reuse:
            return 0, 0, None
        shared = limit
        for ids in sequences[1:]:
            shared = _common_prefix_length(sequences[0], ids, shared)
        reused, entry = self._prefix_cache.longest(sequences[0], shared)
        past = None
        if entry is not None and reused >= self._min_shared_prefix:
            past = [(k[:, :, :reused], v[:, :, :reused]) for k, v in entry.kv]
        else:
            reused = 0
        if (len(sequences) > 1 or compute_alone) and shared - reused >= 1 and shared >= self._min_shared_prefix:
            return reused, shared, self._prefix_pass(sequences[0][:shared], past, reused)
        return reused, reused, past

    def _chunks(self, group: list[_Plan], start: int) -> list[list[_Plan]]:
        chunks: list[list[_Plan]] = []
        longest = 0
        for plan in group:
            width = max(longest, len(plan.ids) - start + len(plan.tree))
            if (
                chunks
                and len(chunks[-1]) < self._max_batch_size
                and width * (len(chunks[-1]) + 1) <= (self._max_batch_tokens)
            ):
                chunks[-1].append(plan)
                longest = width
            else:
                chunks.append([plan])
                longest = len(plan.ids) - start + len(plan.tree)
        return chunks

    def _cache(self, past: list[tuple[torch.Tensor, torch.Tensor]] | None, batch: int) -> Any:
        from transformers import DynamicCache

        if past is None:
            return DynamicCache(config=self._model.config)
        return DynamicCache(
            ddp_cache_data=[(k.expand(batch, -1, -1, -1), v.expand(batch, -1, -1, -1)) for k, v in past]
        )

    def _prefix_pass(
        self, prefix: list[int], past: list[tuple[torch.Tensor, torch.Tensor]] | None, offset: int
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Key/values of `prefix`, whose first `offset` tokens are already in `past`; remembered for reuse."""
        import torch

        cache = self._cache(past, 1)
        positions = torch.arange(offset, len(prefix), device=self._device).unsqueeze(0)
        self._model.base_model(
            input_ids=torch.tensor([prefix[offset:]], device=self._device),
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        self._counters.forward_passes += 1
        self._counters.computed_tokens += len(prefix) - offset
        kv = [(k, v) for k, v, *_ in cache]
        self._prefix_cache.add(_PrefixEntry(ids=tuple(prefix), kv=kv))
        return kv

    def _suffix_pass(
        self, chunk: list[_Plan], start: int, past: list[tuple[torch.Tensor, torch.Tensor]] | None
    ) -> list[tuple[tuple[float, ...], ...]]:
        """One batched pass over the members' tokens after `start`, tree tokens appended to each row."""
        import torch

        rows = [plan.ids[start:] + [t.token_id for t in plan.tree] for plan in chunk]
        width = max(len(row) for row in rows)
        batch = len(chunk)
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else 0
        input_ids = torch.full((batch, width), pad, dtype=torch.long)
        positions = torch.zeros((batch, width), dtype=torch.long)
        mask = torch.zeros((batch, 1, width, start + width), dtype=torch.bool)  # True: may attend
        for b, (plan, row) in enumerate(zip(chunk, rows, strict=True)):
            n = len(plan.ids) - start
            input_ids[b, : len(row)] = torch.tensor(row)
            positions[b, :n] = torch.arange(start, start + n)
            mask[b, 0, : len(row), :start] = True
            mask[b, 0, :n, start : start + n] = torch.ones(n, n, dtype=torch.bool).tril()
            for k, tree_token in enumerate(plan.tree):
                query = n + k
                positions[b, query] = tree_token.position
                mask[b, 0, query, start : tree_token.slot_start] = True
                for ancestor in (*tree_token.ancestors, k):
                    mask[b, 0, query, start + n + ancestor] = True
            mask[b, 0, len(row) :, 0] = True  # padding rows attend somewhere, so softmax stays finite
        cache = self._cache(past, batch)
        # As an additive float mask, built once: a boolean one is converted again in every layer.
        dtype = self._model.dtype
        additive = torch.zeros(mask.shape, dtype=dtype).masked_fill_(~mask, torch.finfo(dtype).min)
        hidden = self._model.base_model(
            input_ids=input_ids.to(self._device),
            attention_mask=additive.to(self._device),
            position_ids=positions.to(self._device),
            cache=cache,
            use_cache=True,
        ).last_hidden_state
        self._counters.forward_passes += 1
        self._counters.computed_tokens += sum(len(row) for row in rows)
        if self._prefix_reuse:
            first = chunk[0].ids
            self._prefix_cache.add(
                _PrefixEntry(
                    ids=tuple(first),
                    kv=[(k[:1, :, : len(first)].clone(), v[:1, :, : len(first)].clone()) for k, v, *_ in cache],
                )
            )
        # Every row that is read, of every member, through the unembedding at once: its weight matrix
        # (113 MB for SmolLM2) is then read from memory once per pass, not twice per member.
        read_rows = [
            b * width + row
            for b, plan in enumerate(chunk)
            for row in (*(slot - 1 - start for slot in plan.slots), *range(len(plan.ids) - start, len(rows[b])))
        ]
        token_ids = sorted({token for plan in chunk for candidate in plan.candidates for token in candidate})
        logprobs = self._logprobs(hidden.reshape(batch * width, -1)[read_rows], token_ids)
        column = {token: i for i, token in enumerate(token_ids)}
        results = []
        taken = 0
        for plan in chunk:
            n_slots, n_tree = len(plan.slots), len(plan.tree)
            root, tree = logprobs[taken : taken + n_slots], logprobs[taken + n_slots : taken + n_slots + n_tree]
            taken += n_slots + n_tree
            results.append(self._read(plan, root, tree, column))
        return results

    def _read(
        self, plan: _Plan, root: torch.Tensor, tree: torch.Tensor, column: dict[int, int]
    ) -> tuple[tuple[float, ...], ...]:
        """Candidate probabilities at each slot from the log-probabilities of the candidates' tokens at the
        slots (`root`) and at the plan's tree tokens (`tree`); see the module docstring."""
        import torch

        n_slots = len(plan.slots)
        path: dict[tuple[int, ...], torch.Tensor] = {}
        for candidate in plan.candidates:
            logprob = root[:, column[candidate[0]]].clone()
            for k in range(1, len(candidate)):
                rows = [plan.tree_index[(s, candidate[:k])] for s in range(n_slots)]
                logprob += tree[rows, column[candidate[k]]]
            path[candidate] = logprob.exp()
        columns = []
        for candidate in plan.candidates:
            longer = [
                other
                for other in plan.candidates
                if len(other) > len(candidate) and other[: len(candidate)] == candidate
            ]
            nearest = [
                d for d in longer if not any(len(candidate) < len(e) < len(d) and d[: len(e)] == e for e in longer)
            ]
            exclusive = path[candidate] - sum((path[d] for d in nearest), torch.zeros_like(path[candidate]))
            columns.append(exclusive.clamp(min=0.0))
        table = torch.stack(columns, dim=1).double().cpu().tolist()
        return tuple(tuple(row) for row in table)

    def _logprobs(self, hidden: torch.Tensor, token_ids: Sequence[int]) -> torch.Tensor:
        """Log-probabilities `[rows, tokens]` of `token_ids` after each row of `hidden`, a block of rows at a
        time (full-vocabulary logits of every row at once would take rows x 200 KB for SmolLM2)."""
        import torch

        softcap = getattr(self._model.config, "final_logit_softcapping", None)
        columns = torch.tensor(list(token_ids), device=hidden.device)
        blocks = []
        for block in torch.split(hidden, _UNEMBEDDING_ROWS):
            logits = self._model.get_output_embeddings()(block).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
            blocks.append(logits[:, columns] - torch.logsumexp(logits, dim=-1, keepdim=True))
        return torch.cat(blocks)

    # -- generation -----------------------------------------------------------------------------

    def _run_generation(self, jobs: list[_Job]) -> list[Completion | Exception]:
        """Greedy requests with the same settings run as one left-padded batch. Sampled requests run alone:
        a seed fixes a request's draws only when no other request shares its random stream."""
        outcomes: dict[int, Completion | Exception] = {}
        groups: dict[tuple[object, ...], list[tuple[_Job, list[int]]]] = {}
        for job in jobs:
            try:
                ids = self._prompt_ids(job.request)
                if not ids:
                    raise ConfigError("the prompt is empty and the model has no start token to begin from")
                self._check_fits(len(ids) + 1, "the prompt")
            except NeuroscribeError as error:
                outcomes[id(job)] = error
                continue
            sampling = job.request.sampling
            new_tokens = max(1, min(sampling.max_tokens, self._context_length - len(ids)))
            key = ((id(job),) if sampling.temperature > 0
                   else (new_tokens, sampling.stop, job.request.top_logprobs, job.request.json_schema is not None))
            groups.setdefault(key, []).append((job, ids))
        for members in groups.values():
            for first in range(0, len(members), self._max_batch_size):
                chunk = members[first : first + self._max_batch_size]
                try:
                    completions = self._generate(chunk)
                except Exception as error:  # reported to each caller by _settle_all
                    completions = [error] * len(chunk)
                for (job, _), outcome in zip(chunk, completions, strict=True):
                    outcomes[id(job)] = outcome
        return [outcomes[id(job)] for job in jobs]

    def _generate(self, chunk: list[tuple[_Job, list[int]]]) -> list[Completion | Exception]:
        """One `generate` call for requests that share their generation settings (see `_run_generation`).

        Rows are [shared prefix | padding | own tokens]: the prefix's key/values come from `_shared_prefix`,
        the padding is masked out, and position ids follow the mask, so each row sees exactly its prompt.
        """
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        request, sampling = chunk[0][0].request, chunk[0][0].request.sampling
        sample = sampling.temperature > 0
        eos = self._tokenizer.eos_token_id
        pad = self._tokenizer.pad_token_id if self._tokenizer.pad_token_id is not None else eos
        prompts = [ids for _, ids in chunk]
        reused, start, past = self._shared_prefix(prompts, min(len(ids) for ids in prompts) - 1, compute_alone=True)
        copies = sampling.n if sample else 1  # greedy: every choice is the same, computed once
        rows = [ids for ids in prompts for _ in range(copies)]
        width = max(len(ids) for ids in rows) - start
        config = GenerationConfig(  # type: ignore[no-untyped-call]
            max_new_tokens=max(1, min(sampling.max_tokens, self._context_length - start - width)),
            do_sample=sample,
            temperature=sampling.temperature if sample else None,
            top_p=sampling.top_p if sample else None,
            top_k=0 if sample else None,
            return_dict_in_generate=True,
            output_logits=request.top_logprobs > 0,
            eos_token_id=eos,
            pad_token_id=pad,
            stop_strings=list(sampling.stop) or None,
        )
        gaps = [start + width - len(ids) for ids in rows]
        inputs = torch.tensor([ids[:start] + [pad] * gap + ids[start:] for ids, gap in zip(rows, gaps, strict=True)])
        attention = torch.tensor(
            [[1] * start + [0] * gap + [1] * (len(ids) - start) for ids, gap in zip(rows, gaps, strict=True)]
        )
        constraint = None
        if request.json_schema is not None:  # a group either has schemas in every row or in none
            compiler = self._schema_compiler()
            constraint = LogitsProcessorList([compiler.constraint(
                [compiler.compile(str(job.request.json_schema)) for job, _ in chunk for _ in range(copies)])])
        with torch.random.fork_rng(devices=[self._device] if self._device.type == "cuda" else []):
            torch.manual_seed(sampling.seed if sampling.seed is not None else int.from_bytes(os.urandom(4), "big"))
            output = self._model.generate(
                input_ids=inputs.to(self._device),
                attention_mask=attention.to(self._device),
                cache=self._cache(past, len(rows)) if past is not None else None,
                generation_config=config,
                tokenizer=self._tokenizer if sampling.stop else None,
                logits_processor=constraint,
            )
        generated = output.sequences[:, start + width :].tolist()
        step_logprobs = [torch.log_softmax(step.float(), dim=-1) for step in output.logits] if output.logits else []
        self._counters.forward_passes += max(len(tokens) for tokens in generated)
        self._counters.computed_tokens += len(rows) * width
        completions: list[Completion | Exception] = []
        for i, (job, ids) in enumerate(chunk):
            own = range(i * copies, (i + 1) * copies)
            choices = [self._choice(generated[row], row, step_logprobs, job.request) for row in own]
            spent = sum(_generated_length(generated[row], eos) for row in own)
            cached = reused if i == 0 else start  # the first request pays for the freshly computed prefix
            self._counters.requests += 1
            self._counters.prompt_tokens += len(ids)
            self._counters.reused_tokens += cached
            self._counters.computed_tokens += spent
            completions.append(
                Completion(
                    choices=tuple(choices * (1 if sample else sampling.n)),
                    usage=Usage(
                        prompt_tokens=len(ids),
                        completion_tokens=spent * (1 if sample else sampling.n),
                        cached_prompt_tokens=cached,
                    ),
                    model=self.name,
                )
            )
        return completions

    def _schema_compiler(self) -> hf_schema.SchemaCompiler:
        if self._schemas is None:
            vocab_size = int(self._model.get_output_embeddings().weight.shape[0])
            self._schemas = hf_schema.SchemaCompiler(self._tokenizer, vocab_size)
        return self._schemas

    def _choice(
        self, tokens: list[int], index: int, step_logprobs: list[torch.Tensor], request: CompletionRequest
    ) -> Choice:
        import torch

        eos = self._tokenizer.eos_token_id
        length = _generated_length(tokens, eos)
        ended = length < len(tokens) or (length > 0 and tokens[length - 1] == eos)
        content = tokens[: length - 1] if ended and tokens[length - 1] == eos else tokens[:length]
        text = self._tokenizer.decode(content, skip_special_tokens=True)
        cut = min((i for i in (text.find(stop) for stop in request.sampling.stop) if i >= 0), default=-1)
        if cut >= 0:
            text, ended = text[:cut], True
        logprobs = None
        if request.top_logprobs > 0:
            kept = content
            if cut >= 0:  # keep the tokens needed to spell the text before the stop string
                kept = next(
                    (
                        content[:k]
                        for k in range(len(content) + 1)
                        if len(self._tokenizer.decode(content[:k], skip_special_tokens=True)) >= cut
                    ),
                    content,
                )
            entries = []
            for step, token in enumerate(kept):
                row = step_logprobs[step][index]
                top = torch.topk(row, request.top_logprobs)
                entries.append(
                    TokenLogprob(
                        self._tokenizer.decode([token]),
                        float(row[token]),
                        tuple(
                            (self._tokenizer.decode([int(t)]), float(v))
                            for v, t in zip(top.values.tolist(), top.indices.tolist(), strict=True)
                        ),
                    )
                )
            logprobs = tuple(entries)
        return Choice(text=text, logprobs=logprobs, finish_reason="stop" if ended else "length")


def _generated_length(tokens: list[int], eos: int | None) -> int:
    """Generated tokens up to and including the first end-of-sequence token (the rest is padding)."""
    if eos is not None and eos in tokens:
        return tokens.index(eos) + 1
    return len(tokens)


def _deliver(job: _Job, *, result: Completion | None = None, error: BaseException | None = None) -> None:
    def settle() -> None:
        if job.future.done():  # the caller gave up (cancelled); nothing to deliver
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)  # type: ignore[arg-type]

    with contextlib.suppress(RuntimeError):  # the caller's event loop is closed: nobody is waiting
        job.loop.call_soon_threadsafe(settle)


def _message_dict(message: Message) -> dict[str, str]:
    return {"role": message.role, "content": message.content}


def _leading_special_ids(tokenizer: Any) -> list[int]:
    """The special tokens the tokenizer puts before any text (BOS for most models, nothing for SmolLM2)."""
    ids = list(tokenizer("", add_special_tokens=True)["input_ids"])
    if ids and ids[-1] == tokenizer.eos_token_id and ids[-1] != tokenizer.bos_token_id:
        ids.pop()
    return ids


def _model_context_length(model: Any, tokenizer: Any) -> int:
    config = model.config.get_text_config()
    for attribute in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attribute, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and 0 < limit < 10**8:
        return limit
    raise ConfigError(
        "hf backend: the model's config does not state its context length; set context_length in the backend spec"
    )


def _is_local(model: str) -> bool:
    return model == "embedded" or model.startswith(("/", ".", "~")) or Path(model).expanduser().exists()


def _offline_by_environment() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


@dataclass(eq=False)
class _Loaded:
    tokenizer: Any
    model: Any
    device: torch.device


_LOADED: weakref.WeakValueDictionary[tuple[str, str, str], _Loaded] = weakref.WeakValueDictionary()
"""Weights shared by every backend on the same model, device and dtype while any of them is alive (an explainer
and a simulator on 'embedded' hold one copy)."""
_LOADING = threading.Lock()
_CPU_GROUPED_SDPA = "neuroscribe_cpu_grouped_sdpa"


def _cpu_grouped_sdpa(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' sdpa attention, except for grouped key/value heads under a mask on CPU: those go to
    torch as they are (`enable_gqa`), where transformers would copy them once per query head (it has to on
    CUDA, whose kernels lack masked grouped attention). The batched distribution passes carry a mask in
    every layer; this made them 1.3x faster on SmolLM2 (3 key/value heads for 9 query heads)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    grouped = getattr(module, "num_key_value_groups", 1) > 1
    unusual = any(kwargs.get(name) is not None for name in ("position_bias", "softcap", "cache"))
    if attention_mask is None or not grouped or query.device.type != "cpu" or unusual:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, enable_gqa=True
    )
    return output.transpose(1, 2).contiguous(), None


def _load(model: str, device: str | None, dtype: HFDtype = "float32") -> _Loaded:
    """Tokenizer, model (in `dtype`, eval mode) and device; every failure is a ConfigError saying what to do."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if _is_local(model):
        path = Path(resolve_model_path(model)).expanduser()
        if not path.is_dir():
            raise ConfigError(
                f"hf backend: model directory {path} does not exist; give a checkpoint directory (with config.json), "
                "a Hugging Face model id (owner/name) or 'embedded'"
            )
        if not (path / "config.json").is_file():
            raise ConfigError(f"hf backend: {path} has no config.json, so it is not a transformers checkpoint")
        source, attempts = str(path), [True]  # local: never ask the hub anything
    elif _HUB_ID.fullmatch(model):
        source = model
        attempts = [True] if _offline_by_environment() else [True, False]  # the local hub cache first
    else:
        raise ConfigError(
            f"hf backend: {model!r} is neither an existing directory nor a Hugging Face model id (owner/name)"
        )
    try:
        chosen = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        raise ConfigError(f"hf backend: device {device!r} is not a torch device ({error})") from error
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"hf backend: device {device!r} asks for CUDA, but torch sees no CUDA device here")
    key = (source, str(chosen), dtype)
    failure: Exception | None = None
    with _LOADING:
        shared = _LOADED.get(key)
        if shared is not None:
            return shared
        for local_only in attempts:
            try:
                tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_only)
                network: Any = AutoModelForCausalLM.from_pretrained(
                    source, local_files_only=local_only, dtype=getattr(torch, dtype)
                )
            except (OSError, ValueError) as error:
                failure = error
                continue
            network = network.to(chosen).eval()
            if chosen.type == "cpu" and network.config._attn_implementation == "sdpa":
                from transformers import AttentionInterface
                from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

                AttentionInterface.register(_CPU_GROUPED_SDPA, _cpu_grouped_sdpa)
                AttentionMaskInterface.register(_CPU_GROUPED_SDPA, sdpa_mask)  # the masks sdpa gets
                network.set_attn_implementation(_CPU_GROUPED_SDPA)
            loaded = _Loaded(tokenizer, network, chosen)
            _LOADED[key] = loaded
            return loaded
    hint = (
        "it is not in the local Hugging Face cache and downloads are off (HF_HUB_OFFLINE); download it once with "
        "network access or point the backend at a local directory"
        if attempts == [True] and source == model
        else "check the model id (and HF_TOKEN for gated models) and your network"
    )
    raise ConfigError(f"hf backend: cannot load model {model!r}: {hint}. ({type(failure).__name__}: {failure})")
