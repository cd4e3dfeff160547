"""Seeded generator of defective 837Ps for the differential tests (native engine vs pyx12).

``mutants(seed, count)`` yields ``(description, bytes)``: a clean synthetic 837P with one to
three random defects each — wrong code values, values too long or too short, bad characters,
bad dates, missing and duplicated segments, unknown segments, extra elements and components,
emptied required elements, HL numbering, loops repeated beyond their maximum. Deterministic for
a seed, so a failure names the seed and index that reproduce it.
"""

from __future__ import annotations

import random
from pathlib import Path

BASE = (Path(__file__).resolve().parent.parent / "fixtures" / "837p" / "ecm-clean.x12")


def _segments(text: str) -> tuple[list[str], str]:
    parts = text.split("~")
    trailer = parts.pop() if not parts[-1].strip() else ""
    return [p.strip("\r\n") for p in parts], trailer


def _join(segs: list[str]) -> bytes:
    """Segments back to bytes with SE01 recounted (so the envelope stays right and only the
    implementation-guide defect is under test)."""
    out, count = [], 0
    for seg in segs:
        if seg.startswith("ST*"):
            count = 1
        elif seg.startswith("SE*"):
            count += 1
            fields = seg.split("*")
            fields[1] = str(count)
            seg = "*".join(fields)
        elif count:
            count += 1
        out.append(seg)
    return ("~".join(out) + "~").encode()


def _body_range(segs: list[str]) -> range:
    st = next(i for i, s in enumerate(segs) if s.startswith("ST*"))
    se = next(i for i, s in enumerate(segs) if s.startswith("SE*"))
    return range(st + 1, se)


def _mutate(rng: random.Random, segs: list[str]) -> str:
    body = _body_range(segs)
    i = rng.choice(body)
    fields = segs[i].split("*")
    kind = rng.choice(["code", "long", "short", "char", "date", "drop", "dup", "unknown",
                       "extra_element", "extra_component", "empty", "hl", "repeat_loop",
                       "swap", "trailing"])
    if kind == "drop":
        del segs[i]
        return f"drop #{i}"
    if kind == "dup":
        segs.insert(i, segs[i])
        return f"dup #{i}"
    if kind == "swap" and i + 1 in body:
        segs[i], segs[i + 1] = segs[i + 1], segs[i]
        return f"swap #{i}"
    if kind == "unknown":
        segs.insert(i, rng.choice(["ZZZ*1", "XX1*A*B", "NTE*ADD*NOTE", "K3*TEXT", "QTY*PT*1"]))
        return f"unknown at #{i}"
    if kind == "hl":
        for j in body:
            if segs[j].startswith("HL*"):
                f = segs[j].split("*")
                if len(f) < 2 or not f[1].isdigit():  # (an earlier mutation changed HL01)
                    continue
                f[1] = str(int(f[1]) + rng.choice([1, 5]))
                segs[j] = "*".join(f)
                return f"hl #{j}"
    if kind == "repeat_loop":
        starts = [j for j in body if segs[j].startswith("LX*")]
        if starts:
            j = rng.choice(starts)
            end = j + 1
            while end in body and not segs[end].startswith(("LX*", "CLM*", "HL*", "SE*")):
                end += 1
            block = segs[j:end]
            times = rng.choice([2, 51])
            segs[j:end] = block * times
            return f"repeat LX block #{j} x{times}"
    if kind == "trailing":
        segs[i] = segs[i] + "*"
        return f"trailing separator #{i}"
    if len(fields) < 2:
        return "none"
    k = rng.randrange(1, len(fields))
    value = fields[k]
    if kind == "code":
        fields[k] = rng.choice(["ZZ", "9Z", "X", "00", "Q1"])
    elif kind == "long":
        fields[k] = value + "A" * rng.choice([1, 5, 40, 90])
    elif kind == "short":
        fields[k] = value[:1]
    elif kind == "char":
        fields[k] = value[:-1] + rng.choice(["\x07", "\u00e9", "`", "{"]) if value else "|"
    elif kind == "date":
        fields[k] = rng.choice(["20261340", "20260230", "2026010", "20250229", "1799010"])
    elif kind == "extra_element":
        fields.append(rng.choice(["X", "1", ""]))
    elif kind == "extra_component":
        fields[k] = value + ":X"
    elif kind == "empty":
        fields[k] = ""
    segs[i] = "*".join(fields)
    return f"{kind} {fields[0]}{k:02d} #{i}"


def mutants(seed: int, count: int, base: Path = BASE):
    """``count`` defective files from ``seed``: (description, bytes)."""
    segs0, _ = _segments(base.read_text())
    rng = random.Random(seed)
    for index in range(count):
        segs = list(segs0)
        done = [_mutate(rng, segs) for _ in range(rng.choice([1, 1, 2, 3]))]
        yield f"seed {seed} #{index}: " + "; ".join(done), _join(segs)
