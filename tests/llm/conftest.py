"""Servers for the llm tests: a real llama.cpp server (xllamacpp, embedded GGUF) and a real vLLM server (the
embedded checkpoint, from its own virtualenv) started once per session, and a factory for scripted loopback
servers (failures a real server cannot be made to produce)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from loopback_server import LoopbackServer
from neuroscribe.llm.limits import reset_shared_limiters
from neuroscribe.llm.llamacpp import LlamaCppBackend
from vllm_server import VLLMServer, VLLMStartError, serve


@pytest.fixture(scope="session")
async def llamacpp() -> AsyncIterator[LlamaCppBackend]:
    """The embedded SmolLM2 GGUF served by llama.cpp on 127.0.0.1 (about 2 s to start). One thread:
    llama.cpp's spinning worker threads slow to a crawl when other processes share the cores."""
    backend = LlamaCppBackend(model="embedded", context_length=2048, parallel=2, threads=1)
    yield backend
    await backend.aclose()


@pytest.fixture
def loopback() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_limiters() -> Iterator[None]:
    """Each test gets its own shared-limiter table, so limits set by one test never leak into the next."""
    reset_shared_limiters()
    yield
    reset_shared_limiters()



@pytest.fixture(scope="session")
def vllm_server(
    embedded_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[VLLMServer]:
    """vLLM serving the embedded model's checkpoint in float32 (the hf backend's dtype, so the two agree to float
    noise) for the whole session. A server that cannot start fails the tests with its log's tail: never skipped."""
    log = tmp_path_factory.mktemp("vllm") / "server.log"
    try:
        with serve(embedded_checkpoint, log) as server:
            plugins = request.config.pluginmanager
            reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
            if reporter is not None and capture is not None:
                with capture.global_and_fixture_disabled():  # into the test log, not the captured output
                    reporter.write_line(f"vLLM server ready in {server.startup_s:.0f} s (log: {log})")
            yield server
    except VLLMStartError as error:
        pytest.fail(str(error), pytrace=False)
