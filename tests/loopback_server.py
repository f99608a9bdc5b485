"""A small OpenAI-shaped HTTP server on 127.0.0.1 (stdlib, in a thread) for what a real server cannot
be made to do on demand: answer 429 with Retry-After, fail with 500, stall past a timeout, lack an
endpoint, or speak the OpenAI API's legacy `echo` logprobs format that llama.cpp does not implement.
With `token_ids=True` it also speaks vLLM's token-id dialect (`/tokenize`, prompts as token ids,
`prompt_logprobs` keyed by token id), and `fault` makes it answer that dialect wrongly in the ways a bad
endpoint does (see `PromptLogprobsFault`).

Scripted replies are consumed in order by POST requests; after they run out, every request gets the
default answer for its path (after `delay_s`). The server records each request it received.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

MODEL = "loopback-model"
USAGE = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
def echo_top(position: int) -> dict[str, float]:
    """The echo format's top logprobs at prompt token `position`: they differ from position to position, so a
    reader that takes a neighbouring position's alternatives gets other numbers."""
    return {str(position % 10): math.log(0.5), str((position + 1) % 10): math.log(0.25), "x": math.log(0.125)}


PromptLogprobsFault = Literal["few_alternatives", "ignored", "null_entries", "retokenized", "shifted"]
"""few_alternatives: 3 alternatives whatever k is asked; ignored: no prompt_logprobs in the answer; null_entries:
null beyond the first token (from position 3 on); retokenized: the ids are decoded to text (BOS dropped) and
tokenized again with each tab joined to the word after it; shifted: each entry describes the next token."""
BOS = "<s>"
"""Token id 0, put before the text when /tokenize is asked for special tokens."""


def prompt_logprobs_top(position: int, k: int) -> list[tuple[str, float]]:
    """The alternatives at prompt token `position`, best first: the echo format's, then fillers up to k."""
    known = sorted(echo_top(position).items(), key=lambda pair: -pair[1])
    fillers = [(f"filler{j}", math.log(0.001 / (j + 1))) for j in range(max(0, k - len(known)))]
    return (known + fillers)[:k]


class Vocabulary:
    """Token ids handed out in order of first sight (BOS is 0), shared by /tokenize and the completions."""

    def __init__(self) -> None:
        self._ids: dict[str, int] = {BOS: 0}
        self._words: list[str] = [BOS]
        self._lock = threading.Lock()

    def encode(self, words: list[str]) -> list[int]:
        with self._lock:
            for word in words:
                if word not in self._ids:
                    self._ids[word] = len(self._words)
                    self._words.append(word)
            return [self._ids[w] for w in words]

    def decode(self, ids: list[int]) -> list[str]:
        """Words of the ids; an id it never handed out (another tokenizer's) reads as '<id>'."""
        with self._lock:
            return [self._words[i] if 0 <= i < len(self._words) else f"<{i}>" for i in ids]


@dataclass
class Reply:
    status: int = 200
    body: dict[str, Any] | None = None
    """None: the default answer for the path."""
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    raw: bytes | None = None
    """Sent as the body instead of JSON (e.g. malformed JSON), with the JSON content type."""


@dataclass
class Received:
    path: str
    body: dict[str, Any]
    at: float


def _json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload).encode()


def _tokens(text: str) -> list[str]:
    return re.findall(r"\w+|\s|[^\w\s]", text)


def default_answer(path: str, body: dict[str, Any]) -> dict[str, Any]:
    if path.endswith("/chat/completions"):
        return {
            "object": "chat.completion",
            "model": body.get("model", MODEL),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
            "usage": USAGE,
        }
    prompt = str(body.get("prompt", ""))
    choice: dict[str, Any] = {"index": 0, "text": " ok", "finish_reason": "length", "logprobs": None}
    if body.get("echo") and body.get("logprobs"):
        tokens = [*_tokens(prompt), " ok"]
        offsets = [sum(len(t) for t in tokens[:i]) for i in range(len(tokens))]
        choice["text"] = prompt + " ok"
        choice["logprobs"] = {
            "tokens": tokens,
            "token_logprobs": [None] + [-1.0] * (len(tokens) - 1),
            "top_logprobs": [None] + [echo_top(i) for i in range(1, len(tokens))],
            "text_offset": offsets,
        }
    return {"object": "text_completion", "model": body.get("model", MODEL), "choices": [choice], "usage": USAGE}


class _Server(ThreadingHTTPServer):
    request_queue_size = 256
    """The stdlib's listen backlog of 5 resets connections when dozens of clients connect at once."""


def prompt_logprobs_answer(
    vocabulary: Vocabulary, body: dict[str, Any], fault: PromptLogprobsFault | None
) -> dict[str, Any]:
    """A vLLM-shaped completion of a token-id prompt with `prompt_logprobs` (one entry per prompt token, keyed by
    token id, holding the prompt's token and the top k)."""
    ids = [int(i) for i in body["prompt"]]
    words = vocabulary.decode(ids)
    if fault == "retokenized":
        ids = vocabulary.encode(re.findall(r"\t\w+|\w+|\s|[^\w\s]", "".join(w for w in words if w != BOS)))
        words = vocabulary.decode(ids)
    if fault == "shifted":
        ids, words = [*ids[1:], ids[0]], [*words[1:], words[0]]
    k = 3 if fault == "few_alternatives" else int(body["prompt_logprobs"])
    entries: list[dict[str, Any] | None] = [None]
    for position in range(1, len(ids)):
        if fault == "null_entries" and position >= 3:
            entries.append(None)
            continue
        top = prompt_logprobs_top(position, k)
        entry = {
            str(token): {"logprob": logprob, "rank": rank, "decoded_token": word}
            for rank, ((word, logprob), token) in enumerate(
                zip(top, vocabulary.encode([w for w, _ in top]), strict=True), start=1
            )
        }
        entry.setdefault(str(ids[position]), {"logprob": -9.0, "rank": 999, "decoded_token": words[position]})
        entries.append(entry)
    answer = default_answer("/v1/completions", {})
    if fault != "ignored":
        answer["choices"][0]["prompt_logprobs"] = entries
    answer["usage"] = {"prompt_tokens": len(ids), "completion_tokens": 1, "total_tokens": len(ids) + 1}
    return answer


class LoopbackServer:
    def __init__(
        self,
        *,
        delay_s: float = 0.0,
        missing_paths: tuple[str, ...] = (),
        token_ids: bool = False,
        fault: PromptLogprobsFault | None = None,
        models_delay_s: float = 0.0,
    ) -> None:
        self.delay_s = delay_s
        self.models_delay_s = models_delay_s
        """Seconds GET /models takes (a slow server's readiness check)."""
        self.models_raw: bytes | None = None
        """Sent as the /models body instead of the listing (e.g. malformed JSON)."""
        self.missing_paths = missing_paths
        """Paths that answer 404, like a chat-only server's /v1/completions."""
        self.token_ids = token_ids
        """Speak vLLM's token-id dialect: /tokenize, and prompt_logprobs for token-id prompts; else /tokenize is 404."""
        self.fault = fault
        self.vocabulary = Vocabulary()
        self.received: list[Received] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.model_listings = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else headers and body leave in two segments and delayed ACKs add 40 ms

            def log_message(self, format: str, *args: object) -> None:  # keep test output clean
                pass

            def do_GET(self) -> None:
                if self.path.rstrip("/").endswith("/models"):
                    with server._lock:
                        server.model_listings += 1
                    time.sleep(server.models_delay_s)
                    if server.models_raw is not None:
                        self._send_bytes(200, server.models_raw)
                        return
                    self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                server._enter(self.path, body)
                try:
                    status, data, headers = self._reply_to_post(body)
                finally:
                    # Counted out before the answer leaves: a client that has read it may send its next
                    # request before this thread runs again, and that is not two requests in flight.
                    server._leave()
                self._send_bytes(status, data, headers)

            def _reply_to_post(self, body: dict[str, Any]) -> tuple[int, bytes, dict[str, str] | None]:
                if self.path in server.missing_paths or (self.path == "/tokenize" and not server.token_ids):
                    return 404, _json({"error": {"message": f"Not Found: {self.path}"}}), None
                if self.path == "/tokenize":
                    ids = server.vocabulary.encode(_tokens(str(body.get("prompt", ""))))
                    ids = [0, *ids] if body.get("add_special_tokens", True) else ids
                    return 200, _json({"count": len(ids), "max_model_len": 2048, "tokens": ids}), None
                reply = server._next_reply()
                time.sleep(reply.delay_s)
                if reply.raw is not None:
                    return reply.status, reply.raw, reply.headers
                return reply.status, _json(reply.body or server._answer(self.path, body)), reply.headers

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                self._send_bytes(status, _json(payload))

            def _send_bytes(self, status: int, data: bytes, headers: dict[str, str] | None = None) -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for key, value in (headers or {}).items():
                        self.send_header(key, value)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout test)
                    pass

        self._httpd = _Server(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def script(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def posts(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def _enter(self, path: str, body: dict[str, Any]) -> None:
        with self._lock:
            self.received.append(Received(path, body, time.monotonic()))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _answer(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self.token_ids and body.get("prompt_logprobs") is not None and isinstance(body.get("prompt"), list):
            return prompt_logprobs_answer(self.vocabulary, body, self.fault)
        return default_answer(path, body)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else Reply(delay_s=self.delay_s)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


def serve_in_subprocess_main() -> None:
    """`python tests/loopback_server.py DELAY_S`: serve until stdin closes, printing the base URL first, so a
    benchmark can keep the server's CPU time out of its own process."""
    import sys

    with LoopbackServer(delay_s=float(sys.argv[1])) as server:
        print(server.base_url, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    serve_in_subprocess_main()
