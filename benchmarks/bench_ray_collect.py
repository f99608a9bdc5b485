"""Collection on Ray: 2 workers x 1 thread against 1 worker x 1 thread, same tokens, and Ray's cost per shard.

Three timings of the same collection (embedded model and corpus, every MLP neuron of the chosen layers):
one process with one torch thread (`collect`), and the steps of `collect_on_ray` (plan, shards, merge and
write) with the same shards on a local Ray cluster of 1 CPU and of 2 CPUs (each task one thread). The
speed-up of the shard phase (1-CPU / 2-CPU; the target on a 2-core machine is >= 1.7x) and end to end (the
plan and the writing of records are serial); Ray's overhead per shard = (1-CPU Ray total - one-process
time) / shards: the driver's tokenizing pass, task start-up, model loads (once per worker process), saving
and loading shard states and the merge. The outputs of all three are checked to be identical.

Then an estimate, from per-unit costs, of explaining and scoring every neuron of GPT-2 XL (307,200) with a
local 8B simulator on N GPUs: per-unit GPU seconds = prompt tokens / prefill rate + generated tokens / decode
rate, x units / GPUs. The per-unit tokens are measured from a cold run (`--from-run RUN_DIR`, the usage its
outcomes record) or assumed (flags); the GPU throughputs are flags: measure them with bench_vllm_prefix.py on
the GPU you mean to use and pass them in.

    .venv/bin/python benchmarks/bench_ray_collect.py                         # full: 64k tokens, layer 0, 4 shards
    .venv/bin/python benchmarks/bench_ray_collect.py --tokens 4096 --shards 2  # smoke run
    .venv/bin/python benchmarks/bench_ray_collect.py --estimate-only --from-run RUN_DIR --gpus 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _config(out: Path, args: argparse.Namespace) -> object:
    from neuroscribe.datasets.collect import CollectConfig

    return CollectConfig(out_dir=out, layers=tuple(args.layers), max_tokens=args.tokens, batch_size=args.batch_size,
                         lookup_tokens=50, progress=False)


def _records(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.json"))
            if p.name != "dataset.json"}


def _on_ray(cpus: int, out: Path, args: argparse.Namespace) -> dict[str, float]:
    """Seconds of each phase of `collect_on_ray`, run step by step: plan (driver), shards, merge and write."""
    import ray

    from neuroscribe.datasets.collect.distributed import collect_shard, merge_and_write, plan_shards

    config = _config(out, args)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
    try:
        started = time.perf_counter()
        plan = plan_shards(config, args.shards)  # type: ignore[arg-type]
        planned = time.perf_counter()
        ray.get([ray.remote(collect_shard).options(num_cpus=1).remote(config, shard) for shard in plan])
        collated = time.perf_counter()
        ray.get(ray.remote(merge_and_write).options(num_cpus=1).remote(config, plan, 0.0))
        done = time.perf_counter()
    finally:
        ray.shutdown()
    return {"plan_s": round(planned - started, 2), "shards_s": round(collated - planned, 2),
            "merge_and_write_s": round(done - collated, 2), "total_s": round(done - started, 2),
            "shards": len(plan)}


def measured_tokens(run_dir: Path) -> tuple[float, float, str]:
    """Mean prompt and generated tokens per unit, all methods together, over the units every method finished
    in the run `run_dir`; it must have been run cold (the usage of an outcome leaves cache hits out)."""
    from neuroscribe.experiments.store import RunStore

    store = RunStore(run_dir)
    methods = store.methods()
    finished = [{u: o for u, o in store.outcomes(m).items() if o.status == "ok"} for m in methods]
    units = set.intersection(*(set(f) for f in finished)) if finished else set()
    if not units:
        raise SystemExit(f"--from-run {run_dir}: no unit finished by every method")
    usages = [f[u].usage for f in finished for u in units]
    if any(usage.cache_hits for usage in usages):
        print(f"warning: {run_dir} answered some calls from its cache; its token counts are too low")
    prompt = sum(usage.prompt_tokens for usage in usages) / len(units)
    generated = sum(usage.completion_tokens for usage in usages) / len(units)
    return prompt, generated, f"measured: {len(units)} units x {len(methods)} methods of {run_dir}"


def estimate(args: argparse.Namespace) -> dict[str, object]:
    """Wall time and cost of explaining and scoring `units` units on `gpus` GPUs, from per-unit token counts
    (measured by `--from-run`, else the assumed flags) and per-GPU throughputs."""
    if args.from_run:
        prompt_tokens, generated_tokens, source = measured_tokens(args.from_run)
    else:
        prompt_tokens = args.explain_prompt_tokens + args.scored_excerpts * args.simulate_prompt_tokens
        generated_tokens, source = args.generated_tokens, "assumed (flags)"
    gpu_seconds_per_unit = prompt_tokens / args.prefill_tokens_per_s + generated_tokens / args.decode_tokens_per_s
    gpu_hours = args.units * gpu_seconds_per_unit / 3600
    return {"tokens_per_unit": source, "prompt_tokens_per_unit": round(prompt_tokens),
            "generated_tokens_per_unit": round(generated_tokens),
            "gpu_seconds_per_unit": round(gpu_seconds_per_unit, 3), "gpu_hours": round(gpu_hours, 1),
            "wall_hours": round(gpu_hours / args.gpus, 1), "cost": round(gpu_hours * args.gpu_hour_price, 0)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=65536, help="tokens collected (same in all three runs)")
    parser.add_argument("--layers", type=int, nargs="+", default=[0])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--shards", type=int, default=4)
    estimate_flags = parser.add_argument_group("estimate for all of GPT-2 XL (assumptions: measure and pass them)")
    estimate_flags.add_argument("--units", type=int, default=307_200)
    estimate_flags.add_argument("--from-run", type=Path, default=None, metavar="RUN_DIR",
                                help="per-unit tokens measured from a cold run (e.g. experiments/paper-gpt2-xl.toml "
                                     "on a few units with the 8B simulator) instead of the token flags below")
    estimate_flags.add_argument("--estimate-only", action="store_true", help="print the estimate, time nothing")
    estimate_flags.add_argument("--gpus", type=int, default=8)
    estimate_flags.add_argument("--explain-prompt-tokens", type=int, default=4_000,
                                help="explainer prompt: 5 top excerpts x 64 tokens with their activations, plus a "
                                     "few-shot preamble")
    estimate_flags.add_argument("--scored-excerpts", type=int, default=20, help="excerpts simulated per unit")
    estimate_flags.add_argument("--simulate-prompt-tokens", type=int, default=1_200,
                                help="one simulation prompt (explanation, few-shot preamble, 64-token excerpt); "
                                     "prefix caching lowers the effective count")
    estimate_flags.add_argument("--generated-tokens", type=int, default=60, help="tokens generated per unit")
    estimate_flags.add_argument("--prefill-tokens-per-s", type=float, default=20_000,
                                help="8B model prefill throughput of one GPU with batching (vLLM-class server)")
    estimate_flags.add_argument("--decode-tokens-per-s", type=float, default=1_500,
                                help="8B decode throughput of one GPU over concurrent requests")
    estimate_flags.add_argument("--gpu-hour-price", type=float, default=2.0, help="price of one GPU-hour")
    args = parser.parse_args()
    if args.estimate_only:
        print(json.dumps({"estimate_gpt2_xl": estimate(args)}, indent=2))
        return

    import torch

    from neuroscribe.datasets.collect import collect

    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="bench-ray-collect-"))
    try:
        started = time.perf_counter()
        collect(_config(root / "one-process", args))  # type: ignore[arg-type]
        one_process = time.perf_counter() - started
        one_worker = _on_ray(1, root / "ray-1", args)
        two_workers = _on_ray(2, root / "ray-2", args)
        expected = _records(root / "one-process")
        identical = _records(root / "ray-1") == expected and _records(root / "ray-2") == expected
        report = {
            "tokens": args.tokens, "layers": args.layers, "one_process_1_thread_s": round(one_process, 2),
            "ray_1_worker": one_worker, "ray_2_workers": two_workers,
            "speedup_of_shards_2_vs_1_worker": round(one_worker["shards_s"] / two_workers["shards_s"], 2),
            "speedup_end_to_end_2_vs_1_worker": round(one_worker["total_s"] / two_workers["total_s"], 2),
            "ray_overhead_per_shard_s": round((one_worker["total_s"] - one_process) / one_worker["shards"], 2),
            "identical_records": identical, "estimate_gpt2_xl": estimate(args),
        }
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
