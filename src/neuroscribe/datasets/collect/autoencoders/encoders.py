"""Sparse-autoencoder encoders, each computing its latents exactly as the authors of its architecture do.

Every encoder first prepares its input with an `InputTransform` (cast to the autoencoder's dtype, the
format's input normalization, then the pre-encoder bias if and only if the format subtracts one), and then
applies its own nonlinearity. Nothing here subtracts a bias by default: the loaders in `formats` decide
from each file's own flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Protocol, Self, TypeVar

import torch

NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
"""Input normalizations, as SAELens names them. `expected_average_only_in` is the identity when encoding a
loaded file (SAELens folds its scaling factor into the weights of releases that publish one);
`constant_norm_rescale` scales each input to norm sqrt(d_in); `layer_norm` is OpenAI's preprocessing
(subtract the mean, divide by the standard deviation plus 1e-5)."""

LAYER_NORM_EPS = 1e-5

_T = TypeVar("_T")


def moved(value: _T, device: torch.device) -> _T:
    """A copy of a frozen dataclass with every tensor (also inside nested dataclasses) on `device`."""
    changes: dict[str, object] = {}
    for field in dataclasses.fields(value):  # type: ignore[arg-type]
        item = getattr(value, field.name)
        if isinstance(item, torch.Tensor):
            changes[field.name] = item.to(device)
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            changes[field.name] = moved(item, device)
    return dataclasses.replace(value, **changes)  # type: ignore[type-var]


@dataclass(frozen=True)
class InputTransform:
    """What an architecture does to the hooked activation before its encoder matrix."""

    dtype: torch.dtype = torch.float32
    """The autoencoder's own dtype; the input is cast to it first."""
    normalization: str = "none"
    """One of NORMALIZATIONS."""
    pre_bias: torch.Tensor | None = None
    """Subtracted after normalization (SAELens `b_dec` when `apply_b_dec_to_input`, OpenAI `pre_bias`,
    sparsify `b_dec` for autoencoders); None subtracts nothing (Gemma Scope, transcoders)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.normalization == "constant_norm_rescale":
            x = x * (x.shape[-1] ** 0.5 / x.norm(dim=-1, keepdim=True))
        elif self.normalization == "layer_norm":
            x = x - x.mean(dim=-1, keepdim=True)
            x = x / (x.std(dim=-1, keepdim=True) + LAYER_NORM_EPS)
        return x if self.pre_bias is None else x - self.pre_bias


class Activation(Protocol):
    """The nonlinearity from pre-activations `[..., n_latents]` to latents; it may write over `pre` (the
    encoder's own temporary), which saves a pass over the largest tensor of a collection."""

    def __call__(self, pre: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ReLU:
    """Standard SAEs."""

    def __call__(self, pre: torch.Tensor) -> torch.Tensor:
        return pre.relu_()


@dataclass(frozen=True)
class JumpReLU:
    """relu(pre) where pre > threshold, else 0 (Gemma Scope, SAELens `jumprelu`)."""

    threshold: torch.Tensor
    """Per latent."""

    def __call__(self, pre: torch.Tensor) -> torch.Tensor:
        return torch.relu(pre) * (pre > self.threshold).to(pre.dtype)


@dataclass(frozen=True)
class TopK:
    """Keeps each position's k largest pre-activations, zeroes the rest."""

    k: int
    """Latents kept per position."""
    post_relu: bool = True
    """Apply a ReLU to the kept values (SAELens, sparsify, OpenAI's `postact_fn = ReLU`); False keeps
    negative ones (OpenAI's `Identity`)."""

    def __call__(self, pre: torch.Tensor) -> torch.Tensor:
        top = torch.topk(pre, k=min(self.k, pre.shape[-1]), dim=-1)
        values = torch.relu(top.values) if self.post_relu else top.values
        return torch.zeros_like(pre).scatter_(-1, top.indices, values)


@dataclass(frozen=True)
class GroupMax:
    """The latents in k equal consecutive groups: each position keeps the largest relu(pre) of each group and
    zeroes the rest of it (sparsify `groupmax`)."""

    k: int
    """Groups, hence latents kept per position."""

    def __call__(self, pre: torch.Tensor) -> torch.Tensor:
        groups = torch.relu(pre).reshape(*pre.shape[:-1], self.k, -1)
        values, indices = groups.max(dim=-1, keepdim=True)
        return torch.zeros_like(groups).scatter_(-1, indices, values).flatten(-2)


class Encoder(Protocol):
    """Maps a hooked activation `[..., d_in]` to latents `[..., n_latents]` (float32)."""

    @property
    def d_in(self) -> int: ...

    @property
    def n_latents(self) -> int: ...

    def encode(self, x: torch.Tensor) -> torch.Tensor: ...

    def to(self, device: torch.device) -> Self: ...


@dataclass(frozen=True)
class LinearEncoder:
    """latents = activation(inputs(x) @ w_enc + b_enc): ReLU, JumpReLU and TopK autoencoders and transcoders."""

    w_enc: torch.Tensor
    """`[d_in, n_latents]`."""
    b_enc: torch.Tensor
    """`[n_latents]`."""
    activation: ReLU | JumpReLU | TopK | GroupMax
    """The architecture's nonlinearity."""
    inputs: InputTransform = InputTransform()
    """Cast, normalization and pre-encoder bias."""
    pre_scale: torch.Tensor | None = None
    """Multiplies the pre-activations before the nonlinearity (SAELens TopK `rescale_acts_by_decoder_norm`:
    each latent's decoder row norm); kept apart, not folded into W_enc, to round exactly as SAELens does."""

    @property
    def d_in(self) -> int:
        return int(self.w_enc.shape[0])

    @property
    def n_latents(self) -> int:
        return int(self.w_enc.shape[1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.inputs(x) @ self.w_enc
        pre += self.b_enc  # in place, rounding as SAELens's `x @ W_enc + b_enc` (addmm's fused bias does not)
        if self.pre_scale is not None:
            pre = pre * self.pre_scale
        return self.activation(pre).float()

    def to(self, device: torch.device) -> Self:
        return moved(self, device)


@dataclass(frozen=True)
class GatedEncoder:
    """Gated SAEs (Rajamanoharan et al. 2024, SAELens `gated`): a gate decides which latents fire, a
    magnitude path sharing W_enc (rescaled per latent by exp(r_mag)) decides how strongly."""

    w_enc: torch.Tensor
    """`[d_in, n_latents]`."""
    b_gate: torch.Tensor
    """Bias of the gate path."""
    r_mag: torch.Tensor
    """Log of the per-latent rescaling of W_enc in the magnitude path."""
    b_mag: torch.Tensor
    """Bias of the magnitude path."""
    inputs: InputTransform = InputTransform()
    """Cast, normalization and pre-encoder bias."""

    @property
    def d_in(self) -> int:
        return int(self.w_enc.shape[0])

    @property
    def n_latents(self) -> int:
        return int(self.w_enc.shape[1])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inputs(x)
        active = (x @ self.w_enc + self.b_gate > 0).to(x.dtype)
        magnitude = torch.relu(x @ (self.w_enc * self.r_mag.exp()) + self.b_mag)
        return (active * magnitude).float()

    def to(self, device: torch.device) -> Self:
        return moved(self, device)
