# Cython declarations for the compiled build of claims837.py (an "augmenting" .pxd: the .py
# stays the pure-Python source and fallback). ClaimCollector becomes an extension type whose
# attributes are C struct fields instead of instance-dict entries (every segment reads several);
# ``__dict__`` keeps any other attribute working as on a plain class. Segment is reader.pxd's
# extension type: the handlers' ``seg: Segment`` read its fields as struct members.
cimport cython

from gateway.x12.reader cimport Segment

cdef class _Level:
    cdef public str code
    cdef public object start, end
    cdef public dict data


cdef class ClaimCollector:
    cdef dict __dict__
    cdef public object d, on_claim, keep, submitters
    # (dicts, or None for _claim and _line: their items read and set without a method look-up)
    cdef public dict _envelope, _header, _claim, _line, _sv1, _hi
    cdef public object _tx
    cdef public _Level _billing, _subscriber
    cdef public object _claim_index, _in_837, _last, _nm1_role, _professional
    cdef public object _subscribers_in_st, _lines_in_st, _levels_known
    # the light reading (claims that only go to a report's counts)
    cdef public object _spans
    cdef public list _buf, _spans_ready
    cdef public object _spans_tx
    cdef public dict _dtp
    cdef public bint _replaying, _l_ok, _l_open, _l_plain, _l_date
    cdef public Py_ssize_t _l_diag, _l_lines, _l_lines_at

    cpdef feed_data(self, Segment seg)

    @cython.locals(f=list, buf=list)
    cdef bint _light(self, Segment seg, str seg_id, int kind) except -1

    # an SV1's / HI's reading, once per text (the full and the light reading share them)
    @cython.locals(parsed=dict)
    cdef dict _sv1_of(self, Segment seg)
    @cython.locals(found=tuple)
    cdef tuple _hi_of(self, Segment seg)

    # internal steps called from the handlers: C calls in the compiled build
    cdef _flush_claim(self)
    cdef _level_ends(self, ordinal)
    # (cpdef: RulesSpansCollector extends it)
    cpdef bint _light_done(self) except -1
    cdef _to_full(self)
    cdef _hand_spans(self)
    cdef bint _levels_readable(self, dict sub, dict billing) except -1
    cdef dict _address_target(self)

@cython.locals(ch=Py_UCS4, year=int, month=int, day=int, top=int)
cpdef bint _is_day(str text) except -1

# the ECM rules' rows of claims read light (issue 14): an extension type too, so that its
# _light_done (once a claim) is a C call, its attributes struct fields
cdef class RulesSpansCollector(ClaimCollector):
    cdef public list rows
    cdef public Py_ssize_t size
    cdef public object full
    cdef public tuple separators
    cdef public bint as_text
    cdef public dict sv1_parts, line_dates

    @cython.locals(buf=list, rows=list)
    cpdef bint _light_done(self) except -1

@cython.locals(c=RulesSpansCollector, seg=Segment, dtp=Segment, f=list, line=list, lines=list,
               sub=dict, billing=dict, parsed=dict, st_index=Py_ssize_t, other_payer=bint,
               i=Py_ssize_t, seg_id=str, parts=dict, part=tuple, known=dict, dates=tuple,
               first=Py_UCS4, pos=str, at=Py_ssize_t)
cpdef tuple light_claim_view(RulesSpansCollector collector, list buf, Py_ssize_t lines_before)

@cython.locals(c=RulesSpansCollector, seg=Segment, last=Segment, sub=dict, billing=dict,
               n=Py_ssize_t, i=Py_ssize_t, texts=list, raw=str, letter=Py_UCS4, terminator=str)
cpdef tuple light_claim_text(RulesSpansCollector collector, list buf, object lines_before)

@cython.locals(text=str, tokens=list, f=list, meaning=tuple, raw=str, part=tuple,
               dates=tuple, view_lines=list, refs=list, i=Py_ssize_t, kind=int,
               contiguous=bint, open_line=bint, other_payer=bint, separators=tuple,
               element=str, component=str, terminator=str)
cpdef tuple light_claim_row(tuple row, dict meanings)

@cython.locals(entries=list, row=tuple)
cpdef list rule_entries(list batch, object place, dict meanings)

cdef tuple _view_line(object number, tuple part, tuple dates, object rendering)

@cython.locals(n=Py_ssize_t, i=Py_ssize_t)
cpdef bint ranges_ordered(const int[:] ranges) except -1
