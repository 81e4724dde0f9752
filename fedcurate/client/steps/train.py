"""Step `train/<r>` at a site: LoRA steps on the samples it kept (`select`), from the global state.

    reply = step_train(cfg, where, payload, out)

Protocol: `common/protocol/train.py`; server side: `server/phases/train.py`.
"""

from __future__ import annotations

from pathlib import Path

from fedcurate.client.site import SiteLocation
from fedcurate.client.steps.lora import lora_round
from fedcurate.common.config import Config
from fedcurate.common.data.loaders import load_samples
from fedcurate.common.protocol import layout
from fedcurate.common.protocol.payload import Payload


def step_train(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    path = layout.selected_path(where.site_dir)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: the select step has not run at this site")
    return lora_round(cfg, load_samples(path).samples, payload)
