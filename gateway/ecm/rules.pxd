# Cython declarations for the compiled build of rules.py (an "augmenting" .pxd: the .py stays the
# pure-Python source and fallback; keep the two in step). EncounterRules and _Batch become
# extension types whose attributes are C struct fields instead of instance-dict entries or
# slots: the rules read the engine's memos and the batch's registry reads several times a line,
# and each such read was a dictionary / type look-up (≈ 12% of the worker's samples). Measured
# (one pass of check over the 10k-claim bench file at batch 300, callgrind): _check_one 489M ->
# 442M instructions, the whole pass with its registry reads 905.7M -> 862.1M. Every
# attribute stays ``public``: gateway/ecm/pipelined.py sets _worker, registry and the
# _STATE_FIELDS, tests set audience and _for_submitter. EncounterRules keeps a ``__dict__``
# for what is set on an instance that is not a declared attribute: the tests replace ``check``
# and ``_check`` on an engine (a spy, a worker failing); the class itself cannot be patched
# (``EncounterRules.check = ...`` is a TypeError on an extension type: wrap an instance). The
# internal steps are ``cdef``: C calls, not reachable from Python (nothing outside the module
# calls them).
cimport cython
from cpython.object cimport PyObject
from cpython.ref cimport Py_INCREF, Py_XDECREF

cdef extern from "Python.h":
    ctypedef struct PyMemberDef:
        int type
        Py_ssize_t offset
    ctypedef struct PyMemberDescrObject:
        PyMemberDef *d_member
    int T_OBJECT_EX


# A Finding's slots written in place (rules.py _finding): the offsets of a slotted class's
# slots, read from their member descriptors (None unless each of ``names`` is a plain object
# slot of ``cls`` itself), and a fresh instance (``new(cls)``) with its slots set at them, as a
# slot's setter sets a fresh instance's (a reference taken, the empty slot's NULL left).
cdef inline object _slot_offsets(type cls, tuple names):
    cdef list offsets = []
    for name in names:
        descriptor = cls.__dict__.get(name)
        if type(descriptor).__name__ != "member_descriptor":
            return None
        if (<PyMemberDescrObject*>descriptor).d_member.type != T_OBJECT_EX:
            return None
        offsets.append((<PyMemberDescrObject*>descriptor).d_member.offset)
    return tuple(offsets)


cdef inline void _put_slot(object obj, Py_ssize_t offset, object value) noexcept:
    cdef PyObject** slot = <PyObject**>((<char*><PyObject*>obj) + offset)
    cdef PyObject* old = slot[0]
    Py_INCREF(value)
    slot[0] = <PyObject*>value
    Py_XDECREF(old)


cdef inline object _filled(object new, type cls, tuple offsets, object rule, object severity,
                           object location, object message, object source, object segment,
                           object context, object plan_rule, object plan_message):
    cdef object obj = new(cls)
    _put_slot(obj, offsets[0], rule)
    _put_slot(obj, offsets[1], severity)
    _put_slot(obj, offsets[2], location)
    _put_slot(obj, offsets[3], message)
    _put_slot(obj, offsets[4], source)
    _put_slot(obj, offsets[5], segment)
    _put_slot(obj, offsets[6], context)
    _put_slot(obj, offsets[7], plan_rule)
    _put_slot(obj, offsets[8], plan_message)
    return obj


cdef class _Batch:
    # (a Snapshot's fields as they are: defaultdicts, not exactly dicts)
    cdef public object assignments, enrolments, cs, events, history_keys, first_ecm
    cdef public set history_cins
    cdef public dict covering


# module functions the rules call once a claim, line or finding: C calls (cpdef: still
# importable, cin_is_valid by gateway/fhir/mapping/engine.py; the pass above 862.1M -> 853.1M)
cpdef bint cin_is_valid(str cin) except -1
cpdef _day_number(day)
cpdef str _first_day(lines)
cpdef located(template, str where, ordinal)
cdef object _finding(object rule, object severity, object location, object message,
                     object source, object segment, object context, object plan_rule,
                     object plan_message)
cdef object _SLOT_OFFSETS
cdef tuple _line_place(object place, Py_ssize_t index)
cdef object _covering(_Batch ctx, str cin, object day)


cdef class EncounterRules:
    cdef dict __dict__
    cdef public object audience, submitter, registry, catalogue, codes, presumptive
    cdef public dict loaded
    cdef public object latest_history, _ecm_codes, _evidence_pofs
    cdef public tuple _events, _event_index
    # (any mapping with get / item assignment: use_seen_index)
    cdef public object _seen_lines
    cdef public bint _seen_own, _for_submitter
    cdef public dict _units_per_day, _first_presumptive, _presumptive_days
    cdef public set _pof_checked
    cdef public dict _code_memo, _place_memo, _units_memo, _modifier_memo, _provider_memo
    cdef public dict _providers, _program_memo, _messages, _shown, _cin_memo, _line_memo
    cdef public dict _age_ranges, _day_numbers, _age_verdicts, _evidence_memo
    cdef public object batch_size, _worker

    @cython.locals(told=tuple, i=Py_ssize_t)
    cdef _put(self, list out, str rule_id, str where, object ordinal, dict values,
              bint restricted=*, bint anywhere=*)
    cdef _put_line(self, list out, str rule_id, object place, Py_ssize_t index, dict values,
                   bint restricted=*)

    cdef tuple _code_outcome(self, str code, tuple modifiers, object day)
    cdef tuple _units(self, str text)
    cdef tuple _provider(self, str npi, object day)
    cdef _check_provider(self, list out, str npi, object day, object service, str program,
                         object place, Py_ssize_t index)
    cdef _program(self, str program, object day, str county)
    @cython.locals(findings=list)
    cdef tuple _line_info(self, tuple key)

    @cython.locals(cin_memo=dict, line_memo=dict, provider_memo=dict, day_numbers=dict,
                   pof_checked=set, units_per_day=dict, loaded=dict, evidence_memo=dict,
                   age_ranges=dict, own_seen=dict, own_index=bint, for_submitter=bint,
                   member_known=bint, has_providers=bint, index=Py_ssize_t, covering=list,
                   here=list, ecm=list, unassigned_days=list, info=tuple, key=tuple,
                   tail=tuple, known=tuple)
    cdef list _check_one(self, tuple v, object place, _Batch ctx)

    # (the ECM-AGE-001 findings' ages too, not codesets.age_on: the pass 853.2M -> 842.8M)
    @cython.locals(day_numbers=dict)
    cdef _age(self, birth, day)
    cdef list _here(self, tuple view, list covering)
    cdef _check_ages(self, list out, list ecm, object place, bint stranger)
    cdef tuple _unassigned(self, tuple view, list days, _Batch ctx)
    cdef _arrangement(self, str payer)
    cdef _presumptive_firsts(self, list views, _Batch ctx)
    cdef _check_cs_authorization(self, list out, tuple v, object service, object place,
                                 Py_ssize_t index, _Batch ctx, object day, bint stranger)
    cdef _check_programs(self, list out, object enrolments, object place, Py_ssize_t index,
                         object day, bint stranger=*)
