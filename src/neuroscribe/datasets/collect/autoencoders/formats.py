"""Loaders of published sparse-autoencoder files, each reading its format's own flags.

- `saelens`: a folder with `cfg.json` + `sae_weights.safetensors`; its `architecture`,
  `apply_b_dec_to_input`, `normalize_activations` and `dtype` decide.
- `sparsify`: a hook point's folder with `cfg.json` + `sae.safetensors`; TopK (or GroupMax) of
  relu(W x + b), `b_dec` subtracted unless `transcode`.
- `openai`: a `.pt` state dict with `encoder.weight`, `pre_bias`, `latent_bias`; its `activation` (ReLU or
  TopK) decides, and TopK ones are layer-normed first (their `from_state_dict` does so).
- `params`: Gemma Scope `params.npz`, or a `.safetensors`/`.pt` file with `W_enc`, `b_enc`: JumpReLU when
  there is a `threshold`, else ReLU; nothing is subtracted from the input.
- `saelens:RELEASE:SAE_ID`: an SAE of SAELens's pretrained directory, fetched by SAELens itself (its Hugging
  Face cache, else the network) and read as the SAELens folder it saves.

Every failure is a `DataError` naming the file and the field, raised before any forward pass.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from neuroscribe.errors import DataError

from .encoders import (
    NORMALIZATIONS,
    Encoder,
    GatedEncoder,
    GroupMax,
    InputTransform,
    JumpReLU,
    LinearEncoder,
    ReLU,
    TopK,
)

DTYPES = {"float32": torch.float32, "torch.float32": torch.float32, "float16": torch.float16,
          "torch.float16": torch.float16, "bfloat16": torch.bfloat16, "torch.bfloat16": torch.bfloat16,
          "float64": torch.float64, "torch.float64": torch.float64}
"""dtype names as the formats write them in their configs."""


@dataclass(frozen=True)
class AutoencoderFormat:
    """One file layout: how to recognize it and how to read it."""

    name: str
    """Shown in errors and docs."""
    recognizes: Callable[[Path], bool]
    """Whether a path is in this layout."""
    load: Callable[[Path], Encoder]
    """The encoder the file describes."""


FORMATS: list[AutoencoderFormat] = []
"""Tried in order; the first that recognizes a path reads it."""


Loader = Callable[[Path], Encoder]


def register(name: str, recognizes: Callable[[Path], bool]) -> Callable[[Loader], Loader]:
    def add(load: Loader) -> Loader:
        FORMATS.append(AutoencoderFormat(name, recognizes, load))
        return load

    return add


SAELENS_RELEASE = "saelens:"
"""The prefix of `saelens:RELEASE:SAE_ID`, an SAE named by its SAELens release rather than a local path."""


def load_autoencoder(path: Path, d_in: int, device: torch.device) -> Encoder:
    """The encoder stored at `path` (or named `saelens:RELEASE:SAE_ID`), checked to read `d_in` features, on
    `device`."""
    if str(path).startswith(SAELENS_RELEASE):
        encoder = load_saelens_release(str(path))
    elif not path.exists():
        raise DataError(f"autoencoder {path} does not exist")
    else:
        encoder = _load_local(path)
    if encoder.d_in != d_in:
        raise DataError(f"{path}: the encoder reads {encoder.d_in} features (W_enc) but the hook point has {d_in}; "
                        "check the hook point and the layer")
    return encoder.to(device)


def _load_local(path: Path) -> Encoder:
    for fmt in FORMATS:
        if fmt.recognizes(path):
            return fmt.load(path)
    raise DataError(f"{path}: not a known autoencoder layout; give a SAELens folder (cfg.json + "
                    "sae_weights.safetensors), a sparsify folder (cfg.json + sae.safetensors), an OpenAI "
                    "sparse_autoencoder .pt state dict, a .npz/.safetensors/.pt file with W_enc and b_enc, "
                    "or a SAELens release as saelens:RELEASE:SAE_ID")


def load_saelens_release(spec: str) -> Encoder:
    """SAELens fetches the SAE and saves it as a SAELens folder, which is then read like a local one: the same
    flags decide, and the same code that the tests check against SAELens's own encode."""
    release, _, sae_id = spec.removeprefix(SAELENS_RELEASE).partition(":")
    if not release or not sae_id:
        raise DataError(f"{spec!r}: name a SAELens release as saelens:RELEASE:SAE_ID, "
                        "e.g. saelens:gpt2-small-res-jb:blocks.8.hook_resid_pre")
    try:
        from sae_lens import SAE
    except ImportError as error:
        raise DataError(f"{spec}: loading by release id needs SAELens (pip install 'neuroscribe[saelens]')") from error
    try:
        sae = SAE.from_pretrained(release, sae_id, device="cpu")
    except ValueError as error:  # an unknown release or SAE id; SAELens's message lists the valid ids
        raise DataError(f"{spec}: {error}") from error
    except OSError as error:  # neither in the Hugging Face cache nor downloadable (offline, or downloads off)
        raise DataError(f"{spec}: SAELens could not fetch it ({error}); where there is no network, fetch it once "
                        "where there is (SAE.from_pretrained fills the Hugging Face cache) or give the folder that "
                        "SAE.save_model writes") from error
    with tempfile.TemporaryDirectory(prefix="neuroscribe-saelens-") as folder:
        sae.save_model(folder)
        return load_saelens(Path(folder))


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    import numpy as np

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return dict(load_file(str(path)))
        if path.suffix == ".npz":
            with np.load(path) as archive:
                return {name: torch.from_numpy(archive[name]) for name in archive.files}
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, ValueError, RuntimeError) as error:
        raise DataError(f"cannot read autoencoder weights {path}: {error}") from error
    if not isinstance(loaded, dict):
        raise DataError(f"{path}: expected a dict of tensors, found {type(loaded).__name__}")
    return dict(loaded)


def _read_config(path: Path) -> dict[str, object]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read autoencoder config {path}: {error}") from error
    if not isinstance(config, dict):
        raise DataError(f"{path}: expected a JSON object")
    return config


def _tensor(tensors: dict[str, object], name: str, path: Path, dtype: torch.dtype | None = None) -> torch.Tensor:
    """The tensor `name`, which must be there and, when `dtype` is given, be stored in it."""
    value = tensors.get(name)
    if not isinstance(value, torch.Tensor):
        present = sorted(k for k, v in tensors.items() if isinstance(v, torch.Tensor))
        raise DataError(f"{path}: tensor {name!r} is missing (the file has {present})")
    if dtype is not None and value.dtype != dtype:
        raise DataError(f"{path}: tensor {name!r} is {value.dtype} but the config's `dtype` says {dtype}; "
                        "fix the config or convert the weights")
    return value if dtype is not None else value.float()


def _dtype(config: dict[str, object], path: Path) -> torch.dtype:
    name = str(config.get("dtype", "float32"))
    if name not in DTYPES:
        raise DataError(f"{path}: unknown `dtype` {name!r}; valid: {', '.join(sorted(set(DTYPES)))}")
    return DTYPES[name]


def _is_dir_with(*names: str) -> Callable[[Path], bool]:
    return lambda path: path.is_dir() and all((path / name).is_file() for name in names)


SAELENS_ARCHITECTURES = ("standard", "jumprelu", "topk", "gated", "transcoder", "skip_transcoder",
                         "jumprelu_transcoder")
"""SAELens architectures this loader encodes (transcoders subtract nothing from their input)."""


@register("saelens", _is_dir_with("cfg.json", "sae_weights.safetensors"))
def load_saelens(folder: Path) -> Encoder:
    cfg_path, weights_path = folder / "cfg.json", folder / "sae_weights.safetensors"
    config = _read_config(cfg_path)
    architecture = str(config.get("architecture", "standard"))
    if architecture not in SAELENS_ARCHITECTURES:
        raise DataError(f"{cfg_path}: unknown `architecture` {architecture!r}; this loader reads "
                        f"{', '.join(SAELENS_ARCHITECTURES)}")
    normalization = str(config.get("normalize_activations", "none"))
    if normalization not in NORMALIZATIONS:
        raise DataError(f"{cfg_path}: unknown `normalize_activations` {normalization!r}; valid: "
                        f"{', '.join(NORMALIZATIONS)}")
    dtype = _dtype(config, cfg_path)
    tensors: dict[str, object] = dict(_read_tensors(weights_path))
    w_enc = _tensor(tensors, "W_enc", weights_path, dtype)
    if "d_in" in config and int(str(config["d_in"])) != w_enc.shape[0]:
        raise DataError(f"{cfg_path}: `d_in` is {config['d_in']} but W_enc in {weights_path} has shape "
                        f"{tuple(w_enc.shape)} ([d_in, d_sae])")
    subtracts = bool(config.get("apply_b_dec_to_input", True)) and "transcoder" not in architecture
    inputs = InputTransform(dtype, normalization,
                            _tensor(tensors, "b_dec", weights_path, dtype) if subtracts else None)
    if architecture == "gated":
        return GatedEncoder(w_enc, _tensor(tensors, "b_gate", weights_path, dtype),
                            _tensor(tensors, "r_mag", weights_path, dtype),
                            _tensor(tensors, "b_mag", weights_path, dtype), inputs)
    b_enc = _tensor(tensors, "b_enc", weights_path, dtype)
    if architecture == "topk":
        if "k" not in config:
            raise DataError(f"{cfg_path}: a topk SAE needs `k`")
        scale = (_tensor(tensors, "W_dec", weights_path, dtype).norm(dim=-1)
                 if config.get("rescale_acts_by_decoder_norm") else None)
        return LinearEncoder(w_enc, b_enc, TopK(int(str(config["k"]))), inputs, scale)
    if architecture.startswith("jumprelu"):
        return LinearEncoder(w_enc, b_enc, JumpReLU(_tensor(tensors, "threshold", weights_path, dtype)), inputs)
    return LinearEncoder(w_enc, b_enc, ReLU(), inputs)


@register("sparsify", _is_dir_with("cfg.json", "sae.safetensors"))
def load_sparsify(folder: Path) -> Encoder:
    cfg_path, weights_path = folder / "cfg.json", folder / "sae.safetensors"
    config = _read_config(cfg_path)
    activation = str(config.get("activation", "topk"))
    if activation not in ("topk", "groupmax"):
        raise DataError(f"{cfg_path}: unknown `activation` {activation!r}; sparsify's are 'topk' and 'groupmax'")
    if "k" not in config:
        raise DataError(f"{cfg_path}: `k` is missing")
    k = int(str(config["k"]))
    tensors: dict[str, object] = dict(_read_tensors(weights_path))
    weight = _tensor(tensors, "encoder.weight", weights_path)  # [n_latents, d_in]
    if "d_in" in config and int(str(config["d_in"])) != weight.shape[1]:
        raise DataError(f"{cfg_path}: `d_in` is {config['d_in']} but encoder.weight in {weights_path} has shape "
                        f"{tuple(weight.shape)} ([n_latents, d_in])")
    if activation == "groupmax" and (k <= 0 or weight.shape[0] % k):
        raise DataError(f"{cfg_path}: groupmax splits the {weight.shape[0]} latents into `k` = {k} equal groups; "
                        "k must divide them")
    transcoder = bool(config.get("transcode", False))
    inputs = InputTransform(pre_bias=None if transcoder else _tensor(tensors, "b_dec", weights_path))
    return LinearEncoder(weight.T.contiguous(), _tensor(tensors, "encoder.bias", weights_path),
                         TopK(k) if activation == "topk" else GroupMax(k), inputs)


def _is_openai(path: Path) -> bool:
    return path.is_file() and path.suffix == ".pt" and "encoder.weight" in _read_tensors(path)


@register("openai", _is_openai)
def load_openai(path: Path) -> Encoder:
    state: dict[str, object] = dict(_read_tensors(path))
    name = state.get("activation", "ReLU")
    weight = _tensor(state, "encoder.weight", path)  # [n_latents, d_in]
    inputs = InputTransform(normalization="layer_norm" if name == "TopK" else "none",
                            pre_bias=_tensor(state, "pre_bias", path))  # their `normalize` is on for TopK only
    activation: ReLU | TopK
    if name == "ReLU":
        activation = ReLU()
    elif name == "TopK":
        settings = state.get("activation_state_dict")
        if not isinstance(settings, dict) or "k" not in settings:
            raise DataError(f"{path}: `activation_state_dict` with `k` is missing for the TopK activation")
        post = settings.get("postact_fn", "ReLU")
        if post not in ("ReLU", "Identity"):
            raise DataError(f"{path}: unknown `activation_state_dict.postact_fn` {post!r}; valid: ReLU, Identity")
        activation = TopK(int(settings["k"]), post_relu=post == "ReLU")
    else:
        raise DataError(f"{path}: unknown `activation` {name!r}; valid: ReLU, TopK")
    return LinearEncoder(weight.T.contiguous(), _tensor(state, "latent_bias", path), activation, inputs)


def _has_params(path: Path) -> bool:
    return path.is_file() and path.suffix in (".npz", ".safetensors", ".pt")


@register("params", _has_params)
def load_params(path: Path) -> Encoder:
    """Gemma Scope's `params.npz` and bare tensor files: b_dec, if present, is the decoder's and is not
    subtracted from the input."""
    tensors: dict[str, object] = dict(_read_tensors(path))
    w_enc = _tensor(tensors, "W_enc", path)
    b_enc = _tensor(tensors, "b_enc", path)
    if w_enc.shape[1] != b_enc.shape[0] and w_enc.shape[0] == b_enc.shape[0]:
        w_enc = w_enc.T  # stored [n_latents, d_in]
    threshold = tensors.get("threshold")
    activation = ReLU() if threshold is None else JumpReLU(_tensor(tensors, "threshold", path))
    return LinearEncoder(w_enc.contiguous(), b_enc, activation)
