"""The phases of a run, server side, free of Flower: what to send, how to aggregate, what to write.

    summaries = run_phases(cfg, Path("runs/x"), transport)          # a FlowerTransport or a LocalTransport

Phases, in order (each one or more rounds of `transport.round`; a phase that does not apply is
recorded as skipped):

    prepare    sites load and validate their data                         replies: counts
    curate     DS2: consensus counts -> server sums, solves T and p ->     replies: counts, then numbers
               sites detect and correct with the global T                  of changed scores
    warmup     federated LoRA rounds; each round's average (adapter and    replies: adapter + Adam moments
               Adam moments) is one shared CLUES checkpoint
    dynamics   server computes the anchor gradients at every checkpoint    replies: per-scorer moments
               and broadcasts them with the checkpoints; sites score
    threshold  composite score range, then histograms on server grids      replies: min/max, bin counts
               narrowing to the cut -> one global threshold (or the CLUES
               anchor rule, a fixed threshold, or per-site local rules)
    select     sites keep what clears it                                   replies: kept / dropped by reason
    train      federated LoRA on the kept data (FedAvg per round, or       replies: adapter + Adam moments
               one local run per site and a one-shot merge)
    evaluate   the server evaluates the merged adapter on its test set    (no round)

Outputs: `<run>/server/<phase>/summary.json` then `DONE` (a re-run skips done phases: resume), server
artefacts beside them (checkpoints, T, adapter), `<run>/stats/<phase>.json` (per site: what it replied, who
was excluded and why) and `<run>/stats/communication.json` (bytes sent and received per round per site).
Every summary lists the phase's `exclusions` (step, site, reason) across all its rounds.
A reply that fails validation is excluded with its reason and never aggregated; a phase with fewer than
`federation.min-sites` valid replies stops the run with every reason.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from fedcurate.common import io
from fedcurate.common.config import Config, primary_scorer, to_flat, to_toml
from fedcurate.common.selection import budget
from fedcurate.server import phases, threshold
from fedcurate.server.transport import Payload, RoundResult, SecureSum, Transport
from fedcurate.strategies.validation import expected_spec, validate_arrays, validate_counts

logger = logging.getLogger(__name__)

PHASES = phases.PHASES
DYNAMICS_SCORERS = {"clues", "datainf", "less"}
DS2_SCORERS = {"ds2", "ds2-raw"}


class PhaseError(RuntimeError):
    """A phase cannot go on (too few valid replies, a server-side failure)."""


@dataclass
class Run:
    """What the phases share: config, run directory, transport, the communication log."""

    cfg: Config
    run_dir: Path
    transport: Transport
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    traffic: list[dict[str, Any]] = field(default_factory=list)
    exclusions: list[dict[str, Any]] = field(default_factory=list)

    def server_dir(self, phase: str) -> Path:
        return phases.phase_dir(self.run_dir, phase)

    def round(self, phase: str, step: str, payload: Payload, validate: Callable[[str, Payload], list[str]]
              | None = None) -> RoundResult:
        """One round: send, validate every reply (exclude bad ones), log bytes, enforce min-sites."""
        start = time.monotonic()
        result = self.transport.round(phase, step, payload)
        for site in sorted(result.replies):
            problems = validate(site, result.replies[site]) if validate else []
            if problems:
                result.exclude(site, f"[{step}] invalid reply: " + "; ".join(problems))
        for site, t in sorted(result.traffic.items()):
            self.traffic.append({"phase": phase, "step": step, "site": site, **t})
        self.exclusions += [{"phase": phase, "step": step, **e} for e in result.excluded]
        logger.info("[ROUND %s] %d site(s) replied, %d excluded, %d B sent, %d B received in %.1f s", step,
                    len(result.replies), len(result.excluded), sum(t["sent"] for t in result.traffic.values()),
                    sum(t["received"] for t in result.traffic.values()), time.monotonic() - start)
        if len(result.replies) < self.cfg.federation.min_sites:
            reasons = "; ".join(f"{e['site']}: {e['reason']}" for e in result.excluded) or "no site connected"
            raise PhaseError(f"[{step}] {len(result.replies)} site(s) gave a valid reply, federation.min-sites = "
                             f"{self.cfg.federation.min_sites}: {reasons}")
        return result

    def secure_round(self, phase: str, step: str, payload: Payload, keys: list[str],
                     validate: Callable[[SecureSum], list[str]]) -> SecureSum:
        """One secure-aggregation round: only the sum over sites of the reply fields `keys` comes back. A sum
        that fails `validate` cannot be traced to a site (that is the point), so the phase stops."""
        start = time.monotonic()
        result = self.transport.secure_sum(phase, step, payload, keys)
        for site, t in sorted(result.traffic.items()):
            self.traffic.append({"phase": phase, "step": step, "site": site, "secure": True, **t})
        self.exclusions += [{"phase": phase, "step": step, **e} for e in result.excluded]
        logger.info("[ROUND %s] secure sum over %d site(s), %d lost, in %.1f s", step, len(result.sites),
                    len(result.excluded), time.monotonic() - start)
        if len(result.sites) < self.cfg.federation.min_sites:
            reasons = "; ".join(f"{e['site']}: {e['reason']}" for e in result.excluded) or "no site contributed"
            raise PhaseError(f"[{step}] {len(result.sites)} site(s) contributed to the secure sum, "
                             f"federation.min-sites = {self.cfg.federation.min_sites}: {reasons}")
        problems = validate(result)
        if problems:
            raise PhaseError(f"[{step}] the securely summed counts are invalid (one or more sites sent bad counts; "
                             f"secure aggregation hides which): " + "; ".join(problems))
        return result


def run_phases(cfg: Config, run_dir: Path, transport: Transport, stop_after: str | None = None
               ) -> dict[str, dict[str, Any]]:
    """Run every phase not yet done, up to `stop_after` (default `run.stop-after`, else all)."""
    run = Run(cfg, Path(run_dir), transport)
    check_same_config(cfg, run.run_dir)
    io.write_text(run.run_dir / "config.toml", to_toml(cfg))
    last = stop_after or cfg.run.stop_after or PHASES[-1]
    if last not in PHASES:
        raise ValueError(f"unknown phase {last!r}; phases are {', '.join(PHASES)}")
    comm_path = run.run_dir / "stats" / "communication.json"
    if comm_path.exists():
        run.traffic = json.loads(comm_path.read_text(encoding="utf-8"))
    for phase in PHASES:
        if phases.phase_done(run.run_dir, phase):
            logger.info("[PHASE %s] already done, skipping (%s)", phase, run.server_dir(phase))
            run.summaries[phase] = phases.read_summary(run.run_dir, phase)
        else:
            start = time.monotonic()
            logger.info("[PHASE %s] starting", phase)
            summary = PHASE_FUNCTIONS[phase](run)
            summary["seconds"] = round(time.monotonic() - start, 3)
            summary["communication"] = _phase_traffic(run.traffic, phase)
            summary["exclusions"] = [e for e in run.exclusions if e["phase"] == phase]
            io.write_json(comm_path, run.traffic)
            phases.write_phase_done(run.run_dir, phase, summary)
            run.summaries[phase] = summary
        if phase == last:
            break
    return run.summaries


RUN_FILE = "run.json"
NOT_RESULT_SETTINGS = ("run.", "federation.round-timeout-s", "federation.connect-timeout-s", "federation.min-sites")  # where, when, how long


class ConfigChangedError(RuntimeError):
    """The run directory holds a run made with other settings; resuming it would mix the two."""


def check_same_config(cfg: Config, run_dir: Path) -> None:
    """Refuse to resume a run directory whose finished phases were made with other settings."""
    flat = {k: v for k, v in to_flat(cfg).items() if not k.startswith(NOT_RESULT_SETTINGS)}
    path = Path(run_dir) / RUN_FILE
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8")).get("settings", {})
        changed = sorted(k for k in set(stored) | set(flat) if stored.get(k) != flat.get(k))
        if changed and any(phases.phase_done(run_dir, p) for p in PHASES):
            shown = "; ".join(f"{k}: {stored.get(k)!r} -> {flat.get(k)!r}" for k in changed[:8])
            raise ConfigChangedError(
                f"{run_dir} holds a run made with other settings ({shown}{' ...' if len(changed) > 8 else ''}); "
                f"resuming would mix them. Use another run directory, or delete {run_dir} to start over.")
    io.write_json(path, {"settings": flat})


def _phase_traffic(traffic: list[dict[str, Any]], phase: str) -> dict[str, Any]:
    rows = [t for t in traffic if t["phase"] == phase]
    per_site: dict[str, dict[str, int]] = {}
    for t in rows:
        s = per_site.setdefault(t["site"], {"sent": 0, "received": 0})
        s["sent"] += t["sent"]
        s["received"] += t["received"]
    return {"rounds": len({t["step"] for t in rows}), "bytes_sent": sum(t["sent"] for t in rows),
            "bytes_received": sum(t["received"] for t in rows), "per_site": per_site}


def _write_site_stats(run: Run, phase: str, result: RoundResult, extra: dict[str, Any] | None = None) -> None:
    io.write_json(run.run_dir / "stats" / f"{phase}.json",
                  {"sites": {s: r.values for s, r in sorted(result.replies.items())},
                   "excluded": result.excluded, **(extra or {})})


def _skipped(why: str) -> dict[str, Any]:
    logger.info("skipped: %s", why)
    return {"skipped": why}


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _require(values: dict[str, Any], *keys: str) -> list[str]:
    return [f"missing value {k!r}" for k in keys if k not in values]


# ---------------------------------------------------------------- prepare
def phase_prepare(run: Run) -> dict[str, Any]:
    def check(site: str, r: Payload) -> list[str]:
        bad = _require(r.values, "num-samples", "num-rejects")
        if not bad and (int(r.values["num-samples"]) < 0 or int(r.values["num-rejects"]) < 0):
            bad.append("negative counts")
        return bad

    result = run.round("prepare", "prepare", Payload(), check)
    summary = phases.summarize_prepare([
        {"site": s, "num_samples": int(r.values["num-samples"]), "num_rejects": int(r.values["num-rejects"]),
         "rejects_by_reason": dict(r.values.get("rejects-by-reason", {}))} for s, r in result.replies.items()])
    if all("num-clean" in r.values for r in result.replies.values()):
        summary["num_clean"] = sum(int(r.values["num-clean"]) for r in result.replies.values())
    hists = [r.values["rating-histogram"] for r in result.replies.values() if "rating-histogram" in r.values]
    if hists:
        width = max(len(h) for h in hists)
        summary["rating_histogram"] = np.sum([np.pad(np.asarray(h, dtype=np.int64), (0, width - len(h)))
                                              for h in hists], axis=0).tolist()
        summary["num_unrated"] = sum(int(r.values.get("num-unrated", 0)) for r in result.replies.values())
    summary["excluded"] = result.excluded
    _write_site_stats(run, "prepare", result)
    return summary


# ---------------------------------------------------------------- curate
def phase_curate(run: Run) -> dict[str, Any]:
    from fedcurate.common.curation.hoc import counts_from_third, solve_hoc, sum_counts

    cfg = run.cfg
    if not DS2_SCORERS & set(cfg.scoring.scorers):
        return _skipped("no DS2 scorer (ds2, ds2-raw) in scoring.scorers")
    k = cfg.curation.num_classes

    def check_counts(site: str, r: Payload) -> list[str]:
        bad = _require(r.values, "rows") + ([] if "third" in r.arrays else ["missing array 'third'"])
        return bad or validate_counts(r.arrays["third"], expected_shape=(k ** 3,), total=int(r.values["rows"]))

    if cfg.privacy.secure_aggregation:  # SecAgg+: the server sees only the summed consensus counts
        summed = run.secure_round("curate", "curate/counts", Payload(), ["third", "rows"], lambda r: (
            validate_counts(r.sums["third"], expected_shape=(k ** 3,), total=int(r.sums["rows"][0]))))
        total = counts_from_third(summed.sums["third"], int(summed.sums["rows"][0]))
        counts = RoundResult(replies={}, excluded=summed.excluded)
    else:
        counts = run.round("curate", "curate/counts", Payload(), check_counts)
        total = sum_counts([counts_from_third(np.asarray(r.arrays["third"], dtype=np.int64), int(r.values["rows"]))
                            for r in counts.replies.values()])
    hoc = solve_hoc(total, cfg.curation)
    out = run.server_dir("curate")
    io.write_json(out / "transition.json", {"T": hoc.T.tolist(), "p": hoc.p.tolist(), "loss": hoc.loss,
                                            "rows": total.rows})
    applied = run.round("curate", "curate/apply", Payload(arrays={"T": np.asarray(hoc.T, dtype=np.float64),
                                                                  "p": np.asarray(hoc.p, dtype=np.float64)}),
                        lambda s, r: _require(r.values, "changed", "flagged"))
    _write_site_stats(run, "curate", applied, {"counts": {s: r.values for s, r in counts.replies.items()}})
    return {"T": hoc.T.tolist(), "p": hoc.p.tolist(), "hoc_loss": hoc.loss, "rows": total.rows,
            "sites": sorted(applied.replies), "excluded": counts.excluded + applied.excluded,
            "changed": {s: r.values["changed"] for s, r in applied.replies.items()}}


# ---------------------------------------------------------------- LoRA rounds (warm-up and training)
def round_seed(base: int, *tags: object) -> int:
    """Seed of one LoRA round: the same at every site (one site then reproduces centralized mode)."""
    digest = hashlib.sha256(json.dumps([base, *map(str, tags)]).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _check_state(spec: dict[str, Any]) -> Callable[[str, Payload], list[str]]:
    def check(site: str, r: Payload) -> list[str]:
        bad = _require(r.values, "num-examples")
        if bad:
            return bad
        n = int(r.values["num-examples"])
        if n < 0:
            return [f"num-examples = {n} < 0"]
        if n == 0:
            return [] if not r.arrays else ["arrays sent with num-examples = 0"]
        return validate_arrays(r.arrays, spec)
    return check


def lora_rounds(run: Run, phase: str, state: dict[str, np.ndarray], rounds: int, steps: int,
                out: Path, exact: str | None, on_round: Callable[[int, dict[str, np.ndarray], float], None]
                ) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """`rounds` FedAvg rounds of `steps` local steps from `state`; resumes from `out/round-<r>/state.npz`.
    With `privacy.train-noise-multiplier` each average is `dp_average` (clipped, uniform, noisy) and the
    round's release is recorded in its log entry (`training_privacy` sums them)."""
    from fedcurate.common.federated_lora import average_states
    from fedcurate.strategies.dp_training import dp_average

    log: list[dict[str, Any]] = []
    dp = run.cfg.privacy.train_noise_multiplier > 0
    shared = [k for k in state if k.startswith("weight/")] if dp else list(state)  # DP: moments stay at sites
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
        result = run.round(phase, f"{phase}/{r}", payload, _check_state(spec))
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
        lr_mean = float(np.mean([_num(contributing[s].values["lr-mean"]) for s in names]))
        entry = {"round": r, "step": r * steps, "lr_mean": lr_mean, "excluded": result.excluded, "dp": dp_entry,
                 "sites": {s: {k: result.replies[s].values.get(k) for k in
                               ("num-examples", "loss-first", "loss-last")} for s in sorted(result.replies)}}
        io.write_with(saved / "state.npz", lambda tmp, st=state: _savez(tmp, st))
        on_round(r, state, lr_mean)
        io.write_json(saved / "round.json", entry)
        log.append(entry)
    return state, log


def _savez(tmp: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)


def needs_dynamics(cfg: Config) -> bool:
    return bool(DYNAMICS_SCORERS & set(cfg.scoring.scorers))


def checkpoints_root(run: Run) -> Path:
    """Given checkpoints (dynamics.checkpoints-dir), else those the warm-up makes."""
    return Path(run.cfg.dynamics.checkpoints_dir) if run.cfg.dynamics.checkpoints_dir else \
        run.server_dir("warmup") / "checkpoints"


def server_config(run: Run) -> Config:
    """The config as the server runs it: caches under <run>/server, checkpoints where the warm-up put them."""
    cfg = run.cfg
    return replace(cfg, run=replace(cfg.run, dir=str(run.run_dir / "server")),
                   dynamics=replace(cfg.dynamics, checkpoints_dir=str(checkpoints_root(run))))


def phase_warmup(run: Run) -> dict[str, Any]:
    from fedcurate.common.federated_lora import initial_state, write_checkpoint

    cfg = run.cfg
    if not needs_dynamics(cfg):
        return _skipped("no training-dynamics scorer (clues, less, datainf) in scoring.scorers")
    if cfg.dynamics.checkpoints_dir:
        return _skipped(f"checkpoints given in dynamics.checkpoints-dir = {cfg.dynamics.checkpoints_dir}")
    fed, root = cfg.federation, checkpoints_root(run)

    def save(r: int, state: dict[str, np.ndarray], lr_mean: float) -> None:
        write_checkpoint(root, r * fed.local_steps, state, cfg, lr_mean=lr_mean, info={"round": r})

    _, log = lora_rounds(run, "warmup", initial_state(cfg), fed.warmup_rounds, fed.local_steps,
                         run.server_dir("warmup"), None, save)
    io.write_json(run.run_dir / "stats" / "warmup.json", {"rounds": log})
    return {"rounds": log, "checkpoints": str(root), "privacy": training_privacy(run, "warmup", log)}


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
    record_privacy(run, "training", info)
    return info


def record_privacy(run: Run, key: str, info: dict[str, Any]) -> None:
    """stats/privacy.json: the budget spent per kind of release ("threshold": per sample; "training": per site;
    guarantees under different neighbouring relations are reported side by side, not added)."""
    path = run.run_dir / "stats" / "privacy.json"
    current = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    io.write_json(path, {**current, key: info})


# ---------------------------------------------------------------- dynamics: every scorer at the sites
def phase_dynamics(run: Run) -> dict[str, Any]:
    cfg = run.cfg
    payload = Payload()
    if "clues" in cfg.scoring.scorers:
        payload = clues_broadcast(run)

    def check(site: str, r: Payload) -> list[str]:
        bad = _require(r.values, "moments")
        if bad:
            return bad
        problems = []
        for name in cfg.scoring.scorers:
            m = r.values["moments"].get(name)
            if m is None or len(m) != 5:
                problems.append(f"moments of {name!r} missing or malformed")
            elif not (math.isfinite(_num(m[0])) and _num(m[0]) >= 0 and math.isfinite(_num(m[1]))
                      and math.isfinite(_num(m[2])) and _num(m[2]) >= 0):
                problems.append(f"moments of {name!r} not finite or negative: {m}")
        return problems

    result = run.round("dynamics", "dynamics", payload, check)
    stats = {}
    for name in cfg.scoring.scorers:
        ms = [[_num(x) for x in r.values["moments"][name]] for r in result.replies.values()]
        n, s, sq = (sum(m[i] for m in ms) for i in range(3))
        mean = s / n if n else float("nan")
        var = max(sq / n - mean * mean, 0.0) if n else float("nan")
        finite_min = [m[3] for m in ms if math.isfinite(m[3])]
        finite_max = [m[4] for m in ms if math.isfinite(m[4])]
        stats[name] = {"count": int(n), "mean": mean, "std": math.sqrt(var) if n else float("nan"),
                       "min": min(finite_min, default=float("nan")), "max": max(finite_max, default=float("nan")),
                       "failures": sum(int(r.values.get("failures", {}).get(name, 0))
                                       for r in result.replies.values())}
    _write_site_stats(run, "dynamics", result)
    return {"scorers": stats, "sites": sorted(result.replies), "excluded": result.excluded,
            "broadcast_checkpoints": len(payload.values.get("checkpoints", []))}


def _anchor_state(run: Run) -> tuple[Any, list[Any], list[Any]]:
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

    _, ckpts, grads = _anchor_state(run)
    arrays: dict[str, np.ndarray] = {}
    infos = []
    for i, (ckpt, g) in enumerate(zip(ckpts, grads, strict=True)):
        arrays.update({f"ckpt{i}/{k}": v for k, v in read_state(ckpt.path).items()})
        arrays.update({f"grad{i}/{k}": t.detach().float().cpu().numpy() for k, t in g.items()})
        infos.append({"step": ckpt.step, "lr_mean": ckpt.lr_mean})
    return Payload({"checkpoints": infos}, arrays)


# ---------------------------------------------------------------- threshold
def composite_spec(cfg: Config, dynamics: dict[str, Any]) -> dict[str, Any]:
    """What every site computes as its composite score (see client/handlers.composite_scores)."""
    if not cfg.scoring.weights:
        return {"primary": primary_scorer(cfg)}
    if not any(cfg.scoring.weights):
        raise PhaseError("scoring.weights are all zero")
    stats = dynamics["scorers"]
    return {"scorers": list(cfg.scoring.scorers), "weights": [float(w) for w in cfg.scoring.weights],
            "means": [_finite_or(stats[n]["mean"], 0.0) for n in cfg.scoring.scorers],
            "stds": [_finite_or(stats[n]["std"], 1.0) for n in cfg.scoring.scorers]}


def _finite_or(x: Any, default: float) -> float:
    v = _num(x)
    return v if math.isfinite(v) else default


def dp_plan(cfg: Config) -> dict[str, Any] | None:
    """With privacy.dp-epsilon > 0: the noise every site adds to each release of the threshold phase (the
    sample count, then one histogram, each of L2 sensitivity 1 under add/remove-one-sample). Noisy counts stay
    signed (clipping at 0 would bias every tail sum upwards), so the server's estimates are unbiased."""
    from fedcurate.common.privacy import sigma_for

    eps, delta = cfg.privacy.dp_epsilon, cfg.privacy.dp_delta
    if eps <= 0 or cfg.selection.scope == "local":
        return None
    releases = 2  # no refinement rounds under DP: each would pay for noise on ever smaller counts
    return {"epsilon": eps, "delta": delta, "releases": releases, "sigma": sigma_for(eps, delta, releases, 1.0)}


def phase_threshold(run: Run) -> dict[str, Any]:
    from fedcurate.common.privacy import Accountant

    cfg, sel = run.cfg, run.cfg.selection
    spec = composite_spec(cfg, run.summaries["dynamics"])
    dp = dp_plan(cfg)
    accountant = Accountant(dp["delta"]) if dp else None
    secure = cfg.privacy.secure_aggregation
    request = Payload({"composite": spec, "dp-sigma": dp and dp["sigma"]})
    if secure:  # SecAgg+: only the federation's sample count; the grid comes from privacy.score-range
        summed = run.secure_round("threshold", "threshold/range", request, ["num-finite", "num-nan"],
                                  lambda r: [] if dp or min(int(v[0]) for v in r.sums.values()) >= 0
                                  else [f"negative sample count {r.sums}"])
        num_samples, sites, excluded = (int(summed.sums["num-finite"][0] + summed.sums["num-nan"][0]), summed.sites,
                                        summed.excluded)
    else:
        ranges = run.round("threshold", "threshold/range", request,
                           lambda s, r: _require(r.values, "num-finite", "num-nan"))
        num_samples = sum(int(r.values["num-finite"]) + int(r.values["num-nan"]) for r in ranges.replies.values())
        sites, excluded = sorted(ranges.replies), list(ranges.excluded)
    if accountant and dp:
        accountant.spend("threshold/range: sample counts", dp["sigma"], 1.0)
    summary: dict[str, Any] = {"composite": spec, "scope": sel.scope, "mode": sel.mode, "num_samples": num_samples,
                               "sites": sites, "excluded": excluded, "secure_aggregation": secure}
    if dp or secure:
        lo, hi = (float(x) for x in cfg.privacy.score_range)
    else:
        lo_hi = [(_num(r.values.get("min")), _num(r.values.get("max"))) for r in ranges.replies.values()]
        if not any(math.isfinite(a) for a, _ in lo_hi):
            raise PhaseError("no site has a finite composite score: every sample failed scoring")
        lo, hi = threshold.merge_ranges(lo_hi)
    edges = threshold.bin_edges(lo, hi, sel.bins)
    totals: dict[str, int] | None = None
    if secure:
        # what every summed histogram holds: the total, over the sites that contributed it (value 0)
        totals = None if dp else {"*": num_samples, **{f"site:{s}": 0 for s in sites}}
    elif not dp:
        totals = {s: int(r.values["num-finite"]) + int(r.values["num-nan"]) for s, r in ranges.replies.items()}
    hist = histogram_round(run, "threshold/hist/0", edges, closed=True, totals=totals, dp=dp, accountant=accountant)
    summary["histogram"] = {"edges": edges.tolist(), "counts": hist["counts"].tolist(), "num_nan": hist["num-nan"]}
    if sel.scope == "local":
        summary["threshold"] = None
        return summary
    if sel.mode == "threshold":
        t = float(sel.threshold)
    elif sel.mode == "anchor":
        t = anchor_rule(run)
        summary["anchor_threshold"] = t
    else:
        target = budget(num_samples, sel)
        t, kept, used, ties = refine(run, edges, hist, target, totals, dp, accountant)
        summary.update(target=target, expected_kept=kept, histogram_rounds=used, tie_fraction=ties)
    summary["threshold"] = t
    summary["expected_kept"] = summary.get("expected_kept", _kept_at(hist, edges, t))
    if accountant and dp:
        summary["privacy"] = {**dp, "spent_epsilon": accountant.epsilon, "accountant": accountant.to_json()}
        record_privacy(run, "threshold", {"unit": "sample", **summary["privacy"]})
    io.write_json(run.run_dir / "stats" / "threshold.json", summary)
    return summary


def histogram_round(run: Run, step: str, edges: np.ndarray, closed: bool, totals: dict[str, int] | None,
                    dp: dict[str, Any] | None = None, accountant: Any = None) -> dict[str, Any]:
    """Every site's `interval_histogram` on `edges`, summed. A reply on another grid, with counts that do not add
    up to the number of scores the site declared in the range round (`totals`), or from a site that did not
    declare any, is rejected. With DP (`totals` None) the counts are noisy and only shape and sign are checked."""
    def check(site: str, r: Payload) -> list[str]:
        bad = _require(r.values, "num-above", "num-below", "num-nan")
        if "counts" not in r.arrays:
            return bad + ["missing array 'counts'"]
        if totals is None:  # DP: signed noisy integers
            c = np.asarray(r.arrays["counts"])
            if c.shape != (len(edges) - 1,) or c.dtype.kind not in "iu":
                return bad + [f"counts: shape {c.shape} dtype {c.dtype}, expected ({len(edges) - 1},) integers"]
            return bad
        if site not in totals:
            return [f"{site} sent no score range in threshold/range"]
        if bad:
            return bad
        extra = [r.values[k] for k in ("num-above", "num-below", "num-nan")]
        if any(not isinstance(v, int) or v < 0 or v > totals[site] for v in extra):
            return [f"num-above/num-below/num-nan {extra} not integers in [0, {totals[site]}]"]
        return validate_counts(r.arrays["counts"], expected_shape=(len(edges) - 1,),
                               total=totals[site] - sum(extra), max_value=totals[site])

    request = Payload({"closed": closed, "dp-sigma": dp and dp["sigma"]}, {"edges": edges})
    if run.cfg.privacy.secure_aggregation:
        return secure_histogram_round(run, step, request, totals, dp, accountant)
    result = run.round("threshold", step, request, check)
    if accountant is not None and dp:
        accountant.spend(f"{step}: histogram", dp["sigma"], 1.0)
    out: dict[str, Any] = {"counts": np.sum([np.asarray(r.arrays["counts"], dtype=np.int64)
                                             for r in result.replies.values()], axis=0)}
    for key in ("num-above", "num-below", "num-nan"):
        out[key] = sum(int(r.values[key]) for r in result.replies.values())
    lows = [_num(r.values.get("inside-min")) for r in result.replies.values()]
    highs = [_num(r.values.get("inside-max")) for r in result.replies.values()]
    out["inside-min"] = min((v for v in lows if math.isfinite(v)), default=math.nan)
    out["inside-max"] = max((v for v in highs if math.isfinite(v)), default=math.nan)
    return out


def secure_histogram_round(run: Run, step: str, request: Payload, totals: dict[str, int] | None,
                           dp: dict[str, Any] | None, accountant: Any) -> dict[str, Any]:
    """`histogram_round` under secure aggregation: the server gets the summed histogram and outside counts only,
    and checks them against the federation's total (`totals["*"]`, counted over the sites `totals["site:<name>"]`;
    a site lost since then voids the check) unless DP made them noisy. No site reveals
    the extreme scores inside the interval, so ties at the cut are not detected (the cut is a bin edge)."""
    keys = ["counts", "num-above", "num-below", "num-nan"]
    bins = len(request.arrays["edges"]) - 1

    def check(summed: SecureSum) -> list[str]:
        sums = summed.sums
        if sums["counts"].shape != (bins,):
            return [f"counts: shape {sums['counts'].shape}, expected ({bins},)"]
        if totals is None or {f"site:{s}" for s in summed.sites} != set(totals) - {"*"}:
            return []
        outside = [int(sums[k][0]) for k in keys[1:]]
        return validate_counts(sums["counts"], expected_shape=(bins,), total=totals["*"] - sum(outside),
                               max_value=totals["*"]) + ([f"outside counts {outside} negative"]
                                                         if min(outside) < 0 else [])

    summed = run.secure_round("threshold", step, request, keys, check)
    if accountant is not None and dp:
        accountant.spend(f"{step}: histogram", dp["sigma"], 1.0)
    out: dict[str, Any] = {"counts": summed.sums["counts"], "inside-min": math.nan, "inside-max": math.nan}
    out.update({k: int(summed.sums[k][0]) for k in keys[1:]})
    return out


def refine(run: Run, edges: np.ndarray, hist: dict[str, Any], target: int, totals: dict[str, int] | None,
           dp: dict[str, Any] | None = None, accountant: Any = None) -> tuple[float, int, int, float | None]:
    """Narrow the histogram grid onto the `target`-th best score.

    Returns (threshold, samples kept, rounds used, tie fraction). When every score left in the interval is
    the same value and the cut falls among them, the threshold is that value and the tie fraction says
    which share of the samples holding it each site keeps (`threshold.tie_quota`)."""
    sel, closed = run.cfg.selection, True
    for i in range(sel.refine_rounds + 1):
        inside = int(np.sum(hist["counts"]))
        lo, hi, above = hist["inside-min"], hist["inside-max"], int(hist["num-above"])
        if inside and lo == hi and above < target < above + inside:
            return float(lo), target, i + 1, (target - above) / inside
        cut = threshold.find_cut(hist["counts"], hist["num-above"], edges, closed, target,
                                 can_refine=i < sel.refine_rounds and dp is None)
        if cut.threshold is not None:
            return cut.threshold, cut.kept, i + 1, None
        assert cut.next is not None
        edges, closed = threshold.bin_edges(cut.next.lo, cut.next.hi, sel.bins), cut.next.closed
        hist = histogram_round(run, f"threshold/hist/{i + 1}", edges, closed, totals, dp, accountant)
    raise AssertionError("unreachable: the last round always returns a threshold")


def _kept_at(hist: dict[str, Any], edges: np.ndarray, t: float) -> int:
    return threshold.kept_by_threshold(hist["counts"], edges, t) + int(hist["num-above"])


def anchor_rule(run: Run) -> float:
    """CLUES: tau = mean leave-one-out score of the anchor set on the shared checkpoints."""
    from fedcurate.common.dynamics.clues import score_anchor
    from fedcurate.common.dynamics.prepare import load_anchor, score_options

    dm, ckpts, grads = _anchor_state(run)
    scores = score_anchor(dm, load_anchor(run.cfg), ckpts, grads, score_options(run.cfg))
    return threshold.clues_threshold(scores)


# ---------------------------------------------------------------- select
def phase_select(run: Run) -> dict[str, Any]:
    t = run.summaries["threshold"].get("threshold")
    ties = run.summaries["threshold"].get("tie_fraction")

    def check(site: str, r: Payload) -> list[str]:
        bad = _require(r.values, "kept", "dropped", "num-samples")
        if not bad and int(r.values["kept"]) + int(r.values["dropped"]) != int(r.values["num-samples"]):
            bad.append("kept + dropped != num-samples")
        return bad

    result = run.round("select", "select", Payload({"threshold": t, "tie-fraction": ties}), check)
    kept = sum(int(r.values["kept"]) for r in result.replies.values())
    summary: dict[str, Any] = {
        "threshold": t, "kept": kept, "dropped": sum(int(r.values["dropped"]) for r in result.replies.values()),
        "sites": {s: {k: r.values.get(k) for k in ("num-samples", "kept", "dropped", "dropped-by-reason",
                                                   "threshold", "num-clean-kept", "num-clean")}
                  for s, r in sorted(result.replies.items())},
        "excluded": result.excluded}
    if all("num-clean-kept" in r.values for r in result.replies.values()):
        clean_kept = sum(int(r.values["num-clean-kept"]) for r in result.replies.values())
        total = sum(int(r.values["num-samples"]) for r in result.replies.values())
        summary["precision"] = clean_kept / kept if kept else float("nan")
        summary["precision_full"] = (sum(int(r.values["num-clean"]) for r in result.replies.values()) / total
                                     if total else float("nan"))
    _write_site_stats(run, "select", result)
    return summary


# ---------------------------------------------------------------- train
def phase_train(run: Run) -> dict[str, Any]:
    from fedcurate.common.federated_lora import initial_state, write_adapter

    cfg, fed = run.cfg, run.cfg.federation
    if fed.train_rounds == 0:
        return _skipped("federation.train-rounds = 0")
    out = run.server_dir("train")
    state0 = initial_state(cfg)
    if fed.aggregation == "fedavg":
        state, log = lora_rounds(run, "train", state0, fed.train_rounds, fed.local_steps, out,
                                 None if fed.exact == "none" else fed.exact, lambda *a: None)
    else:
        state, log = merge_round(run, state0, out)
    adapter = write_adapter(out / "adapter", state, cfg)
    weights = {k: v for k, v in state.items() if k.startswith("weight/")}
    io.write_with(out / "adapter-state.npz", lambda tmp: _savez(tmp, weights))  # what sites evaluate
    io.write_json(run.run_dir / "stats" / "train.json", {"rounds": log})
    return {"aggregation": fed.aggregation, "rounds": log, "adapter": str(adapter),
            "privacy": training_privacy(run, "train", log)}


def merge_round(run: Run, state0: dict[str, np.ndarray], out: Path) -> tuple[dict[str, np.ndarray], list[Any]]:
    """CLUES-style: every site trains alone for all rounds' steps, the server merges the adapters once."""
    from fedcurate.strategies.merging import merge_adapters

    fed = run.cfg.federation
    steps = fed.train_rounds * fed.local_steps
    payload = Payload({"start-step": 0, "steps": steps, "total-steps": steps,
                       "seed": round_seed(run.cfg.training.seed, "train", 1)}, state0)
    result = run.round("train", "train/1", payload, _check_state(expected_spec(state0)))
    sites = sorted(s for s, r in result.replies.items() if int(r.values["num-examples"]) > 0)
    if not sites:
        raise PhaseError("[train/1] no site had samples to train on")
    weights = [float(result.replies[s].values["num-examples"]) for s in sites]
    prefix = "weight/"
    merged = merge_adapters([{k[len(prefix):]: v for k, v in result.replies[s].arrays.items() if k.startswith(prefix)}
                             for s in sites], weights, fed.merge_method, seed=run.cfg.training.seed)
    state = {**state0, **{prefix + k: np.asarray(v, dtype=np.float32) for k, v in merged.items()}}
    log = [{"round": 1, "step": steps, "method": fed.merge_method, "excluded": result.excluded,
            "sites": {s: {k: result.replies[s].values.get(k) for k in ("num-examples", "loss-first", "loss-last")}
                      for s in sorted(result.replies)}}]
    return state, log


# ---------------------------------------------------------------- evaluate
def phase_evaluate(run: Run) -> dict[str, Any]:
    from fedcurate.common.data.loaders import load_samples
    from fedcurate.common.evaluation import evaluate_path

    cfg = run.cfg
    if not cfg.evaluation.test_path and not cfg.evaluation.at_sites:
        return _skipped("evaluation.test-path is empty and evaluation.at-sites is off")
    train = run.summaries.get("train", {})
    if "adapter" not in train:
        return _skipped("no trained adapter (the train phase was skipped)")
    summary: dict[str, Any] = {}
    if cfg.evaluation.test_path:
        samples = load_samples(cfg.evaluation.test_path).samples
        if cfg.evaluation.max_samples:
            samples = samples[: cfg.evaluation.max_samples]
        result = evaluate_path(train["adapter"], samples, cfg, exact_match=cfg.evaluation.exact_match)
        summary.update(test_path=cfg.evaluation.test_path, **result.to_json())
        if cfg.evaluation.compare_base:
            summary["base"] = evaluate_path(cfg.model.name_or_path, samples, cfg,
                                            exact_match=cfg.evaluation.exact_match).to_json()
    if cfg.evaluation.at_sites:
        summary["sites"] = evaluate_at_sites(run, run.server_dir("train") / "adapter-state.npz")
    io.write_json(run.run_dir / "stats" / "evaluate.json", summary)
    return summary


SITE_METRICS = ("loss", "token-accuracy", "exact-match")


def evaluate_at_sites(run: Run, state_path: Path) -> dict[str, Any]:
    """Every site evaluates the adapter on its own held-out set; per-site figures and their sample-weighted mean."""
    with np.load(state_path) as z:
        state = {k: z[k] for k in z.files}

    def check(site: str, r: Payload) -> list[str]:
        bad = _require(r.values, "num-samples")
        if bad or int(r.values["num-samples"]) == 0:
            return bad
        return [f"{k} = {r.values.get(k)!r} is not a finite number" for k in SITE_METRICS[:2]
                if not math.isfinite(_num(r.values.get(k)))]

    result = run.round("evaluate", "evaluate", Payload(arrays=state), check)
    per_site = {s: {k: r.values.get(k) for k in ("num-samples", *SITE_METRICS, "skipped") if k in r.values}
                for s, r in sorted(result.replies.items())}
    scored = {s: r for s, r in result.replies.items() if int(r.values["num-samples"]) > 0}
    n = sum(int(r.values["num-samples"]) for r in scored.values())
    mean = {k: (sum(int(r.values["num-samples"]) * _num(r.values[k]) for r in scored.values()) / n if n
                else math.nan) for k in SITE_METRICS}
    return {"per_site": per_site, "num_samples": n, "mean": mean, "excluded": result.excluded}


PHASE_FUNCTIONS: dict[str, Callable[[Run], dict[str, Any]]] = {
    "prepare": phase_prepare, "curate": phase_curate, "warmup": phase_warmup, "dynamics": phase_dynamics,
    "threshold": phase_threshold, "select": phase_select, "train": phase_train, "evaluate": phase_evaluate,
}
