"""Per-sample LoRA gradients of a whole batch, from layer activations and output gradients.

A LoRA layer adds s * B(A x) to a frozen linear layer. A and B are bias-free linear maps, so for
either of them, with input a_t and output y_t at token t, the gradient of one sample's loss l_i is a
sum over that sample's tokens of outer products:

    dl_i/dW = sum_t g_t a_t^T,   g_t = dl_i/dy_t          (for A: a_t = x_t; for B: a_t = A x_t;
                                                            the LoRA scale s is already inside g)

One forward pass of a batch and one autograd call on L = sum_i l_i give every sample's (a, g) at once:
right-padded samples do not interact under causal attention, so dL/dy for sample i's tokens is dl_i/dy.
From (a, g):
- the inner product with a fixed matrix V needs no gradient:  <dl_i/dW, V> = sum_t g_t^T V a_t;
- the squared norm needs none either (Gram form):            ||dl_i/dW||^2 = sum_{t,t'} (g_t.g_t')(a_t.a_t'),
  which costs T^2 (in + out) per sample against T * in * out for building the gradient, so the cheaper
  of the two is used (for LoRA, with in * out / (in + out) ~ r, building wins beyond ~r tokens);
- the per-sample gradient itself (for Adam preconditioning, which is not linear in it) is one batched
  matrix product, made for one layer of one batch at a time and freed by the caller.

The loss of a sample is the mean token cross-entropy over its response tokens (and EOS), as in training;
the LM head is evaluated only from the first position that predicts a response token (`response_logits`).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fedcurate.common.models.templates import IGNORE_INDEX, Encoded, collate

LORA_MARKERS = (".lora_A.", ".lora_B.")


@dataclass(frozen=True)
class LoraLayer:
    """One LoRA weight matrix: its parameter name (e.g. `...q_proj.lora_A.default.weight`) and module."""

    name: str
    module: nn.Linear


@dataclass
class BatchGrads:
    """Everything the scores need from one batch, keyed by LoRA parameter name.

    inputs[name]: (batch, tokens, in) layer inputs; out_grads[name]: (batch, tokens, out) gradients of
    each sample's loss w.r.t. the layer output (zero on padding); losses: (batch,) per-sample losses.
    """

    inputs: dict[str, torch.Tensor]
    out_grads: dict[str, torch.Tensor]
    losses: torch.Tensor

    def pop(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, g) of one layer in float32, dropped from this object so its memory can be freed."""
        return self.inputs.pop(name).float(), self.out_grads.pop(name).float()


def lora_layers(model: nn.Module, modules: Sequence[str] = ()) -> list[LoraLayer]:
    """LoRA weight matrices whose parameter name contains one of `modules` (all if empty), in model order.

    Raises ValueError when the filter keeps nothing, and NotImplementedError for LoRA variants whose
    gradient is not the plain linear one (LoRA bias, DoRA, embedding LoRA).
    """
    params = dict(model.named_parameters())
    if any("lora_magnitude_vector" in n or "lora_embedding_" in n for n in params):
        raise NotImplementedError("DoRA and embedding LoRA are not supported; use plain LoRA on linear layers")
    layers = []
    for name in params:
        if not any(m in name for m in LORA_MARKERS) or not name.endswith(".weight"):
            continue
        if modules and not any(m in name for m in modules):
            continue
        module = model.get_submodule(name.removesuffix(".weight"))
        if not isinstance(module, nn.Linear) or module.bias is not None:
            raise NotImplementedError(f"{name}: only bias-free nn.Linear LoRA factors are supported")
        if not module.weight.requires_grad:
            raise ValueError(f"{name} does not require grad: load the adapter with is_trainable=True")
        layers.append(LoraLayer(name, module))
    if not layers:
        raise ValueError(f"no LoRA parameter matches modules={list(modules)!r}; LoRA parameters: "
                         f"{[n for n in params if any(m in n for m in LORA_MARKERS)][:6]}")
    return layers


def token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL (batch, seq - 1) in float32, zero where ignored, and the labelled-token mask."""
    targets = labels[:, 1:]  # position t predicts token t + 1
    nll = F.cross_entropy(logits[:, :-1].float().transpose(1, 2), targets, ignore_index=IGNORE_INDEX,
                          reduction="none")
    return nll, targets != IGNORE_INDEX


def response_logits(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits from the first position that predicts a labelled token on, and the labels aligned to them.

    The LM head (often the largest matrix product) is skipped over the prompt, through transformers'
    `logits_to_keep` where the model supports it; the loss is unchanged, as prompt positions carry none.
    """
    labels = batch["labels"]
    predicts_label = (labels[:, 1:] != IGNORE_INDEX).any(dim=0)  # position t predicts token t + 1
    first = int(predicts_label.nonzero()[0]) if bool(predicts_label.any()) else 0
    kwargs = {"logits_to_keep": labels.shape[1] - first} if first > 0 and _keeps_logits(model) else {}
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **kwargs).logits
    return logits, labels[:, labels.shape[1] - logits.shape[1]:]


def _keeps_logits(model: nn.Module) -> bool:
    inner = getattr(model, "module", model)  # DistributedDataParallel
    inner = inner.get_base_model() if hasattr(inner, "get_base_model") else inner
    return "logits_to_keep" in inspect.signature(inner.forward).parameters


def sample_losses(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean response-token NLL of each sample, (batch,)."""
    nll, mask = token_nll(logits, labels)
    return nll.sum(dim=1) / mask.sum(dim=1)


def capture(model: nn.Module, layers: Sequence[LoraLayer], batch: Sequence[Encoded], pad_id: int) -> BatchGrads:
    """One forward pass and one autograd call: every layer's inputs and per-sample output gradients."""
    device = layers[0].module.weight.device
    tensors = {k: v.to(device) for k, v in collate(list(batch), pad_id).items()}
    inputs: dict[str, torch.Tensor] = {}
    outputs: dict[str, torch.Tensor] = {}

    def hook(name: str):  # noqa: ANN202 (a torch hook)
        def save(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            if name in outputs:
                raise RuntimeError(f"{name} ran twice in one forward pass; shared LoRA layers are not supported")
            inputs[name], outputs[name] = args[0].detach(), output
        return save

    handles = [layer.module.register_forward_hook(hook(layer.name)) for layer in layers]
    try:
        with torch.enable_grad():
            logits, labels = response_logits(model, tensors)
            losses = sample_losses(logits, labels)
            del logits
            names = [layer.name for layer in layers]
            grads = torch.autograd.grad(losses.sum(), [outputs[n] for n in names])
    finally:
        for handle in handles:
            handle.remove()
    mask = tensors["attention_mask"].unsqueeze(-1).to(grads[0].dtype)  # padding contributes nothing
    out_grads = {n: g * mask for n, g in zip(names, grads, strict=True)}
    return BatchGrads(inputs=inputs, out_grads=out_grads, losses=losses.detach())


def per_sample_grad(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(batch, out, in): each sample's weight gradient, sum_t g_t a_t^T."""
    return torch.bmm(g.transpose(1, 2), a)


def summed_grad(a: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """(out, in): the gradient of the batch's summed loss."""
    return g.flatten(0, 1).T @ a.flatten(0, 1)


def inner_with(a: torch.Tensor, g: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(batch,): <dl_i/dW, target> = sum_t g_t^T target a_t, without forming dl_i/dW."""
    return (g * (a @ target.T)).sum(dim=(1, 2))


def grad_sq_norm(a: torch.Tensor, g: torch.Tensor, method: str = "auto") -> torch.Tensor:
    """(batch,): ||dl_i/dW||^2 by the Gram form or by building the gradient, whichever costs less."""
    tokens, n_in, n_out = a.shape[1], a.shape[2], g.shape[2]
    if method == "auto":
        method = "gram" if tokens * (n_in + n_out) < n_in * n_out else "build"
    if method == "gram":
        return ((g @ g.transpose(1, 2)) * (a @ a.transpose(1, 2))).sum(dim=(1, 2))
    return per_sample_grad(a, g).pow(2).sum(dim=(1, 2))


def adam_direction(grad: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
                   betas: tuple[float, float], eps: float) -> torch.Tensor:
    """Gamma(g) = m' / sqrt(v' + eps), m' = b1 m + (1 - b1) g, v' = b2 v + (1 - b2) g^2 (LESS; no bias
    correction, eps inside the square root). Broadcasts a (batch, ...) gradient over the state's shape."""
    b1, b2 = betas
    m = exp_avg.mul(b1).add(grad, alpha=1.0 - b1)
    v = grad.square().mul_(1.0 - b2).add_(exp_avg_sq, alpha=b2)
    return m.div_(v.add_(eps).sqrt_())
