# Cython declarations for reader.py (augmenting .pxd: the .py stays the pure-Python fallback;
# `make compile` builds the typed extension). Keep in step with reader.py.

cdef class Segment:
    cdef public Py_ssize_t ordinal
    cdef public list fields
    cdef public str raw
