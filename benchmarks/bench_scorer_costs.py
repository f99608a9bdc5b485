"""What each scorer costs per explanation: requests, prompt tokens and completion tokens, ours against delphi's.

One run, one served model, the same examples. The model is served by neuroscribe's in-process llama.cpp
backend on 127.0.0.1, behind a small counting proxy (also on 127.0.0.1) that forwards every request and
sums the `usage` of each answer, per scorer (each scorer gets its own URL prefix). So both sides are
counted the same way, by the server; ours is counted by the client's `UsageLedger` as well.

Parts (`--parts delphi,ours`, both by default):

- `delphi`: delphi's `DetectionScorer` and `FuzzingScorer` in text mode (PyPI `eai-delphi` 0.1.3), run in
  a separate virtualenv that this script makes if it is missing (`benchmarks/.venv-delphi`, git-ignored;
  torch pinned to the CPU wheel, delphi itself installed with `--no-deps` after its runtime dependencies,
  and a stub `vllm` module because `delphi.clients` imports vllm at module level). The virtualenv runs
  this same file with `--delphi-worker` (standard library + delphi only), talking to the proxy through
  delphi's `OpenRouter` client (chat messages posted to the URL given; text only). Delphi is measured at
  its pipeline's default of 5 examples per prompt (`num_examples_per_scorer_prompt`) and at the scorer
  classes' default of 1 (`--delphi-examples-per-prompt`).
- `ours`: neuroscribe's scorers through `create_scorer(name, backend, options)` on an `openai` backend
  pointed at the same proxy: `simulation` with the simulators `all_at_once`, `generated_logprobs` and
  `one_at_a_time` (generated_logprobs with `constrained = true`: the small model cannot copy an excerpt),
  then `detection` and `fuzzing`. A simulator or scorer that is not registered in this
  tree is skipped with a line saying so.

The examples: a small collection of the embedded model (`neuroscribe collect --model embedded --corpus
embedded --layers 2 --indices 7,42 --max-tokens 8192 --excerpt-tokens 32`, made under benchmarks/out/ if
missing); per unit the valid split's first `--examples` top-activating excerpts (delphi's `test`
examples, our scored top split) and first `--examples` random excerpts (delphi's `not_active` examples,
our scored random split). The explanation of each unit is a fixed sentence naming its commonest
max-activating token (no explainer runs: this measures scoring only). Token counts depend on the
tokenizer of the served model, so the comparison is only meaningful within one run.

    .venv/bin/python benchmarks/bench_scorer_costs.py                      # both parts (first run: installs delphi)
    .venv/bin/python benchmarks/bench_scorer_costs.py --parts ours
    .venv/bin/python benchmarks/bench_scorer_costs.py --parts ours --scorer-options 'detection={...}'

Target (from the issue): ours no more prompt tokens per scored example than delphi's.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import datetime
import http.server
import json
import os
import platform
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
DEFAULT_VENV = ROOT / "benchmarks" / ".venv-delphi"
DEFAULT_COLLECTION = OUT / "scorer_costs_collection"
COLLECT_ARGS = ["--model", "embedded", "--corpus", "embedded", "--layers", "2", "--indices", "7,42",
                "--max-tokens", "8192", "--excerpt-tokens", "32"]

CONSTRAINED = {"simulator_options": {"constrained": True}}
"""generated_logprobs with a JSON schema copying the tokens: the embedded model cannot copy an excerpt itself."""

DELPHI_VERSION = "0.1.3"
TORCH_PIN = "torch==2.13.0"  # the CPU wheel this machine already has; an unpinned torch pulls a CUDA build
DELPHI_RUNTIME_DEPS = [
    "datasets", "transformers", "orjson", "eai-sparsify", "safetensors", "simple_parsing", "jaxtyping", "fire",
    "blobfile", "flask", "aiofiles", "sentence_transformers", "anyio", "faiss-cpu", "asyncer", "beartype",
    "bitsandbytes", "httpx", "tiktoken",
]

# `delphi.clients` imports vllm at module level (for its offline client, which this benchmark never uses);
# vllm itself needs CUDA, so the virtualenv gets this stub instead.
VLLM_STUB = {
    "vllm/__init__.py": (
        '"""Stub written by benchmarks/bench_scorer_costs.py: delphi.clients imports vllm at module level; '
        'the offline client is never used here."""\n\n'
        "class LLM:\n    def __init__(self, *args, **kwargs):\n"
        "        raise RuntimeError('vllm stub: the offline client is not available in this virtualenv')\n\n\n"
        "class SamplingParams:\n    def __init__(self, *args, **kwargs):\n"
        "        self.args, self.kwargs = args, kwargs\n"
    ),
    "vllm/distributed/__init__.py": "",
    "vllm/distributed/parallel_state.py": (
        "def destroy_model_parallel():\n    pass\n\n\ndef destroy_distributed_environment():\n    pass\n"
    ),
    "vllm/inputs.py": "class TokensPrompt(dict):\n    pass\n",
}


# --- the counting proxy (loopback only) -------------------------------------------------------------


class CountingProxy:
    """Forwards http://127.0.0.1:PORT/<label>/<path> to <upstream>/<path> and sums each answer's `usage`
    under <label>. Only POSTs whose answer carries `usage` count as model requests."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.lock = threading.Lock()
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._forward(None)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self._forward(self.rfile.read(length))

            def _forward(self, body: bytes | None) -> None:
                label, _, rest = self.path.lstrip("/").partition("/")
                request = urllib.request.Request(f"{proxy.upstream}/{rest}", data=body, method=self.command,
                                                 headers={"Content-Type": "application/json"})
                try:
                    with urllib.request.urlopen(request, timeout=3600) as response:
                        status, payload = response.status, response.read()
                        content_type = response.headers.get("Content-Type", "application/json")
                except urllib.error.HTTPError as error:
                    status, payload = error.code, error.read()
                    content_type = error.headers.get("Content-Type", "application/json")
                proxy.tally(label, body, status, payload)
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        class Server(http.server.ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up (e.g. the rest of a failed unit's requests) is not news

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="counting-proxy", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def tally(self, label: str, body: bytes | None, status: int, payload: bytes) -> None:
        with self.lock:
            counts = self.counts[label]
            counts["http_requests"] += 1
            if body is None:
                return
            if status != 200:
                counts["failed"] += 1
            try:
                answer = json.loads(payload)
                usage, timings = answer.get("usage") or {}, answer.get("timings") or {}
            except (ValueError, AttributeError):
                usage, timings = {}, {}
            if usage:
                counts["requests"] += 1
                counts["prompt_tokens"] += int(usage.get("prompt_tokens") or 0)
                counts["completion_tokens"] += int(usage.get("completion_tokens") or 0)
                # llama.cpp's own figure: prompt tokens served from its prompt cache, not computed again
                counts["cached_prompt_tokens"] += int(timings.get("cache_n") or 0)

    def totals(self, label: str) -> dict[str, int]:
        with self.lock:
            return dict(self.counts.get(label, collections.Counter()))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- examples ---------------------------------------------------------------------------------------


def ensure_collection(path: Path) -> None:
    if (path / "dataset.json").is_file():
        return
    print(f"collecting the examples into {path} ...", flush=True)
    neuroscribe = Path(sys.executable).with_name("neuroscribe")
    command = [str(neuroscribe)] if neuroscribe.exists() else [sys.executable, "-m", "neuroscribe"]
    subprocess.run([*command, "collect", *COLLECT_ARGS, "--out", str(path), "--no-progress"], check=True)


def load_units(collection: Path, n_examples: int) -> list[dict[str, Any]]:
    """Per unit: the record's splits and the fixed examples, as plain data (what the delphi worker reads)."""
    from neuroscribe.datasets import load_neuron_record
    from neuroscribe.records import SliceParams, split_records

    dataset = json.loads((collection / "dataset.json").read_text())
    units = []
    for layer, indices in sorted(dataset["indices"].items(), key=lambda kv: int(kv[0])):
        for index in indices:
            record = load_neuron_record(str(collection / "collated-activations" / str(layer) / f"{index}.json"))
            splits = split_records(record, SliceParams(n_examples_per_split=n_examples))
            units.append({
                "layer": int(layer), "index": int(index), "record": record, "splits": splits,
                "explanation": fixed_explanation(splits.train),
                "activating": [{"tokens": r.tokens, "activations": r.activations} for r in splits.valid.top],
                "non_activating": [{"tokens": r.tokens, "activations": r.activations} for r in splits.valid.random],
            })
    return units


def fixed_explanation(train: list[Any]) -> str:
    counts = collections.Counter(r.tokens[max(range(len(r.tokens)), key=r.activations.__getitem__)] for r in train)
    token = counts.most_common(1)[0][0].strip() or "whitespace"
    return f'the word "{token}" and words like it'


# --- delphi: the virtualenv and the worker -----------------------------------------------------------


def ensure_delphi_venv(venv: Path) -> Path:
    """The delphi virtualenv, made (or completed) if needed; returns its python."""
    python = venv / "bin" / "python"

    def works(code: str) -> bool:
        return python.exists() and subprocess.run([str(python), "-c", code], capture_output=True).returncode == 0

    if works("import delphi.scorers, delphi.clients"):
        return python
    if not python.exists():
        print(f"making {venv} (eai-delphi {DELPHI_VERSION}; several minutes the first time) ...", flush=True)
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", str(venv)], check=True)
    if not works("import importlib.util as u; assert u.find_spec('delphi')"):
        pip = [str(python), "-m", "pip", "install", "--quiet"]
        subprocess.run([*pip, TORCH_PIN], check=True)  # first, so nothing below can pull another torch
        subprocess.run([*pip, TORCH_PIN, *DELPHI_RUNTIME_DEPS], check=True)
        subprocess.run([*pip, "--no-deps", f"eai-delphi=={DELPHI_VERSION}"], check=True)
    if not works("import vllm"):
        site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                              capture_output=True, text=True, check=True).stdout.strip()
        for name, text in VLLM_STUB.items():
            target = Path(site) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    subprocess.run([str(python), "-c", "import delphi.scorers, delphi.clients"], check=True)
    return python


def delphi_worker(spec_path: Path, result_path: Path) -> None:
    """Runs inside the delphi virtualenv: standard library, torch and delphi only."""
    import torch
    from delphi.clients import OpenRouter
    from delphi.latents import ActivatingExample, Latent, LatentRecord, NonActivatingExample
    from delphi.scorers import DetectionScorer, FuzzingScorer

    spec = json.loads(spec_path.read_text())

    def record(unit: dict[str, Any]) -> LatentRecord:
        def ids(tokens: list[str]) -> torch.Tensor:  # text mode reads str_tokens; ids are never looked up
            return torch.arange(len(tokens))

        test = [ActivatingExample(tokens=ids(e["tokens"]), activations=torch.tensor(e["activations"]),
                                  str_tokens=e["tokens"], quantile=1) for e in unit["activating"]]
        # delphi's non-activating examples of a sparse latent are all zeros, which makes fuzzing highlight
        # random tokens (its default path); a random excerpt of an MLP neuron is not exactly zero
        not_active = [NonActivatingExample(tokens=ids(e["tokens"]), activations=torch.zeros(len(e["tokens"])),
                                           str_tokens=e["tokens"], distance=-1.0) for e in unit["non_activating"]]
        return LatentRecord(latent=Latent(module_name=f"layers.{unit['layer']}.mlp", latent_index=unit["index"]),
                            examples=test, test=test, not_active=not_active, explanation=unit["explanation"])

    scorer_types = {"detection": DetectionScorer, "fuzzing": FuzzingScorer}
    prompts_seen: dict[str, Any] = {}
    results = []

    class Recording(OpenRouter):
        async def generate(self, prompt: Any, max_retries: int = 1, **kwargs: Any) -> Any:
            prompts_seen.setdefault(self.url, prompt)
            return await super().generate(prompt, max_retries=max_retries, **kwargs)

    async def run() -> None:
        for job in spec["jobs"]:
            client = Recording(spec["model"], api_key="not-needed", base_url=job["url"],
                               max_tokens=spec["max_tokens"])
            scorer = scorer_types[job["scorer"]](client, n_examples_shown=job["examples_per_prompt"])
            start = time.perf_counter()
            scored = parsed = 0
            for unit in spec["units"]:
                output = await scorer(record(unit))
                scored += len(output.score)
                parsed += sum(o.prediction is not None for o in output.score)
            await client.client.aclose()
            results.append({**job, "scored": scored, "parsed": parsed, "seconds": time.perf_counter() - start,
                            "first_prompt": prompts_seen.get(job["url"])})

    asyncio.run(run())
    result_path.write_text(json.dumps(results, indent=1))


def run_delphi(args: argparse.Namespace, proxy: CountingProxy, model: str, units: list[dict[str, Any]]) -> list[dict]:
    python = ensure_delphi_venv(args.delphi_venv)
    jobs = [{"label": f"delphi-{scorer}-{n}", "scorer": scorer, "examples_per_prompt": n,
             "url": f"{proxy.url}/delphi-{scorer}-{n}/v1/chat/completions"}
            for n in args.delphi_examples_per_prompt for scorer in ("detection", "fuzzing")]
    OUT.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = OUT / "scorer_costs_delphi_in.json", OUT / "scorer_costs_delphi_out.json"
    spec_path.write_text(json.dumps({
        "model": model, "max_tokens": args.delphi_max_tokens, "jobs": jobs,
        "units": [{k: u[k] for k in ("layer", "index", "explanation", "activating", "non_activating")}
                  for u in units]}))
    print(f"delphi: {len(jobs)} runs in {python}", flush=True)
    subprocess.run([str(python), __file__, "--delphi-worker", str(spec_path), str(result_path)], check=True)
    rows = []
    for job in json.loads(result_path.read_text()):
        counted = proxy.totals(job["label"])
        n = job["examples_per_prompt"]
        name = f"delphi {job['scorer']}, {n} example{'s' if n > 1 else ''} per prompt"
        rows.append(row(name, len(units), job["scored"], counted, None, job["seconds"],
                        note=f"{job['parsed']}/{job['scored']} answers parsed"))
        (OUT / f"scorer_costs_prompt_{job['label']}.json").write_text(json.dumps(job["first_prompt"], indent=1))
    return rows


# --- ours -------------------------------------------------------------------------------------------


def scorer_input(unit: dict[str, Any], seed: int) -> Any:
    """The unit's examples as our scorers' input, the same ones delphi gets: simulation scores the valid split's
    top and random excerpts; detection and fuzzing draw their activating excerpts from the same top excerpts (no
    quantile samples given) and their non-activating ones from the same random excerpts, zeroed as for delphi
    (see `judge_options`)."""
    import dataclasses

    from neuroscribe.records import ScoringSet, UnitId
    from neuroscribe.scorers import ScorerInput

    record, splits = unit["record"], unit["splits"]
    silent = [dataclasses.replace(r, activations=[0.0] * len(r.tokens)) for r in splits.valid.random]
    return ScorerInput(
        unit=UnitId(unit["layer"], unit["index"]),
        explanation=unit["explanation"],
        scoring=ScoringSet(top=list(splits.valid.top), random=list(splits.valid.random)),
        calibration=splits.calibration,
        random_pool=silent,
        max_activation=record.max_activation,
        seed=seed,
    )


def judge_options(n_examples: int) -> dict[str, object]:
    """Detection and fuzzing on every given example, 5 to a prompt (delphi's pipeline default)."""
    return {"n_quantiles": 1, "n_per_quantile": n_examples, "n_non_activating": n_examples,
            "excerpts_per_prompt": 5}


def n_scored(output: Any) -> int:
    """Examples the scorer judged, from its result record."""
    result = output.result
    if hasattr(result, "examples"):  # ExplanationScores
        return len(result.examples)
    return sum(len(s.scored_simulation.scored_sequence_simulations) for s in result.scored_explanations)


async def run_ours(args: argparse.Namespace, proxy: CountingProxy, model: str,
                   units: list[dict[str, Any]]) -> list[dict]:
    from neuroscribe.llm import BackendSpec, TransportSettings, create_backend
    from neuroscribe.llm.usage import UsageLedger
    from neuroscribe.scorers import SCORERS, create_scorer
    from neuroscribe.simulator import SIMULATORS

    extra = dict(parse_scorer_options(item) for item in args.scorer_options)
    plans: list[tuple[str, str, dict[str, object]]] = []
    for simulator in args.simulators:
        if simulator not in SIMULATORS:
            print(f"ours: skipped simulation with {simulator} (no simulator {simulator!r} is registered in this tree)")
            continue
        options = {"simulator": simulator, **extra.get(f"simulation/{simulator}", {})}
        plans.append((f"simulation, {simulator}", "simulation", options))
    for name in args.scorers:
        if name not in SCORERS:
            print(f"ours: skipped {name} (no scorer {name!r} is registered in this tree)")
            continue
        plans.append((name, name, {**judge_options(args.examples), **extra.get(name, {})}))
    for item in [] if "none" in args.also else args.also:
        key, options = parse_scorer_options(item)
        name, _, simulator = key.partition("/")
        if name not in SCORERS or (simulator and simulator not in SIMULATORS):
            print(f"ours: skipped {key} with {options} (not registered in this tree)")
            continue
        if simulator:
            options = {"simulator": simulator, **options}
        plans.append((f"{key.replace('/', ', ')} {json.dumps(options.get('simulator_options', options))}",
                      name, options))

    rows = []
    for label, name, options in plans:
        ledger = UsageLedger()
        slug = f"ours-{len(rows)}-{name}"
        backend = create_backend(
            BackendSpec(type="openai", base_url=f"{proxy.url}/{slug}/v1", model=model),
            TransportSettings(timeout_s=3600.0, max_retries=0, max_concurrency=args.concurrency),
            ledger=ledger, options={"prompt_logprobs": "per_position", "text_schema_field": "json_schema",
                                    "distribution_top_k": args.distribution_top_k})
        try:
            scorer = create_scorer(name, backend, options)
        except Exception as exc:
            print(f"ours: skipped {label} ({type(exc).__name__}: {str(exc)[:200]})")
            await backend.aclose()
            continue
        units_here = units[: args.slow_units] if "one_at_a_time" in label else units
        start, scored, failed = time.perf_counter(), 0, 0
        for unit in units_here:
            inputs = scorer_input(unit, args.seed)
            try:
                scored += n_scored(await scorer.score(inputs))
            except Exception as exc:
                # its requests were made and counted: count the examples it was given
                failed += 1
                scored += len(inputs.scoring.all)
                print(f"  {label} on {unit['layer']}/{unit['index']}: failed ({type(exc).__name__}: {str(exc)[:200]})")
        seconds = time.perf_counter() - start
        await backend.aclose()
        totals = ledger.totals
        ledger_counts = {"requests": totals.requests, "prompt_tokens": totals.prompt_tokens,
                         "completion_tokens": totals.completion_tokens}
        note = (f"{failed} of {len(units_here)} units failed (the small model's answers; counted at the "
                f"{len(units_here[0]['activating']) + len(units_here[0]['non_activating'])} examples each was given)"
                if failed else "")
        rows.append(row(f"ours: {label}", len(units_here), scored, proxy.totals(slug), ledger_counts, seconds,
                        note=note))
        print(f"  {label}: {scored} examples, {totals.describe()}, {seconds:.1f} s", flush=True)
    return rows


def parse_scorer_options(item: str) -> tuple[str, dict[str, object]]:
    name, _, text = item.partition("=")
    options = json.loads(text)
    if not isinstance(options, dict):
        raise SystemExit(f"--scorer-options {item!r}: the options must be a JSON object")
    return name.strip(), options


# --- report -----------------------------------------------------------------------------------------


def row(name: str, n_explanations: int, n_scored_examples: int, server: dict[str, int],
        ledger: dict[str, int] | None, seconds: float, note: str = "") -> dict[str, Any]:
    return {"scorer": name, "explanations": n_explanations, "scored_examples": n_scored_examples,
            "server": server, "ledger": ledger, "seconds": round(seconds, 1), "note": note}


def fmt(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| scorer | scored examples / explanation | requests / explanation | prompt tokens / explanation "
             "| completion tokens / explanation | **prompt tokens / scored example** | of which llama.cpp reused "
             "from its prompt cache | client ledger: requests, prompt tokens / explanation | time | note |",
             "|---|---:|---:|---:|---:|---:|---:|---|---:|---|"]
    for r in rows:
        n, server, ledger = r["explanations"] or 1, r["server"], r["ledger"]
        per_example = server.get("prompt_tokens", 0) / r["scored_examples"] if r["scored_examples"] else None
        cached = (f"{server.get('cached_prompt_tokens', 0) / server['prompt_tokens']:.0%}"
                  if server.get("prompt_tokens") else "-")
        ledger_text = ("-" if ledger is None else
                       f"{fmt(ledger['requests'] / n, 1)}, {fmt(ledger['prompt_tokens'] / n)}")
        lines.append(
            f"| {r['scorer']} | {fmt(r['scored_examples'] / n, 1)} | {fmt(server.get('requests', 0) / n, 1)} "
            f"| {fmt(server.get('prompt_tokens', 0) / n)} | {fmt(server.get('completion_tokens', 0) / n)} "
            f"| **{fmt(per_example)}** | {cached} | {ledger_text} | {r['seconds']:.0f} s | {r['note']} |")
    return "\n".join(lines)


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, load average {load:.1f}), "
            f"Python {platform.python_version()}")


async def main(args: argparse.Namespace) -> None:
    from neuroscribe.llm.llamacpp import LlamaCppBackend, resolve_gguf, served_model_name

    ensure_collection(args.collection)
    units = load_units(args.collection, args.examples)
    server = LlamaCppBackend(model=args.model, context_length=args.context_length, parallel=args.parallel,
                             threads=args.threads)
    model = served_model_name(str(resolve_gguf(args.model)))  # the name the server lists at /v1/models
    proxy = CountingProxy(server.base_url.removesuffix("/v1"))
    started = datetime.datetime.now(datetime.UTC)
    print(f"llama.cpp serving {model} at {server.base_url}; counting proxy at {proxy.url}")
    print(f"{len(units)} units x ({args.examples} activating + {args.examples} non-activating) examples; "
          f"explanations: {[u['explanation'] for u in units]}", flush=True)
    rows: list[dict[str, Any]] = []
    try:
        if "delphi" in args.parts:
            rows += await asyncio.to_thread(run_delphi, args, proxy, model, units)
        if "ours" in args.parts:
            rows += await run_ours(args, proxy, model, units)
    finally:
        proxy.close()
        await server.aclose()
    print(f"\nmodel: {args.model} ({model}) served by llama.cpp (neuroscribe's in-process server, "
          f"{args.parallel} slots, {args.context_length} tokens each); machine: {machine()}; "
          f"date: {started:%Y-%m-%d %H:%M} UTC\n")
    print(table(rows))
    (OUT / "scorer_costs.json").write_text(json.dumps({"model": model, "machine": machine(),
                                                       "date": started.isoformat(), "rows": rows}, indent=1))


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="delphi,ours", type=lambda s: s.split(","), help="delphi,ours")
    parser.add_argument("--model", default="embedded", help="'embedded' or a .gguf file (served by llama.cpp)")
    parser.add_argument("--collection", type=Path, default=DEFAULT_COLLECTION,
                        help="a neuroscribe local dataset (made with the collect command above if missing)")
    parser.add_argument("--examples", type=int, default=5,
                        help="activating and (as many) non-activating examples per unit (default 5 + 5)")
    parser.add_argument("--simulators", default="all_at_once,generated_logprobs,one_at_a_time",
                        type=lambda s: s.split(","))
    parser.add_argument("--scorers", default="detection,fuzzing", type=lambda s: s.split(","),
                        help="our scorers besides simulation")
    parser.add_argument("--scorer-options", action="append", metavar="NAME=JSON",
                        default=[f"simulation/generated_logprobs={json.dumps(CONSTRAINED)}"],
                        help="options for one of ours, e.g. 'detection={...}' or 'simulation/one_at_a_time={...}'")
    parser.add_argument("--also", action="append", metavar="NAME=JSON",
                        default=['simulation/generated_logprobs={"simulator_options": '
                                 '{"constrained": true, "excerpts_per_request": 5}}'],
                        help="one more run of ours with these options (repeatable); default: generated_logprobs "
                             "with 5 excerpts per request, as delphi's 5 examples per prompt; 'none' drops them")
    parser.add_argument("--distribution-top-k", type=int, default=100,
                        help="alternatives read per position for all_at_once (the backend's default, 20, can "
                             "miss every value 0-10 with the small model; the count changes no token count)")
    parser.add_argument("--slow-units", type=int, default=1,
                        help="units simulated one_at_a_time (a request per token; default 1)")
    parser.add_argument("--delphi-venv", type=Path, default=DEFAULT_VENV)
    parser.add_argument("--delphi-examples-per-prompt", default="5,1", type=lambda s: [int(x) for x in s.split(",")],
                        help="delphi's pipeline default is 5 (num_examples_per_scorer_prompt), its scorers' 1")
    parser.add_argument("--delphi-max-tokens", type=int, default=64,
                        help="max_tokens of delphi's client (its default, 3000, lets a small model ramble for "
                             "minutes per request; an answer for 5 examples is about 15 tokens)")
    parser.add_argument("--context-length", type=int, default=4096, help="tokens per server slot")
    parser.add_argument("--parallel", type=int, default=2, help="server slots")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: half the CPUs)")
    parser.add_argument("--concurrency", type=int, default=2, help="our client's concurrent requests")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--delphi-worker":
        delphi_worker(Path(sys.argv[2]), Path(sys.argv[3]))
    else:
        asyncio.run(main(arguments()))
