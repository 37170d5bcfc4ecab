"""The registry is the one list of rules: ids, the README's table and what the engine runs come from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnstrace.findings import engine, registry
from dnstrace.findings.model import Finding, Rule
from dnstrace.findings.window import Window

README = Path(__file__).resolve().parents[3] / "README.md"


def test_readme_lists_every_rule_as_the_registry_does():
    readme = README.read_text(encoding="utf-8")
    assert registry.readme_with_rules(readme) == readme, \
        "README's list of rules is stale: python -m dnstrace.findings.registry --update-readme README.md"
    for rule_id in registry.RULE_IDS:
        assert f"| `{rule_id}` |" in readme


def test_rule_ids_are_unique_and_each_rule_lives_in_a_rules_module():
    assert len(set(registry.RULE_IDS)) == len(registry.RULE_IDS)
    for rule in registry.RULES:
        assert rule.check.__module__.startswith("dnstrace.findings.rules.")
        assert (README.parent / registry.module_of(rule)).is_file()
        assert all(meaning.strip() for meaning in rule.reports.values())


def test_a_finding_its_rule_does_not_declare_is_refused(monkeypatch):
    def check(w: Window) -> list[Finding]:
        return [Finding("not-declared", "info", "s", {}, "f")]

    monkeypatch.setattr(engine, "RULES", (Rule(check, {"declared": "what it finds"}),))
    with pytest.raises(ValueError, match="not-declared"):
        engine.evaluate([])
