/* The fields of an answer head that llhttp has accepted, in one call (gateway.dataplane.upstream).

   llhttp (httptools) stays the judge of every byte: the upstream connection defines no
   on_header callback, so llhttp checks the head without calling Python once per header, and
   this reads the head it accepted from the raw bytes. It therefore sees only well-formed heads
   (CRLF line ends, token names, no obs-fold, no bare CR or LF) and reads them exactly as
   httptools' on_header would: the value without its leading SP / HTAB, trailing ones kept.

   response(raw, start, drop) -> (end, headers, fields, length)
     raw[start:] begins with the status line (CR / LF before it skipped, as llhttp does);
     end: the offset just past the blank line ending the head;
     headers: [(name, value), ...] as received;
     fields: the "Name: value\r\n" lines of the headers whose lower-cased name is not in drop
       (a frozenset), or None when a Connection header names others than keep-alive / close
       (the caller then strips those too: proxy.response_fields);
     length: int() of the first Content-Length value, or None.
   ValueError when raw holds no complete head from start. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <strings.h>

/* where "\r\n" begins in s[from:n], or -1 */
static Py_ssize_t find_crlf(const char *s, Py_ssize_t from, Py_ssize_t n)
{
    while (from < n) {
        const char *cr = memchr(s + from, '\r', (size_t)(n - from));
        if (cr == NULL)
            return -1;
        Py_ssize_t at = cr - s;
        if (at + 1 < n && s[at + 1] == '\n')
            return at;
        from = at + 1;
    }
    return -1;
}

static int plain_connection(const char *v, Py_ssize_t len)
{
    return (len == 10 && strncasecmp(v, "keep-alive", 10) == 0)
        || (len == 5 && strncasecmp(v, "close", 5) == 0);
}

/* a growing buffer for the kept lines */
typedef struct {
    char *buf;
    Py_ssize_t len, cap;
} Out;

static int out_add(Out *o, const char *s, Py_ssize_t n)
{
    if (o->len + n > o->cap) {
        Py_ssize_t cap = o->cap ? o->cap : 512;
        while (cap < o->len + n)
            cap *= 2;
        char *b = PyMem_Realloc(o->buf, (size_t)cap);
        if (b == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, (size_t)n);
    o->len += n;
    return 0;
}

/* 1 if the name, lower-cased, is in drop; 0 if not; -1 on error */
static int dropped(const char *name, Py_ssize_t n, PyObject *drop)
{
    PyObject *lower = PyBytes_FromStringAndSize(NULL, n);
    if (lower == NULL)
        return -1;
    char *l = PyBytes_AS_STRING(lower);
    for (Py_ssize_t i = 0; i < n; i++)
        l[i] = (char)Py_TOLOWER((unsigned char)name[i]);
    int in = PySet_Contains(drop, lower);
    Py_DECREF(lower);
    return in;
}

static PyObject *response(PyObject *self, PyObject *args)
{
    (void)self;
    Py_buffer view;
    Py_ssize_t start;
    PyObject *drop;
    if (!PyArg_ParseTuple(args, "y*nO!:response", &view, &start, &PyFrozenSet_Type, &drop))
        return NULL;
    const char *s = view.buf;
    Py_ssize_t n = view.len;
    PyObject *headers = NULL, *length = Py_None, *result = NULL;
    Out out = {NULL, 0, 0};
    int keep_fields = 1;
    Py_INCREF(length);

    if (start < 0 || start > n) {
        PyErr_SetString(PyExc_ValueError, "start out of range");
        goto done;
    }
    while (start < n && (s[start] == '\r' || s[start] == '\n'))
        start++;
    Py_ssize_t p = find_crlf(s, start, n);      /* the end of the status line */
    if (p < 0)
        goto incomplete;
    p += 2;
    headers = PyList_New(0);
    if (headers == NULL)
        goto done;
    for (;;) {
        Py_ssize_t e = find_crlf(s, p, n);
        if (e < 0)
            goto incomplete;
        if (e == p) {                           /* the blank line */
            p += 2;
            break;
        }
        const char *colon = memchr(s + p, ':', (size_t)(e - p));
        if (colon == NULL) {
            PyErr_SetString(PyExc_ValueError, "a header line without ':'");
            goto done;
        }
        const char *name = s + p;
        Py_ssize_t nlen = colon - name;
        const char *v = colon + 1, *vend = s + e;
        while (v < vend && (*v == ' ' || *v == '\t'))
            v++;
        Py_ssize_t vlen = vend - v;
        PyObject *pair = Py_BuildValue("(y#y#)", name, nlen, v, vlen);
        if (pair == NULL)
            goto done;
        int failed = PyList_Append(headers, pair);
        Py_DECREF(pair);
        if (failed)
            goto done;
        int out_of = dropped(name, nlen, drop);
        if (out_of < 0)
            goto done;
        if (!out_of) {
            if (keep_fields && (out_add(&out, name, nlen) < 0 || out_add(&out, ": ", 2) < 0
                                || out_add(&out, v, vlen) < 0 || out_add(&out, "\r\n", 2) < 0))
                goto done;
        } else if (nlen == 14 && length == Py_None
                   && strncasecmp(name, "content-length", 14) == 0) {
            PyObject *raw_value = PyBytes_FromStringAndSize(v, vlen);
            if (raw_value == NULL)
                goto done;
            PyObject *value = PyNumber_Long(raw_value);   /* int(value), as before */
            Py_DECREF(raw_value);
            if (value == NULL)
                goto done;
            Py_SETREF(length, value);
        } else if (nlen == 10 && strncasecmp(name, "connection", 10) == 0
                   && !plain_connection(v, vlen)) {
            keep_fields = 0;
        }
        p = e + 2;
    }
    PyObject *fields = keep_fields ? PyBytes_FromStringAndSize(out.buf ? out.buf : "", out.len)
                                   : Py_NewRef(Py_None);
    if (fields == NULL)
        goto done;
    result = Py_BuildValue("(nOOO)", p, headers, fields, length);
    Py_DECREF(fields);
    goto done;

incomplete:
    PyErr_SetString(PyExc_ValueError, "no complete head");
done:
    PyMem_Free(out.buf);
    Py_XDECREF(headers);
    Py_XDECREF(length);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"response", response, METH_VARARGS,
     "response(raw, start, drop) -> (end, headers, fields, length): an accepted answer head"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_head", "Answer heads read in one call.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__head(void)
{
    return PyModule_Create(&module);
}
