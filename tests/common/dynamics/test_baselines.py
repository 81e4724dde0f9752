"""DataInf and LESS-style scores equal their formulas evaluated on explicit per-sample gradient vectors."""

from __future__ import annotations

import math

import pytest
import torch

from fedcurate.common.dynamics.checkpoints import apply_checkpoint
from fedcurate.common.dynamics.datainf import block_name, datainf_hvp, datainf_scores
from fedcurate.common.dynamics.gradients import lora_layers
from fedcurate.common.dynamics.less import RademacherProjection, less_scores, less_targets
from fedcurate.common.dynamics.naive import flat_gradient, max_relative_error, precondition


def _grads(dm, samples, names):
    return [flat_gradient(dm, e, names) for e in dm.encode(samples) if e is not None]


def _explicit_datainf(dm, train, anchor, scored, scale: float) -> list[float]:
    """DataInf with one explicit gradient vector per sample and block."""
    names = [x.name for x in lora_layers(dm.model)]
    blocks = sorted({block_name(n) for n in names})
    total = [0.0] * len(scored)
    for block in blocks:
        members = [n for n in names if block_name(n) == block]
        g_train, g_scored = _grads(dm, train, members), _grads(dm, scored, members)
        v = sum(_grads(dm, anchor, members)) / len(anchor)
        lam = scale * sum(float(g.square().mean()) for g in g_train) / len(g_train)
        hvp = sum(v - float(v @ g) / (lam + float(g @ g)) * g for g in g_train) / (len(g_train) * lam)
        for i, g in enumerate(g_scored):
            total[i] += float(hvp @ g)
    return total


def test_datainf_equals_the_explicit_formula(trained) -> None:
    # Prepare
    dm, ckpt = trained.scoring_model(batch_size=4), trained.checkpoints()[-1]
    train, scored = trained.train[:10], trained.train[10:16]
    # Execute
    hvp = datainf_hvp(dm, train, ckpt, 0.1, trained.anchor)
    fast = datainf_scores(dm, scored, ckpt, hvp)
    apply_checkpoint(dm.model, ckpt)
    explicit = _explicit_datainf(dm, train, trained.anchor, scored, 0.1)
    # Assert
    assert max_relative_error(fast, explicit) <= 1e-4


def _explicit_less(dm, samples, anchor, ckpts, proj) -> list[float]:
    """LESS with explicit gradient vectors and the projection matrix assembled from its chunks."""
    layers = lora_layers(dm.model)
    names = [x.name for x in layers]
    rows = [x.module.weight.numel() for x in layers]
    matrix = torch.cat([proj.matrix(n, r) for n, r in zip(names, rows, strict=True)])
    total = [0.0] * len(samples)
    for ckpt in ckpts:
        apply_checkpoint(dm.model, ckpt)
        anchor_dirs = [(g @ matrix) / (g @ matrix).norm() for g in _grads(dm, anchor, names)]
        m = torch.cat([ckpt.exp_avg[n].flatten() for n in names])
        v = torch.cat([ckpt.exp_avg_sq[n].flatten() for n in names])
        for i, g in enumerate(_grads(dm, samples, names)):
            pg = precondition(g, m, v, ckpt.betas, ckpt.eps) @ matrix
            cosines = [float(pg @ a) / float(pg.norm()) for a in anchor_dirs]
            total[i] += ckpt.lr_mean * sum(cosines) / len(cosines) / len(ckpts)
    return total


def test_less_equals_the_explicit_formula(trained) -> None:
    # Prepare: small chunks so that every parameter spans several generated chunks
    dm, ckpts = trained.scoring_model(batch_size=4), trained.checkpoints()
    proj = RademacherProjection(dim=64, seed=3, chunk_rows=100)
    samples = trained.train[:7]
    # Execute
    fast = less_scores(dm, samples, ckpts, less_targets(dm, trained.anchor, ckpts, proj), proj)
    explicit = _explicit_less(dm, samples, trained.anchor, ckpts, proj)
    # Assert
    assert max_relative_error(fast, explicit) <= 1e-4


def test_projection_is_seeded_and_independent_of_caching() -> None:
    # Prepare
    x = torch.randn(3, 1000, generator=torch.Generator().manual_seed(0))
    # Execute
    cached = RademacherProjection(dim=32, seed=1, chunk_rows=256).project("w", x)
    uncached = RademacherProjection(dim=32, seed=1, chunk_rows=256, cache_bytes=0).project("w", x)
    other_seed = RademacherProjection(dim=32, seed=2, chunk_rows=256).project("w", x)
    other_name = RademacherProjection(dim=32, seed=1, chunk_rows=256).project("u", x)
    # Assert
    torch.testing.assert_close(cached, uncached)
    assert not torch.allclose(cached, other_seed) and not torch.allclose(cached, other_name)


def test_projection_roughly_preserves_inner_products() -> None:
    # Prepare: Johnson-Lindenstrauss, d = 4096: relative error of a norm ~ sqrt(2/d) ~ 2%
    x = torch.randn(2, 3000, generator=torch.Generator().manual_seed(0))
    # Execute
    px = RademacherProjection(dim=4096, seed=0).project("w", x)
    # Assert
    assert float(px[0].norm()) == pytest.approx(float(x[0].norm()), rel=0.1)
    cos = float(px[0] @ px[1]) / float(px[0].norm() * px[1].norm())
    assert abs(cos) < 0.1 and math.isfinite(cos)
