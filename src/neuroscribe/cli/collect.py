"""`neuroscribe collect`: build a local activation dataset from a model and a corpus (flags or a TOML file).

Flags override the TOML file; the TOML keys are the fields of `CollectConfig` (see docs/collect.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import sys
import tomllib
from pathlib import Path
from typing import Any

from neuroscribe.datasets.collect import CollectConfig, collect
from neuroscribe.errors import ConfigError
from neuroscribe.records import UnitKind

_FIELDS = {f.name: f for f in dataclasses.fields(CollectConfig)}


def parse_ranges(text: str) -> tuple[int, ...]:
    """'0-3,7' -> (0, 1, 2, 3, 7)."""
    out: list[int] = []
    try:
        for part in filter(None, (p.strip() for p in text.split(","))):
            low, dash, high = part.partition("-")
            out.extend(range(int(low), int(high) + 1) if dash else [int(low)])
    except ValueError:
        raise ConfigError(f"cannot read {text!r} as indices; write e.g. '0-3,7'") from None
    return tuple(out)


def _coerce(name: str, value: object, source: str) -> object:
    if name in {"layers", "indices"}:
        if isinstance(value, str):
            return parse_ranges(value)
        if isinstance(value, list) and all(isinstance(v, int) for v in value):
            return tuple(value)
        raise ConfigError(f"{source}: `{name}` must be a list of integers or a string like '0-3,7'")
    if name == "unit_kind":
        try:
            return UnitKind(str(value))
        except ValueError:
            raise ConfigError(f"{source}: unknown unit_kind {value!r}; valid: "
                              f"{', '.join(k.value for k in UnitKind)}") from None
    if name in {"out_dir", "sae_path"}:
        return Path(str(value))
    if name == "saes":  # [[collect.saes]] tables, checked by CollectConfig
        if not isinstance(value, list):
            raise ConfigError(f"{source}: `saes` must be a list of tables ([[collect.saes]])")
        return tuple(value)
    default = _FIELDS[name].default
    expected = bool if isinstance(default, bool) else int if isinstance(default, int) or name == "max_tokens" else str
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(f"{source}: `{name}` must be {expected.__name__}, got {value!r}")
    return value


def load_config_values(path: Path) -> dict[str, object]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"cannot read collect config {path}: {error}") from error
    table = data.get("collect", data)
    values: dict[str, object] = {}
    for key, value in table.items():
        if key not in _FIELDS:
            close = difflib.get_close_matches(key, _FIELDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown key {key!r}{hint}; valid keys: {', '.join(_FIELDS)}")
        values[key] = _coerce(key, value, str(path))
    if "out_dir" in values and not Path(str(values["out_dir"])).is_absolute():
        values["out_dir"] = path.parent / Path(str(values["out_dir"]))
    return values


_FLAGS: dict[str, tuple[str, type, str]] = {
    # field: (flag, type, help)
    "out_dir": ("--out", str, "output dataset directory (required here or in the config)"),
    "model": ("--model", str, "Hugging Face model id or path, or 'embedded' (default)"),
    "unit_kind": ("--unit-kind", str, "mlp_neuron (default), attention_head or autoencoder_latent"),
    "layers": ("--layers", str, "layers, e.g. '0-3,7' (default 0)"),
    "indices": ("--indices", str, "unit indices within each layer, e.g. '0-9' (default: all)"),
    "corpus": ("--corpus", str, "'embedded' (default), a file, a folder, a .jsonl, or hf:NAME[:CONFIG]"),
    "text_field": ("--text-field", str, "text field of JSONL / HF rows (default text)"),
    "split": ("--split", str, "split of a HF dataset (default train)"),
    "excerpt_tokens": ("--excerpt-tokens", int, "tokens per excerpt (default 64)"),
    "max_tokens": ("--max-tokens", int, "stop after this many tokens (default: whole corpus)"),
    "batch_size": ("--batch-size", int, "excerpts per forward pass (default 32)"),
    "top_k": ("--top-k", int, "top-activating excerpts per unit (default 50)"),
    "n_random": ("--n-random", int, "random excerpts per unit (default 50)"),
    "lookup_tokens": ("--lookup-tokens", int, "tokens in the look-up table (default 50; 0 disables)"),
    "sae_path": ("--sae", str,
                 "autoencoder folder or file (SAELens, sparsify, OpenAI .pt, .npz), or saelens:RELEASE:SAE_ID"),
    "sae_hook": ("--sae-hook", str, "resid_post (default), resid_pre, attn_out, mlp_out, mlp_in or blocks.L.hook_..."),
    "seed": ("--seed", int, "seed of every random choice (default 0)"),
    "device": ("--device", str, "torch device (default cpu)"),
}


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "collect",
        help="collect neuron records from a local model over a corpus",
        description="Stream a corpus through a causal LM once and write published-format records for the "
                    "requested units (top, random and quantile excerpts, moments, token look-up tables) into a "
                    "local dataset directory. An interrupted run resumes when started again with the same settings.",
    )
    parser.add_argument("--config", type=Path, metavar="TOML", help="collect settings ([collect] table or top level)")
    for name, (flag, kind, help_text) in _FLAGS.items():
        parser.add_argument(flag, dest=name, type=kind, default=None, help=help_text)
    parser.add_argument("--weight-summaries", dest="weight_summaries", action="store_true", default=None,
                        help="also write weight-based token summaries (MLP neurons)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=None,
                        help="no progress bar")
    parser.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                        help="collect on a Ray cluster: 'auto' joins the local node's cluster, host:port another, "
                             "nothing starts one on this machine (needs neuroscribe[ray])")
    parser.add_argument("--shards", type=int, default=4, help="with --ray: at most this many shards (default 4)")
    parser.add_argument("--gpus-per-shard", type=float, default=0, help="with --ray: GPUs per shard task (default 0)")
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> CollectConfig:
    values = load_config_values(args.config) if args.config else {}
    for name in [*_FLAGS, "weight_summaries", "progress"]:
        value = getattr(args, name)
        if value is not None:
            values[name] = _coerce(name, value, "command line")
    if "out_dir" not in values:
        raise ConfigError("collect: give the output directory with --out (or out_dir in the config)")
    return CollectConfig(**values)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    if args.ray is None:
        out = collect(config)
    else:
        from neuroscribe.datasets.collect.distributed import collect_on_ray

        out = collect_on_ray(config, address=args.ray or None, shards=args.shards, gpus_per_task=args.gpus_per_shard)
    print(f"wrote {out} ({out / ('autoencoders.json' if config.saes else 'dataset.json')})", file=sys.stderr)
    return 0
