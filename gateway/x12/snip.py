"""SNIP 3-7 edits for 837 claims, as data: ``profiles/rules/x12-snip.yaml``.

The native engine calls :meth:`SnipChecker.segment` with each segment and the map node it
matched, so every check knows its loop without re-parsing the structure. Element checks
(SNIP 5, 7) run on the segment; claim checks (SNIP 3, 4, 6) collect what they need while the
claim's segments pass and run when the claim ends (next claim, next HL, SE) — nothing is kept
after that, so memory stays flat. Findings carry the same context as the implementation-guide
findings (segment id, position, loop, element), so the 999 can list them as IK3/IK4, and sit
on a segment inside the claim, so the 277CA rejects that claim with the rule's status code.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache

from gateway import yamlio
from gateway.checkdigits import luhn_npi_ok  # the one NPI check digit

from gateway.paths import PROFILES

SNIP_PACK = PROFILES / "rules" / "x12-snip.yaml"
# the segment ids ClaimTracker follows, numbered from 1 for ClaimTracker.track (the validator
# keeps a segment's number with its cached plan: a memoised segment's tracking is one C call),
# the most frequent first
TRACK_IDS = ("DTP", "SV1", "REF", "CLM", "HL", "DMG", "SV2", "BHT")
_TRACKED = frozenset(TRACK_IDS)
_ICD10 = re.compile(r"[A-TV-Z][0-9][0-9A-Z]{1,5}")


def _ref(segment: str, text: str) -> tuple[int, int]:
    position, _, component = text[len(segment):].partition("-")
    return int(position or 0), int(component or 0)


class SnipRule:
    """One SNIP 3-7 rule of the pack, read-only (shared by every checker). A plain slotted
    class, not a dataclass: building a dataclass costs ≈ 0.8 ms of the first validation."""

    __slots__ = ("id", "snip", "check", "spec", "element", "when", "unless", "pattern")

    def __init__(self, *, id: str, snip: int, check: str, spec: dict,  # noqa: A002
                 element: tuple[int, int], when: tuple, unless: tuple,
                 pattern: re.Pattern | None) -> None:
        self.id = id
        self.snip = snip
        self.check = check
        self.spec = spec
        self.element = element  # (element, component) the rule checks
        self.when = when  # ((element, component, value), ...) that must hold
        self.unless = unless  # ((element, component, value or "*"), ...) that must not
        self.pattern = pattern

    def __repr__(self) -> str:
        return f"SnipRule({self.id!r}, snip={self.snip}, check={self.check!r})"


@lru_cache(maxsize=1)
def snip_rules() -> tuple[SnipRule, ...]:
    data = yamlio.load_file(SNIP_PACK)
    rules = []
    for r in data["rules"]:
        seg = r.get("segment", "")
        rules.append(SnipRule(
            id=r["id"], snip=int(r["snip"]), check=r["check"], spec=r,
            element=_ref(seg, r.get("element", "")),
            when=tuple((*_ref(seg, k), str(v)) for k, v in (r.get("when") or {}).items()
                       if seg),
            unless=tuple((*_ref(seg, k), str(v)) for k, v in (r.get("unless") or {}).items()),
            pattern=re.compile(r["pattern"]) if "pattern" in r else None))
    return tuple(rules)


@lru_cache(maxsize=8)
def _partner_receiver(partner: str) -> str:
    from gateway.x12.envelope_profiles import envelope_profile_data  # (no pydantic model)

    return str(envelope_profile_data(partner)["receiver_id"]).strip()


def _value(fields: list, position, component, comp_sep: str) -> str:
    value = fields[position] if position < len(fields) else ""
    if component:
        parts = value.split(comp_sep)
        return parts[component - 1] if component <= len(parts) else ""
    return value


def _conditions(when: tuple, unless: tuple, fields: list[str], comp_sep: str) -> bool:
    """A rule's ``when`` (element values that must hold) and ``unless`` (that must not)."""
    for position, component, wanted in when:
        if _value(fields, position, component, comp_sep) != wanted:
            return False
    for position, component, unwanted in unless:
        found = _value(fields, position, component, comp_sep)
        if found and (unwanted == "*" or found == unwanted):
            return False
    return True


_NPI_CHECKED: dict = {}  # NPI -> check digit right (a file repeats its providers')
NPI_CACHE_SIZE = 4096


def _npi_ok(value: str) -> bool:
    # (no element type on the cache's annotation: Cython would read its values as C ints,
    # and the None of a miss as False)
    checked: dict = _NPI_CHECKED  # (typed: a C dict look-up in the compiled build)
    known = checked.get(value)
    if known is not None:
        return known
    ok = len(value) == 10 and value.isdigit() and luhn_npi_ok(value)
    if len(checked) >= NPI_CACHE_SIZE:
        checked.clear()
    checked[value] = ok
    return ok


def _always(value: str) -> bool:
    return True


def _money(text: str) -> Decimal | None:
    try:
        return Decimal(text)
    except (InvalidOperation, ValueError):
        return None


def _dates(qualifier: str, value: str) -> tuple[str, str] | None:
    if qualifier == "D8" and len(value) == 8 and value.isdigit():
        return value, value
    if qualifier == "RD8" and len(value) == 17 and value[8] == "-":
        return value[:8], value[9:]
    return None


def _condition(when: tuple, unless: tuple, comp_sep: str):
    """A rule's ``when``/``unless`` as one function of the fields (None: always holds), the
    usual single plain-element condition without the general loop."""
    if not when and not unless:
        return None
    if len(when) == 1 and not unless and not when[0][1]:
        position, _, wanted = when[0]

        def equals(fields: list[str]) -> bool:
            return (fields[position] if position < len(fields) else "") == wanted

        return equals
    if len(unless) == 1 and not when and not unless[0][1]:
        position, _, unwanted = unless[0]

        def absent(fields: list[str]) -> bool:
            found = fields[position] if position < len(fields) else ""
            return not (found and (unwanted == "*" or found == unwanted))

        return absent

    def general(fields: list[str]) -> bool:
        return _conditions(when, unless, fields, comp_sep)

    return general


def _digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def _whole(text: str) -> bool:
    """Digits 0-9 only, at least one (so :func:`_digits` too); a C loop when compiled."""
    if not text:
        return False
    for ch in text:
        if ch < "0" or ch > "9":
            return False
    return True


_SUM_FLOOR = 10**18  # ClaimTracker.passes: how far below 0 a balance is followed


def _small_whole(text: str) -> int:
    """The value of 1 to 15 digits 0-9 (an amount :func:`_whole` accepts that a machine
    integer holds many times over), -1 for any other text."""
    if not text or len(text) > 15:
        return -1
    value = 0
    for ch in text:
        if ch < "0" or ch > "9":
            return -1
        value = value * 10 + (ord(ch) - 48)
    return value


def _balanced(charge: str, lines: list) -> bool:
    """Whole amounts (:func:`_whole`, any length) whose lines add up to the charge."""
    if not _whole(charge):
        return False
    rest = int(charge)
    for value in lines:
        if not _whole(value):
            return False
        rest -= int(value)
    return rest == 0


# the claim rules ClaimTracker.passes decides
_PASSES = frozenset({"claim_balance", "claim_requires", "service_not_after_creation",
                     "born_before_service"})


class _Claim:
    """What the claim rules need of the open claim, collected as its segments pass."""

    __slots__ = ("ordinal", "position", "loop_count", "charge", "frequency", "lines", "refs",
                 "first", "last")

    def __init__(self, ordinal: int, position: int, loop_count: int, charge: str,
                 frequency: str) -> None:
        self.ordinal = ordinal
        self.position = position
        self.loop_count = loop_count
        self.charge = charge
        self.frequency = frequency
        self.lines: list[str] = []  # the service lines' charges
        self.refs: set[str] = set()  # the 2300 REF01 qualifiers
        self.first = self.last = ""  # earliest and latest service date ("": none)


class ClaimTracker:
    """The claim tracking of a :class:`SnipChecker`: what its claim rules need of the open
    claim, collected per segment id (``track_<id>``, called for every such segment, memoised
    or not), and the creation date and birth dates they compare with. ``end`` is called with
    each claim that ends (the checker's claim rules)."""

    def __init__(self, comp: str, end) -> None:
        self.comp = comp
        self.end = end
        self.created = ""
        self.birth: dict[str, str] = {}  # loop (2010BA/2010CA) -> DMG02
        self.claim: _Claim | None = None
        # the claim rules, for passes (SnipChecker sets them): quick, when each is one of
        # those passes decides; requires, the claim_requires rules' (values, qualifier)
        self.quick = False
        self.balance = self.not_after = self.born_before = False
        self.requires: list = []

    def end_claim(self) -> None:
        claim = self.claim
        if claim is not None:
            self.claim = None
            if not self.quick or not self.passes(claim):
                self.end(claim)

    def passes(self, claim: _Claim) -> bool:
        """True when no claim rule would report ``claim`` (the decisions of the checker's
        ``_claim_*`` methods, typed here: most claims need no call to them); False when one
        may (then they judge it)."""
        if self.balance and claim.lines:  # whole amounts that add up (the usual)
            # (amounts of at most 15 digits summed as machine integers when compiled; a sum
            # that runs past -10**18 is not followed further: it cannot wrap around)
            rest = _small_whole(claim.charge)
            if rest >= 0:
                floor = -_SUM_FLOOR
                for value in claim.lines:
                    amount = _small_whole(value)
                    if amount < 0 or rest < floor:
                        rest = -1
                        break
                    rest -= amount
                if rest != 0:
                    return False
            elif not _balanced(claim.charge, claim.lines):
                return False
        for values, qualifier in self.requires:
            if claim.frequency in values and qualifier not in claim.refs:
                return False
        if self.not_after:
            created = self.created
            if len(created) == 8 and claim.last > created:
                return False
        if self.born_before:
            birth = self.birth.get("2010CA") or self.birth.get("2010BA")
            if birth and len(birth) == 8 and claim.first and birth > claim.first:
                return False
        return True

    def track(self, kind, fields, node, ordinal, position, loop_counts) -> None:
        """``track_<id>`` for the segment id numbered ``kind`` in :data:`TRACK_IDS` (one
        call, typed, from the validator's memo path; 0: an id not followed)."""
        # (only track_CLM reads the position: the others get 0, no number made for them)
        if kind == 1:
            self.track_DTP(fields, node, ordinal, 0, loop_counts)
        elif kind == 2:
            self.track_SV1(fields, node, ordinal, 0, loop_counts)
        elif kind == 3:
            self.track_REF(fields, node, ordinal, 0, loop_counts)
        elif kind == 4:
            self.track_CLM(fields, node, ordinal, position, loop_counts)
        elif kind == 5:
            self.track_HL(fields, node, ordinal, 0, loop_counts)
        elif kind == 6:
            self.track_DMG(fields, node, ordinal, 0, loop_counts)
        elif kind == 7:
            self.track_SV2(fields, node, ordinal, 0, loop_counts)
        elif kind == 8:
            self.track_BHT(fields, node, ordinal, 0, loop_counts)

    def track_CLM(self, fields, node, ordinal, position, loop_counts, text="") -> None:
        if self.claim is not None:
            self.end_claim()
        charge = fields[2] if len(fields) > 2 else ""
        self.claim = _Claim(ordinal, position, loop_counts.get("2300", 0), charge,
                            _value(fields, 5, 3, self.comp))

    def track_HL(self, fields, node, ordinal, position, loop_counts, text="") -> None:
        if self.claim is not None:
            self.end_claim()
        level = fields[3] if len(fields) > 3 else ""
        if level == "20" or level == "22":
            self.birth = {}
        elif level == "23":
            self.birth.pop("2010CA", None)

    def track_BHT(self, fields, node, ordinal, position, loop_counts, text="") -> None:
        self.created = fields[4] if len(fields) > 4 else ""

    def track_DMG(self, fields, node, ordinal, position, loop_counts, text="") -> None:
        loop = node.parent.id if node.parent is not None else ""
        if (loop == "2010BA" or loop == "2010CA") and len(fields) > 2 and fields[1] == "D8":
            self.birth[loop] = fields[2]

    def track_SV1(self, fields, node, ordinal, position, loop_counts, text="") -> None:
        self._line_charge(fields, node, 2)  # SV102

    def track_SV2(self, fields, node, ordinal, position, loop_counts, text="") -> None:
        self._line_charge(fields, node, 3)  # SV203

    def _line_charge(self, fields, node, index) -> None:
        """A service line's charge (element ``index``) noted for the open claim's balance."""
        claim = self.claim
        if claim is not None:
            parent = node.parent
            if parent is not None and parent.id == "2400":
                claim.lines.append(fields[index] if len(fields) > index else "")

    def track_REF(self, fields, node, ordinal, position, loop_counts, text="") -> None:
        claim = self.claim
        if claim is not None and node.parent is not None and \
                node.parent.id == "2300" and len(fields) > 1:
            claim.refs.add(fields[1])

    def track_DTP(self, fields, node, ordinal, position, loop_counts, text="") -> None:
        claim = self.claim
        if claim is not None and len(fields) > 3 and fields[1] == "472":
            span = _dates(fields[2], fields[3])
            if span:
                for day in span:
                    if not claim.first or day < claim.first:
                        claim.first = day
                    if day > claim.last:
                        claim.last = day


class SnipChecker:
    """Feed it (segment, map node, position, where) for one transaction set's guide."""

    def __init__(self, report, guide: str, receiver: str, comp_sep: str) -> None:
        self.report = report  # report(rule_id, node, tail, ordinal, position, context, **values)
        self.comp = comp_sep
        rules = []
        for rule in snip_rules():
            guides = rule.spec.get("guides")
            if guides and guide not in guides:
                continue
            partner = rule.spec.get("partner")
            if partner and receiver != _partner_receiver(partner):
                continue
            rules.append(rule)
        self.by_segment: dict[str, list[SnipRule]] = {}
        self.claim_rules = [r for r in rules if r.check in (
            "claim_balance", "claim_requires", "service_not_after_creation",
            "born_before_service")]
        for rule in rules:
            if "segment" in rule.spec:
                self.by_segment.setdefault(rule.spec["segment"], []).append(rule)
        self._claim_checks = [(getattr(self, "_" + rule.check), rule)
                              for rule in self.claim_rules]
        self.enabled = bool(rules)
        self.tracker = tracker = ClaimTracker(comp_sep, self._judge)
        checks = [rule.check for rule in self.claim_rules]
        tracker.quick = all(check in _PASSES for check in checks)
        tracker.balance = "claim_balance" in checks
        tracker.not_after = "service_not_after_creation" in checks
        tracker.born_before = "born_before_service" in checks
        tracker.requires = [(rule.spec["when"]["values"], rule.spec["requires"]["qualifier"])
                            for rule in self.claim_rules if rule.check == "claim_requires"]
        self.found = 0  # element findings so far
        # per segment id, the one function that does all this checker does with it (claim
        # tracking, then the element rules): segment ids no rule needs cost nothing
        tracked = _TRACKED if self.claim_rules else frozenset()
        self.handlers = {seg_id: self._handler(seg_id, seg_id in tracked,
                                               self.by_segment.get(seg_id, ()))
                         for seg_id in frozenset(self.by_segment) | tracked}
        # per segment id, its element rules alone (the validator calls the claim tracking
        # first, through ClaimTracker.track, then these: what the handlers do, as two calls)
        self.rule_handlers = {seg_id: self._handler(seg_id, False, rules)
                              for seg_id, rules in self.by_segment.items()}
        # per segment id, its claim tracking alone: what is left to do with a segment whose
        # text already passed every element rule at the same map node (the validator's memo)
        self.tracks = {seg_id: getattr(self.tracker, "track_" + seg_id) for seg_id in tracked}
        # the segment ids this checker looks at (the validator skips calling it for others)
        self.interesting = frozenset(self.handlers)

    # -- feeding -----------------------------------------------------------------------------
    def segment(self, fields: list[str], node, ordinal: int, position: int,
                loop_counts: dict[str, int], text: str = "") -> None:
        """One segment and the map node it matched; ``loop_counts``: occurrences of each loop
        id so far in the transaction set (the claim rules number claims by their 2300)."""
        handler = self.handlers.get(fields[0])
        if handler is not None:
            handler(fields, node, ordinal, position, loop_counts, text)

    def _handler(self, seg_id: str, tracked: bool, rules):
        """The one function for ``seg_id``: claim tracking, then the element rules. It
        returns True when an element rule reported a finding. (No cache of texts that passed:
        the validator calls it only for a text its memo does not hold, and the memo holds
        only texts that passed these rules at the same map node.)"""
        track = getattr(self.tracker, "track_" + seg_id) if tracked else None
        checks = tuple(self._rule_check(rule) for rule in rules)
        if not checks:
            return track  # claim tracking only
        by_loop = any(rule.spec.get("loop") for rule in rules)  # else no rule reads the loop

        def handler(fields, node, ordinal, position, loop_counts, text):
            if track is not None:
                track(fields, node, ordinal, position, loop_counts)
            loop = ""
            if by_loop:
                parent = node.parent
                loop = parent.id if parent is not None else ""
            bad = False
            for check in checks:
                if check(fields, node, ordinal, position, loop):
                    bad = True
            return bad

        return handler

    def start_transaction(self) -> None:
        """A new transaction set: nothing carried over (a claim of a set left without SE is
        dropped, as it always was)."""
        tracker = self.tracker
        tracker.claim = None
        tracker.birth = {}
        tracker.created = ""

    def end_transaction(self) -> None:
        tracker = self.tracker
        tracker.end_claim()
        tracker.birth = {}
        tracker.created = ""

    @property
    def claim(self) -> _Claim | None:
        return self.tracker.claim

    @property
    def created(self) -> str:
        return self.tracker.created

    @property
    def birth(self) -> dict[str, str]:
        return self.tracker.birth

    def close(self) -> None:
        """Drop the handlers and the tracker's call back (they refer back to this checker:
        without this the memory waits for the cyclic garbage collector)."""
        self.handlers = {}
        self.rule_handlers = {}
        self.tracks = {}
        self._claim_checks = []
        self.tracker.end = None

    # -- element rules ----------------------------------------------------------------------
    def _rule_check(self, rule: SnipRule):
        """One element rule as a function (fields, node, ordinal, position, loop) -> True
        when it reported a finding."""
        spec = rule.spec
        only_loop = spec.get("loop")
        holds = _condition(rule.when, rule.unless, self.comp)
        comp = self.comp
        report = self._report

        if rule.check == "icd10cm":
            qualifiers = spec["qualifiers"]

            def icd10(fields, node, ordinal, position, loop) -> bool:
                if only_loop and only_loop != loop or holds is not None and not holds(fields):
                    return False
                bad = False
                for index in range(1, len(fields)):
                    parts = fields[index].split(comp)
                    if len(parts) < 2 or parts[0] not in qualifiers or not parts[1]:
                        continue
                    code = parts[1]
                    why = None
                    if "." in code:
                        why = "sent with its decimal point"
                    elif not _ICD10.fullmatch(code):
                        why = "not the shape letter, digit, 1 to 5 letters or digits"
                    if why:
                        report(rule, node, ordinal, position, index, 2, why=why)
                        bad = True
                return bad

            return icd10
        index, component = rule.element
        if rule.check == "npi":
            ok = _npi_ok
        elif rule.check == "pattern":
            ok = rule.pattern.fullmatch
        else:
            ok = _always

        def element(fields, node, ordinal, position, loop) -> bool:
            if only_loop and only_loop != loop or holds is not None and not holds(fields):
                return False
            if component:
                value = _value(fields, index, component, comp)
            else:
                value = fields[index] if index < len(fields) else ""
            if not value:
                return False  # a missing element is the implementation guide's (SNIP 2)
            if not ok(value):
                report(rule, node, ordinal, position, index, component)
                return True
            return False

        return element

    def _report(self, rule, node, ordinal, position, index, component, **values) -> None:
        seg_id = node.id
        label = f"{seg_id}{index:02d}" + (f"-{component}" if component else "")
        element = node.elements[index - 1] if index - 1 < len(node.elements) else None
        data_element = ""
        if element is not None:
            if component and element.is_composite() and component <= len(element.children):
                data_element = element.children[component - 1].data_ele or ""
            else:
                data_element = element.data_ele or ""
        context = {"segment_id": seg_id, "position": position, "element": index,
                   "component": component or None, "data_element": data_element}
        self.found += 1
        self.report(rule.id, node, label, ordinal, context, element=label, **values)

    # -- claim rules -------------------------------------------------------------------------
    def _judge(self, claim: _Claim) -> None:
        """A claim ended (:class:`ClaimTracker`): the claim rules on it."""
        for check, rule in self._claim_checks:
            check(rule, claim)

    def _claim_report(self, rule, claim: _Claim, element: int, component: int | None,
                      data_element: str, **values) -> None:
        label = f"CLM{element:02d}" + (f"-{component}" if component else "")
        context = {"segment_id": "CLM", "position": claim.position, "element": element,
                   "component": component, "data_element": data_element}
        self.report(rule.id, ("2300", claim.loop_count), label, claim.ordinal, context,
                    element=label, **values)

    def _claim_balance(self, rule, claim: _Claim) -> None:
        lines = claim.lines
        if lines and _digits(claim.charge):  # whole amounts (the usual): exact in int
            rest = int(claim.charge)
            for value in lines:
                if not _digits(value):
                    break
                rest -= int(value)
            else:
                if rest == 0:
                    return  # balanced (a difference is reported below, as always)
        total = _money(claim.charge)
        lines = [_money(v) for v in claim.lines]
        if total is None or not lines or any(v is None for v in lines):
            return  # unreadable amounts are SNIP 2 findings already
        expected = sum(lines, Decimal(0))
        if total != expected:
            self._claim_report(rule, claim, 2, None, "782", found=claim.charge,
                               expected=_plain(expected))

    def _claim_requires(self, rule, claim: _Claim) -> None:
        if claim.frequency in rule.spec["when"]["values"] and \
                rule.spec["requires"]["qualifier"] not in claim.refs:
            self._claim_report(rule, claim, 5, 3, "1325", found=claim.frequency)

    def _service_not_after_creation(self, rule, claim: _Claim) -> None:
        created = self.tracker.created
        if len(created) != 8:
            return
        if claim.last > created:  # (the latest of the dates after it)
            self._claim_report(rule, claim, 1, None, "1028", found=claim.last,
                               expected=created)

    def _born_before_service(self, rule, claim: _Claim) -> None:
        births = self.tracker.birth
        birth = births.get("2010CA") or births.get("2010BA")
        first = claim.first
        if not birth or len(birth) != 8 or not first:
            return
        if birth > first:
            self._claim_report(rule, claim, 1, None, "1028", found=birth, expected=first)


def _plain(value: Decimal) -> str:
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
