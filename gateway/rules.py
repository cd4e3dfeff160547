"""The rule catalogue: every rule's id, severity, message template, source and acknowledgment
codes, read from the YAML rule packs in ``profiles/rules/``. Validators create findings only
through :meth:`RuleCatalogue.finding`, so a plan analyst changes wording, severity or the
999/277CA codes of a rule in data, not in Python."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from gateway import yamlio

from gateway.findings import Finding, Severity, without_paths
from gateway.paths import PROFILES


@dataclass(frozen=True)
class Rule:
    id: str
    severity: Severity
    message: str
    source: str
    ack: dict = field(default_factory=dict)
    enabled: bool = True
    # minimum necessary: the id of the rule whose message a submitter gets instead of this one
    # when the finding is about a member not assigned to it (``to_submitter`` in the pack);
    # None: this message is fit for any submitter
    to_submitter: str | None = None


class _Blank(dict):
    """A rule message's values for ``str.format_map``: a value not given reads as empty."""

    def __missing__(self, key: str) -> str:
        return ""


def message_of(template: str, values: dict) -> str:
    """A rule's message ``template`` with ``values`` (one not given reads as empty), without
    server paths (:func:`~gateway.findings.without_paths`)."""
    return without_paths(template.format_map(_Blank(values)))


_UNSET = object()


class RuleCatalogue:
    def __init__(self, rules: dict[str, Rule]) -> None:
        self._rules = rules
        self._forms: dict[tuple[str, str], tuple | None] = {}  # (rule id, audience) -> form

    def __getstate__(self) -> dict:  # (pickled in the YAML cache: the rules, not the memo)
        return {"_rules": self._rules}

    def __setstate__(self, state: dict) -> None:
        self._rules = state["_rules"]
        self._forms = {}

    @classmethod
    def load(cls, folder: Path) -> "RuleCatalogue":
        """The catalogue of the packs in ``folder``, pickled whole in the YAML cache folder
        (setting ``yaml_cache``) under the packs' names and :func:`gateway.diskcache.file_key`
        (with this module's and the findings module's source): a new process unpickles it
        (≈ 0.85 ms) instead of reading twelve packs and building 241 rules (≈ 2.1 ms)."""
        from gateway import diskcache

        paths = sorted(folder.glob("*.yaml"))
        cache = diskcache.folder("yaml_cache", "yaml")
        stored = None
        if cache is not None:
            names = "\0".join(["rule-catalogue 1", *(p.name for p in paths)]).encode()
            key = diskcache.file_key(names, [*paths, Path(__file__),
                                             Path(__file__).with_name("findings.py")])
            stored = cache / f"catalogue-{folder.name}-{key}.pickle"
        return diskcache.cached(stored, lambda: cls._build(paths))

    @classmethod
    def _build(cls, paths: list[Path]) -> "RuleCatalogue":
        rules: dict[str, Rule] = {}
        for path, pack in zip(paths, yamlio.load_files(paths)):
            pack = pack or {}
            for entry in pack.get("rules", []):
                if entry["id"] in rules:
                    raise ValueError(f"rule {entry['id']} defined twice ({path.name})")
                rules[entry["id"]] = Rule(
                    id=entry["id"],
                    severity=Severity(entry["severity"]),
                    message=entry["message"],
                    source=entry["source"],
                    ack=dict(entry.get("ack") or {}),
                    enabled=entry.get("enabled", True),
                    to_submitter=entry.get("to_submitter") or None,
                )
        for rule in rules.values():
            if rule.to_submitter is not None and rule.to_submitter not in rules:
                raise ValueError(f"rule {rule.id}: to_submitter names unknown rule "
                                 f"{rule.to_submitter}")
        return cls(rules)

    def __contains__(self, rule_id: str) -> bool:
        return rule_id in self._rules

    def rule(self, rule_id: str) -> Rule:
        return self._rules[rule_id]

    def with_overrides(self, overrides: dict[str, dict]) -> "RuleCatalogue":
        """A copy with per-partner changes: ``{rule_id: {"severity": "warning"}}`` or
        ``{rule_id: {"enabled": false}}``."""
        rules = dict(self._rules)
        for rule_id, change in overrides.items():
            rule = rules[rule_id]
            if "severity" in change:
                rule = replace(rule, severity=Severity(change["severity"]))
            if "enabled" in change:
                rule = replace(rule, enabled=bool(change["enabled"]))
            rules[rule_id] = rule
        return RuleCatalogue(rules)

    def rules(self) -> list[Rule]:
        return list(self._rules.values())

    def finding(
        self, rule_id: str, location: str, ordinal: int | None = None,
        audience: str = "plan", **values: object
    ) -> Finding | None:
        """The finding for ``rule_id`` at ``location``; None when the rule is turned off.
        ``audience="submitter"``: the finding is about a member not assigned to the submitter,
        so a rule with a ``to_submitter`` form is told in that form (its rule id, message and
        acknowledgment codes), the full reason kept in ``plan_rule``/``plan_message``."""
        form = self._forms.get((rule_id, audience), _UNSET)
        if form is _UNSET:
            form = self.form(rule_id, audience)
        if form is None:
            return None
        rule, severity, template, source, plan_rule, plan_template = form
        return Finding(
            rule=rule, severity=severity, location=location,
            message=message_of(template, values), source=source, segment=ordinal,
            plan_rule=plan_rule,
            plan_message=None if plan_template is None else message_of(plan_template, values))

    def form(self, rule_id: str, audience: str = "plan") -> tuple | None:
        """How :meth:`finding` tells ``rule_id`` to ``audience`` (memo): ``(rule id, severity,
        message template, source, plan rule id, plan message template)`` - the last two None
        unless a submitter gets the rule's ``to_submitter`` form - or None when the rule is
        turned off (the ECM rules make thousands of findings a file from it: a message
        :func:`message_of` its template and values). KeyError: no such rule."""
        rule = self._rules[rule_id]
        if not rule.enabled:
            found = None
        elif audience == "submitter" and rule.to_submitter:
            public = self._rules[rule.to_submitter]
            found = (public.id, rule.severity, public.message, public.source, rule.id,
                     rule.message)
        else:
            found = (rule.id, rule.severity, rule.message, rule.source, None, None)
        self._forms[(rule_id, audience)] = found
        return found


@lru_cache(maxsize=1)
def default_catalogue() -> RuleCatalogue:
    return RuleCatalogue.load(PROFILES / "rules")


class UnknownPartner(ValueError):
    """No rule overrides for that trading partner."""


OVERRIDES = PROFILES / "rules" / "overrides"


def overrides_path(partner: str) -> Path | None:
    """The partner's rule overrides file, None when it has none (or the id is no file name)."""
    if not partner or "/" in partner or "\\" in partner or partner.startswith("."):
        return None
    path = OVERRIDES / f"{partner}.yaml"
    return path if path.is_file() else None


def partner_catalogue(partner: str | None) -> RuleCatalogue:
    """The catalogue with a trading partner's overrides from
    ``profiles/rules/overrides/<partner>.yaml`` (``{rule_id: {severity: ..., enabled: ...}}``
    under ``overrides:``); the default catalogue when ``partner`` is None. (A plan with
    settings and no overrides: :func:`gateway.ecm.plans.partner_rules`.)"""
    if partner is None:
        return default_catalogue()
    path = overrides_path(partner)
    if path is None:
        raise UnknownPartner(f"no rule overrides for partner {partner!r} "
                             f"(expected {OVERRIDES.relative_to(PROFILES.parent)}/"
                             f"{partner}.yaml)")
    data = yamlio.load_file(path) or {}
    overrides = data.get("overrides") or {}
    unknown = [rule_id for rule_id in overrides if rule_id not in default_catalogue()]
    if unknown:
        raise UnknownPartner(f"{path.name} names unknown rules: {', '.join(unknown)}")
    return default_catalogue().with_overrides(overrides)
