"""The loop/segment state machine.

Given the map node of the previous segment and a new segment, :func:`trace` finds the node the
segment belongs to, the loops left and entered on the way, and the list of count-dependent
checks met on the way (required segments and loops skipped, usage, repeats). The search follows
X12's ordering rules as pyx12's walker does (scan the current loop from the current position,
then each enclosing loop; a loop is entered by its first segment, wrappers by any child loop),
so both engines land on the same node. Its outcome depends only on the start node, the segment
id and the qualifier values that distinguish look-alike segments, so it is computed once per
such key and cached as a *plan*; :class:`Counters` replays a plan's operations against the
per-node counters of the current transaction set. A plan replay costs a few list operations.
"""

from __future__ import annotations

from array import array

from gateway.x12.engine.maps import Loop, Root, Segment

# plan operations
MISS_SEG = 0  # (op, segment): required segment skipped (error if never seen in this loop)
MISS_LOOP = 1  # (op, loop, first segment): required loop skipped
SEG = 2  # (op, segment): segment matched: count, usage/repeat check, flush missing
ENTER = 3  # (op, loop, first segment): loop entered by its first segment
NOT_FOUND = 4  # (op, start node): the segment fits nowhere from here


def qualifier(fields: list[str], position: tuple[int, int], comp_sep: str) -> str | None:
    element, component = position
    if element >= len(fields):
        return None
    value = fields[element]
    if component:
        parts = value.split(comp_sep)
        return parts[component - 1] if component <= len(parts) else None
    return value


def is_match(node: Segment, seg_id: str, values: dict) -> bool:
    if node.id != seg_id:
        return False
    key = node.key
    if key is None:
        return True
    return values.get(key[:2]) in key[2]


def _parent_loop(node):
    if node.is_root:
        return node
    parent = node.parent
    while not (parent.is_loop or parent.is_root):
        parent = parent.parent
    return parent


class _Tracer:
    def __init__(self, seg_id: str, values: dict) -> None:
        self.seg_id = seg_id
        self.values = values
        self.ops: list[tuple] = []

    def match(self, node) -> bool:
        return is_match(node, self.seg_id, self.values)

    def is_loop_match(self, loop: Loop) -> bool:
        if not loop.children:
            return False
        first = loop.first
        if first.is_loop:
            return any(c.is_loop and self.is_loop_match(c) for c in loop.children)
        if self.match(first):
            return True
        if loop.usage == "R":
            self.ops.append((MISS_LOOP, loop, first))
        return False

    def goto(self, loop: Loop):
        first = loop.first if loop.first is not None and loop.first.is_segment else None
        if first is not None and self.match(first):
            self.ops.append((ENTER, loop, first))
            return first, [loop]
        for child in loop.children:
            if not child.is_loop:
                continue
            seg, push = self.goto(child)
            if seg is not None:
                return seg, [loop, *push]
        return None, []

    def scan(self, node, node_pos: int, orig, pops: list):
        for pos, group in node.groups:
            if pos < node_pos:
                continue
            for child in group:
                if child.is_segment:
                    if self.match(child):
                        if node.is_loop and self.is_loop_match(node):
                            seg, push = self.goto(node)
                            orig_loop = orig if (orig.is_loop or orig.is_root) else \
                                _parent_loop(orig)
                            if node is orig_loop:
                                return seg, [node], [node]
                            return seg, pops, push
                        self.ops.append((SEG, child))
                        return child, pops, []
                    if child.usage == "R":
                        self.ops.append((MISS_SEG, child))
                elif child.is_loop:
                    if self.is_loop_match(child):
                        seg, push = self.goto(child)
                        return seg, pops, push
        return None

    def walk(self, start):
        pops: list = []
        node_pos = start.pos
        node = start if (start.is_loop or start.is_root) else _parent_loop(start)
        while True:
            found = self.scan(node, node_pos, start, pops)
            if found is not None:
                return found
            if node.is_root:
                self.ops.append((NOT_FOUND, start))
                return None, [], []
            node_pos = node.pos
            pops.append(node)
            node = _parent_loop(node)


class Plan:
    __slots__ = ("node", "pops", "pushes", "ops", "simple", "candidates", "checks", "final",
                 "limit", "entry")

    def __init__(self, node, pops, pushes, ops, candidates=()) -> None:
        self.node = node
        self.pops = tuple(pops)
        self.pushes = tuple(pushes)
        self.ops = tuple(ops)
        # the common case: one matched segment, nothing skipped
        self.simple = len(ops) == 1 and ops[0][0] == SEG
        # every skip check comes before the one final SEG/ENTER op: when each required node
        # skipped was already seen (``checks``: their counter indexes), only ``final`` acts
        last = ops[-1] if ops else None
        if last is not None and last[0] in (SEG, ENTER) and all(
                op[0] in (MISS_SEG, MISS_LOOP) for op in ops[:-1]):
            self.final = last
            self.checks = tuple(op[1].index for op in ops[:-1])
        else:
            self.final = None
            self.checks = ()
        # what the validator's inline replay needs once every skipped required node was seen:
        # ``limit`` the repeat limit of a matched segment (not "Not Used"), or ``entry`` the
        # loop entered by its first segment (not "Not Used"); 0 / None otherwise
        self.limit = 0
        self.entry = None
        final = self.final
        if final is not None and final[0] == SEG and final[1] is node and \
                final[1].usage != "N" and not self.pushes:
            self.limit = node.max_repeat
        elif final is not None and final[0] == ENTER and final[2] is node and \
                final[1].usage != "N" and self.pushes and self.pushes[-1] is final[1]:
            self.entry = final[1]
        # look-alike segments at the matched position that fit the same key (tried in order)
        self.candidates = tuple(candidates)


def trace(start, seg_id: str, values: dict) -> Plan:
    tracer = _Tracer(seg_id, values)
    node, pops, pushes = tracer.walk(start)
    candidates = ()
    if node is not None and node.twins and tracer.ops and tracer.ops[-1][0] == SEG:
        found = [node] + [t for t in node.twins if is_match(t, seg_id, values)]
        candidates = found if len(found) > 1 else ()
    return Plan(node, pops, pushes, tracer.ops, candidates)


class Counters:
    """Per-node occurrence counts within the current structure, pyx12's NodeCounter semantics
    (a loop entry clears the counts of everything below it) on a flat array of machine
    integers (a loop entry's reset is one block copy)."""

    __slots__ = ("counts", "zeros")

    def __init__(self, root: Root) -> None:
        self.counts = array("l", [0]) * len(root.nodes)
        self.zeros = array("l", [0]) * len(root.nodes)

    def reset_below(self, node) -> None:
        lo, hi = node.index + 1, node.end + 1
        if hi > lo:
            self.counts[lo:hi] = self.zeros[lo:hi]

    def replay(self, plan: Plan, chosen: Segment | None, errors: list) -> None:
        """Apply a plan; append (code, node or None) errors in pyx12's order. ``chosen``
        replaces the plan's matched segment when a look-alike fitted better."""
        counts = self.counts
        final = plan.final
        if final is not None:
            for index in plan.checks:
                if counts[index] < 1:
                    break
            else:  # nothing required was skipped: only the final op acts
                if final[0] == SEG:
                    node = chosen or final[1]
                    counts[node.index] += 1
                    if node.usage == "N":
                        errors.append(("2", None, node))
                    elif counts[node.index] > node.max_repeat:
                        errors.append(("5", node, node))
                    return
                loop, first = final[1], final[2]
                if loop.usage == "N":
                    errors.append(("2", None, loop))
                else:
                    lo, hi = loop.index + 1, loop.end + 1
                    if hi > lo:
                        counts[lo:hi] = self.zeros[lo:hi]
                    counts[loop.index] += 1
                    if counts[loop.index] > loop.max_repeat:
                        errors.append(("4", loop, loop))
                counts[first.index] += 1
                return
        missing: list = []
        for op in plan.ops:
            kind = op[0]
            if kind == MISS_SEG:
                if counts[op[1].index] < 1:
                    missing.append(op[1])
            elif kind == MISS_LOOP:
                if counts[op[1].index] < 1:
                    missing.append(op[2])
            elif kind == SEG:
                node = chosen or op[1]
                counts[node.index] += 1
                if node.usage == "N":
                    errors.append(("2", None, node))
                elif counts[node.index] > node.max_repeat:
                    errors.append(("5", node, node))
                missing = [m for m in missing if m is not node]
                keep = []
                for m in missing:
                    if m.pos != node.pos:
                        errors.append(("3", m, m))
                    else:
                        keep.append(m)
                missing = keep
            elif kind == ENTER:
                loop, first = op[1], op[2]
                if loop.usage == "N":
                    errors.append(("2", None, loop))
                else:
                    self.reset_below(loop)
                    counts[loop.index] += 1
                    if counts[loop.index] > loop.max_repeat:
                        errors.append(("4", loop, loop))
                counts[first.index] += 1
                for m in missing:
                    errors.append(("3", m, m))
                missing = []
            elif kind == NOT_FOUND:
                errors.append(("1", op[1], op[1]))
