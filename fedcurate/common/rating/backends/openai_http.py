"""`openai` rating backend: any OpenAI-compatible HTTP endpoint (OpenAI itself, or a site's vLLM/TGI server).

    backend = OpenAIBackend(RaterConfig(backend="openai", model="gpt-4o-mini"), cache_dir="run/cache")
    backend.generate(["Rate this ..."], max_new_tokens=64, temperature=0.0)
    backend.candidate_probs(["... Score: "], ["1", "2", "3", "4", "5"])

Which API: `chat` (/v1/chat/completions; the prompt is one user message, the server applies its chat
template) for api.openai.com, `completions` (/v1/completions; the prompt is sent as raw text) for any
other server, e.g. vLLM; `api=` overrides. The key is read from the environment variable
`api_key_env`; a missing key is an error unless the URL is loopback.

`candidate_probs` asks for the next token's `top_logprobs` (chat: `logprobs: true, top_logprobs: N`;
completions: `logprobs: N`) and renormalises over the K candidates. When any candidate is absent from
the top N, the sample fails with "rating tokens missing from top_logprobs" (no probability is invented).
Answers are cached on disk (see request_cache.py), so a re-run asks only what was not answered.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlparse

from fedcurate.common.config import RaterConfig
from fedcurate.common.rating.backends.http_client import HTTPClient, Outcome, Request
from fedcurate.common.rating.backends.request_cache import RequestCache
from fedcurate.common.rating.base import BACKENDS, Generation, TokenProbs

logger = logging.getLogger(__name__)

OPENAI_URL = "https://api.openai.com/v1"
MISSING = "rating tokens missing from top_logprobs"
LOCAL_KEY = "EMPTY"  # what a loopback server without authentication receives


@BACKENDS.register("openai")
class OpenAIBackend:
    """Rating through an OpenAI-compatible endpoint; see the module docstring."""

    def __init__(self, cfg: RaterConfig, *, cache_dir: str | os.PathLike[str] | None = None,
                 api: str | None = None, top_logprobs: int = 20, backoff_s: float = 0.5) -> None:
        self.model_name = cfg.model
        self.url = (cfg.url or OPENAI_URL).rstrip("/")
        self.api = _choose_api(api or cfg.api, self.url)
        self.top_logprobs = top_logprobs
        self.client = HTTPClient(
            self.url, resolve_api_key(cfg.api_key_env, self.url), cfg.model, timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries, concurrency=cfg.concurrency,
            cache=RequestCache(cache_dir, cfg.model), backoff_s=backoff_s,
        )
        if cache_dir is None:
            logger.warning("rater %r: no cache directory; an interrupted run will ask again", cfg.name)

    def __enter__(self) -> OpenAIBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.client.close()

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float) -> list[Generation]:
        """One completion per prompt, same order; a failed request is a Generation with its error."""
        params: dict[str, Any] = {"model": self.model_name, "temperature": temperature}
        if self.api == "chat":
            reqs = [Request("chat", {**params, "messages": [{"role": "user", "content": p}],
                                     "max_completion_tokens": max_new_tokens}) for p in prompts]
            outcomes = self.client.run(reqs, chat_text, desc="generate")
        else:
            reqs = [Request("completions", {**params, "prompt": p, "max_tokens": max_new_tokens}) for p in prompts]
            outcomes = self.client.run(reqs, completion_text, desc="generate")
        return [Generation(text=o.value or "") if not o.error else Generation(error=o.error) for o in outcomes]

    def candidate_probs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[TokenProbs]:
        """P(next token = c | prompt) renormalised over `candidates`, from the endpoint's top_logprobs."""
        params: dict[str, Any] = {"model": self.model_name, "temperature": 0.0}  # logprobs are unscaled
        if self.api == "chat":
            reqs = [Request("chat", {**params, "messages": [{"role": "user", "content": p}],
                                     "max_completion_tokens": 1, "logprobs": True,
                                     "top_logprobs": self.top_logprobs}) for p in prompts]
            outcomes = self.client.run(reqs, chat_top_logprobs, desc="candidate probs")
        else:
            reqs = [Request("completions", {**params, "prompt": p, "max_tokens": 1,
                                            "logprobs": self.top_logprobs}) for p in prompts]
            outcomes = self.client.run(reqs, completion_top_logprobs, desc="candidate probs")
        return [to_token_probs(o, candidates) for o in outcomes]


def resolve_api_key(env_var: str, url: str) -> str:
    """The key in $env_var; a loopback URL may go without one. Raises ValueError naming the variable."""
    key = os.environ.get(env_var, "") if env_var else ""
    if key:
        return key
    if is_loopback(url):
        return LOCAL_KEY
    raise ValueError(f"no API key for {url}: set the environment variable {env_var or '<api-key-env>'} "
                     "(rating.raters api-key-env names it)")


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _choose_api(api: str, url: str) -> str:
    if api not in ("auto", "chat", "completions"):
        raise ValueError(f"api = {api!r}: allowed values are 'auto', 'chat', 'completions'")
    if api != "auto":
        return api
    host = urlparse(url).hostname or ""
    return "chat" if host == "openai.com" or host.endswith(".openai.com") else "completions"


def completion_text(response: dict[str, Any]) -> str:
    """`choices[0].text` of a /v1/completions answer."""
    return _string(response["choices"][0]["text"], "choices[0].text")


def chat_text(response: dict[str, Any]) -> str:
    """`choices[0].message.content` of a /v1/chat/completions answer."""
    return _string(response["choices"][0]["message"]["content"], "choices[0].message.content")


def completion_top_logprobs(response: dict[str, Any]) -> dict[str, float]:
    """First generated position's {token: logprob} of a /v1/completions answer."""
    top = response["choices"][0]["logprobs"]["top_logprobs"][0]
    if not isinstance(top, dict):
        raise TypeError("choices[0].logprobs.top_logprobs[0] is not an object")
    return {_string(t, "token"): _number(lp) for t, lp in top.items()}


def chat_top_logprobs(response: dict[str, Any]) -> dict[str, float]:
    """First generated position's {token: logprob} of a /v1/chat/completions answer."""
    out: dict[str, float] = {}
    for entry in response["choices"][0]["logprobs"]["content"][0]["top_logprobs"]:
        token, lp = _string(entry["token"], "token"), _number(entry["logprob"])
        out[token] = _logaddexp(out[token], lp) if token in out else lp  # two ids may print alike
    return out


def to_token_probs(outcome: Outcome[dict[str, float]], candidates: Sequence[str]) -> TokenProbs:
    """Renormalise the candidates' probabilities; fail when any candidate is not listed."""
    if outcome.error:
        return TokenProbs(error=outcome.error)
    top = outcome.value or {}
    missing = [c for c in candidates if c not in top]
    if missing:
        return TokenProbs(error=f"{MISSING}: {', '.join(map(repr, missing))}")
    logps = [top[c] for c in candidates]
    peak = max(logps)
    if math.isinf(peak):
        return TokenProbs(error="every rating token has probability 0")
    weights = [math.exp(lp - peak) for lp in logps]  # shift by the max: no underflow for small probabilities
    total = sum(weights)
    return TokenProbs(probs=tuple(w / total for w in weights), mass=math.exp(peak) * total)


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{where} is {type(value).__name__}, not a string")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        raise TypeError(f"logprob {value!r} is not a number")
    return float(value)


def _logaddexp(a: float, b: float) -> float:
    hi = max(a, b)
    return hi + math.log(math.exp(a - hi) + math.exp(b - hi))
