"""The embedding simulator: each token's contextual state in a sentence-embedding model, against the
explanation's embedding; asks no LLM and runs in process on CPU in tens of milliseconds per excerpt.

The model is all-MiniLM-L6-v2 (`neuroscribe.assets.SENTENCE_MODEL`, from a pinned, hash-checked wheel),
loaded once per process and run by one worker thread of its own (see `THREADS`). The rule, fixed in
advance (never fitted to any unit):
- The explanation's embedding is the model's sentence embedding of the explanation as written (mean of
  its final hidden states, L2-normalized, as the model was trained to be used).
- The excerpt is the concatenation of its tokens, read by the model in windows of `WINDOW` word pieces
  (overlapping by `STRIDE`); each word piece gets the cosine of its final hidden state with the
  explanation's embedding, and each excerpt token the mean cosine of the word pieces that overlap its
  characters (0 for a token the model reads nothing of, such as a blank).
- The value is `10 * clip(cosine, 0, 1)`: a fixed monotone map onto the 0-10 scale, so correlations are
  meaningful and the scale-dependent scores are not (`ordinal_scale`).
- With `lexical` (the default) a token the explanation names (`neuroscribe.simulator.lexical`) predicts 10,
  the larger of the two.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from neuroscribe.assets import SENTENCE_MODEL_NAME, sentence_model_checkpoint
from neuroscribe.errors import DataError
from neuroscribe.llm.base import Backend, CallEstimate
from neuroscribe.results import ActivationScale, SequenceSimulation
from neuroscribe.simulator.lexical import MATCH_VALUE, lexical_matches

if TYPE_CHECKING:
    import torch

WINDOW = 256
"""Word pieces the model reads at once (the length all-MiniLM-L6-v2 was trained on)."""
STRIDE = 32
"""Word pieces shared by consecutive windows of a long excerpt, so no piece is read without context."""
EXPLANATIONS_CACHED = 1024
THREADS = 1
"""Intra-op threads of the worker that runs the model (a per-thread setting: the rest of the process keeps
its own). One, so it never oversubscribes cores an in-process LLM also uses: two threads measured ten
times slower than one on a busy two-core machine (605 vs 63 ms per 64-token excerpt)."""
"""Explanation embeddings kept per process (each is computed once while it is in use)."""


@dataclass(frozen=True, kw_only=True)
class EmbeddingOptions:
    """Settings of the embedding simulator; its rule and constants are fixed (see the module docstring)."""

    lexical: bool = True
    """Add the lexical match term: a token the explanation names predicts 10."""


@dataclass(frozen=True)
class SentenceModel:
    """The tokenizer and model, loaded once per process (`sentence_model`)."""

    tokenizer: Any
    model: Any


@functools.cache
def sentence_model() -> SentenceModel:
    """all-MiniLM-L6-v2 in evaluation mode on CPU, fetched the first time (see `neuroscribe.assets`)."""
    from transformers import AutoModel, AutoTokenizer

    path = sentence_model_checkpoint()
    try:  # local_files_only: the checkpoint is on disk, so the hub must never be asked for anything
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        model = AutoModel.from_pretrained(path, local_files_only=True).eval()
    except Exception as error:  # transformers raises many types here; all mean "cannot load"
        raise DataError(f"could not load {SENTENCE_MODEL_NAME} from {path} ({type(error).__name__}: {error}); "
                        f"delete {path} to fetch it again") from error
    return SentenceModel(tokenizer=tokenizer, model=model)


@functools.lru_cache(maxsize=EXPLANATIONS_CACHED)
def explanation_embedding(explanation: str) -> torch.Tensor:
    """The explanation's sentence embedding: mean of its final hidden states, L2-normalized."""
    import torch

    loaded = sentence_model()
    encoded = loaded.tokenizer(explanation.strip(), truncation=True, max_length=WINDOW, return_tensors="pt")
    with torch.inference_mode():
        states = loaded.model(**encoded).last_hidden_state[0]
    return torch.nn.functional.normalize(states.mean(dim=0), dim=0)


def token_states(tokens: Sequence[str]) -> torch.Tensor:
    """Per excerpt token ([tokens, hidden]): the mean of the L2-normalized final states of the word pieces
    that overlap its characters; zeros for a token the model reads nothing of (such as a blank)."""
    import torch

    loaded = sentence_model()
    encoded = loaded.tokenizer("".join(tokens), truncation=True, max_length=WINDOW, stride=STRIDE,
                               return_overflowing_tokens=True, return_offsets_mapping=True,
                               return_special_tokens_mask=True, padding=True, return_tensors="pt")
    with torch.inference_mode():
        states = loaded.model(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"],
                              token_type_ids=encoded["token_type_ids"]).last_hidden_state
        states = torch.nn.functional.normalize(states, dim=-1)
    keep = (encoded["attention_mask"].bool() & ~encoded["special_tokens_mask"].bool()
            & (encoded["offset_mapping"][..., 1] > encoded["offset_mapping"][..., 0]))
    spans, pieces = encoded["offset_mapping"][keep], states[keep]
    ends = torch.tensor([len(t) for t in tokens], dtype=torch.long).cumsum(0)
    starts = ends - torch.tensor([len(t) for t in tokens], dtype=torch.long)
    overlap = ((spans[None, :, 0] < ends[:, None]) & (spans[None, :, 1] > starts[:, None])).to(states.dtype)
    per_token: torch.Tensor = (overlap @ pieces) / overlap.sum(dim=1, keepdim=True).clamp(min=1.0)
    return per_token


def token_cosines(explanation: str, tokens: Sequence[str]) -> list[float]:
    """Per excerpt token: the mean cosine of its word pieces' states with the explanation's embedding."""
    return [float(c) for c in (token_states(tokens) @ explanation_embedding(explanation)).tolist()]


@functools.cache
def model_worker() -> ThreadPoolExecutor:
    """The one thread that runs the sentence model (`THREADS` intra-op threads), shared by its simulators."""

    def single_threaded() -> None:
        import torch

        torch.set_num_threads(THREADS)

    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="neuroscribe-embedding", initializer=single_threaded)


def to_scale(cosine: float) -> float:
    """The fixed monotone map of a cosine onto the 0-10 scale: `10 * clip(cosine, 0, 1)`."""
    return 10.0 * min(max(cosine, 0.0), 1.0)


class EmbeddingSimulator:
    """Sentence-embedding similarity of each token in context to the explanation, plus the lexical match."""

    options_type: ClassVar[type[Any]] = EmbeddingOptions
    ordinal_scale: ClassVar[bool] = True

    def __init__(self, backend: Backend, options: EmbeddingOptions) -> None:
        self.options = options

    @classmethod
    def estimate(cls, options: Any, excerpt_tokens: int) -> CallEstimate:
        return CallEstimate()

    async def simulate(self, explanation: str, tokens: Sequence[str]) -> SequenceSimulation:
        values: list[float] = []
        if tokens:
            loop = asyncio.get_running_loop()
            cosines = await loop.run_in_executor(model_worker(), token_cosines, explanation, tokens)
            values = [to_scale(c) for c in cosines]
        if self.options.lexical:
            matches = lexical_matches(explanation, tokens)
            values = [MATCH_VALUE if m else v for v, m in zip(values, matches, strict=True)]
        return SequenceSimulation(tokens=list(tokens), expected_activations=values,
                                  activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS)
