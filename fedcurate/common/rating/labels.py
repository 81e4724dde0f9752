"""Zero-shot domain and use-case labels from a user's taxonomy, through any rating backend.

    taxonomy = load_taxonomy("taxonomy.toml")
    labels = label_samples(samples, taxonomy, backend)                  # backend.generate, then parse
    labels = label_samples(samples, taxonomy, backend, method="probs")  # backend.candidate_probs: one prefill
    summary = label_distribution(labels, taxonomy, site="site-a")       # counts per domain and use case
    run_label(cfg, "taxonomy.toml", "data.jsonl", "runs/labels")        # labels.parquet + labels.json

Taxonomy file, TOML or JSON; a label is a name or a table with `name` and optional `description`:
    domains = ["Medicine", {name = "Finance", description = "banking, markets, accounting"}]
    use-cases = ["Question answering", {name = "Summarisation"}]        # `use_cases` also accepted

`generate` asks for two lines, `Domain: X` and `Use case: Y`. The parser reads them with any case,
markdown or list marker, or a JSON object with `domain` / `use_case` keys, or (with no key at all) a
line that is exactly one label. A value maps to a label by exact name (case and punctuation ignored),
else by the one name it contains as whole words (the longest, when names nest: "open question answering"). Anything else is `unknown` with a
reason whose category (before the colon) is counted: `empty output`, `no domain found` / `no use case
found`, `not in taxonomy`, `ambiguous`, `backend error`. `probs` reads the next-token probabilities of
the label names after "Domain:" (and "Use case:"), so it needs single-token names; it takes the argmax.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import sys
import tomllib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from fedcurate.common import io
from fedcurate.common.config import Config
from fedcurate.common.data.loaders import load_from_config, write_rejects
from fedcurate.common.data.sample import Sample
from fedcurate.common.rating.base import Backend, Generation
from fedcurate.common.rating.parsing import last_json_object

logger = logging.getLogger(__name__)
UNKNOWN = "unknown"
KINDS = ("domain", "use_case")
_TITLES = {"domain": "Domain", "use_case": "Use case"}
_KEYS = {"domain": r"domains?", "use_case": r"use[\s_-]*cases?"}
SAMPLE_CHARS = 1500  # characters of instruction (and of response) shown in a prompt


@dataclass(frozen=True)
class Label:
    name: str
    description: str = ""


@dataclass(frozen=True)
class Taxonomy:
    domains: tuple[Label, ...]
    use_cases: tuple[Label, ...]

    def names(self, kind: str) -> list[str]:
        return [lab.name for lab in (self.domains if kind == "domain" else self.use_cases)]


@dataclass(frozen=True)
class SampleLabels:
    """One sample's labels: taxonomy names, or `unknown` with the reason."""

    domain: str
    use_case: str
    domain_reason: str = ""
    use_case_reason: str = ""
    raw: str = ""  # the model's text (generate), for audit
    probs: dict[str, list[float]] = field(default_factory=dict)  # method "probs": per kind, in taxonomy order


def load_taxonomy(path: str | Path) -> Taxonomy:
    """Read and validate a taxonomy file; every problem is reported at once, naming the file and entry."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        raw = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as err:
        raise ValueError(f"{path}: not valid {'JSON' if path.suffix.lower() == '.json' else 'TOML'}: {err}") from None
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected an object with `domains` and `use-cases`")
    raw = {k.replace("-", "_"): v for k, v in raw.items()}
    problems += [f"unknown key {k!r}; allowed: domains, use-cases" for k in raw if k not in ("domains", "use_cases")]
    lists = {kind: _labels(raw.get(f"{kind}s"), f"{kind.replace('_', '-')}s", problems) for kind in KINDS}
    if problems:
        raise ValueError(f"{path}: {len(problems)} taxonomy error(s):\n" + "\n".join(f"  - {p}" for p in problems))
    return Taxonomy(domains=lists["domain"], use_cases=lists["use_case"])


def _labels(value: Any, key: str, problems: list[str]) -> tuple[Label, ...]:
    if not isinstance(value, list) or not value:
        problems.append(f"{key}: expected a non-empty list of names or {{name, description}} tables")
        return ()
    out: list[Label] = []
    for i, item in enumerate(value):
        entry = {"name": item} if isinstance(item, str) else item
        if not isinstance(entry, dict) or set(entry) - {"name", "description"} or not isinstance(entry.get("name"), str):
            problems.append(f"{key}[{i}] = {item!r}: expected a name or a table with `name` (and `description`)")
            continue
        name, desc = entry["name"].strip(), entry.get("description", "")
        if not _norm(name) or _norm(name) == UNKNOWN:
            problems.append(f"{key}[{i}]: name {name!r} is empty or reserved")
        elif _norm(name) in {_norm(lab.name) for lab in out}:
            problems.append(f"{key}[{i}]: duplicate name {name!r} (names compare ignoring case and punctuation)")
        elif not isinstance(desc, str):
            problems.append(f"{key}[{i}].description: expected a string")
        else:
            out.append(Label(name, desc.strip()))
    return tuple(out)


def label_prompt(sample: Sample, taxonomy: Taxonomy, ask: str = "both") -> str:
    """The labelling prompt; `ask` = "both" (generate), or "domain" / "use_case" (ends before the name)."""
    def listing(labels: Sequence[Label]) -> str:
        return "\n".join(f"- {lab.name}" + (f": {lab.description}" if lab.description else "") for lab in labels)

    response = sample.response[:SAMPLE_CHARS]
    head = (f"Label this instruction-tuning example with one domain and one use case.\n"
            f"Domains:\n{listing(taxonomy.domains)}\nUse cases:\n{listing(taxonomy.use_cases)}\n\n"
            f"### Instruction:\n{sample.prompt_text[:SAMPLE_CHARS]}\n### Response:\n{response}\n\n")
    if ask == "both":
        return head + "Answer in two lines:\nDomain: <a domain above>\nUse case: <a use case above>\n"
    return head + f"{_TITLES[ask]}:"


def parse_labels(text: str, taxonomy: Taxonomy) -> SampleLabels:
    """Labels from a model's free text (see the module docstring); never a silent default."""
    if not text.strip():
        return SampleLabels(UNKNOWN, UNKNOWN, "empty output", "empty output", text)
    obj = last_json_object(text) or {}
    keyed = {re.sub(r"[\s_-]", "", str(k).lower()): v for k, v in obj.items()}
    found: dict[str, tuple[str, str]] = {}
    for kind in KINDS:
        value = keyed.get(kind.replace("_", ""), keyed.get(f"{kind.replace('_', '')}s"))
        if value is None:
            match = re.search(rf"^[\s>#*_`-]*(?:\d+[.)]\s*)?[*_`]*{_KEYS[kind]}[*_`]*\s*[:=\-–][*_`]*[ \t]*(.*)$",
                              text, re.IGNORECASE | re.MULTILINE)
            value = _value_of(text, match) if match else None
        if value is None:
            found[kind] = _bare_line(text, taxonomy.names(kind), kind)
        else:
            found[kind] = match_label(str(value), taxonomy.names(kind))
    (domain, why_d), (use_case, why_u) = found["domain"], found["use_case"]
    return SampleLabels(domain, use_case, why_d, why_u, text)


def match_label(value: str, names: Sequence[str]) -> tuple[str, str]:
    """(name, "") for the taxonomy name `value` denotes, or (UNKNOWN, reason)."""
    v = _norm(value)
    if not v:
        return UNKNOWN, "not in taxonomy: empty value"
    for rule in (lambda n: v == n, lambda n: re.search(rf"(?<!\w){re.escape(n)}(?!\w)", v) is not None):
        hits = [name for name in names if rule(_norm(name))]
        if len(hits) > 1:  # the longest name wins when one contains the others ("question answering" in "open ...")
            longest = max(hits, key=lambda n: len(_norm(n)))
            if all(_norm(h) in _norm(longest) for h in hits):
                hits = [longest]
        if len(hits) == 1:
            return hits[0], ""
        if hits:
            return UNKNOWN, f"ambiguous: {value.strip()[:80]!r} names {', '.join(hits)}"
    return UNKNOWN, f"not in taxonomy: {value.strip()[:80]!r}"


def _value_of(text: str, match: re.Match[str]) -> str:
    """The text after "Domain:" on its line, or on the next non-empty line when that is empty."""
    if match.group(1).strip():
        return match.group(1)
    return next((line for line in text[match.end():].splitlines() if line.strip()), "")


def _bare_line(text: str, names: Sequence[str], kind: str) -> tuple[str, str]:
    lines = {_norm(line) for line in text.splitlines()}
    hits = [n for n in names if _norm(n) in lines]
    if len(hits) == 1:
        return hits[0], ""
    return UNKNOWN, f"no {_TITLES[kind].lower()} found" + (f": several bare labels {hits}" if hits else "")


def _norm(s: str) -> str:
    s = re.sub(r"[*_`\"'<>\[\]]", " ", s.lower())
    return re.sub(r"\s+", " ", s).strip(" .,;:!?-–()")


def label_samples(samples: Sequence[Sample], taxonomy: Taxonomy, backend: Backend, *, method: str = "generate",
                  batch_size: int = 32, max_new_tokens: int = 48, temperature: float = 0.0,
                  progress: bool = True) -> list[SampleLabels]:
    """Labels for every sample, same order; a backend failure costs only its own samples."""
    if method not in ("generate", "probs"):
        raise ValueError(f"method = {method!r}; allowed: generate, probs")
    if method == "generate":
        def run(batch: Sequence[Sample]) -> list[SampleLabels]:
            gens = backend.generate([label_prompt(s, taxonomy) for s in batch], max_new_tokens=max_new_tokens,
                                    temperature=temperature)
            return [_from_generation(g, taxonomy) for g in gens]
    else:
        def run(batch: Sequence[Sample]) -> list[SampleLabels]:
            return _by_probs(batch, taxonomy, backend)
    out: list[SampleLabels] = []
    bar = tqdm(total=len(samples), desc="labels", unit="sample", disable=not (progress and sys.stderr.isatty()))
    for start in range(0, len(samples), batch_size):
        batch = samples[start:start + batch_size]
        out.extend(_isolated(batch, run))
        bar.update(len(batch))
    bar.close()
    return out


def _from_generation(gen: Generation, taxonomy: Taxonomy) -> SampleLabels:
    if gen.error:
        reason = f"backend error: {gen.error}"
        return SampleLabels(UNKNOWN, UNKNOWN, reason, reason)
    return parse_labels(gen.text, taxonomy)


def _by_probs(batch: Sequence[Sample], taxonomy: Taxonomy, backend: Backend) -> list[SampleLabels]:
    """Argmax of the label names' next-token probabilities, per kind; a name must be one token."""
    picked: dict[str, list[tuple[str, str, list[float]]]] = {}
    for kind in KINDS:
        names, stubs = taxonomy.names(kind), [label_prompt(s, taxonomy, ask=kind) for s in batch]
        try:  # " Name" after "Domain:" suits BPE/SentencePiece vocabularies; "Name" after a newline, others
            probs = backend.candidate_probs(stubs, [f" {n}" for n in names])
        except ValueError:
            try:
                probs = backend.candidate_probs([p + "\n" for p in stubs], names)
            except ValueError as err:
                raise ValueError(f"method 'probs' needs every {kind.replace('_', ' ')} name to be one token "
                                 f"for {backend.model_name!r}: {err}; use method 'generate'") from None
        picked[kind] = [(UNKNOWN, f"backend error: {tp.error}", []) if tp.error else
                        (names[max(range(len(names)), key=lambda i: tp.probs[i])], "", list(tp.probs)) for tp in probs]
    return [SampleLabels(d[0], u[0], d[1], u[1], probs={"domain": d[2], "use_case": u[2]})
            for d, u in zip(picked["domain"], picked["use_case"], strict=True)]


def _isolated(batch: Sequence[Sample], run: Callable[[Sequence[Sample]], list[SampleLabels]]) -> list[SampleLabels]:
    """`run(batch)`; if the backend raises, sample by sample. ValueError/OSError (set-up problems) propagate."""
    try:
        out = run(batch)
    except (ValueError, OSError):
        raise
    except Exception as err:  # noqa: BLE001 - one sample's failure must not cost the others
        if len(batch) == 1:
            reason = f"backend error: {type(err).__name__}: {err}"
            return [SampleLabels(UNKNOWN, UNKNOWN, reason, reason)]
        logger.warning("labelling a batch of %d failed (%s); labelling its samples one by one", len(batch), err)
        return [lab for s in batch for lab in _isolated([s], run)]
    if len(out) != len(batch):
        raise RuntimeError(f"labeller: {len(out)} results for {len(batch)} samples")
    return out


def label_distribution(labels: Sequence[SampleLabels], taxonomy: Taxonomy, site: str = "") -> dict[str, Any]:
    """Counts per domain and per use case (every taxonomy name, then `unknown`), joint counts, failures by reason."""
    summary: dict[str, Any] = {"site": site, "samples": len(labels)}
    for kind in KINDS:
        counts = Counter(getattr(lab, kind) for lab in labels)
        summary[f"{kind}s"] = {n: counts.get(n, 0) for n in [*taxonomy.names(kind), UNKNOWN]}
    joint: dict[str, dict[str, int]] = {}
    for lab in labels:
        row = joint.setdefault(lab.domain, {})
        row[lab.use_case] = row.get(lab.use_case, 0) + 1
    summary["joint"] = joint
    summary["unknown_by_reason"] = {
        kind: dict(Counter(getattr(lab, f"{kind}_reason").split(":", 1)[0] for lab in labels
                           if getattr(lab, kind) == UNKNOWN)) for kind in KINDS}
    return summary


def run_label(cfg: Config, taxonomy_path: str | Path, input_path: str | Path | None, out_dir: str | Path, *,
              rater: str = "", method: str = "generate", site: str = "", max_new_tokens: int = 48) -> dict[str, Any]:
    """Label a data file with the backend of rating rater `rater` (default: the first); write the outputs.

    Writes labels.parquet (id, domain, use_case, domain_reason, use_case_reason, raw), labels.json
    (`label_distribution` plus the taxonomy and settings) and rejects.jsonl; returns the summary.
    """
    from fedcurate.common.rating.raters import build_backend
    from fedcurate.common.rating.run import rating_cache_dir

    taxonomy = load_taxonomy(taxonomy_path)
    chosen = [r for r in cfg.rating.raters if not rater or r.name == rater]
    if not chosen:
        raise ValueError(f"no rater {rater!r} in rating.raters ({[r.name for r in cfg.rating.raters]}); labelling "
                         "uses a rater's backend and model: add a [[rating.raters]] table")
    rcfg, out = chosen[0], Path(out_dir)
    loaded = load_from_config(cfg.data, input_path)
    write_rejects(out / "rejects.jsonl", loaded.rejects)
    backend = build_backend(rcfg, rating_cache_dir(cfg, out))
    try:
        labels = label_samples(loaded.samples, taxonomy, backend, method=method, batch_size=rcfg.batch_size * 4,
                               max_new_tokens=max_new_tokens, temperature=rcfg.temperature)
    finally:
        getattr(backend, "close", lambda: None)()
    table = pa.table({"id": [s.id for s in loaded.samples],
                      **{name: [getattr(lab, name) for lab in labels]
                         for name in ("domain", "use_case", "domain_reason", "use_case_reason", "raw")}})
    io.write_with(out / "labels.parquet", lambda tmp: pq.write_table(table, tmp))
    summary = label_distribution(labels, taxonomy, site)
    io.write_json(out / "labels.json", {**summary, "rater": rcfg.name, "model": rcfg.model, "method": method,
                                        "taxonomy": {f"{k}s": [dataclasses.asdict(lab) for lab in getattr(taxonomy, f"{k}s")]
                                                     for k in KINDS}})
    logger.info("labels: %d samples; unknown domain %d, unknown use case %d", len(labels),
                summary["domains"][UNKNOWN], summary["use_cases"][UNKNOWN])
    return summary
