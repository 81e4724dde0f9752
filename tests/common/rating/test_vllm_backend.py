"""The `vllm` backend: a vLLM server started from its own environment (conftest.py, once per session),
checked against transformers in this environment on the same model directory."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fedcurate.common.config import RaterConfig
from fedcurate.common.data.sample import Sample
from fedcurate.common.rating.backends.transformers_local import TransformersBackend
from fedcurate.common.rating.backends.vllm_server import VllmBackend, VllmServer, VllmServerError, _free_port
from fedcurate.common.rating.raters import SelectITRater

PROMPTS = ["Rate the answer.\nScore: ", "How good is this?\n", "Q: capital of France?\nA: Paris\nGrade: ", "x",
           "Instruction: add 2 and 3\nResponse: 5\nRating (1-5):\n"]


def _logits(model_dir: Path, prompts: list[str]) -> tuple[Any, list[torch.Tensor]]:
    """Next-token logits after each prompt, computed by transformers here (fp32)."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return tok, [model(**tok(p, return_tensors="pt")).logits[0, -1] for p in prompts]


def test_main_environment_never_contains_vllm() -> None:
    # Execute / Assert
    assert importlib.util.find_spec("vllm") is None


@pytest.mark.parametrize("candidates", [["1", "2", "3", "4", "5"], ["1", "~", "a", "5", "0", "9"]])
def test_candidate_probs_equal_softmax_over_all_k_logits(vllm_backend: VllmBackend, vllm_tiny_dir: Path,
                                                         candidates: list[str]) -> None:
    # Prepare: "~" and "a" are far outside any top-20 list; all K must come back all the same
    tok, logits = _logits(vllm_tiny_dir, PROMPTS)
    ids = tok.convert_tokens_to_ids(candidates)
    # Execute
    probs = vllm_backend.candidate_probs(PROMPTS, candidates)
    # Assert
    for tp, z in zip(probs, logits, strict=True):
        assert tp.error == "" and len(tp.probs) == len(candidates)
        assert sum(tp.probs) == pytest.approx(1.0, abs=1e-6)
        assert list(tp.probs) == pytest.approx(torch.softmax(z[ids], -1).tolist(), abs=1e-3)


@pytest.mark.parametrize("chat", [False, True])
def test_candidate_probs_and_generations_match_the_transformers_backend(vllm_backend: VllmBackend,
                                                                        vllm_tiny_dir: Path, chat: bool) -> None:
    # Prepare: the session server, seen with or without the chat template (the wrapping happens here)
    served = VllmBackend(RaterConfig(backend="vllm", model=str(vllm_tiny_dir), url=vllm_backend.url),
                         chat_template=chat)
    local = TransformersBackend(RaterConfig(model=str(vllm_tiny_dir), dtype="float32"), device="cpu",
                                chat_template=chat)
    candidates = ["1", "2", "3", "4", "5"]
    # Execute
    probs_served, probs_here = served.candidate_probs(PROMPTS, candidates), local.candidate_probs(PROMPTS, candidates)
    gens_served = served.generate(PROMPTS, max_new_tokens=6, temperature=0.0)
    gens_here = local.generate(PROMPTS, max_new_tokens=6, temperature=0.0)
    # Assert: the same token ids go in, so the same outputs come out
    for a, b in zip(probs_served, probs_here, strict=True):
        assert list(a.probs) == pytest.approx(list(b.probs), abs=1e-3)
    assert [g.text for g in gens_served] == [g.text for g in gens_here]
    assert all(g.error == "" and len(g.text) == 6 for g in gens_served)


def test_selectit_rater_scores_agree_across_backends(vllm_backend: VllmBackend, vllm_tiny_dir: Path,
                                                     tmp_path: Path) -> None:
    # Prepare: short rating prompts (the test server's context is 256 characters)
    lines = tmp_path / "selectit.txt"
    lines.write_text("Rate it 1-{levels}.\nGrade the answer.\nHow good, 1 to {levels}?\n")
    rcfg = RaterConfig(name="sit", kind="selectit", prompt=str(lines), model=str(vllm_tiny_dir),
                       dtype="float32", selectit_prompts=3, selectit_levels=5)
    samples = [Sample(id="a", instruction="Add 2 and 3.", response="5"),
               Sample(id="b", instruction="Name a colour.", response="Blue.")]
    local = TransformersBackend(rcfg, device="cpu")
    # Execute
    served = SelectITRater(rcfg, backend=vllm_backend).rate(samples)
    here = SelectITRater(rcfg, backend=local).rate(samples)
    # Assert
    assert all(r.reason == "" for r in served + here)
    assert [r.score for r in served] == pytest.approx([r.score for r in here], abs=1e-3)


def test_connects_to_a_running_server_without_starting_one(vllm_backend: VllmBackend,
                                                           vllm_tiny_dir: Path) -> None:
    # Prepare: the URL without /v1, as a site would give it
    root = vllm_backend.url.removesuffix("/v1")
    cfg = RaterConfig(name="remote", backend="vllm", model=str(vllm_tiny_dir), url=root)
    # Execute
    with VllmBackend(cfg) as remote:
        probs = remote.candidate_probs(PROMPTS[:2], ["1", "2", "3"])
        started = remote.server
    # Assert
    assert started is None
    expected = vllm_backend.candidate_probs(PROMPTS[:2], ["1", "2", "3"])
    for got, want in zip(probs, expected, strict=True):
        assert list(got.probs) == pytest.approx(list(want.probs), abs=1e-9)


def test_candidate_that_is_not_one_token_fails_that_sample_only(vllm_backend: VllmBackend) -> None:
    # Execute
    probs = vllm_backend.candidate_probs(["Score: ", "Grade: "], ["1", "22"])
    # Assert
    assert all(p.probs == () and "'22' is not a single token" in p.error for p in probs)


def test_server_that_dies_while_starting_reports_its_log(tmp_path: Path) -> None:
    # Prepare
    command = [sys.executable, "-c", "print('loading weights'); raise SystemExit(3)"]
    server = VllmServer(command, _free_port(), tmp_path / "server.log")
    # Execute
    with pytest.raises(VllmServerError) as err:
        server.start(timeout_s=60)
    # Assert
    assert "exited with code 3" in str(err.value) and "loading weights" in str(err.value)


def test_server_ready_when_models_answer_and_stopped_by_close(tmp_path: Path) -> None:
    # Prepare: a stand-in server that answers GET /v1/models after a second
    port = _free_port()
    script = (
        "import json, sys, time\n"
        "from http.server import BaseHTTPRequestHandler, HTTPServer\n"
        "class H(BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        body = json.dumps({'object': 'list', 'data': []}).encode()\n"
        "        self.send_response(200); self.send_header('Content-Type', 'application/json')\n"
        "        self.send_header('Content-Length', str(len(body))); self.end_headers(); self.wfile.write(body)\n"
        "time.sleep(1)\n"
        "HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
    )
    server = VllmServer([sys.executable, "-c", script, str(port)], port, tmp_path / "server.log")
    # Execute
    server.start(timeout_s=60)
    alive = server.proc is not None and server.proc.poll() is None
    server.stop(grace_s=10)
    # Assert
    assert alive and server.proc is not None and server.proc.poll() is not None
