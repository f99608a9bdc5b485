"""`neuroscribe train-simulator`: train the `trained` simulator's head from synthetic units and finished runs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "train-simulator",
        help="train the 'trained' simulator (a head over frozen MiniLM states) and save a named checkpoint",
        description=(
            "Train a head over frozen all-MiniLM-L6-v2 token states and the explanation's embedding to predict "
            "each token's activation (0-10) from (explanation, tokens, true activations): synthetic units made "
            "offline from the embedded BBC corpus (default), finished run directories (--run) and results files "
            "(--results). Saves head.safetensors and manifest.json to <cache>/simulators/NAME (or --out), where "
            "the simulator's `checkpoint = \"NAME\"` finds it. CPU, a few minutes with the defaults."
        ),
    )
    parser.add_argument("name", metavar="NAME", help="checkpoint name")
    parser.add_argument("--run", dest="runs", action="append", default=[], metavar="RUN",
                        help="a finished run directory whose explained units' records to train on; repeatable")
    parser.add_argument("--results", action="append", default=[], metavar="FILE",
                        help="a JSONL file of NeuronSimulationResults whose scored excerpts to train on; repeatable")
    parser.add_argument("--no-synthetic", action="store_true", help="leave out the synthetic units")
    parser.add_argument("--synthetic-excerpts", type=int, default=800, metavar="N",
                        help="BBC excerpts the synthetic rules run over (default 800)")
    parser.add_argument("--steps", type=int, default=3000, help="optimizer steps (default 3000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help="checkpoint directory (default <cache>/simulators/NAME)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    import torch

    from neuroscribe.experiments.simulator_training import TrainingData, train_simulator
    from neuroscribe.simulator.trained import TrainingSettings, checkpoint_dirs

    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else checkpoint_dirs()[0] / args.name
    data = TrainingData(synthetic_units=not args.no_synthetic, synthetic_excerpts=args.synthetic_excerpts,
                        runs=tuple(args.runs), results=tuple(args.results), seed=args.seed)
    manifest = train_simulator(data, TrainingSettings(steps=args.steps, seed=args.seed), name=args.name, out=out,
                               progress=lambda step, loss: print(f"step {step}: loss {loss:.4f}", flush=True))
    print(json.dumps({"validation": manifest.validation, "units": manifest.units, "sources": manifest.sources,
                      "final_loss": manifest.final_loss, "seconds": manifest.seconds}, indent=2))
    print(f"saved {out} (use it as [[simulators]] name = \"trained\", options = {{ checkpoint = \"{args.name}\" }})")
    return 0
