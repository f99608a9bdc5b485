"""JSON-schema constrained generation for the in-process backend, with xgrammar (the `schema` extra).

A schema is compiled once per tokenizer into a grammar over token ids; during `generate`, each row's
matcher masks the tokens its grammar forbids. The mask changes only what is sampled: the log-probabilities
a request gets back are read from the unprocessed logits, so they are still the model's own beliefs.
"""

from __future__ import annotations

import functools
import importlib.util
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from neuroscribe.errors import ConfigError

if TYPE_CHECKING:
    import torch

COMPILED_SCHEMAS_KEPT = 64
"""Compiled grammars kept per backend (one per distinct schema; an excerpt's schema is reused by its retries)."""


@functools.cache
def available() -> bool:
    """Looked up once: `capabilities` asks on every request."""
    return importlib.util.find_spec("xgrammar") is not None


class SchemaCompiler:
    """Compiles JSON schemas for one tokenizer, keeping the most recent ones."""

    def __init__(self, tokenizer: Any, vocab_size: int) -> None:
        import xgrammar as xgr

        self._compiler = xgr.GrammarCompiler(xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size))
        self._vocab_size = vocab_size
        self._compiled: OrderedDict[str, Any] = OrderedDict()

    def compile(self, schema: str) -> Any:
        if schema in self._compiled:
            self._compiled.move_to_end(schema)
            return self._compiled[schema]
        try:
            compiled = self._compiler.compile_json_schema(schema, any_whitespace=False)
        except Exception as error:  # xgrammar raises RuntimeError/ValueError with its parser's message
            raise ConfigError(f"CompletionRequest.json_schema cannot be compiled into a grammar: {error}") from error
        self._compiled[schema] = compiled
        if len(self._compiled) > COMPILED_SCHEMAS_KEPT:
            self._compiled.popitem(last=False)
        return compiled

    def constraint(self, grammars: list[Any]) -> SchemaConstraint:
        return SchemaConstraint(grammars, self._vocab_size)


class SchemaConstraint:
    """A `transformers` logits processor: row i may only continue as grammars[i] allows.

    Unlike xgrammar's own processor, a row that has already finished (an end token or a stop string, after
    which `generate` pads it) is left alone instead of failing the whole batch.
    """

    def __init__(self, grammars: list[Any], vocab_size: int) -> None:
        import xgrammar as xgr

        self._matchers = [xgr.GrammarMatcher(g) for g in grammars]
        self._active = [True] * len(grammars)
        self._mask = xgr.allocate_token_bitmask(len(grammars), vocab_size)
        self._started = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import xgrammar as xgr

        if input_ids.shape[0] != len(self._matchers):
            raise RuntimeError(f"a schema constraint for {len(self._matchers)} rows got {input_ids.shape[0]}")
        xgr.reset_token_bitmask(self._mask)
        for row, matcher in enumerate(self._matchers):
            if self._started and self._active[row] and not matcher.is_terminated():
                self._active[row] = matcher.accept_token(int(input_ids[row, -1]))
            if self._active[row] and not matcher.is_terminated():
                matcher.fill_next_token_bitmask(self._mask, row)
        self._started = True
        masked = scores.to("cpu", copy=True)  # `generate` keeps `scores` itself as the unprocessed logits
        xgr.apply_token_bitmask_inplace(masked, self._mask)
        return masked.to(scores.device)
