"""Step `evaluate` at a site: the broadcast adapter on the site's own held-out set; only figures leave.

    reply = step_evaluate(cfg, where, Payload(arrays=adapter_weights), out)

Protocol: `common/protocol/evaluate.py`; server side: `server/phases/evaluate.py`.
"""

from __future__ import annotations

from pathlib import Path

from fedcurate.client.site import SiteLocation, site_test_path
from fedcurate.common.config import Config
from fedcurate.common.data.loaders import load_samples
from fedcurate.common.protocol.payload import Payload


def step_evaluate(cfg: Config, where: SiteLocation, payload: Payload, out: Path) -> Payload:
    """The broadcast adapter on this site's own held-out set; only the figures leave the site."""
    from fedcurate.common.evaluation import evaluate_path
    from fedcurate.common.federated_lora import write_adapter

    path = site_test_path(cfg, where)
    if not path or (not where.test_path and not Path(path).exists()):  # a given test-path must exist
        where_from = path or "no node config test-path, no evaluation.site-test-path"
        return Payload({"num-samples": 0, "skipped": f"no test set at this site ({where_from})"})
    samples = load_samples(path).samples
    if cfg.evaluation.max_samples:
        samples = samples[: cfg.evaluation.max_samples]
    adapter = write_adapter(out / "adapter", dict(payload.arrays), cfg)
    result = evaluate_path(str(adapter), samples, cfg, exact_match=cfg.evaluation.exact_match)
    return Payload({"num-samples": result.num_samples, "loss": result.loss,
                    "token-accuracy": result.token_accuracy, "exact-match": result.exact_match})
