"""The sections of a run report, and `write_report`, which strings them into one HTML page.

    write_report(Path("runs/demo"))                    # -> runs/demo/report.html
    write_report(Path("runs/demo"), Path("r.html"))    # -> r.html
    section_threshold(load_run(Path("runs/demo")))     # one section's HTML

Sections (stable ids, in order): overview, scores, transition, threshold, selection, training,
communication, evaluation, privacy. Each takes a `RunView` and returns HTML; a section whose phase did not
run says "not run" and why.
"""

from __future__ import annotations

import html
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from fedcurate.app.report import plots
from fedcurate.app.report.html import fmt, img, not_run, page, para, table
from fedcurate.app.report.run import RunView, load_run, mode_of, progress, read_json
from fedcurate.common import io

log = logging.getLogger(__name__)

NOT_SCORES = {"id", "score", "selected", "drop_reason", "clean"}

KEY_SETTINGS = ("scoring.scorers", "scoring.weights", "scoring.primary", "selection.mode", "selection.scope",
                "selection.fraction", "selection.count", "selection.threshold", "federation.sites",
                "federation.aggregation", "federation.exact", "federation.warmup-rounds", "federation.train-rounds",
                "federation.local-steps", "model.name-or-path", "privacy.dp-epsilon", "privacy.secure-aggregation",
                "evaluation.test-path")


def section_overview(run: RunView) -> str:
    finished = [p for p, s in run.status.items() if s in ("done", "skipped")]
    out = [para(f"Run directory {run.root.resolve()}: {mode_of(run)}; {len(finished)} of {len(run.status)} "
                f"phases finished.")]
    if run.settings:
        shown = [k for k in KEY_SETTINGS if k in run.settings]
        out.append(table(["setting", "value"], [[k, run.settings[k]] for k in shown]))
        out.append("<details><summary>all settings</summary>" + table(
            ["setting", "value"], [[k, v] for k, v in run.settings.items()]) + "</details>")
    else:
        out.append(not_run(f"no settings: {run.root / 'run.json'} is missing"))
    rows = []
    for phase, state in run.status.items():
        s = run.summaries.get(phase, {})
        comm = s.get("communication", {})
        note = s.get("skipped", "") or (f"{len(s.get('exclusions', []))} exclusion(s)" if s.get("exclusions") else "")
        rows.append([phase, state, s.get("seconds"), comm.get("rounds"), comm.get("bytes_sent"),
                     comm.get("bytes_received"), note])
    out.append(table(["phase", "state", "seconds", "rounds", "bytes sent", "bytes received", "note"], rows))
    prep = run.done("prepare")
    if prep:
        clean = (run.stats("prepare") or {}).get("sites", {})
        sites = list(prep["sites"])
        out.append(table(["site", "samples", "rejected rows", "rejects by reason", "clean (ground truth)"], [
            [s, v["num_samples"], v["num_rejects"], json.dumps(v["rejects_by_reason"]) if v["rejects_by_reason"]
             else "", clean.get(s, {}).get("num-clean")] for s, v in prep["sites"].items()], sites))
    return "\n".join(out)


def site_scores(run: RunView) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, bool]]:
    """{scorer or "composite": {site: values}} from each site's select/scores.parquet (else dynamics
    columns), and each scorer's orientation."""
    columns: dict[str, dict[str, np.ndarray]] = {}
    higher: dict[str, bool] = {}
    for site in progress(run.sites, "report: read scores"):
        folder = run.site_dir(site)
        meta = read_json(folder / "dynamics" / "columns.json", missing_ok=True) or {}
        higher.update({n: bool(m.get("higher_is_better", True)) for n, m in meta.items()})
        path = folder / "select" / "scores.parquet"
        if not path.exists():
            path = folder / "dynamics" / "columns.parquet"
        if not path.exists():
            continue
        data = pq.read_table(path)
        names = list(meta) or [c for c in data.column_names if c not in NOT_SCORES and not c.endswith("_reason")]
        for name in [n for n in names if n in data.column_names] + (["score"] if "score" in data.column_names else []):
            values = np.asarray(data.column(name).to_numpy(zero_copy_only=False), dtype=np.float64)  # null -> NaN
            columns.setdefault("composite" if name == "score" else name, {})[site] = values
    return columns, higher


def section_scores(run: RunView) -> str:
    out = []
    dyn = run.done("dynamics")
    if dyn:
        out.append(para("Federation-wide statistics of each scorer (from the sites' moments; failures are NaN):"))
        out.append(table(["scorer", "count", "mean", "std", "min", "max", "failures"], [
            [n, s["count"], s["mean"], s["std"], s["min"], s["max"], s["failures"]]
            for n, s in dyn["scorers"].items()]))
    columns, higher = site_scores(run)
    if not columns:
        return "\n".join(out + [not_run(run.why_missing("dynamics") if not dyn else
                                        f"no site directory under {run.root / 'sites'} holds scores")])
    titles = {n: f"{n} ({'higher' if higher.get(n, True) else 'lower'} is better)" for n in columns}
    titles["composite"] = "composite score (what the threshold cuts)"
    sites = sorted({s for per_site in columns.values() for s in per_site})
    out.append(table(["site", *[f"{n}: mean" for n in columns], *[f"{n}: failed" for n in columns]], [
        [s, *[float(np.nanmean(c[s])) if s in c and np.isfinite(c[s]).any() else None for c in columns.values()],
         *[int((~np.isfinite(c[s])).sum()) if s in c else None for c in columns.values()]] for s in sites], sites))
    png = plots.score_plot(columns, titles)
    out.append(img(png, f"Score distributions per site for {', '.join(columns)} (0.5-99.5th percentile range)"))
    return "\n".join(out)


def section_transition(run: RunView) -> str:
    cur = run.done("curate")
    if not cur or "T" not in cur:
        return not_run(run.why_missing("curate") if not cur else "the curate summary holds no transition matrix")
    T, p = np.asarray(cur["T"], dtype=float), np.asarray(cur["p"], dtype=float)
    k = T.shape[0]
    raw = curated = None
    for site in progress(run.sites, "report: read curation"):
        path = run.site_dir(site) / "curate" / "apply" / "curation.npz"
        if path.exists():
            with np.load(path) as z:
                r, c = (_class_counts(z[key], k) for key in ("raw", "curated"))
            raw, curated = (r, c) if raw is None else (raw + r, curated + c)
    stats = (run.stats("curate") or {}).get("sites", {})
    out = [para(f"DS2: one global T and prior p solved from the summed consensus counts of {len(cur['sites'])} "
                f"site(s) ({cur['rows']} consensus rows, HOC loss {fmt(cur.get('hoc_loss'))})."),
           table(["site", "flagged", "changed"], [[s, stats.get(s, {}).get("flagged"), cur["changed"].get(s)]
                                                   for s in cur["sites"]], cur["sites"]),
           img(plots.transition_plot(T, p, raw, curated),
               f"Heatmap of the {k}x{k} noise transition matrix T, prior p, and raw vs curated score counts")]
    return "\n".join(out)


def _class_counts(values: np.ndarray, k: int) -> np.ndarray:
    v = values[np.isfinite(values)]
    return np.bincount(np.clip(np.rint(v), 0, k - 1).astype(int), minlength=k)


def describe_composite(spec: dict[str, Any]) -> str:
    """'clues' or '1 x z(clues) + 1 x z(perplexity)' (z: standardised with federation-wide moments, oriented)."""
    if "primary" in spec:
        return str(spec["primary"])
    return " + ".join(f"{w:g} x z({n})" for n, w in zip(spec.get("scorers", []), spec.get("weights", []),
                                                        strict=True) if w)


def section_threshold(run: RunView) -> str:
    thr = run.done("threshold")
    if not thr:
        return not_run(run.why_missing("threshold"))
    rows = [["composite score", describe_composite(thr.get("composite", {}))]]
    rows += [[k, thr[k]] for k in ("scope", "mode", "num_samples", "target", "expected_kept", "histogram_rounds",
                                   "tie_fraction", "anchor_threshold", "threshold", "secure_aggregation") if k in thr]
    out = [table(["", "value"], rows)]
    lines: dict[str, float] = {}
    if thr.get("threshold") is not None:
        lines["global threshold"] = float(thr["threshold"])
    else:
        sites = (run.done("select") or {}).get("sites", {})
        lines.update({f"{s} threshold": float(v["threshold"]) for s, v in sites.items() if v.get("threshold")
                      is not None})
        out.append(para("Local scope: every site applies the rule to its own scores (no global threshold)."))
    hist = thr.get("histogram")
    if not hist:
        return "\n".join(out + [not_run("the threshold summary holds no histogram")])
    counts = np.asarray(hist["counts"], dtype=float)
    if "privacy" in thr:
        out.append(para("The histogram counts carry the sites' Gaussian DP noise (negative bins drawn at 0)."))
    out.append(img(plots.threshold_plot(np.asarray(hist["edges"], dtype=float), counts, lines),
                   "Aggregated histogram of the composite score over all sites, with the threshold drawn over it"))
    return "\n".join(out)


def section_selection(run: RunView) -> str:
    sel = run.done("select")
    if not sel:
        return not_run(run.why_missing("select"))
    sites = list(sel["sites"])
    reasons = sorted({r for v in sel["sites"].values() for r in (v.get("dropped-by-reason") or {})})
    rows = []
    for s, v in sel["sites"].items():
        share = v["num-clean-kept"] / v["kept"] if v.get("kept") and v.get("num-clean-kept") is not None else None
        rows.append([s, v["num-samples"], v["kept"], v["dropped"],
                     *[(v.get("dropped-by-reason") or {}).get(r, 0) for r in reasons], v.get("threshold"), share])
    total = ["all sites", sel["kept"] + sel["dropped"], sel["kept"], sel["dropped"],
             *[sum(r[4 + i] for r in rows) for i in range(len(reasons))], sel.get("threshold"), sel.get("precision")]
    out = [table(["site", "samples", "kept", "dropped", *[f"dropped: {r}" for r in reasons], "threshold",
                  "precision (clean kept / kept)"], [*rows, total], [*sites, ""])]
    if sel.get("precision") is not None:
        out.append(para(f"Precision of the kept set {fmt(sel['precision'])} against {fmt(sel.get('precision_full'))} "
                        "for the full data (share of clean samples, from the ground truth)."))
    central = read_json(run.root / "stats.json", missing_ok=True) or {}
    if isinstance(central.get("precision"), dict):
        out.append(para("Each scorer alone at the same budget (centralized run):"))
        out.append(table(["scorer", "precision"], list(central["precision"].items())))
    out.append(img(plots.selection_plot(sites, [v["kept"] for v in sel["sites"].values()],
                                        {r: [(v.get("dropped-by-reason") or {}).get(r, 0) for v in sel["sites"].values()]
                                         for r in reasons}),
                   "Bar chart of kept and dropped samples per site, by drop reason"))
    return "\n".join(out)


def section_training(run: RunView) -> str:
    phases: dict[str, list[dict[str, Any]]] = {p: (run.done(p) or {}).get("rounds") or [] for p in ("warmup", "train")}
    phases = {p: rounds for p, rounds in phases.items() if rounds}
    if not phases:
        return not_run(f"{run.why_missing('warmup')}; {run.why_missing('train')}")
    rows, curves = [], {}
    for phase, rounds in phases.items():
        per_site: dict[str, list[tuple[int, float]]] = {}
        for r in rounds:
            for site, v in r["sites"].items():
                if v.get("loss-last") is not None:
                    per_site.setdefault(site, []).append((int(r["round"]), float(v["loss-last"])))
            n = sum(v.get("num-examples") or 0 for v in r["sites"].values())
            mean = sum((v.get("num-examples") or 0) * (v.get("loss-last") or 0.0) for v in r["sites"].values())
            rows.append([phase, r["round"], r.get("step"), r.get("lr_mean"),
                         f"merge: {r['method']}" if "method" in r else "fedavg", n,
                         mean / n if n else None, len(r.get("excluded", []))])
        curves[phase] = per_site
    ev = run.done("evaluate") or {}
    lines = {f"held-out loss, {name}": float(e["loss"]) for name, e in (("merged adapter", ev), ("base model",
             ev.get("base", {}))) if e.get("loss") is not None}
    out = [table(["phase", "round", "step", "mean learning rate", "aggregation", "examples",
                  "loss (last step, weighted mean)", "excluded"], rows),
           img(plots.training_plot(curves, lines), "Line plot of each site's local training loss per round"
               + (" with the held-out losses" if lines else ""))]
    return "\n".join(out)


def section_communication(run: RunView) -> str:
    traffic = run.stats("communication") or []
    if not traffic:
        return not_run(f"no rounds logged in {run.root / 'stats' / 'communication.json'}")
    steps = list(dict.fromkeys(t["step"] for t in traffic))
    sites = sorted({t["site"] for t in traffic})
    by_step = {d: [sum(t[d] for t in traffic if t["step"] == s) for s in steps] for d in ("sent", "received")}
    by_site = {d: [sum(t[d] for t in traffic if t["site"] == s) for s in sites] for d in ("sent", "received")}
    phases = list(dict.fromkeys(t["phase"] for t in traffic))
    out = [para("Sent: server to sites; received: sites to server (bytes of the serialized messages)."),
           table(["phase", "rounds", "bytes sent", "bytes received", "secure aggregation"], [
               [p, len({t["step"] for t in traffic if t["phase"] == p}),
                sum(t["sent"] for t in traffic if t["phase"] == p),
                sum(t["received"] for t in traffic if t["phase"] == p),
                "yes" if any(t.get("secure") for t in traffic if t["phase"] == p) else "no"] for p in phases]),
           table(["site", "bytes sent", "bytes received"],
                 [[s, by_site["sent"][i], by_site["received"][i]] for i, s in enumerate(sites)], sites),
           img(plots.communication_plot(steps, {"sent (server to sites)": by_step["sent"],
                                                "received (sites to server)": by_step["received"]},
                                        sites, {"sent": by_site["sent"], "received": by_site["received"]}),
               "Bar charts of bytes sent and received per round and per site")]
    return "\n".join(out)


EVAL_METRICS = (("loss", "loss"), ("token_accuracy", "token accuracy"), ("exact_match", "exact match"))


def section_evaluation(run: RunView) -> str:
    ev = run.done("evaluate")
    if not ev:
        return not_run(run.why_missing("evaluate"))
    out: list[str] = []
    if "test_path" in ev:
        models = [("merged adapter", ev)] + ([("base model", ev["base"])] if "base" in ev else [])
        out += [para(f"Held-out evaluation on {ev['test_path']}."),
                table(["model", "samples", *[t for _, t in EVAL_METRICS], "skipped"],
                      [[name, e.get("num_samples"), *[e.get(k) for k, _ in EVAL_METRICS], e.get("num_skipped")]
                       for name, e in models])]
        metrics = {t: [e.get(k) for _, e in models] for k, t in EVAL_METRICS if any(e.get(k) is not None
                                                                                    for _, e in models)}
        if metrics:
            out.append(img(plots.metric_bars([n for n, _ in models], metrics, "held-out evaluation"),
                           "Bar charts of held-out loss, token accuracy and exact match per model"))
    if "sites" in ev:  # evaluation.at-sites: each site on its own held-out set
        per_site = ev["sites"].get("per_site", {})
        keys = [k.replace("_", "-") for k, _ in EVAL_METRICS]
        rows = [[s, r.get("num-samples"), *[r.get(k) for k in keys], r.get("skipped", "")]
                for s, r in per_site.items()]
        rows.append(["all sites (weighted)", ev["sites"].get("num_samples"),
                     *[ev["sites"].get("mean", {}).get(k) for k in keys], ""])
        out += [para("The merged adapter on each site's own held-out set (only the figures left the sites)."),
                table(["site", "samples", *[t for _, t in EVAL_METRICS], "note"], rows)]
    return "\n".join(out) or not_run("no evaluation figures in the evaluate phase's summary")


PRIVACY_LABELS = {"unit": "neighbouring datasets differ by one", "epsilon": "epsilon budget", "delta": "delta",
                  "sigma": "noise std (sigma) per release", "releases": "planned releases",
                  "noise_multiplier": "noise multiplier", "clipping_norm": "clipping norm",
                  "rounds": "noisy rounds", "spent_epsilon": "spent epsilon"}


def privacy_kinds(priv: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """stats/privacy.json per kind of release ("threshold": per sample, "training": per site); an older
    file holding one accountant is the threshold phase's."""
    return {"threshold": priv} if "accountant" in priv else {k: v for k, v in priv.items() if isinstance(v, dict)}


def section_privacy(run: RunView) -> str:
    secure = run.settings.get("privacy.secure-aggregation")
    out = [para("Secure aggregation (SecAgg+) was on: the server saw only sums over sites.")] if secure else []
    priv = run.stats("privacy")
    if not priv:
        off = ", ".join(f"{k} = {run.settings[k]}" for k in ("privacy.dp-epsilon", "privacy.train-noise-multiplier")
                        if k in run.settings)
        why = run.why_missing("threshold") if not run.done("threshold") else \
            f"differential privacy was off ({off or 'no privacy settings recorded'})"
        return "\n".join(out + [not_run(why)])
    out.append(para("Budgets of different kinds of release hold under different neighbouring relations "
                    "(one sample, one site): they are reported side by side, not added."))
    for kind, info in privacy_kinds(priv).items():
        out.append(f"<h3>{html.escape(kind)}</h3>")
        out.append(table(["", "value"], [[PRIVACY_LABELS.get(k, k), v] for k, v in info.items()
                                         if not isinstance(v, dict | list)]))
        releases = info.get("accountant", {}).get("releases", [])
        out.append(table(["release", "sigma", "L2 sensitivity", "rho (zCDP)"],
                         [[r.get("what"), r.get("sigma"), r.get("sensitivity"), r.get("rho")] for r in releases]))
    return "\n".join(out)


SECTIONS: tuple[tuple[str, str, Callable[[RunView], str]], ...] = (
    ("overview", "Overview", section_overview), ("scores", "Score distributions", section_scores),
    ("transition", "DS2 noise transition matrix", section_transition),
    ("threshold", "Threshold", section_threshold), ("selection", "Selection", section_selection),
    ("training", "Training curves", section_training), ("communication", "Communication", section_communication),
    ("evaluation", "Evaluation", section_evaluation), ("privacy", "Privacy", section_privacy))


def write_report(run_dir: Path, out: Path | None = None) -> Path:
    """Write the self-contained HTML report of `run_dir` (default `run_dir/report.html`); returns its path."""
    run = load_run(Path(run_dir))
    out = Path(out) if out else run.root / "report.html"
    nav = "<nav>" + "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title, _ in SECTIONS) + "</nav>"
    parts = [nav]
    for sid, title, build in SECTIONS:
        log.info("report: %s", sid)
        parts.append(f'<section><h2 id="{sid}">{html.escape(title)}</h2>\n{build(run)}\n</section>')
    io.write_text(out, page(f"fedcurate run report: {run.root.resolve().name}", "\n".join(parts)))
    log.info("report written to %s", out)
    return out
