# Cython declarations for validator.py (augmenting .pxd: the .py stays the pure-Python
# fallback; `make compile` builds the typed extension). Keep in step with validator.py.
cimport cython

from gateway.x12.reader cimport Segment as _Seg  # see _accelerate.CIMPORTS
from gateway.x12.snip cimport ClaimTracker


cdef class _Step:
    cdef public object plan, node, entry
    cdef public tuple checks, push_ids, candidates
    cdef public Py_ssize_t index, limit, entry_index, entry_lo, entry_hi, entry_max, track


cdef class NativeGuideValidator:
    cdef public object snip, _snip, _snip_key, delimiters
    cdef public dict _snip_handlers  # (or None; a dict: get without a look-up)
    cdef public ClaimTracker _tracker  # (or None: a C call to its track)
    cdef public object envelope
    cdef public object catalogue, _guide, _root, _node, _counters, _segment, _pattern_key
    cdef public object _store
    cdef public list findings, _memo, _hl_stack
    cdef long[:] _counts, _zeros  # array('l') in pure Python
    cdef public dict _seg_keys, _loop_counts
    cdef public list _plans
    cdef public list _patterns
    cdef public str _guide_id, _icvn, _path, _sep, _comp
    cdef public Py_ssize_t _node_index, _memo_size, _hl_count, _lx_count, _position, _plan_count
    cdef public bint _active, _in_ts, _check_lx

    @cython.locals(fields=list, seg_id=str)
    cpdef feed(self, _Seg seg)

    @cython.locals(fields=list)
    cpdef feed_data(self, _Seg seg)

    @cython.locals(start=Py_ssize_t, step=_Step, snip=dict, memo=dict)
    cdef _data(self, _Seg seg, list fields, str seg_id)

    @cython.locals(index=Py_ssize_t, lo=Py_ssize_t, hi=Py_ssize_t,
                   loop_counts=dict, done=bint, errors=list)
    cdef _step(self, _Step step, chosen, seg)

    @cython.locals(memo=bint, start=Py_ssize_t, step=_Step, clean=bint, matched=bint,
                   found=tuple, rests=set, rest=str)
    cdef _data_segment(self, _Seg seg, list fields, str seg_id, str text)

    @cython.locals(found=list, seg_id=str)
    cdef list _reader_checks(self, _Seg seg, list fields)

    @cython.locals(positions=tuple, element=Py_ssize_t, step=_Step, index=Py_ssize_t)
    cdef _Step _plan(self, start, str seg_id, list fields)


@cython.locals(present='unsigned long long', one='unsigned long long',
               found='unsigned long long', mask='unsigned long long',
               first='unsigned long long', rest='unsigned long long', kind=int, i=Py_ssize_t,
               top=Py_ssize_t, note=tuple)
cpdef bint _notes_ok(tuple notes, list fields) except -1


cdef str _number(Py_ssize_t n)

cdef object _int(text)
