"""Step `warmup/<r>` at a site: LoRA steps on all its samples from the global state (a CLUES checkpoint round).

    reply = step_warmup(cfg, where, payload, out)

Protocol: `common/protocol/warmup.py`; server side: `server/phases/warmup.py`.
"""

from __future__ import annotations

from pathlib import Path

from fedcurate.client.site import SiteLocation, site_samples
from fedcurate.client.steps.lora import lora_round
from fedcurate.common.config import Config
from fedcurate.common.protocol.payload import Payload


def step_warmup(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    return lora_round(cfg, site_samples(where.site_dir), payload)
