"""Phase `train`, server side: federated LoRA on the kept data (FedAvg per round), or one local run per site
and a one-shot merge of the adapters (`federation.aggregation = "merge"`, CLUES' setting).

    summary = phase_train(run)       # rounds, the merged adapter's folder, site-level DP spent

Protocol: `common/protocol/train.py`; site side: `client/steps/train.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fedcurate.common import io
from fedcurate.common.protocol import layout
from fedcurate.common.protocol.lora import WEIGHT_PREFIX
from fedcurate.common.protocol.payload import Payload
from fedcurate.common.protocol.train import check_state
from fedcurate.common.protocol.validation import expected_spec
from fedcurate.server.phases.lora import lora_rounds, round_seed, training_privacy
from fedcurate.server.run import PhaseError, Run, skipped


def phase_train(run: Run) -> dict[str, Any]:
    from fedcurate.common.federated_lora import initial_state, write_adapter

    cfg, fed = run.cfg, run.cfg.federation
    if fed.train_rounds == 0:
        return skipped("federation.train-rounds = 0")
    out = run.server_dir("train")
    state0 = initial_state(cfg)
    if fed.aggregation == "fedavg":
        state, log = lora_rounds(run, "train", state0, fed.train_rounds, fed.local_steps, out,
                                 None if fed.exact == "none" else fed.exact, lambda *a: None)
    else:
        state, log = merge_round(run, state0, out)
    adapter = write_adapter(out / "adapter", state, cfg)
    weights = {k: v for k, v in state.items() if k.startswith(WEIGHT_PREFIX)}
    io.write_npz(out / "adapter-state.npz", weights)  # what sites evaluate
    io.write_json(layout.stats_path(run.run_dir, "train"), {"rounds": log})
    return {"aggregation": fed.aggregation, "rounds": log, "adapter": str(adapter),
            "privacy": training_privacy(run, "train", log)}


def merge_round(run: Run, state0: dict[str, np.ndarray], out: Path) -> tuple[dict[str, np.ndarray], list[Any]]:
    """CLUES-style: every site trains alone for all rounds' steps, the server merges the adapters once."""
    from fedcurate.strategies.merging import merge_adapters

    fed = run.cfg.federation
    steps = fed.train_rounds * fed.local_steps
    payload = Payload({"start-step": 0, "steps": steps, "total-steps": steps,
                       "seed": round_seed(run.cfg.training.seed, "train", 1)}, state0)
    result = run.round("train", "train/1", payload, check_state(expected_spec(state0)))
    sites = sorted(s for s, r in result.replies.items() if int(r.values["num-examples"]) > 0)
    if not sites:
        raise PhaseError("[train/1] no site had samples to train on")
    weights = [float(result.replies[s].values["num-examples"]) for s in sites]
    prefix = WEIGHT_PREFIX
    merged = merge_adapters([{k[len(prefix):]: v for k, v in result.replies[s].arrays.items() if k.startswith(prefix)}
                             for s in sites], weights, fed.merge_method, seed=run.cfg.training.seed)
    state = {**state0, **{prefix + k: np.asarray(v, dtype=np.float32) for k, v in merged.items()}}
    log = [{"round": 1, "step": steps, "method": fed.merge_method, "excluded": result.excluded,
            "sites": {s: {k: result.replies[s].values.get(k) for k in ("num-examples", "loss-first", "loss-last")}
                      for s in sorted(result.replies)}}]
    return state, log
