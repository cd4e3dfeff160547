# Cython declarations for envelope.py (augmenting .pxd: the .py stays the pure-Python
# fallback; `make compile` builds the typed extension). Keep in step with envelope.py.
cimport cython


@cython.locals(handlers=dict, pending=Py_ssize_t, last=Py_ssize_t, lines=Py_ssize_t,
               seg_id=str)
cpdef tuple feed_all(segments, envelope, tuple feeds)
