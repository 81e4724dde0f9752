"""Rounds of federated LoRA, server side (shared by the `warmup` and `train` phases).

    state, log = lora_rounds(run, "train", initial_state(cfg), rounds=8, steps=20, out=run.server_dir("train"),
                             exact="svd", on_round=lambda r, state, lr_mean: None)

Every round sends the global state and the round's schedule, validates every reply against the state's
keys, shapes and dtypes (`common/protocol/lora.check_state`), and averages the sites that trained: FedAvg
weighted by examples (`strategies/lora_average.py`), or under site-level DP Flower's clipping wrapper
(`strategies/dp_training.py`). Each round's state is saved, so a restarted phase resumes after the last
finished round. Protocol: `common/protocol/lora.py`; site side: `client/steps/lora.py`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from fedcurate.common import io
from fedcurate.common.protocol.lora import WEIGHT_PREFIX, check_state
from fedcurate.common.protocol.payload import Payload
from fedcurate.common.protocol.rounds import num
from fedcurate.common.protocol.validation import expected_spec
from fedcurate.server.run import PhaseError, Run


def round_seed(base: int, *tags: object) -> int:
    """Seed of one LoRA round: the same at every site (one site then reproduces centralized mode)."""
    digest = hashlib.sha256(json.dumps([base, *map(str, tags)]).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def lora_rounds(run: Run, phase: str, state: dict[str, np.ndarray], rounds: int, steps: int,
                out: Path, exact: str | None, on_round: Callable[[int, dict[str, np.ndarray], float], None]
                ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """`rounds` FedAvg rounds of `steps` local steps from `state`; resumes from `out/round-<r>/state.npz`.
    With `privacy.train-noise-multiplier` each average is `dp_average` (clipped, uniform, noisy) and the
    round's release is recorded in its log entry (`training_privacy` sums them)."""
    from fedcurate.strategies.dp_training import dp_average
    from fedcurate.strategies.lora_average import average_states

    log: list[dict[str, Any]] = []
    dp = run.cfg.privacy.train_noise_multiplier > 0
    shared = [k for k in state if k.startswith(WEIGHT_PREFIX)] if dp else list(state)  # DP: moments stay at sites
    spec = expected_spec({k: state[k] for k in shared})
    total = rounds * steps
    for r in range(1, rounds + 1):
        saved = out / f"round-{r}"
        if (saved / "round.json").exists():
            with np.load(saved / "state.npz") as z:
                state = {k: z[k] for k in z.files}
            log.append(json.loads((saved / "round.json").read_text(encoding="utf-8")))
            continue
        payload = Payload({"start-step": (r - 1) * steps, "steps": steps, "total-steps": total,
                           "seed": round_seed(run.cfg.training.seed, phase, r)}, state)
        result = run.round(phase, f"{phase}/{r}", payload, check_state(spec))
        contributing = {s: p for s, p in result.replies.items() if int(p.values["num-examples"]) > 0}
        if not contributing:
            raise PhaseError(f"[{phase}/{r}] no site had samples to train on")
        names = sorted(contributing)
        if dp:  # site-level DP through Flower's clipping wrapper, on the adapter weights only
            weights, release = dp_average([contributing[s].arrays for s in names], {k: state[k] for k in shared},
                                          server_round=r, noise_multiplier=run.cfg.privacy.train_noise_multiplier,
                                          clipping_norm=run.cfg.privacy.train_clipping_norm)
            state = {**state, **weights}
            dp_entry = {"sigma": release.sigma, "sensitivity": release.sensitivity, "sites": release.sites}
        else:
            state = average_states([contributing[s].arrays for s in names],
                                   [float(contributing[s].values["num-examples"]) for s in names], exact=exact)
            dp_entry = None
        lr_mean = float(np.mean([num(contributing[s].values["lr-mean"]) for s in names]))
        entry = {"round": r, "step": r * steps, "lr_mean": lr_mean, "excluded": result.excluded, "dp": dp_entry,
                 "sites": {s: {k: result.replies[s].values.get(k) for k in
                               ("num-examples", "loss-first", "loss-last")} for s in sorted(result.replies)}}
        io.write_npz(saved / "state.npz", state)
        on_round(r, state, lr_mean)
        io.write_json(saved / "round.json", entry)
        log.append(entry)
    return state, log


def training_privacy(run: Run, phase: str, log: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Site-level DP spent by the LoRA rounds so far (warm-up, then training: both release averaged models),
    summed by the zCDP accountant from every round's recorded release; also in stats/privacy.json."""
    from fedcurate.common.privacy import Accountant

    priv = run.cfg.privacy
    if priv.train_noise_multiplier <= 0:
        return None
    earlier = [("warmup", e) for e in run.summaries.get("warmup", {}).get("rounds", [])] if phase == "train" else []
    accountant = Accountant(priv.dp_delta)
    rounds = [(name, e) for name, e in [*earlier, *[(phase, e) for e in log]] if e.get("dp")]
    for name, entry in rounds:
        accountant.spend(f"{name}/{entry['round']}", entry["dp"]["sigma"], entry["dp"]["sensitivity"])
    info = {"unit": "site", "noise_multiplier": priv.train_noise_multiplier,
            "clipping_norm": priv.train_clipping_norm, "delta": priv.dp_delta, "rounds": len(rounds),
            "spent_epsilon": accountant.epsilon, "accountant": accountant.to_json()}
    run.record_privacy("training", info)
    return info
