"""The subject model: loading, locating units inside it, and a forward pass that stops early.

Units are read with hooks, so any Hugging Face causal LM with a recognised layout works without a
per-architecture model rewrite:

- MLP neurons: the input of the MLP's output projection (`down_proj`, `c_proj`, `fc2`, ...), i.e. the
  activation after the nonlinearity and, for gated MLPs, after the gate multiplies the up projection.
- Attention heads: for query q and key k <= q, `A[h, q, k] * || v_k^h W_O^h ||`, the norm of what head h
  writes into position q from position k (needs the eager attention implementation for `A`).
- Autoencoder latents: a published autoencoder's encoder (see `autoencoders`) on the residual stream
  before or after a layer, the attention or MLP output, or the MLP neurons.

`SubjectModel.stream` raises out of the forward pass as soon as every probe has its values (at the deepest
hook point needed: before a layer for `resid_pre`, after its attention for `attn_out`, ...), so the rest
of that layer, later layers and the unembedding never run.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from neuroscribe.errors import ConfigError

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

    from .autoencoders import Encoder

logger = logging.getLogger(__name__)

MLP_OUTPUT_PROJECTIONS = ("down_proj", "c_proj", "fc2", "dense_4h_to_h", "fc_out", "w2")
"""Attribute names of the MLP output projection across common architectures (Llama, GPT-2, OPT, ...)."""
VALUE_PROJECTIONS = ("v_proj", "value")
ATTENTION_OUTPUT_PROJECTIONS = ("o_proj", "out_proj", "dense", "c_proj")


class _StopForward(Exception):
    """Raised by the hook on the last needed layer: nothing after it is computed."""


def _first_attribute(module: nn.Module, names: Sequence[str], what: str, where: str) -> nn.Module:
    for name in names:
        child = getattr(module, name, None)
        if child is not None:
            return child  # type: ignore[no-any-return]
    raise ConfigError(
        f"cannot find the {what} in {where} ({type(module).__name__}); looked for attributes {', '.join(names)}. "
        "This architecture is not supported by the collector yet."
    )


def linear_weight(module: nn.Module) -> torch.Tensor:
    """The weight as `[out_features, in_features]`, also for GPT-2's transposed `Conv1D`."""
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    return weight.T if type(module).__name__ == "Conv1D" else weight


class Probe(Protocol):
    """Reads one layer's units during a forward pass."""

    layer: int
    indices: torch.Tensor | None
    """Units of the layer to keep (None: all)."""

    def attach(self, subject: SubjectModel) -> list[torch.utils.hooks.RemovableHandle]: ...

    def ready(self, subject: SubjectModel) -> tuple[nn.Module, bool]:
        """Where `read()` first has its values: a module, and whether that is before it runs (True) or after."""
        ...

    def read(self) -> torch.Tensor:
        """The captured values as `[batch, positions, units]`; positions are tokens or token pairs."""
        ...


@dataclass
class MLPNeuronProbe:
    layer: int
    indices: torch.Tensor | None = None
    _captured: torch.Tensor | None = field(default=None, repr=False)

    def attach(self, subject: SubjectModel) -> list[torch.utils.hooks.RemovableHandle]:
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            self._captured = inputs[0]

        return [subject.mlp_output_projection(self.layer).register_forward_pre_hook(hook)]

    def ready(self, subject: SubjectModel) -> tuple[nn.Module, bool]:
        return subject.mlp_output_projection(self.layer), True

    def read(self) -> torch.Tensor:
        assert self._captured is not None, "the forward pass did not reach this layer's MLP"
        values = self._captured
        return values if self.indices is None else values.index_select(-1, self.indices)


@dataclass
class AttentionHeadProbe:
    """Per head and token pair: attention weight x norm of the head's output for that key's value."""

    layer: int
    indices: torch.Tensor | None = None
    _weights: torch.Tensor | None = field(default=None, repr=False)
    _values: torch.Tensor | None = field(default=None, repr=False)
    _w_out: torch.Tensor | None = field(default=None, repr=False)
    _n_heads: int = field(default=0, repr=False)
    _n_kv_heads: int = field(default=0, repr=False)
    _head_dim: int = field(default=0, repr=False)

    def attach(self, subject: SubjectModel) -> list[torch.utils.hooks.RemovableHandle]:
        attention = subject.attention(self.layer)
        self._n_heads, self._n_kv_heads, self._head_dim = subject.attention_shape()
        output_projection = _first_attribute(attention, ATTENTION_OUTPUT_PROJECTIONS, "attention output projection",
                                             f"layer {self.layer}")
        self._w_out = linear_weight(output_projection)  # [d_model, heads * head_dim]
        fused = getattr(attention, "c_attn", None)  # GPT-2: one projection for q, k and v

        def on_attention(_module: nn.Module, _inputs: object, output: object) -> None:
            if not isinstance(output, tuple) or len(output) < 2 or output[1] is None:
                raise ConfigError("attention weights are not returned; load the model with attn_implementation='eager'")
            self._weights = output[1]

        def on_values(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            if fused is not None:
                d = self._n_heads * self._head_dim
                output = output[..., 2 * d : 3 * d]
            self._values = output

        value_module = fused if fused is not None else _first_attribute(
            attention, VALUE_PROJECTIONS, "value projection", f"layer {self.layer}")
        return [attention.register_forward_hook(on_attention), value_module.register_forward_hook(on_values)]

    def ready(self, subject: SubjectModel) -> tuple[nn.Module, bool]:
        return subject.attention(self.layer), False  # the value projection runs inside the attention

    def read(self) -> torch.Tensor:
        assert self._weights is not None and self._values is not None and self._w_out is not None
        b, t, _ = self._values.shape
        h, kv, hd = self._n_heads, self._n_kv_heads, self._head_dim
        values = self._values.reshape(b, t, kv, hd).repeat_interleave(h // kv, dim=2)  # [B, T, H, hd]
        w_out = self._w_out.reshape(-1, h, hd)  # [d_model, H, hd]
        written = torch.einsum("bthd,mhd->bthm", values, w_out)  # what each head writes per key position
        norms = written.norm(dim=-1)  # [B, T(key), H]
        pair_values = self._weights * norms.permute(0, 2, 1)[:, :, None, :]  # [B, H, T(query), T(key)]
        rows, cols = torch.tril_indices(t, t)
        flat = pair_values[:, :, rows, cols].permute(0, 2, 1)  # [B, pairs, H], row-major lower triangle
        selected: torch.Tensor = flat if self.indices is None else flat.index_select(-1, self.indices)
        return selected


@dataclass
class AutoencoderProbe:
    """Latents of an autoencoder (or transcoder) reading `hook` of `layer` (see `HOOK_POINTS`)."""

    layer: int
    autoencoder: Encoder
    hook: str
    indices: torch.Tensor | None = None
    _captured: torch.Tensor | None = field(default=None, repr=False)

    def attach(self, subject: SubjectModel) -> list[torch.utils.hooks.RemovableHandle]:
        def keep_input(_module: nn.Module, args: tuple[torch.Tensor, ...], kwargs: dict[str, object]) -> None:
            self._captured = args[0] if args else kwargs["hidden_states"]  # type: ignore[assignment]

        def keep_output(_module: nn.Module, _inputs: object, output: object) -> None:
            self._captured = output[0] if isinstance(output, tuple) else output  # type: ignore[assignment]

        module, before = self.ready(subject)
        if before:
            return [module.register_forward_pre_hook(keep_input, with_kwargs=True)]
        return [module.register_forward_hook(keep_output)]

    def ready(self, subject: SubjectModel) -> tuple[nn.Module, bool]:
        """The hooked module: the input of the layer (`resid_pre`) or of the down projection (`mlp_in`), else
        the output of the layer, its attention or its MLP."""
        if self.hook == "mlp_in":
            return subject.mlp_output_projection(self.layer), True
        if self.hook == "resid_pre":
            return subject._layer(self.layer), True
        return {"mlp_out": subject.mlp, "attn_out": subject.attention}.get(self.hook, subject._layer)(self.layer), False

    def read(self) -> torch.Tensor:
        assert self._captured is not None
        latents = self.autoencoder.encode(self._captured)
        return latents if self.indices is None else latents.index_select(-1, self.indices)


class SubjectModel:
    """A causal LM loaded for reading activations (eval mode, no gradients, float32)."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase

    def __init__(self, model: str, *, device: str = "cpu", eager_attention: bool = False) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from neuroscribe.assets import resolve_model_path

        self.name = model
        path = resolve_model_path(model)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch.float32, attn_implementation="eager" if eager_attention else "sdpa"
            )
        except (OSError, ValueError) as error:
            raise ConfigError(
                f"cannot load subject model {model!r} ({path}): {error}. Give a local checkpoint directory, a "
                "Hugging Face model id that is cached or reachable, or 'embedded'."
            ) from error
        self.model.eval()  # type: ignore[no-untyped-call]
        self.model.to(device)  # type: ignore[arg-type]
        self.device = torch.device(device)
        self.layers = decoder_layers(self.model)
        self._token_strings: dict[int, str] = {}

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def embedding_weight(self) -> torch.Tensor:
        """Token embeddings `[vocab, d_model]`."""
        weight = self.model.get_input_embeddings().weight
        assert isinstance(weight, torch.Tensor)
        return weight

    @property
    def vocab_size(self) -> int:
        return int(self.embedding_weight.shape[0])

    @property
    def hidden_size(self) -> int:
        return int(self.embedding_weight.shape[1])

    def _layer(self, layer: int) -> nn.Module:
        if not 0 <= layer < self.n_layers:
            raise ConfigError(f"layer {layer} does not exist: {self.name} has layers 0..{self.n_layers - 1}")
        return self.layers[layer]

    def mlp(self, layer: int) -> nn.Module:
        return _first_attribute(self._layer(layer), ("mlp", "feed_forward", "ffn"), "MLP", f"layer {layer}")

    def mlp_output_projection(self, layer: int) -> nn.Module:
        return _first_attribute(self.mlp(layer), MLP_OUTPUT_PROJECTIONS, "MLP output projection", f"layer {layer}")

    def mlp_width(self, layer: int) -> int:
        return int(linear_weight(self.mlp_output_projection(layer)).shape[1])

    def attention(self, layer: int) -> nn.Module:
        return _first_attribute(self._layer(layer), ("self_attn", "attn", "attention"), "attention", f"layer {layer}")

    def attention_shape(self) -> tuple[int, int, int]:
        """(query heads, key/value heads, head dimension)."""
        config = self.model.config
        heads = int(getattr(config, "num_attention_heads", 0) or getattr(config, "n_head", 0))
        if heads == 0:
            raise ConfigError(f"{self.name}: the config names no number of attention heads")
        kv_heads = int(getattr(config, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(config, "head_dim", None) or self.hidden_size // heads)
        return heads, kv_heads, head_dim

    def stream(self, input_ids: torch.Tensor, probes: Sequence[Probe], stop_after_layer: int,
               consume: Callable[[int, torch.Tensor], None]) -> None:
        """Run the model until every probe has its values, and no further than layer stop_after_layer; as soon
        as a probe has its values (`Probe.ready`), hand them `[batch, positions, units]` to
        `consume(probe number, values)`.

        Consuming inside the pass reads a layer's values while they are still in the CPU cache, and no copy
        joins the layers afterwards (that copy alone was 7 ms of a 500 ms batch on SmolLM2, 4 x 1,536 neurons).
        """
        handles = [handle for probe in probes for handle in probe.attach(self)]
        outstanding = len(probes)

        def when_ready(number: int, probe: Probe) -> Callable[..., None]:
            def hook(*_args: object) -> None:
                nonlocal outstanding
                consume(number, probe.read().float())
                outstanding -= 1
                if outstanding == 0:  # the deepest hook point needed: nothing after it is computed
                    raise _StopForward

            return hook

        def stop(_module: nn.Module, _inputs: object, _output: object) -> None:
            raise _StopForward

        for number, probe in enumerate(probes):  # after `attach`, so a probe captures before it is read
            module, before = probe.ready(self)
            hook = when_ready(number, probe)
            handles.append(module.register_forward_pre_hook(hook) if before else module.register_forward_hook(hook))
        handles.append(self._layer(stop_after_layer).register_forward_hook(stop))
        try:
            with torch.inference_mode(), contextlib.suppress(_StopForward):
                self.model(input_ids=input_ids.to(self.device), use_cache=False)
        finally:
            for handle in handles:
                handle.remove()

    def token_strings(self, token_ids: Sequence[int]) -> list[str]:
        """Each token decoded on its own (a leading space stays), cached."""
        cache = self._token_strings
        missing = [t for t in set(token_ids) if t not in cache]
        if missing:
            decoded = self.tokenizer.batch_decode([[t] for t in missing])
            cache.update(zip(missing, decoded, strict=True))
        return [cache[t] for t in token_ids]


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the ModuleList as long as the config's number of layers."""
    config = getattr(model, "config", None)
    n = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    for _name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and (n is None or len(module) == n) and len(module) > 0:
            return module
    raise ConfigError(f"cannot find the stack of {n} transformer layers in {type(model).__name__}")
