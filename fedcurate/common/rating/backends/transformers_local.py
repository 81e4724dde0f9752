"""The `transformers` rating backend: a local Hugging Face causal LM, batched, on CPU or GPU.

    backend = TransformersBackend(RaterConfig(model="tiny", batch_size=8))
    backend.generate(prompts, max_new_tokens=32, temperature=0.0)      # greedy; > 0 samples (seeded)
    backend.candidate_probs(prompts, ["1", "2", "3", "4", "5"])         # one prefill per batch, no generate()

Prompts are left-padded, so the last column holds every prompt's last real token; position ids follow
the attention mask, so a padded prompt gets the same logits as alone. `candidate_probs` reads the
logits there and takes a softmax restricted to the K candidate ids, which equals the candidates'
full-vocabulary probabilities renormalised over them; `mass` is their unrenormalised total.

Candidate ids come from the tokenizer, never from a table: the prompt's ending is tokenised with and
without the candidate, and the candidate must add exactly one token there (else `CandidateError`).
Prompts are fed as raw text, as the `vllm` backend sends them (/v1/completions), so both backends
give the same outputs; `chat_template=True` wraps each `generate` prompt in the tokenizer's chat
template instead (instruct judges). `candidate_probs` always feeds the raw text.
A prompt that does not fit the context, or a batch whose forward fails, yields a per-prompt error.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from fedcurate.common.config import RaterConfig
from fedcurate.common.models.loading import get_model, resolve_device
from fedcurate.common.rating.base import BACKENDS, Generation, TokenProbs

logger = logging.getLogger(__name__)
R = TypeVar("R")
TAIL_CHARS = 16  # prompt characters tokenised to resolve candidate ids: only the boundary matters, and
# prompts sharing their last 16 characters (one template) share one resolution


class CandidateError(ValueError):
    """A rating candidate is not exactly one token after the prompt under this tokenizer."""


@BACKENDS.register("transformers")
class TransformersBackend:
    """A local model from `rcfg.model` (hub id, path or `tiny`), loaded on first use and shared in-process."""

    def __init__(self, rcfg: RaterConfig, *, device: str | None = None, seed: int | None = None,
                 chat_template: bool | None = None) -> None:
        self.model_name = rcfg.model
        self.batch_size = rcfg.batch_size
        self.device = resolve_device(device or rcfg.device)
        self.dtype = _resolve_dtype(rcfg.dtype, self.device)
        self.seed = rcfg.seed if seed is None else seed
        self.chat_template = rcfg.chat_template if chat_template is None else chat_template
        self._ids: dict[tuple[str, tuple[str, ...]], list[int]] = {}

    def load(self) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
        return get_model(self.model_name, self.dtype, self.device)

    def parameter_count(self) -> int:
        """Number of model parameters (SelectIT's model-level weight)."""
        return sum(p.numel() for p in self.load()[0].parameters())

    def context_limit(self) -> int:
        model, tok = self.load()
        limit = getattr(model.config, "max_position_embeddings", None)
        return int(limit) if limit else int(min(tok.model_max_length, 1 << 20))

    def generate(self, prompts: Sequence[str], *, max_new_tokens: int, temperature: float) -> list[Generation]:
        """One completion per prompt; greedy at temperature 0, else sampling seeded with `self.seed`."""
        model, tok = self.load()
        encoded = [self._encode(p, chat=self.chat_template and bool(getattr(tok, "chat_template", None)))
                   for p in prompts]
        budget = self.context_limit() - max_new_tokens

        def run(rows: list[int]) -> list[Generation]:
            return self._generate_batch([encoded[i] for i in rows], max_new_tokens, temperature)

        return _batched([len(e) for e in encoded], self.batch_size, budget, run, lambda e: Generation(error=e))

    def candidate_probs(self, prompts: Sequence[str], candidates: Sequence[str]) -> list[TokenProbs]:
        """Next-token probabilities of `candidates` after each prompt, renormalised over them."""
        ids = [self.candidate_ids(p, candidates) for p in prompts]
        encoded = [self._encode(p, chat=False) for p in prompts]

        def run(rows: list[int]) -> list[TokenProbs]:
            return self._probs_batch([encoded[i] for i in rows], [ids[i] for i in rows])

        return _batched([len(e) for e in encoded], self.batch_size, self.context_limit(), run,
                        lambda e: TokenProbs(error=e))

    def candidate_ids(self, prompt: str, candidates: Sequence[str]) -> list[int]:
        """The token id each candidate gets right after `prompt`; CandidateError if not exactly one token."""
        tail = prompt[-TAIL_CHARS:]
        key = (tail, tuple(candidates))
        if key not in self._ids:
            _, tok = self.load()
            base = tok(tail, add_special_tokens=False)["input_ids"]
            ids = []
            for cand in candidates:
                full = tok(tail + cand, add_special_tokens=False)["input_ids"]
                if len(full) != len(base) + 1 or full[:len(base)] != base:
                    pieces = tok.convert_ids_to_tokens(full[max(0, len(base) - 2):])
                    raise CandidateError(
                        f"rating candidate {cand!r} is not a single token after the prompt ending "
                        f"{tail[-12:]!r} with the tokenizer of {self.model_name!r} (the end tokenises as "
                        f"{pieces}); end the prompt so the candidate starts a new token, e.g. with a newline")
                ids.append(full[-1])
            if len(set(ids)) != len(ids):
                raise CandidateError(f"rating candidates {list(candidates)} share token ids {ids}")
            self._ids[key] = ids
        return self._ids[key]

    def _encode(self, prompt: str, chat: bool) -> list[int]:
        _, tok = self.load()
        if chat:
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
            return list(tok(text, add_special_tokens=False)["input_ids"])
        return list(tok(prompt, add_special_tokens=True)["input_ids"])

    @torch.no_grad()
    def _probs_batch(self, batch: list[list[int]], cand_ids: list[list[int]]) -> list[TokenProbs]:
        model, tok = self.load()
        inputs: dict[str, Any] = dict(left_pad(batch, tok.pad_token_id, model.device))
        if _accepts(model, "logits_to_keep"):
            inputs["logits_to_keep"] = 1  # only the last column's logits: the full-vocab rows are large
        last = model(**inputs).logits[:, -1, :].float()  # (batch, vocab): left padding puts every end here
        total = torch.logsumexp(last, dim=-1)
        out = []
        for row, ids in enumerate(cand_ids):
            z = last[row, ids]
            probs = torch.softmax(z, dim=-1)  # == full-vocab softmax renormalised over the candidates
            mass = torch.exp(torch.logsumexp(z, dim=-1) - total[row])
            out.append(TokenProbs(tuple(probs.tolist()), float(mass)))
        return out

    @torch.no_grad()
    def _generate_batch(self, batch: list[list[int]], max_new_tokens: int, temperature: float) -> list[Generation]:
        model, tok = self.load()
        inputs = left_pad(batch, tok.pad_token_id, model.device)
        inputs.pop("position_ids")  # generate() derives them from the attention mask
        kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "pad_token_id": tok.pad_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            out = model.generate(**inputs, **kwargs)  # type: ignore[operator]
        width = inputs["input_ids"].shape[1]
        return [Generation(tok.decode(row[width:], skip_special_tokens=True)) for row in out]


def left_pad(batch: Sequence[Sequence[int]], pad_id: int, device: torch.device | str) -> dict[str, torch.Tensor]:
    """Left-padded `input_ids`, `attention_mask` and mask-following `position_ids` (0 at each first real token)."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):
        input_ids[row, width - len(ids):] = torch.tensor(list(ids), dtype=torch.long)
        mask[row, width - len(ids):] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return {"input_ids": input_ids.to(device), "attention_mask": mask.to(device), "position_ids": positions.to(device)}


def _batched(lengths: list[int], batch_size: int, limit: int, run: Callable[[list[int]], list[R]],
             fail: Callable[[str], R]) -> list[R]:
    """`run(rows)` over length-sorted batches of prompt indices; results in input order.

    A prompt longer than `limit` tokens fails alone. If a batch raises, its prompts are retried one by
    one, so one bad prompt (e.g. out of memory) costs only its own result, never another's.
    """
    out: list[R | None] = [None] * len(lengths)
    ok = []
    for i, n in enumerate(lengths):
        if n > limit:
            out[i] = fail(f"prompt too long: {n} tokens, the model's budget is {limit}")
        else:
            ok.append(i)
    ok.sort(key=lambda i: lengths[i], reverse=True)
    for start in range(0, len(ok), batch_size):
        rows = ok[start:start + batch_size]
        for i, result in zip(rows, _run_isolated(rows, run, fail), strict=True):
            out[i] = result
    return [r if r is not None else fail("internal: no result") for r in out]


def _run_isolated(rows: list[int], run: Callable[[list[int]], list[R]], fail: Callable[[str], R]) -> list[R]:
    try:
        return run(rows)
    except Exception as err:  # noqa: BLE001 - a model failure must cost one prompt, not the whole run
        if len(rows) == 1:
            logger.warning("prompt failed: %s: %s", type(err).__name__, err)
            return [fail(f"{type(err).__name__}: {err}")]
        logger.warning("batch of %d failed (%s); retrying its prompts one by one", len(rows), err)
        return [r for i in rows for r in _run_isolated([i], run, fail)]


def _resolve_dtype(dtype: str, device: str) -> str:
    """`auto`: float32 on CPU, bfloat16 on a GPU that supports it, else float16."""
    if dtype != "auto":
        return dtype
    if device.startswith("cuda"):
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "float32"


def _accepts(model: PreTrainedModel, arg: str) -> bool:
    return arg in inspect.signature(model.forward).parameters
