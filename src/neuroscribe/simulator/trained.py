"""The trained simulator: a small head, trained on units whose activations are known, over the frozen
all-MiniLM-L6-v2 token states of `neuroscribe.simulator.embedding` and the explanation's embedding.

Per token the head reads the token's state `h` (the embedding simulator's alignment of word pieces to
tokens), the explanation's embedding `e`, their cosine and the lexical match, for the token and the one
before it (so "the word after ..." is learnable):
`z = (A h) * (B e)` (a low-rank bilinear interaction), then a two-layer MLP over `[z, z_prev, cos, cos_prev,
lex, lex_prev]` and `10 * sigmoid(.)`: a value on the 0-10 scale. Only the head is trained; MiniLM is
frozen, so a checkpoint is the head's few tensors plus its manifest (`TrainingManifest`).

Checkpoints are named directories holding `head.safetensors` and `manifest.json`; a name is looked up in
`checkpoint_dirs()` (the user's `<cache>/simulators/`, then the ones shipped with the package), and a
path works too. `neuroscribe train-simulator` makes them (`neuroscribe.experiments.simulator_training`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from neuroscribe.assets import SENTENCE_MODEL, SENTENCE_MODEL_NAME, cache_root
from neuroscribe.errors import ConfigError, DataError
from neuroscribe.llm.base import Backend, CallEstimate
from neuroscribe.results import ActivationScale, SequenceSimulation
from neuroscribe.simulator.embedding import explanation_embedding, model_worker, token_states
from neuroscribe.simulator.lexical import lexical_matches

if TYPE_CHECKING:
    import torch

DEFAULT_CHECKPOINT = "minilm-head-v1"
"""The checkpoint shipped with the package (`neuroscribe/simulator/checkpoints/`), trained on synthetic
units only (its manifest says how)."""
SHIPPED = Path(__file__).parent / "checkpoints"
HEAD_FILE = "head.safetensors"
MANIFEST_FILE = "manifest.json"
HIDDEN = 384
"""Width of all-MiniLM-L6-v2's states."""


def checkpoint_dirs() -> list[Path]:
    """Where a checkpoint name is looked up, first match wins: `<cache>/simulators/`, then the shipped ones."""
    return [cache_root() / "simulators", SHIPPED]


@dataclass(frozen=True, kw_only=True)
class TrainedOptions:
    """Settings of the trained simulator."""

    checkpoint: str = DEFAULT_CHECKPOINT
    """A checkpoint name (looked up in `checkpoint_dirs()`) or a path to a checkpoint directory."""
    lexical: bool = True
    """Feed the lexical match to the head (must match how the checkpoint was trained; checked on load)."""


@dataclass(frozen=True, kw_only=True)
class HeadShape:
    """The head's architecture (saved in the manifest, so a checkpoint rebuilds its own head)."""

    rank: int = 64
    """Width of the bilinear interaction `(A h) * (B e)`."""
    hidden: int = 64
    """Width of the MLP's hidden layer."""


@dataclass(frozen=True, kw_only=True)
class TrainingSettings:
    """How a head is trained (all of it goes into the manifest)."""

    steps: int = 3000
    """Optimizer steps."""
    batch: int = 32
    """Excerpts (each with its unit's explanation) per step."""
    learning_rate: float = 2e-3
    """Adam's step size, decayed by a cosine schedule to 0."""
    weight_decay: float = 1e-4
    """AdamW's decoupled weight decay."""
    seed: int = 0
    """Seeds the head's initialization and the order of examples."""
    shape: HeadShape = field(default_factory=HeadShape)
    lexical: bool = True
    """Feed the lexical match (`neuroscribe.simulator.lexical`) to the head."""


@dataclass(frozen=True, kw_only=True)
class TrainingExample:
    """One excerpt of a unit with a known explanation: what the head learns from."""

    explanation: str
    tokens: list[str]
    targets: list[float]
    """The true activations on the 0-10 scale (normalized by the unit's maximum)."""
    source: str
    """Where it came from (a synthetic family, a run directory), counted in the manifest."""
    unit: str
    """Which unit it belongs to (held-out validation is by unit, never by excerpt)."""


@dataclass(frozen=True, kw_only=True)
class TrainingManifest:
    """What a checkpoint was trained from and how: saved beside the head as `manifest.json`."""

    name: str
    sentence_model: str
    """The frozen encoder's name and the sha256 of its weights file."""
    sentence_model_sha256: str
    settings: dict[str, Any]
    """`TrainingSettings` as JSON."""
    sources: dict[str, int]
    """Training excerpts per source."""
    units: int
    """Training units."""
    validation_units: int
    steps: int
    final_loss: float
    """Mean squared error (on the 0-1 scale) over the last 100 training steps."""
    validation: dict[str, float]
    """Held-out units' mean per-unit r of the head, of the untrained (zero-initialized output) head and of
    the head reading another unit's explanation."""
    seconds: float
    """Training wall time, features included."""
    notes: str = ""
    """Free text: e.g. what was held out."""


def _weights_sha256() -> str:
    return next(a.sha256 for a in SENTENCE_MODEL if a.filename == "model.safetensors")


def build_head(shape: HeadShape) -> torch.nn.Module:
    import torch

    class Head(torch.nn.Module):
        """See the module docstring; `forward(states [B,T,H], explanation [B,H], lex [B,T]) -> [B,T]` on 0-10."""

        def __init__(self) -> None:
            super().__init__()
            self.token = torch.nn.Linear(HIDDEN, shape.rank, bias=False)
            self.explanation = torch.nn.Linear(HIDDEN, shape.rank, bias=False)
            self.mlp = torch.nn.Sequential(torch.nn.Linear(2 * shape.rank + 4, shape.hidden), torch.nn.GELU(),
                                           torch.nn.Linear(shape.hidden, 1))

        def forward(self, states: torch.Tensor, explanation: torch.Tensor, lex: torch.Tensor) -> torch.Tensor:
            z = self.token(states) * self.explanation(explanation)[:, None, :]
            cos = (states * explanation[:, None, :]).sum(-1)
            here = torch.cat([z, cos[..., None], lex[..., None]], dim=-1)
            before = torch.nn.functional.pad(here, (0, 0, 1, 0))[:, :-1]
            return 10.0 * torch.sigmoid(self.mlp(torch.cat([here, before], dim=-1)).squeeze(-1))

    return Head()


@functools.lru_cache(maxsize=4096)
def _states(tokens: tuple[str, ...]) -> torch.Tensor:
    return token_states(tokens)


def _inputs(explanation: str, tokens: Sequence[str], lexical: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    import torch

    lex = [float(m) for m in lexical_matches(explanation, tokens)] if lexical else [0.0] * len(tokens)
    return _states(tuple(tokens)), explanation_embedding(explanation), torch.tensor(lex)


def _batch(examples: Sequence[TrainingExample], lexical: bool,
           explanations: Sequence[str] | None = None) -> tuple[torch.Tensor, ...]:
    """Padded [B, T] inputs, targets on 0-1 and a mask; `explanations` replaces each example's own."""
    import torch

    width = max(len(e.tokens) for e in examples)
    states = torch.zeros(len(examples), width, HIDDEN)
    lex, targets, mask = (torch.zeros(len(examples), width) for _ in range(3))
    embeddings = []
    for i, example in enumerate(examples):
        explanation = example.explanation if explanations is None else explanations[i]
        s, e, m = _inputs(explanation, example.tokens, lexical)
        n = len(example.tokens)
        states[i, :n], lex[i, :n], mask[i, :n] = s, m, 1.0
        targets[i, :n] = torch.tensor(example.targets) / 10.0
        embeddings.append(e)
    return states, torch.stack(embeddings), lex, targets, mask


def _pearson(a: Sequence[float], b: Sequence[float]) -> float:
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    va, vb = sum((x - ma) ** 2 for x in a), sum((y - mb) ** 2 for y in b)
    if va == 0 or vb == 0:
        return 0.0  # a constant prediction or truth has no correlation; counted as none
    return sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True)) / math.sqrt(va * vb)


def per_unit_r(predict: Callable[[str, Sequence[str]], list[float]], examples: Sequence[TrainingExample],
               mismatched: bool = False) -> float:
    """Mean over units of the Pearson r of predictions with targets pooled over the unit's excerpts; with
    `mismatched`, each unit is read with the next unit's explanation (the chance level)."""
    units: dict[str, list[TrainingExample]] = {}
    for example in examples:
        units.setdefault(example.unit, []).append(example)
    names = sorted(units)
    rs = []
    for i, name in enumerate(names):
        explanation = units[names[(i + 1) % len(names)]][0].explanation if mismatched else units[name][0].explanation
        predicted = [v for e in units[name] for v in predict(explanation, e.tokens)]
        rs.append(_pearson(predicted, [t for e in units[name] for t in e.targets]))
    return sum(rs) / len(rs) if rs else 0.0


def head_predictor(head: torch.nn.Module, lexical: bool) -> Callable[[str, Sequence[str]], list[float]]:
    import torch

    def predict(explanation: str, tokens: Sequence[str]) -> list[float]:
        states, embedding, lex = _inputs(explanation, tokens, lexical)
        with torch.inference_mode():
            return [float(v) for v in head(states[None], embedding[None], lex[None])[0].tolist()]

    return predict


def train_head(examples: Sequence[TrainingExample], validation: Sequence[TrainingExample],
               settings: TrainingSettings, *, name: str, notes: str = "",
               progress: Callable[[int, float], None] | None = None) -> tuple[torch.nn.Module, TrainingManifest]:
    """Train a head on `examples` (MiniLM frozen); score it on the held-out `validation` units."""
    import torch

    if not examples:
        raise DataError("no training examples: give results, run directories or synthetic units")
    start = time.perf_counter()
    torch.manual_seed(settings.seed)
    order = random.Random(settings.seed)
    head = build_head(settings.shape)
    untrained = build_head(settings.shape)
    untrained.load_state_dict(head.state_dict())
    optimizer = torch.optim.AdamW(head.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(settings.steps, 1))
    losses: list[float] = []
    pool = list(examples)
    for step in range(settings.steps):
        states, embeddings, lex, targets, mask = _batch(order.sample(pool, min(settings.batch, len(pool))),
                                                        settings.lexical)
        predicted = head(states, embeddings, lex) / 10.0
        loss = (((predicted - targets) ** 2) * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if progress is not None and (step + 1) % 100 == 0:
            progress(step + 1, sum(losses[-100:]) / len(losses[-100:]))
    head.eval()
    scores = {}
    if validation:
        trained = head_predictor(head, settings.lexical)
        scores = {"r": per_unit_r(trained, validation),
                  "r_untrained": per_unit_r(head_predictor(untrained.eval(), settings.lexical), validation),
                  "r_mismatched": per_unit_r(trained, validation, mismatched=True)}
    sources: dict[str, int] = {}
    for example in examples:
        sources[example.source] = sources.get(example.source, 0) + 1
    manifest = TrainingManifest(
        name=name, sentence_model=SENTENCE_MODEL_NAME, sentence_model_sha256=_weights_sha256(),
        settings=asdict(settings), sources=sources, units=len({e.unit for e in examples}),
        validation_units=len({e.unit for e in validation}), steps=settings.steps,
        final_loss=sum(losses[-100:]) / max(len(losses[-100:]), 1), validation=scores,
        seconds=round(time.perf_counter() - start, 1), notes=notes)
    return head, manifest


def save_checkpoint(head: torch.nn.Module, manifest: TrainingManifest, target: Path) -> Path:
    """Write `head.safetensors` and `manifest.json` into the directory `target` (created)."""
    from safetensors.torch import save_file

    target.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, str(target / HEAD_FILE))
    (target / MANIFEST_FILE).write_text(json.dumps(asdict(manifest), indent=2) + "\n", encoding="utf-8")
    return target


def resolve_checkpoint(checkpoint: str) -> Path:
    """A checkpoint path, or a name looked up in `checkpoint_dirs()`."""
    as_path = Path(checkpoint).expanduser()
    if (as_path / HEAD_FILE).is_file():
        return as_path
    for folder in checkpoint_dirs():
        if (folder / checkpoint / HEAD_FILE).is_file():
            return folder / checkpoint
    known = sorted({p.parent.name for d in checkpoint_dirs() if d.is_dir() for p in d.glob(f"*/{HEAD_FILE}")})
    raise ConfigError(f"trained simulator checkpoint {checkpoint!r} is neither a directory holding {HEAD_FILE} nor "
                      f"a name in {', '.join(map(str, checkpoint_dirs()))} (known: {', '.join(known) or 'none'}); "
                      "make one with `neuroscribe train-simulator`")


@functools.lru_cache(maxsize=8)
def load_checkpoint(checkpoint: str) -> tuple[torch.nn.Module, TrainingManifest]:
    """The head (evaluation mode) and its manifest; refused when it was trained on another encoder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = resolve_checkpoint(checkpoint)
    try:
        manifest = TrainingManifest(**json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8")))
        head = build_head(HeadShape(**manifest.settings["shape"]))
        head.load_state_dict(load_file(str(folder / HEAD_FILE)))
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as error:
        raise DataError(f"trained simulator checkpoint {folder} is damaged ({type(error).__name__}: {error}); "
                        "train it again with `neuroscribe train-simulator`") from error
    if manifest.sentence_model_sha256 != _weights_sha256():
        raise DataError(f"checkpoint {folder} was trained over {manifest.sentence_model} weights "
                        f"{manifest.sentence_model_sha256[:12]}, not the pinned {_weights_sha256()[:12]}; retrain it")
    return head.eval(), manifest


class TrainedSimulator:
    """A trained head over frozen MiniLM states and the explanation's embedding; asks no LLM."""

    options_type: ClassVar[type[Any]] = TrainedOptions
    ordinal_scale: ClassVar[bool] = True
    """Trained to estimate normalized activations, but on synthetic units: its scale is not checked against
    real units, so only correlations are reported uncalibrated."""

    def __init__(self, backend: Backend, options: TrainedOptions) -> None:
        self.options = options
        _, manifest = load_checkpoint(options.checkpoint)  # a missing or damaged checkpoint fails at load time
        if bool(manifest.settings.get("lexical", True)) != options.lexical:
            raise ConfigError(f"trained simulator: checkpoint {options.checkpoint!r} was trained with lexical = "
                              f"{manifest.settings.get('lexical')}; set the option to match")

    @classmethod
    def estimate(cls, options: Any, excerpt_tokens: int) -> CallEstimate:
        return CallEstimate()

    def _predict(self, explanation: str, tokens: Sequence[str]) -> list[float]:
        head, _ = load_checkpoint(self.options.checkpoint)
        return head_predictor(head, self.options.lexical)(explanation, tokens)

    async def simulate(self, explanation: str, tokens: Sequence[str]) -> SequenceSimulation:
        values: list[float] = []
        if tokens:
            loop = asyncio.get_running_loop()
            values = await loop.run_in_executor(model_worker(), self._predict, explanation, tokens)
        return SequenceSimulation(tokens=list(tokens), expected_activations=values,
                                  activation_scale=ActivationScale.SIMULATED_NORMALIZED_ACTIVATIONS)
