# Cython declarations for jobs.py (augmenting .pxd: the .py stays the pure-Python fallback;
# `make compile` builds the typed extension). Keep in step with jobs.py. Segment is reader.pxd's
# extension type: range_segments sets its fields as struct members (see _accelerate.CIMPORTS).
cimport cython

from gateway.x12.reader cimport Segment


@cython.locals(data="const unsigned char *", lead_bytes="const unsigned char *",
               strip_of="const unsigned char *", starts_of="const unsigned char *",
               n_lead=Py_ssize_t, i=Py_ssize_t, k=Py_ssize_t, m=Py_ssize_t, e=Py_ssize_t,
               c="unsigned char")
cpdef Py_ssize_t _scan_regular(bytes buf, Py_ssize_t pos, Py_ssize_t limit, int term,
                               bytes lead, int sep, bytes strip, bytes starts)


@cython.locals(data="const unsigned char *", found=Py_ssize_t, i=Py_ssize_t)
cpdef Py_ssize_t _count_byte(bytes buf, Py_ssize_t start, Py_ssize_t end, unsigned char byte)
