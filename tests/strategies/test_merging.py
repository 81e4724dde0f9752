"""One-shot merging of LoRA adapters: exactness of svd/stack, TIES/DARE maths, agreement with peft."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedcurate.strategies.merging import (
    factor_product,
    lora_delta,
    lora_pairs,
    merge_adapters,
    ties_merge,
)

A, B = "m.q_proj.lora_A.weight", "m.q_proj.lora_B.weight"


def _adapter(rng: np.random.Generator, r: int = 2, out: int = 6, inp: int = 5) -> dict[str, np.ndarray]:
    return {A: rng.normal(size=(r, inp)).astype(np.float32), B: rng.normal(size=(out, r)).astype(np.float32),
            "m.head.bias": rng.normal(size=(out,)).astype(np.float32)}


def _mean_delta(states, weights, scaling=1.0) -> np.ndarray:
    p = np.asarray(weights, np.float64) / np.sum(weights)
    return sum(pk * scaling * s[B].astype(np.float64) @ s[A].astype(np.float64) for pk, s in zip(p, states, strict=True))


def test_lora_pairs_finds_factors_by_name_and_rejects_orphans():
    # Prepare
    keys = [A, B, "x.lora_A.default.weight", "x.lora_B.default.weight", "e.lora_embedding_A",
            "e.lora_embedding_B", "head.weight"]

    # Execute
    pairs, others = lora_pairs(keys)

    # Assert
    assert pairs == [("e.lora_embedding_A", "e.lora_embedding_B"), (A, B),
                     ("x.lora_A.default.weight", "x.lora_B.default.weight")]
    assert others == ["head.weight"]
    with pytest.raises(ValueError, match="no partner"):
        lora_pairs([A])
    with pytest.raises(ValueError, match="without their A"):
        lora_pairs([B])


@pytest.mark.parametrize("method, rank", [("svd", 4), ("svd", None), ("stack", None)])
def test_svd_and_stack_reproduce_the_weighted_mean_delta(method, rank):
    # Prepare: two rank-2 sites, sum of ranks 4
    rng = np.random.default_rng(0)
    states, weights = [_adapter(rng), _adapter(rng)], [30, 10]

    # Execute
    merged = merge_adapters(states, weights, method, rank=rank or (4 if method == "svd" else None), scaling=2.0)

    # Assert
    assert merged[A].shape == (4, 5) and merged[A].dtype == np.float32
    np.testing.assert_allclose(2.0 * merged[B] @ merged[A], _mean_delta(states, weights, 2.0), atol=1e-5)
    np.testing.assert_allclose(merged["m.head.bias"], 0.75 * states[0]["m.head.bias"]
                               + 0.25 * states[1]["m.head.bias"], atol=1e-6)


def test_svd_truncation_is_the_best_low_rank_approximation():
    # Prepare
    rng = np.random.default_rng(1)
    states = [_adapter(rng, r=3) for _ in range(3)]

    # Execute
    merged = merge_adapters(states, [1, 1, 1], "svd", rank=3)

    # Assert: the error equals the discarded singular values (Eckart-Young)
    target = _mean_delta(states, [1, 1, 1])
    s = np.linalg.svd(target, compute_uv=False)
    err = np.linalg.norm(target - merged[B].astype(np.float64) @ merged[A])
    assert err == pytest.approx(np.sqrt(np.sum(s[3:] ** 2)), rel=1e-4)


def test_rank_deficient_svd_keeps_trainable_a_rows():
    # Prepare: untrained adapters (B = 0), so the mean delta is 0
    rng = np.random.default_rng(2)
    states = [{**_adapter(rng, r=4), B: np.zeros((6, 4), np.float32)} for _ in range(2)]

    # Execute
    a, b = factor_product([torch.from_numpy(s[B]).double() for s in states],
                          [torch.from_numpy(s[A]).double() for s in states], [0.5, 0.5], rank=4)

    # Assert: product exact (0), A rows non-zero and orthogonal, so B still receives gradients
    assert torch.count_nonzero(b) == 0
    assert torch.all(a.norm(dim=1) > 0.1)
    gram = a @ a.T
    torch.testing.assert_close(gram - torch.diag(torch.diag(gram)), torch.zeros(4, 4, dtype=torch.float64))


def test_linear_averages_factors_separately():
    # Prepare
    rng = np.random.default_rng(3)
    states = [_adapter(rng), _adapter(rng)]

    # Execute
    merged = merge_adapters(states, [1, 3], "linear")

    # Assert
    np.testing.assert_allclose(merged[A], 0.25 * states[0][A] + 0.75 * states[1][A], atol=1e-6)
    assert not np.allclose(merged[B] @ merged[A], _mean_delta(states, [1, 3]), atol=1e-3)


def test_ties_merge_trims_elects_and_takes_the_disjoint_mean():
    # Prepare
    t1 = torch.tensor([3.0, -1.0, 0.5, 2.0])
    t2 = torch.tensor([1.0, 2.0, -4.0, -0.1])

    # Execute: keep top 50 % -> t1: [3, 0, 0, 2], t2: [0, 2, -4, 0]
    merged = ties_merge([t1, t2], [1.0, 1.0], density=0.5)

    # Assert: signs + + - + ; one agreeing value per entry
    torch.testing.assert_close(merged, torch.tensor([3.0, 2.0, -4.0, 2.0]))
    torch.testing.assert_close(ties_merge([t1, t1], [0.5, 1.5], density=1.0), t1)


def test_dare_is_seeded_and_unbiased():
    # Prepare
    rng = np.random.default_rng(4)
    states = [_adapter(rng, r=2, out=30, inp=30) for _ in range(2)]

    # Execute
    one = merge_adapters(states, [1, 1], "dare", density=0.5, seed=7, rank=4)
    same = merge_adapters(states, [1, 1], "dare", density=0.5, seed=7, rank=4)
    other = merge_adapters(states, [1, 1], "dare", density=0.5, seed=8, rank=4)

    # Assert: deterministic per seed; kept mass rescaled (projection on the mean delta stays ~1)
    np.testing.assert_array_equal(one[A], same[A])
    assert not np.array_equal(one[A], other[A])
    target = _mean_delta(states, [1, 1])
    ratio = np.sum((one[B].astype(np.float64) @ one[A]) * target) / np.sum(target * target)
    assert 0.7 < ratio < 1.3


def test_merge_rejects_mismatched_inputs():
    # Prepare
    rng = np.random.default_rng(5)
    a, b = _adapter(rng, r=2), _adapter(rng, r=3)

    # Execute / Assert
    with pytest.raises(ValueError, match="equal LoRA ranks"):
        merge_adapters([a, b], [1, 1], "linear")
    with pytest.raises(ValueError, match="other keys"):
        merge_adapters([a, {A: a[A], B: a[B]}], [1, 1], "svd")
    with pytest.raises(ValueError, match="density"):
        merge_adapters([a, a], [1, 1], "ties", density=0.0)
    with pytest.raises(KeyError, match="did you mean 'ties'"):
        merge_adapters([a, a], [1, 1], "tie")
    with pytest.raises(ValueError, match="weights"):
        merge_adapters([a, a], [0, 0], "svd")
    assert merge_adapters([a, b], [1, 1], "svd", rank=5)[A].shape == (5, 5)


def test_svd_fedavg_reproduces_the_mean_delta_when_the_ranks_allow():
    # Prepare: three sites whose updates have rank 1 each; the global rank is 4 >= 3
    rng = np.random.default_rng(0)
    states = [_adapter(rng, r=4) for _ in range(3)]
    for s in states:
        s[B][:, 1:] = 0.0  # only the first column used: rank(B A) = 1
    weights = [10.0, 20.0, 70.0]

    # Execute
    exact = merge_adapters(states, weights, "svd")
    fedit = merge_adapters(states, weights, "linear")

    # Assert: svd is exact, FedIT is not; the plain key is a weighted mean either way
    np.testing.assert_allclose(exact[B] @ exact[A], _mean_delta(states, weights), atol=1e-5)
    assert np.abs(fedit[B] @ fedit[A] - _mean_delta(states, weights)).max() > 0.05
    bias = sum(w / 100 * s["m.head.bias"] for w, s in zip(weights, states, strict=True))
    np.testing.assert_allclose(exact["m.head.bias"], bias, atol=1e-6)


@pytest.fixture(scope="module")
def peft_sites():
    """A tiny Llama with two random rank-4 LoRA adapters (scaling 8 / 4 = 2) and their state dicts."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from fedcurate.common.models.tiny import build_tiny_llama, build_tiny_tokenizer

    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = get_peft_model(build_tiny_llama(build_tiny_tokenizer()), cfg, adapter_name="site0")
    model.add_adapter("site1", cfg)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen))
    states = [get_peft_model_state_dict(model, adapter_name=f"site{i}") for i in range(2)]
    return model, states, get_peft_model_state_dict


@pytest.mark.parametrize("ours, theirs, weights", [
    ("ties-peft", "ties", [0.5, 1.5]), ("ties", "ties_svd", [0.5, 1.5]),
    ("svd", "svd", [0.25, 0.75]), ("stack", "cat", [0.25, 0.75]),
])
def test_merges_agree_with_peft_add_weighted_adapter(peft_sites, ours, theirs, weights):
    # Prepare
    model, states, get_state = peft_sites
    name = f"merged_{theirs}"
    model.add_weighted_adapter(["site0", "site1"], weights, name, combination_type=theirs, density=0.5)
    reference = get_state(model, adapter_name=name)

    # Execute: peft's merged adapter has lora_alpha = r, i.e. scaling 1
    merged = merge_adapters(states, weights, ours, density=0.5, scaling=2.0, out_scaling=1.0)

    # Assert: same dW everywhere; ties-peft also gives peft's factors themselves
    pairs, _ = lora_pairs(list(reference))
    assert len(pairs) == 4
    for a_key, b_key in pairs:
        torch.testing.assert_close(lora_delta(merged, a_key), lora_delta(reference, a_key), rtol=1e-5, atol=1e-4)
        if ours == "ties-peft":
            torch.testing.assert_close(merged[a_key], reference[a_key])
            torch.testing.assert_close(merged[b_key], reference[b_key])
