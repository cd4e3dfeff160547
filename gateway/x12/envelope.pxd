# Cython declarations for envelope.py (augmenting .pxd: the .py stays the pure-Python
# fallback; `make compile` builds the typed extension). Keep in step with envelope.py.
cimport cython

from gateway.x12.reader cimport Segment as _Seg  # see _accelerate.CIMPORTS


@cython.locals(handlers=dict, pending=Py_ssize_t, last=Py_ssize_t, lines=Py_ssize_t,
               seg_id=str, seg=_Seg)
cpdef tuple feed_all(segments, envelope, tuple feeds, tuple data_feeds=*)
