"""Per-sample LoRA gradients from activations and output gradients equal explicit per-sample backward passes."""

from __future__ import annotations

import pytest
import torch

from fedcurate.common.dynamics.checkpoints import apply_checkpoint
from fedcurate.common.dynamics.gradients import (
    adam_direction,
    capture,
    grad_sq_norm,
    inner_with,
    lora_layers,
    per_sample_grad,
    response_logits,
    sample_losses,
    summed_grad,
)
from fedcurate.common.models.templates import collate


def _explicit_grads(dm, encoded, layers) -> list[dict[str, torch.Tensor]]:
    """One backward pass per sample (batch size 1), gradients read from .grad."""
    out = []
    for enc in encoded:
        dm.model.zero_grad(set_to_none=True)
        ids, labels = torch.tensor([enc.input_ids]), torch.tensor([enc.labels])
        sample_losses(dm.model(input_ids=ids).logits, labels)[0].backward()
        out.append({layer.name: layer.module.weight.grad.detach().clone() for layer in layers})
    dm.model.zero_grad(set_to_none=True)
    return out


@pytest.fixture
def batch(trained):
    dm = trained.scoring_model()
    apply_checkpoint(dm.model, trained.checkpoints()[-1])
    encoded = [e for e in dm.encode(trained.train[:6]) if e is not None]
    layers = lora_layers(dm.model)
    return dm, encoded, layers, _explicit_grads(dm, encoded, layers)


def test_per_sample_gradients_equal_batch_size_one_backward(batch) -> None:
    # Prepare
    dm, encoded, layers, explicit = batch
    # Execute
    cap = capture(dm.model, layers, encoded, dm.pad_id)
    # Assert
    for layer in layers:
        a, g = cap.pop(layer.name)
        built = per_sample_grad(a, g)
        for i in range(len(encoded)):
            torch.testing.assert_close(built[i], explicit[i][layer.name], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(summed_grad(a, g), sum(e[layer.name] for e in explicit), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("method", ["gram", "build", "auto"])
def test_inner_products_and_norms_from_activations_equal_explicit_gradients(batch, method: str) -> None:
    # Prepare
    dm, encoded, layers, explicit = batch
    gen = torch.Generator().manual_seed(0)
    targets = {layer.name: torch.randn(layer.module.weight.shape, generator=gen) for layer in layers}
    # Execute
    cap = capture(dm.model, layers, encoded, dm.pad_id)
    pairs = {layer.name: cap.pop(layer.name) for layer in layers}
    # Assert
    for name, (a, g) in pairs.items():
        inner = inner_with(a, g, targets[name])
        norm = grad_sq_norm(a, g, method)
        for i in range(len(encoded)):
            want = explicit[i][name]
            assert float(inner[i]) == pytest.approx(float((want * targets[name]).sum()), rel=1e-4, abs=1e-9)
            assert float(norm[i]) == pytest.approx(float(want.square().sum()), rel=1e-4, abs=1e-12)


def test_capture_losses_match_full_logits(trained) -> None:
    # Prepare: the LM head is skipped over the prompt; the loss must not change
    dm = trained.scoring_model()
    encoded = [e for e in dm.encode(trained.train[:5]) if e is not None]
    batch = collate(encoded, dm.pad_id)
    # Execute
    with torch.no_grad():
        logits, labels = response_logits(dm.model, batch)
        full = dm.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Assert
    assert logits.shape[1] < full.shape[1]
    torch.testing.assert_close(sample_losses(logits, labels), sample_losses(full, batch["labels"]))


def test_module_filter_selects_by_parameter_name(trained) -> None:
    # Prepare
    model = trained.scoring_model().model
    # Execute
    only_b = lora_layers(model, ["lora_B"])
    only_v = lora_layers(model, ["v_proj"])
    everything = lora_layers(model)
    # Assert
    assert len(everything) == 8  # 2 layers x (q, v) x (A, B)
    assert len(only_b) == 4 and all(".lora_B." in x.name for x in only_b)
    assert len(only_v) == 4 and all("v_proj" in x.name for x in only_v)
    with pytest.raises(ValueError, match="no LoRA parameter matches"):
        lora_layers(model, ["k_proj"])


def test_adam_direction_follows_the_formula() -> None:
    # Prepare
    g = torch.tensor([[[0.5, -2.0]], [[0.0, 1e-3]]])  # (batch 2, 1, 2)
    m, v = torch.tensor([[0.1, 0.2]]), torch.tensor([[0.01, 0.04]])
    # Execute
    gamma = adam_direction(g, m, v, (0.9, 0.999), 1e-8)
    # Assert
    expected = (0.9 * m + 0.1 * g) / torch.sqrt(0.999 * v + 0.001 * g * g + 1e-8)
    torch.testing.assert_close(gamma, expected)
    assert gamma.shape == g.shape
