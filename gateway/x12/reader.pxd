# Cython declarations for reader.py (augmenting .pxd: the .py stays the pure-Python fallback;
# `make compile` builds the typed extension). Keep in step with reader.py.

cdef class Segment:
    cdef public object ordinal  # an int made once, not boxed again at every read
    cdef public list fields
    cdef public str raw
