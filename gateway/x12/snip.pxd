# Cython declarations for snip.py (augmenting .pxd: the .py stays the pure-Python fallback;
# `make compile` builds the typed extension). Keep in step with snip.py. The claim tracking
# runs for every tracked segment, memoised or not: its state is typed struct fields here.
cimport cython


cdef class _Claim:
    cdef public object ordinal, position, loop_count
    cdef public str charge, frequency, first, last
    cdef public list lines
    cdef public set refs


cdef class ClaimTracker:
    cdef public str comp, created
    cdef public dict birth
    cdef public _Claim claim
    cdef public object end
    cdef public bint quick, balance, not_after, born_before
    cdef public list requires

    cpdef end_claim(self)

    @cython.locals(value=str, created=str, birth=str, rest='long long', amount='long long',
                   floor='long long')
    cpdef bint passes(self, _Claim claim) except -1

    cpdef track(self, int kind, list fields, node, ordinal, Py_ssize_t position,
                dict loop_counts)

    @cython.locals(charge=str)
    cpdef track_CLM(self, list fields, node, ordinal, position, dict loop_counts, text=*)

    @cython.locals(level=str)
    cpdef track_HL(self, list fields, node, ordinal, position, dict loop_counts, text=*)

    cpdef track_BHT(self, list fields, node, ordinal, position, dict loop_counts, text=*)

    @cython.locals(loop=str)
    cpdef track_DMG(self, list fields, node, ordinal, position, dict loop_counts, text=*)

    cpdef track_SV1(self, list fields, node, ordinal, position, dict loop_counts, text=*)

    cpdef track_SV2(self, list fields, node, ordinal, position, dict loop_counts, text=*)

    @cython.locals(claim=_Claim)
    cdef _line_charge(self, list fields, node, Py_ssize_t index)

    @cython.locals(claim=_Claim)
    cpdef track_REF(self, list fields, node, ordinal, position, dict loop_counts, text=*)

    @cython.locals(claim=_Claim, span=tuple, day=str)
    cpdef track_DTP(self, list fields, node, ordinal, position, dict loop_counts, text=*)


@cython.locals(ch=Py_UCS4)
cdef bint _whole(str text) except -1

@cython.locals(ch=Py_UCS4, value='long long')
cdef long long _small_whole(str text) except -2

cpdef str _value(list fields, Py_ssize_t position, Py_ssize_t component, str comp_sep)
