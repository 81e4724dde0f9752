"""Phase `dynamics`, server side: broadcast the CLUES checkpoints and their anchor gradients (computed once,
here), then combine every site's per-scorer moments into the federation's count, mean, std, min and max.

    summary = phase_dynamics(run)    # {"scorers": {name: {count, mean, std, min, max, failures}}, ...}

Protocol: `common/protocol/dynamics.py`; site side: `client/steps/dynamics.py`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedcurate.common.protocol import dynamics as protocol
from fedcurate.common.protocol.payload import Payload
from fedcurate.common.protocol.rounds import num
from fedcurate.server.phases.warmup import server_config
from fedcurate.server.run import Run


def phase_dynamics(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    payload = Payload()
    if "clues" in cfg.scoring.scorers:
        payload = clues_broadcast(run)
    result = run.round("dynamics", "dynamics", payload, protocol.check_reply(cfg.scoring.scorers))
    stats = {}
    for name in cfg.scoring.scorers:
        ms = [[num(x) for x in r.values["moments"][name]] for r in result.replies.values()]
        n, s, sq = (sum(m[i] for m in ms) for i in range(3))
        mean = s / n if n else float("nan")
        var = max(sq / n - mean * mean, 0.0) if n else float("nan")
        finite_min = [m[3] for m in ms if math.isfinite(m[3])]
        finite_max = [m[4] for m in ms if math.isfinite(m[4])]
        stats[name] = {"count": int(n), "mean": mean, "std": math.sqrt(var) if n else float("nan"),
                       "min": min(finite_min, default=float("nan")), "max": max(finite_max, default=float("nan")),
                       "failures": sum(int(r.values.get("failures", {}).get(name, 0))
                                       for r in result.replies.values())}
    run.write_site_stats("dynamics", result)
    return {"scorers": stats, "sites": sorted(result.replies), "excluded": result.excluded,
            "broadcast_checkpoints": len(payload.values.get("checkpoints", []))}


def anchor_state(run: Run) -> tuple[Any, list[Any], list[Any]]:
    """(dynamics model, checkpoints, anchor gradients) at the server; gradients computed once, stored."""
    from fedcurate.common.dynamics.checkpoints import load_anchor_gradients, save_anchor_gradients
    from fedcurate.common.dynamics.clues import anchor_gradients
    from fedcurate.common.dynamics.prepare import load_anchor, load_dynamics

    cfg = server_config(run)
    dm, ckpts = load_dynamics(cfg)
    out = run.server_dir("dynamics")
    steps = [c.step for c in ckpts]
    grads = load_anchor_gradients(out, steps) if out.exists() else None
    if grads is None:
        grads = anchor_gradients(dm, load_anchor(cfg), ckpts, tuple(cfg.dynamics.modules))
        save_anchor_gradients(out, steps, grads)
    return dm, ckpts, grads


def clues_broadcast(run: Run) -> Payload:
    """The checkpoints (weights and Adam moments) and their anchor gradients, as one payload."""
    from fedcurate.common.federated_lora import read_state

    _, ckpts, grads = anchor_state(run)
    arrays: dict[str, np.ndarray] = {}
    infos = []
    for i, (ckpt, g) in enumerate(zip(ckpts, grads, strict=True)):
        arrays.update({f"ckpt{i}/{k}": v for k, v in read_state(ckpt.path).items()})
        arrays.update({f"grad{i}/{k}": t.detach().float().cpu().numpy() for k, t in g.items()})
        infos.append({"step": ckpt.step, "lr_mean": ckpt.lr_mean})
    return Payload({"checkpoints": infos}, arrays)
