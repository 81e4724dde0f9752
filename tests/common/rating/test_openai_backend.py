"""The `openai` backend: against a fault-injecting loopback server written here, and against vLLM's own
OpenAI-compatible server (CPU build) in front of the tiny model (see conftest.py)."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from loopback_http import LoopbackServer  # tests/loopback_http.py
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedcurate.common.config import RaterConfig
from fedcurate.common.data.sample import Sample
from fedcurate.common.rating.backends.openai_http import MISSING, OpenAIBackend
from fedcurate.common.rating.backends.request_cache import RequestCache
from fedcurate.common.rating.parsing import from_generation
from fedcurate.common.rating.raters import PromptRater

TOP = {"1": math.log(0.5), "2": math.log(0.2), "3": math.log(0.1), "x": math.log(0.2)}


class FaultServer(LoopbackServer):
    """A loopback OpenAI-compatible server whose answers the prompt scripts, counting requests per prompt.

    Words in a prompt: `429x2` / `500x1` / `slowx1` fail the first N requests of that prompt with that
    status (slow: sleep past the client's timeout); `malformed` answers 200 with a non-JSON body,
    `badshape` 200 JSON without `choices`, `400` a client error, `500always` always 500. Otherwise the
    answer is "Score: D" for `id=D`, with next-token top_logprobs TOP when logprobs are asked for.
    """

    def __init__(self, delay_s: float = 0.0, slow_s: float = 3.0) -> None:
        super().__init__()
        self.delay_s, self.slow_s = delay_s, slow_s
        self.counts: Counter[str] = Counter()
        self.lock = threading.Lock()

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        chat = "chat" in path
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        with self.lock:
            self.counts[prompt] += 1
            n = self.counts[prompt]
        time.sleep(self.delay_s)
        for kind, times in re.findall(r"\b(429|500|slow)x(\d+)\b", prompt):
            if n <= int(times):
                if kind == "slow":
                    time.sleep(self.slow_s)
                    return 200, _completion(chat, "too late", None)
                return int(kind), b'{"error": {"message": "injected"}}'
        if "malformed" in prompt:
            return 200, b'{"choices": [{"text": "Score: 4"'
        if "badshape" in prompt:
            return 200, b'{"object": "text_completion", "data": []}'
        if re.search(r"\b400\b", prompt):
            return 400, b'{"error": {"message": "bad request"}}'
        if "500always" in prompt:
            return 500, b'{"error": {"message": "down"}}'
        digit = re.search(r"id=(\d)", prompt)
        return 200, _completion(chat, f"Score: {digit.group(1) if digit else 0}",
                                TOP if body.get("logprobs") else None)


def _completion(chat: bool, text: str, top: dict[str, float] | None) -> bytes:
    if chat:
        logprobs = {"content": [{"token": "1", "logprob": top["1"], "top_logprobs": [
            {"token": t, "logprob": lp} for t, lp in top.items()]}]} if top else None
        choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                  "logprobs": logprobs}
    else:
        logprobs = {"tokens": ["1"], "token_logprobs": [top["1"]], "top_logprobs": [top]} if top else None
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": logprobs}
    return json.dumps({"id": "x", "object": "completion", "model": "m", "choices": [choice]}).encode()


def _config(url: str, **overrides: Any) -> RaterConfig:
    settings = {"name": "judge", "backend": "openai", "model": "m", "url": url, "timeout_s": 1.0,
                "max_retries": 3, "concurrency": 4}
    return RaterConfig(**{**settings, **overrides})


@pytest.fixture
def fault_server() -> Iterator[FaultServer]:
    with FaultServer() as server:
        yield server


def test_retries_recover_from_429_500_and_timeouts(fault_server: FaultServer) -> None:
    # Prepare
    prompts = ["id=1 429x2", "id=2 500x1", "id=3 slowx1", "id=4 plain"]
    backend = OpenAIBackend(_config(fault_server.url), backoff_s=0.01)
    # Execute
    gens = backend.generate(prompts, max_new_tokens=8, temperature=0.0)
    # Assert
    assert [g.text for g in gens] == ["Score: 1", "Score: 2", "Score: 3", "Score: 4"]
    assert all(g.error == "" for g in gens)
    assert [fault_server.counts[p] for p in prompts] == [3, 2, 2, 1]
    assert backend.client.stats["retries"] == 4


def test_failures_are_per_sample_nan_with_reason(fault_server: FaultServer) -> None:
    # Prepare
    prompts = ["id=1 ok", "id=2 malformed", "id=3 badshape", "id=4 400", "id=5 500always", "id=2 429x9",
               "id=4 ok"]
    backend = OpenAIBackend(_config(fault_server.url, max_retries=2), backoff_s=0.01)
    # Execute
    ratings = [from_generation(g, 0, 5) for g in backend.generate(prompts, max_new_tokens=8, temperature=0.0)]
    # Assert
    assert (ratings[0].score, ratings[-1].score) == (1.0, 4.0)  # the failures shift no other sample
    for r in ratings[1:6]:
        assert math.isnan(r.score) and r.reason.startswith("backend error")
    assert "malformed response body (not JSON)" in ratings[1].reason
    assert "malformed response: KeyError" in ratings[2].reason
    assert "HTTP 400" in ratings[3].reason
    assert "HTTP 500" in ratings[4].reason and "gave up after 3 attempt(s)" in ratings[4].reason
    assert "HTTP 429" in ratings[5].reason
    # malformed bodies and client errors are not retried; transient errors are, max_retries times
    assert [fault_server.counts[p] for p in prompts] == [1, 1, 1, 1, 3, 3, 1]


@pytest.mark.parametrize("api", ["completions", "chat"])
def test_candidate_probs_renormalise_top_logprobs(fault_server: FaultServer, api: str) -> None:
    # Prepare
    backend = OpenAIBackend(_config(fault_server.url), api=api, backoff_s=0.01)
    # Execute
    found, missing = backend.candidate_probs(["id=1 probs", "id=2 probs"], ["1", "2", "3"])[0], \
        backend.candidate_probs(["id=3 probs"], ["1", "4"])[0]
    # Assert
    assert found.error == ""
    assert found.probs == pytest.approx((0.5 / 0.8, 0.2 / 0.8, 0.1 / 0.8), abs=1e-12)
    assert found.mass == pytest.approx(0.8, abs=1e-12)
    assert missing.probs == () and missing.error == f"{MISSING}: '4'"


def test_prompt_rater_scores_end_to_end_through_faults(fault_server: FaultServer) -> None:
    # Prepare
    instructions = ["id=3 429x1", "id=5 malformed", "id=1 500x2", "id=4 plain"]
    samples = [Sample(id=str(i), instruction=text, response="ok") for i, text in enumerate(instructions)]
    rcfg = _config(fault_server.url, prompt="alpagasus")
    rater = PromptRater(rcfg, backend=OpenAIBackend(rcfg, backoff_s=0.01))
    # Execute
    ratings = rater.rate(samples)
    # Assert
    assert [r.score for r in ratings[:1] + ratings[2:]] == [3.0, 1.0, 4.0]
    assert math.isnan(ratings[1].score) and "malformed response body" in ratings[1].reason


def test_interrupted_run_resumes_from_cache_without_repeating_calls(tmp_path: Path) -> None:
    # Prepare: a slow server, so the subprocess is killed with some answers cached and others not
    n, cache_dir = 24, tmp_path / "cache"
    prompts = [f"id={i % 6} item {i}" for i in range(n)]
    script = (
        "import sys\n"
        "from fedcurate.common.config import RaterConfig\n"
        "from fedcurate.common.rating.backends.openai_http import OpenAIBackend\n"
        "url, cache, n = sys.argv[1], sys.argv[2], int(sys.argv[3])\n"
        "cfg = RaterConfig(backend='openai', model='m', url=url, concurrency=2, max_retries=0)\n"
        "OpenAIBackend(cfg, cache_dir=cache).generate([f'id={i % 6} item {i}' for i in range(n)],\n"
        "                                            max_new_tokens=8, temperature=0.0)\n"
    )
    with FaultServer(delay_s=0.3) as server:
        proc = subprocess.Popen([sys.executable, "-c", script, server.url, str(cache_dir), str(n)])
        try:
            deadline = time.monotonic() + 120
            while _cached_lines(cache_dir) < 6 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            proc.kill()  # SIGKILL: no clean-up runs in the child
            proc.wait()
        cached = _cached_lines(cache_dir)
        asked_before = sum(server.counts.values())
        # Execute
        backend = OpenAIBackend(_config(server.url, timeout_s=30.0), cache_dir=cache_dir)
        gens = backend.generate(prompts, max_new_tokens=8, temperature=0.0)
    # Assert
    assert 6 <= cached < n, "the run was not interrupted halfway"
    assert [g.text for g in gens] == [f"Score: {i % 6}" for i in range(n)]
    assert backend.client.stats["cache_hits"] == cached
    assert sum(server.counts.values()) - asked_before == n - cached  # no cached prompt was asked again
    twice = [p for p in prompts if server.counts[p] == 2]
    assert all(server.counts[p] in (1, 2) for p in prompts)
    assert len(twice) <= 2  # at most the requests in flight at the kill (concurrency 2) were paid twice


def _cached_lines(cache_dir: Path) -> int:
    return sum(len([ln for ln in f.read_text().splitlines() if ln.strip()]) for f in cache_dir.glob("*.jsonl"))


def test_cache_skips_a_line_cut_by_a_kill(tmp_path: Path) -> None:
    # Prepare
    cache = RequestCache(tmp_path, "m")
    cache.put("a", {"choices": [{"text": "Score: 1"}]})
    assert cache.path is not None
    with open(cache.path, "ab") as fh:
        fh.write(b'{"key": "b", "response": {"choi')  # a record cut short mid-write
    # Execute
    reloaded = RequestCache(tmp_path, "m")
    reloaded.put("c", {"choices": []})
    again = RequestCache(tmp_path, "m")
    # Assert
    assert reloaded.get("a") == {"choices": [{"text": "Score: 1"}]} and reloaded.get("b") is None
    assert again.get("c") == {"choices": []} and len(again) == 2


def test_api_key_required_unless_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # Prepare
    monkeypatch.delenv("FEDCURATE_TEST_KEY", raising=False)
    remote = _config("https://api.openai.com/v1", api_key_env="FEDCURATE_TEST_KEY")
    # Execute
    with pytest.raises(ValueError, match="FEDCURATE_TEST_KEY"):
        OpenAIBackend(remote)
    local = OpenAIBackend(_config("http://localhost:8000/v1", api_key_env="FEDCURATE_TEST_KEY"))
    monkeypatch.setenv("FEDCURATE_TEST_KEY", "sk-test")
    keyed = OpenAIBackend(remote)
    # Assert
    assert local.api == "completions" and keyed.api == "chat"


# --- against vLLM's own OpenAI-compatible server (CPU build), started once per session in conftest ---

PROMPTS = ["Rate the answer.\nScore: ", "How good is this?\n", "Q: capital of France?\nA: Paris\nGrade: ", "x"]


def _transformers_next_token_logits(model_dir: Path, prompts: list[str]) -> tuple[Any, list[torch.Tensor]]:
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return tok, [model(**tok(p, return_tensors="pt")).logits[0, -1] for p in prompts]


def test_openai_backend_generates_and_rates_through_vllm(vllm_backend: Any, vllm_tiny_dir: Path) -> None:
    # Prepare
    backend = OpenAIBackend(_config(vllm_backend.url, model=str(vllm_tiny_dir), timeout_s=120.0))
    tok, logits = _transformers_next_token_logits(vllm_tiny_dir, PROMPTS)
    # Execute
    gens = backend.generate(PROMPTS, max_new_tokens=6, temperature=0.0)
    ratings = [from_generation(g, 0, 9) for g in backend.generate(PROMPTS, max_new_tokens=1, temperature=0.0)]
    # Assert: the greedy answer is the model's argmax as transformers computes it here, parsed as a score
    argmax = [tok.convert_ids_to_tokens(int(z.argmax())) for z in logits]
    assert all(g.error == "" and len(g.text) == 6 for g in gens)
    assert [g.text[0] for g in gens] == argmax
    assert [r.score for r in ratings] == [float(a) for a in argmax]


def test_openai_backend_chat_path_through_vllm(vllm_backend: Any, vllm_tiny_dir: Path) -> None:
    # Prepare
    backend = OpenAIBackend(_config(vllm_backend.url, model=str(vllm_tiny_dir), timeout_s=120.0), api="chat")
    # Execute
    gens = backend.generate(["Rate this."], max_new_tokens=4, temperature=0.0)
    # Assert: the server applied the tokenizer's chat template and the model answered digits
    assert gens[0].error == "" and re.fullmatch(r"\d{4}", gens[0].text)


def test_openai_candidate_probs_through_vllm_top_logprobs(vllm_backend: Any, vllm_tiny_dir: Path) -> None:
    # Prepare
    candidates = ["1", "2", "3", "4", "5"]
    backend = OpenAIBackend(_config(vllm_backend.url, model=str(vllm_tiny_dir), timeout_s=120.0))
    tok, logits = _transformers_next_token_logits(vllm_tiny_dir, PROMPTS)
    ids = tok.convert_tokens_to_ids(candidates)
    # Execute
    probs = backend.candidate_probs(PROMPTS, candidates)
    never = backend.candidate_probs(PROMPTS[:1], ["1", "~"])[0]
    # Assert: the digits are all in the top 20, so their renormalised probabilities are exact
    for tp, z in zip(probs, logits, strict=True):
        assert tp.error == ""
        assert list(tp.probs) == pytest.approx(torch.softmax(z[ids], -1).tolist(), abs=1e-3)
    assert never.error == f"{MISSING}: '~'"
