"""`vllm` rating backend: vLLM's OpenAI-compatible server, run from its own virtual environment.

vLLM cannot be installed beside Flower (conflicting pins), so it always runs as a separate process:

    # connect to a server the site already runs (`model`: its served name, and where the tokenizer loads here)
    VllmBackend(RaterConfig(backend="vllm", model="/models/llama-3-8b", url="http://gpu-host:8000"))
    # or start one from the vLLM environment (`python -m fedcurate.app.vllm_env` builds it)
    with VllmBackend(RaterConfig(backend="vllm", model="/models/llama-3-8b",
                                 vllm_python="~/.cache/fedcurate/venv-vllm/bin/python")) as backend:
        backend.candidate_probs(prompts, ["1", "2", "3", "4", "5"])

A started server listens on 127.0.0.1 on a free port, is ready when `GET /v1/models` answers, and is
stopped (SIGTERM to its process group, then SIGKILL) by `close()`, the context manager or at exit.
If it dies while starting, the error carries the last lines of its log.

Generation goes through /v1/completions with the prompt as token ids, encoded here exactly as the
transformers backend encodes it (raw text with the tokenizer's special tokens; or, with
`chat_template=True`, wrapped in the tokenizer's chat template), so both backends give the same outputs.
Token-level SelectIT costs one prefill per prompt: /v1/completions with `max_tokens: 1`,
`logprobs: K`, `allowed_token_ids` = the K rating-token ids (vLLM extensions) and tokens returned as
ids; with `--logprobs-mode processed_logprobs` (set when we start the server) the K log-probabilities
come back renormalised over exactly those tokens. The ids are resolved with the model's tokenizer,
loaded here (our environment) from the same path: a candidate's id is the one token it adds after the
prompt; the prompt is sent as token ids, so server and tokenizer cannot disagree about it. A running
server started without that flag lists the unrestricted top K instead: candidates outside it then fail
with "rating tokens missing from top_logprobs" (probabilities are never invented).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openai

from fedcurate.common.config import RaterConfig
from fedcurate.common.rating.backends.http_client import Outcome, Request
from fedcurate.common.rating.backends.openai_http import (
    OpenAIBackend,
    completion_text,
    completion_top_logprobs,
    to_token_probs,
)
from fedcurate.common.rating.base import BACKENDS, Generation, TokenProbs

logger = logging.getLogger(__name__)

VENV_ENV = "FEDCURATE_VLLM_VENV"  # same default as fedcurate.app.vllm_env


class VllmServerError(RuntimeError):
    """The vLLM server could not be started; the message carries the reason and the log's tail."""


def default_vllm_python() -> Path:
    """The interpreter of the environment built by `python -m fedcurate.app.vllm_env`."""
    venv = os.environ.get(VENV_ENV) or Path.home() / ".cache" / "fedcurate" / "venv-vllm"
    return Path(venv).expanduser() / "bin" / "python"


def server_command(python: str, model: str, port: int, *, dtype: str = "auto", max_model_len: int = 0,
                   gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1, max_logprobs: int = 20,
                   enforce_eager: bool = False) -> list[str]:
    """The command line of a vLLM OpenAI-compatible server on 127.0.0.1:`port` serving `model` by its path."""
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--served-model-name", model,
           "--host", "127.0.0.1", "--port", str(port), "--dtype", dtype,
           "--gpu-memory-utilization", str(gpu_memory_utilization), "--tensor-parallel-size",
           str(tensor_parallel_size), "--logprobs-mode", "processed_logprobs", "--max-logprobs", str(max_logprobs)]
    if max_model_len:
        cmd += ["--max-model-len", str(max_model_len)]
    if enforce_eager:  # no CUDA graphs: the CPU build needs it
        cmd.append("--enforce-eager")
    return cmd


class VllmServer:
    """One vLLM server process, started from `command`, logging to `log_path`."""

    def __init__(self, command: list[str], port: int, log_path: Path) -> None:
        self.command = command
        self.url = f"http://127.0.0.1:{port}/v1"
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._finalizer: weakref.finalize | None = None

    def start(self, timeout_s: float) -> VllmServer:
        """Start the process and wait until it serves; raises VllmServerError (server stopped) if not."""
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        logger.info("starting vLLM server (log: %s): %s", self.log_path, " ".join(self.command))
        with open(self.log_path, "ab") as log:
            # own process group: stop() signals the server and the engine processes it spawns
            self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self._finalizer = weakref.finalize(self, _stop_group, self.proc, 30.0)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        start = time.monotonic()
        probe = openai.OpenAI(base_url=self.url, api_key="EMPTY", max_retries=0, timeout=5.0)
        try:
            while True:
                if self.proc.poll() is not None:
                    raise VllmServerError(f"vLLM server exited with code {self.proc.returncode} while starting; "
                                          f"last lines of {self.log_path}:\n{self.log_tail()}")
                try:
                    probe.models.list()
                    logger.info("vLLM server ready at %s after %.0f s", self.url, time.monotonic() - start)
                    return
                except openai.OpenAIError:
                    pass
                if time.monotonic() - start > timeout_s:
                    raise VllmServerError(f"vLLM server not ready after {timeout_s:.0f} s; last lines of "
                                          f"{self.log_path}:\n{self.log_tail()}")
                time.sleep(0.5)
        finally:
            probe.close()

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as err:
            return f"(log unreadable: {err})"

    def stop(self, grace_s: float = 30.0) -> None:
        """SIGTERM to the server's process group, SIGKILL after `grace_s`; safe to call twice."""
        if self._finalizer is not None and self._finalizer.alive:
            self._finalizer.detach()
            assert self.proc is not None
            _stop_group(self.proc, grace_s)
            logger.info("vLLM server at %s stopped", self.url)


@BACKENDS.register("vllm")
class VllmBackend(OpenAIBackend):
    """Rating through vLLM's OpenAI-compatible server, started here or already running at `cfg.url`."""

    def __init__(self, cfg: RaterConfig, *, cache_dir: str | os.PathLike[str] | None = None,
                 max_model_len: int | None = None, startup_timeout_s: float = 900.0, log_path: str | None = None,
                 enforce_eager: bool | None = None, chat_template: bool | None = None,
                 backoff_s: float = 0.5) -> None:
        self.server: VllmServer | None = None
        self.chat_template = cfg.chat_template if chat_template is None else chat_template
        max_model_len = cfg.max_model_len if max_model_len is None else max_model_len
        self._tokenizer: Any = None
        url = cfg.url.rstrip("/")
        if url:
            url = url if url.endswith("/v1") else url + "/v1"
        else:
            self.server = _start_server(cfg, max_model_len, startup_timeout_s, log_path, enforce_eager)
            url = self.server.url
        try:
            super().__init__(dataclasses.replace(cfg, url=url), cache_dir=cache_dir, api="completions",
                             top_logprobs=max(20, cfg.selectit_levels), backoff_s=backoff_s)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if hasattr(self, "client"):
            super().close()
        if self.server is not None:
            self.server.stop()

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer, loaded lazily in this environment from the configured path."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer  # late: imported only when a prompt is encoded

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
            except (OSError, ValueError) as err:
                raise ValueError(f"the vllm backend encodes prompts with the model's tokenizer, which could not "
                                 f"be loaded from {self.model_name!r} here ({err}); give the model's local path, "
                                 "or use backend = 'openai' for a remote server") from err
        return self._tokenizer

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float) -> list[Generation]:
        """One completion per prompt, from the same token ids the transformers backend would feed."""
        params = {"model": self.model_name, "max_tokens": max_new_tokens, "temperature": temperature}
        reqs = [Request("completions", {**params, "prompt": self.encode(p)}) for p in prompts]
        outcomes = self.client.run(reqs, completion_text, desc="generate")
        return [Generation(text=o.value or "") if not o.error else Generation(error=o.error) for o in outcomes]

    def encode(self, prompt: str) -> list[int]:
        """Token ids of a generation prompt (in the tokenizer's chat template if `chat_template` and it has one)."""
        tok = self.tokenizer
        if self.chat_template and getattr(tok, "chat_template", None):
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
            return list(tok(text, add_special_tokens=False).input_ids)
        return list(tok(prompt).input_ids)

    def candidate_probs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[TokenProbs]:
        """Probabilities of all K candidates from one prefill each, renormalised over them (not top-N)."""
        results: list[TokenProbs | None] = [None] * len(prompts)
        reqs, slots, id_lists = [], [], []
        tok = self.tokenizer  # a tokenizer that cannot load is a configuration error, raised here
        for i, prompt in enumerate(prompts):
            try:
                ids = candidate_token_ids(tok, prompt, candidates)
            except ValueError as err:
                results[i] = TokenProbs(error=str(err))
                continue
            body = {"model": self.model_name, "prompt": list(tok(prompt).input_ids), "max_tokens": 1,
                    "temperature": 0.0, "logprobs": len(candidates)}
            extra = {"allowed_token_ids": sorted(set(ids)), "return_tokens_as_token_ids": True}
            reqs.append(Request("completions", body, extra))
            slots.append(i)
            id_lists.append(ids)
        outcomes = self.client.run(reqs, completion_top_logprobs, desc="candidate probs")
        for i, ids, outcome in zip(slots, id_lists, outcomes, strict=True):
            results[i] = _by_candidate(outcome, ids, candidates)
        return [r for r in results if r is not None]


def candidate_token_ids(tokenizer: Any, prompt: str, candidates: Sequence[str]) -> list[int]:
    """Each candidate's id as the single token it adds after `prompt`; ValueError when it is not one token."""
    base = tokenizer(prompt, add_special_tokens=False).input_ids
    ids = []
    for cand in candidates:
        full = tokenizer(prompt + cand, add_special_tokens=False).input_ids
        if len(full) != len(base) + 1 or full[: len(base)] != base:
            raise ValueError(f"rating token {cand!r} is not a single token after the prompt "
                             f"(it tokenizes as {full[len(base) - 1:]} after the prompt's last token)")
        ids.append(full[-1])
    if len(set(ids)) != len(ids):
        raise ValueError(f"rating tokens {list(candidates)} do not map to distinct token ids ({ids})")
    return ids


def _by_candidate(outcome: Outcome[dict[str, float]], ids: list[int], candidates: Sequence[str]) -> TokenProbs:
    """Map vLLM's `token_id:N` keys back to candidate strings and renormalise (mass unknown: processed)."""
    if outcome.error:
        return TokenProbs(error=outcome.error)
    top = outcome.value or {}
    by_cand = {c: top[f"token_id:{i}"] for c, i in zip(candidates, ids, strict=True) if f"token_id:{i}" in top}
    probs = to_token_probs(Outcome(value=by_cand), candidates)
    # processed logprobs are already renormalised over the allowed tokens, so their mass says nothing
    return dataclasses.replace(probs, mass=math.nan) if not probs.error else probs


def _start_server(cfg: RaterConfig, max_model_len: int, timeout_s: float, log_path: str | None,
                  enforce_eager: bool | None) -> VllmServer:
    python = Path(cfg.vllm_python).expanduser() if cfg.vllm_python else default_vllm_python()
    if not python.exists():
        raise VllmServerError(f"rater {cfg.name!r}: no vLLM interpreter at {python}; build the environment with "
                              "`python -m fedcurate.app.vllm_env`, set vllm-python, or give the url "
                              "of a running vLLM server")
    port = _free_port()
    on_cpu = shutil.which("nvidia-smi") is None
    eager = on_cpu if enforce_eager is None else enforce_eager
    dtype = "float32" if cfg.dtype == "auto" and on_cpu else cfg.dtype  # as the transformers backend
    command = server_command(str(python), cfg.model, port, dtype=dtype, max_model_len=max_model_len,
                             gpu_memory_utilization=cfg.gpu_memory_utilization or (0.2 if on_cpu else 0.9),
                             tensor_parallel_size=cfg.tensor_parallel_size,
                             max_logprobs=max(20, cfg.selectit_levels), enforce_eager=eager)
    if log_path is None:
        fd, log_path = tempfile.mkstemp(prefix="vllm-server-", suffix=".log")
        os.close(fd)
    return VllmServer(command, port, Path(log_path)).start(timeout_s)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop_group(proc: subprocess.Popen[bytes], grace_s: float) -> None:
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:  # the leader is gone or stuck: make sure no engine process of its group outlives it
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
