"""Zero-shot domain / use-case labels: taxonomy files, robust parsing, unknown labels counted with their
reason, the real tiny-model backend (generate and candidate probabilities), and the per-site summary."""

import json

import pyarrow.parquet as pq
import pytest

from fedcurate.common.config import RaterConfig, load_config
from fedcurate.common.data.loaders import write_samples
from fedcurate.common.data.sample import Sample
from fedcurate.common.rating.backends.transformers_local import TransformersBackend
from fedcurate.common.rating.base import Generation
from fedcurate.common.rating.labels import (
    UNKNOWN,
    Label,
    Taxonomy,
    label_distribution,
    label_prompt,
    label_samples,
    load_taxonomy,
    parse_labels,
    run_label,
)

TAXONOMY = Taxonomy(domains=(Label("Medicine", "clinical care"), Label("Finance"), Label("Law")),
                    use_cases=(Label("Question answering"), Label("Open question answering"), Label("Summarisation")))
SAMPLES = [Sample(id=f"s{k}", instruction=f"Task {k}", response=f"Answer {k}") for k in range(6)]


class FixedBackend(TransformersBackend):
    """The real tiny-model backend, except that `generate` returns canned texts (and records its prompts)."""

    def __init__(self, texts, fail_on=None):
        super().__init__(RaterConfig(model="tiny", dtype="float32"))
        self.texts, self.fail_on, self.prompts = list(texts), fail_on, []

    def generate(self, prompts, *, max_new_tokens, temperature):
        if self.fail_on is not None and any(self.fail_on in p for p in prompts):
            raise RuntimeError("worker crashed")
        self.prompts.extend(prompts)
        return [Generation(self.texts.pop(0)) for _ in prompts]


@pytest.mark.parametrize("text, domain, use_case", [
    ("Domain: Medicine\nUse case: Question answering", "Medicine", "Question answering"),
    ("**Domain:** medicine.\n**Use case**: question answering", "Medicine", "Question answering"),
    ('Sure! {"domain": "Finance", "use_case": "Summarisation"}', "Finance", "Summarisation"),
    ("1. Domain - Law\n2. Use-case - Open question answering", "Law", "Open question answering"),
    ("Domain: Medicine (clinical notes)\nUse case: summarisation of a report", "Medicine", "Summarisation"),
    ("Domain:\n  Finance\nUse case:\nSummarisation", "Finance", "Summarisation"),
    ("Finance\nSummarisation", "Finance", "Summarisation"),
    ("Domain: <Law>\nUse cases: this is open question answering", "Law", "Open question answering"),
])
def test_labels_are_parsed_robustly(text, domain, use_case):
    # Execute
    labels = parse_labels(text, TAXONOMY)
    # Assert
    assert (labels.domain, labels.use_case) == (domain, use_case)
    assert labels.domain_reason == labels.use_case_reason == ""


@pytest.mark.parametrize("text, domain_reason, use_case_reason", [
    ("", "empty output", "empty output"),
    ("Domain: Cooking\nUse case: Question answering", "not in taxonomy: 'Cooking'", ""),
    ("Domain: Medicine or Finance\nUse case: Summarisation", "ambiguous", ""),
    ("I cannot tell.", "no domain found", "no use case found"),
    ("Domain: Law\nUse case:", "", "not in taxonomy: empty value"),
])
def test_unparseable_labels_are_unknown_with_a_reason(text, domain_reason, use_case_reason):
    # Execute
    labels = parse_labels(text, TAXONOMY)
    # Assert
    assert (labels.domain == UNKNOWN) == bool(domain_reason)
    assert (labels.use_case == UNKNOWN) == bool(use_case_reason)
    assert labels.domain_reason.startswith(domain_reason) and labels.use_case_reason.startswith(use_case_reason)


def test_taxonomy_files_in_toml_and_json(tmp_path):
    # Prepare
    (tmp_path / "t.toml").write_text('domains = ["Medicine", {name = "Finance", description = "banks"}]\n'
                                     'use-cases = [{name = "Summarisation"}]\n')
    (tmp_path / "t.json").write_text(json.dumps({"domains": ["Medicine", {"name": "Finance", "description": "banks"}],
                                                 "use_cases": ["Summarisation"]}))
    # Execute
    toml, js = load_taxonomy(tmp_path / "t.toml"), load_taxonomy(tmp_path / "t.json")
    # Assert
    assert toml == js
    assert toml.domains == (Label("Medicine"), Label("Finance", "banks")) and toml.names("use_case") == ["Summarisation"]


def test_a_bad_taxonomy_lists_every_problem(tmp_path):
    # Prepare
    (tmp_path / "t.toml").write_text('domains = ["Law", "law.", "unknown", {title = "x"}]\nuse-cases = []\ncolour = 1\n')
    # Execute
    with pytest.raises(ValueError) as err:
        load_taxonomy(tmp_path / "t.toml")
    # Assert
    message = str(err.value)
    assert "5 taxonomy error(s)" in message and "t.toml" in message
    for part in ("duplicate name 'law.'", "'unknown' is empty or reserved", "domains[3]", "use-cases: expected",
                 "unknown key 'colour'"):
        assert part in message


def test_labels_through_a_backend_with_failures_counted():
    # Prepare
    texts = ["Domain: Medicine\nUse case: Question answering", "Domain: Finance\nUse case: Summarisation",
             "no idea", "Domain: Medicine\nUse case: Poetry", "Domain: Law\nUse case: Summarisation"]
    backend = FixedBackend(texts, fail_on="Task 5")
    # Execute
    labels = label_samples(SAMPLES, TAXONOMY, backend, batch_size=4, progress=False)
    summary = label_distribution(labels, TAXONOMY, site="site-a")
    # Assert: sample 5 made its batch fail; only it is lost, with the backend's reason
    assert [lab.domain for lab in labels] == ["Medicine", "Finance", UNKNOWN, "Medicine", "Law", UNKNOWN]
    assert labels[5].domain_reason == "backend error: RuntimeError: worker crashed"
    assert summary["domains"] == {"Medicine": 2, "Finance": 1, "Law": 1, UNKNOWN: 2}
    assert summary["use_cases"] == {"Question answering": 1, "Open question answering": 0, "Summarisation": 2,
                                    UNKNOWN: 3}
    assert summary["unknown_by_reason"] == {"domain": {"no domain found": 1, "backend error": 1},
                                            "use_case": {"no use case found": 1, "not in taxonomy": 1,
                                                         "backend error": 1}}
    assert summary["joint"]["Medicine"] == {"Question answering": 1, UNKNOWN: 1} and summary["site"] == "site-a"
    assert "- Medicine: clinical care" in backend.prompts[0] and "Task 0" in backend.prompts[0]


def test_real_tiny_model_generations_are_labels_or_counted_failures():
    # Prepare
    backend = TransformersBackend(RaterConfig(model="tiny", dtype="float32", batch_size=3))
    taxonomy = Taxonomy(domains=(Label("Med"), Label("Law")), use_cases=(Label("QA"),))
    # Execute
    labels = label_samples(SAMPLES[:3], taxonomy, backend, max_new_tokens=12, progress=False)
    summary = label_distribution(labels, taxonomy)
    # Assert: a random tiny model answers nonsense, which must never become a silent label
    for lab in labels:
        assert lab.domain in ("Med", "Law") or lab.domain_reason.split(":")[0] in (
            "no domain found", "not in taxonomy", "ambiguous", "empty output")
    assert sum(summary["domains"].values()) == 3
    assert sum(summary["unknown_by_reason"]["domain"].values()) == summary["domains"][UNKNOWN]


def test_candidate_probabilities_pick_the_most_likely_single_token_label():
    # Prepare: the tiny tokenizer has one token per character, so one-letter names are single tokens
    backend = TransformersBackend(RaterConfig(model="tiny", dtype="float32"))
    taxonomy = Taxonomy(domains=(Label("m"), Label("f"), Label("l")), use_cases=(Label("q"), Label("s")))
    # Execute
    labels = label_samples(SAMPLES[:3], taxonomy, backend, method="probs", progress=False)
    # Assert
    for sample, lab in zip(SAMPLES[:3], labels, strict=True):
        probs = backend.candidate_probs([label_prompt(sample, taxonomy, ask="domain") + "\n"], ["m", "f", "l"])[0]
        assert lab.probs["domain"] == pytest.approx(list(probs.probs))
        assert lab.domain == "mfl"[max(range(3), key=lambda i: probs.probs[i])] and lab.use_case in ("q", "s")


def test_candidate_probabilities_need_single_token_names():
    # Prepare
    backend = TransformersBackend(RaterConfig(model="tiny", dtype="float32"))
    # Execute / Assert
    with pytest.raises(ValueError, match="use method 'generate'"):
        label_samples(SAMPLES[:1], TAXONOMY, backend, method="probs", progress=False)


def test_run_label_writes_per_sample_labels_and_the_site_summary(tmp_path):
    # Prepare
    write_samples(tmp_path / "d.jsonl", SAMPLES[:4])
    (tmp_path / "t.toml").write_text('domains = ["Med", "Law"]\nuse-cases = ["QA"]\n')
    cfg = load_config(overrides={"rating.raters": [{"name": "tiny", "model": "tiny", "dtype": "float32",
                                                    "max-new-tokens": 8}]})
    # Execute
    summary = run_label(cfg, tmp_path / "t.toml", tmp_path / "d.jsonl", tmp_path / "out", site="a",
                        max_new_tokens=8)
    # Assert
    table = pq.read_table(tmp_path / "out" / "labels.parquet").to_pydict()
    written = json.loads((tmp_path / "out" / "labels.json").read_text())
    assert table["id"] == ["s0", "s1", "s2", "s3"] and len(table["domain_reason"]) == 4
    assert written["domains"] == summary["domains"] and sum(summary["domains"].values()) == 4
    assert written["taxonomy"]["domains"] == [{"name": "Med", "description": ""}, {"name": "Law", "description": ""}]
    assert written["rater"] == "tiny" and written["method"] == "generate"
