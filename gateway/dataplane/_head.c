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
   ValueError when raw holds no complete head from start.

   The module also holds RequestHead (_head_request.c). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>
#include <strings.h>

#include "_head.h"

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

/* The lines kept for the client: on the stack, on the heap past that. */
typedef struct {
    char *buf;
    Py_ssize_t len, cap;
    char stack[2048];
} Out;

static int out_add(Out *o, const char *s, Py_ssize_t n)
{
    if (o->len + n > o->cap) {
        Py_ssize_t cap = o->cap * 2;
        while (cap < o->len + n)
            cap *= 2;
        char *b = PyMem_Malloc((size_t)cap);
        if (b == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        memcpy(b, o->buf, (size_t)o->len);
        if (o->buf != o->stack)
            PyMem_Free(o->buf);
        o->buf = b;
        o->cap = cap;
    }
    memcpy(o->buf + o->len, s, (size_t)n);
    o->len += n;
    return 0;
}

/* The drop set, as C strings: read once from the frozenset the caller passes (the same object
   every call, proxy.RESPONSE_DROP; read again if another one comes), so that a header's
   verdict is a length test and a case-blind compare instead of a lower-cased copy and a hash. */
#define MAX_DROP 64
static PyObject *drop_seen;                 /* the set the table was read from (a reference) */
static Py_ssize_t drop_count;
static Py_ssize_t drop_len[MAX_DROP];
static char drop_name[MAX_DROP][40];

static int drop_table(PyObject *drop)
{
    if (drop == drop_seen)
        return 0;
    if (PySet_GET_SIZE(drop) > MAX_DROP) {
        PyErr_SetString(PyExc_ValueError, "drop: too many names");
        return -1;
    }
    PyObject *it = PyObject_GetIter(drop), *key;
    if (it == NULL)
        return -1;
    Py_ssize_t n = 0;
    drop_count = 0;                         /* a table half read matches nothing */
    Py_CLEAR(drop_seen);
    while ((key = PyIter_Next(it)) != NULL) {
        if (!PyBytes_Check(key) || PyBytes_GET_SIZE(key) >= 40 || n >= MAX_DROP) {
            Py_DECREF(key);
            Py_DECREF(it);
            PyErr_SetString(PyExc_ValueError, "drop: lower-case names of under 40 bytes");
            return -1;
        }
        drop_len[n] = PyBytes_GET_SIZE(key);
        memcpy(drop_name[n], PyBytes_AS_STRING(key), (size_t)drop_len[n]);
        n++;
        Py_DECREF(key);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return -1;
    drop_count = n;
    Py_XSETREF(drop_seen, Py_NewRef(drop));
    return 0;
}

static int dropped(const char *name, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < drop_count; i++)
        if (drop_len[i] == n && strncasecmp(name, drop_name[i], (size_t)n) == 0)
            return 1;
    return 0;
}

static PyObject *pair(const char *name, Py_ssize_t nlen, const char *value, Py_ssize_t vlen)
{
    PyObject *t = PyTuple_New(2);
    if (t == NULL)
        return NULL;
    PyObject *a = PyBytes_FromStringAndSize(name, nlen);
    if (a == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 0, a);
    PyObject *b = PyBytes_FromStringAndSize(value, vlen);
    if (b == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    PyTuple_SET_ITEM(t, 1, b);
    return t;
}

static PyObject *response(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    (void)self;
    if (nargs != 3 || !PyBytes_Check(args[0]) || !PyLong_Check(args[1])
            || !PyFrozenSet_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "response(raw: bytes, start: int, drop: frozenset)");
        return NULL;
    }
    const char *s = PyBytes_AS_STRING(args[0]);
    Py_ssize_t n = PyBytes_GET_SIZE(args[0]);
    Py_ssize_t start = PyLong_AsSsize_t(args[1]);
    if (start == -1 && PyErr_Occurred())
        return NULL;
    if (drop_table(args[2]) < 0)
        return NULL;
    PyObject *headers = NULL, *length = Py_NewRef(Py_None), *result = NULL;
    Out out;
    out.buf = out.stack;
    out.len = 0;
    out.cap = (Py_ssize_t)sizeof(out.stack);
    int keep_fields = 1;

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
        PyObject *field = pair(name, nlen, v, vlen);
        if (field == NULL)
            goto done;
        int failed = PyList_Append(headers, field);
        Py_DECREF(field);
        if (failed)
            goto done;
        if (!dropped(name, nlen)) {
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
    PyObject *fields = keep_fields ? PyBytes_FromStringAndSize(out.buf, out.len)
                                   : Py_NewRef(Py_None);
    if (fields == NULL)
        goto done;
    PyObject *end = PyLong_FromSsize_t(p);
    if (end == NULL) {
        Py_DECREF(fields);
        goto done;
    }
    result = PyTuple_New(4);
    if (result == NULL) {
        Py_DECREF(fields);
        Py_DECREF(end);
        goto done;
    }
    PyTuple_SET_ITEM(result, 0, end);
    PyTuple_SET_ITEM(result, 1, headers);
    PyTuple_SET_ITEM(result, 2, fields);
    PyTuple_SET_ITEM(result, 3, length);
    if (out.buf != out.stack)
        PyMem_Free(out.buf);
    return result;                              /* the tuple holds headers and length now */

incomplete:
    PyErr_SetString(PyExc_ValueError, "no complete head");
done:
    if (out.buf != out.stack)
        PyMem_Free(out.buf);
    Py_XDECREF(headers);
    Py_XDECREF(length);
    return NULL;
}

static PyMethodDef methods[] = {
    {"response", (PyCFunction)(void (*)(void))response, METH_FASTCALL,
     "response(raw, start, drop) -> (end, headers, fields, length): an accepted answer head"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_head", "Answer heads read in one call.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__head(void)
{
    if (PyType_Ready(&RequestHeadType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "RequestHead", (PyObject *)&RequestHeadType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
