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

   RequestHead(max_target, max_head, target_error, head_error): what the client connection's
   request parser calls per parsed event (http1._Conn), so that llhttp calls C, not Python:
     begin()            on_message_begin: a new head (in_head true, nothing gathered yet);
     url(data)          on_url: appends to the request-target; past max_target bytes raises
                        target_error() (a factory of the exception);
     header(name, value) on_header: appends the pair; once the fields' bytes (name, value and 4
                        per line) pass max_head raises head_error();
     done() -> (target, fields)   at on_headers_complete: the target and the pairs as a tuple;
                        in_head false again. The fields' byte count runs on until the next
                        begin(): llhttp reports a chunked body's trailer fields by on_header
                        too, and they share the head's max_head, as before.
   The pure-Python twin with the same contract is http1rules.PyRequestHead. */

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

typedef struct {
    PyObject_HEAD
    PyObject *target;          /* bytes */
    PyObject *fields;          /* list of (name, value) */
    Py_ssize_t size;
    Py_ssize_t max_target, max_head;
    PyObject *target_error, *head_error;   /* zero-argument factories of the exceptions */
    char in_head;
} RequestHead;

static void raise_from(PyObject *factory)
{
    PyObject *exc = PyObject_CallNoArgs(factory);
    if (exc == NULL)
        return;
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

static int rh_init(RequestHead *self, PyObject *args, PyObject *kwds)
{
    PyObject *target_error, *head_error;
    static char *kwlist[] = {"max_target", "max_head", "target_error", "head_error", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nnOO:RequestHead", kwlist, &self->max_target,
                                     &self->max_head, &target_error, &head_error))
        return -1;
    PyObject *target = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *fields = PyList_New(0);
    if (target == NULL || fields == NULL) {
        Py_XDECREF(target);
        Py_XDECREF(fields);
        return -1;
    }
    Py_XSETREF(self->target, target);
    Py_XSETREF(self->fields, fields);
    Py_XSETREF(self->target_error, Py_NewRef(target_error));
    Py_XSETREF(self->head_error, Py_NewRef(head_error));
    self->size = 0;
    self->in_head = 0;
    return 0;
}

static void rh_dealloc(RequestHead *self)
{
    Py_XDECREF(self->target);
    Py_XDECREF(self->fields);
    Py_XDECREF(self->target_error);
    Py_XDECREF(self->head_error);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* empty target and fields (new objects: done() handed the old ones out) */
static int rh_clear(RequestHead *self)
{
    PyObject *target = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *fields = PyList_New(0);
    if (target == NULL || fields == NULL) {
        Py_XDECREF(target);
        Py_XDECREF(fields);
        return -1;
    }
    Py_XSETREF(self->target, target);
    Py_XSETREF(self->fields, fields);
    self->size = 0;
    return 0;
}

/* -1 with an error set when __init__ never ran */
static int rh_ready(RequestHead *self)
{
    if (self->target == NULL || self->fields == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "RequestHead.__init__ was not called");
        return -1;
    }
    return 0;
}

static PyObject *rh_begin(RequestHead *self, PyObject *unused)
{
    (void)unused;
    if (rh_ready(self) < 0)
        return NULL;
    if (PyBytes_GET_SIZE(self->target) || PyList_GET_SIZE(self->fields) || self->size) {
        if (rh_clear(self) < 0)
            return NULL;
    }
    self->in_head = 1;
    Py_RETURN_NONE;
}

static PyObject *rh_url(RequestHead *self, PyObject *data)
{
    if (rh_ready(self) < 0)
        return NULL;
    if (!PyBytes_Check(data)) {
        PyErr_SetString(PyExc_TypeError, "url() takes bytes");
        return NULL;
    }
    if (PyBytes_GET_SIZE(self->target) == 0) {
        Py_SETREF(self->target, Py_NewRef(data));
    } else {
        PyBytes_Concat(&self->target, data);     /* on failure: target is NULL, error set */
        if (self->target == NULL) {
            self->target = PyBytes_FromStringAndSize(NULL, 0);
            return NULL;
        }
    }
    if (PyBytes_GET_SIZE(self->target) > self->max_target) {
        raise_from(self->target_error);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *rh_header(RequestHead *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (rh_ready(self) < 0)
        return NULL;
    if (nargs != 2 || !PyBytes_Check(args[0]) || !PyBytes_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "header() takes a name and a value (bytes)");
        return NULL;
    }
    PyObject *pair = PyTuple_Pack(2, args[0], args[1]);
    if (pair == NULL)
        return NULL;
    int failed = PyList_Append(self->fields, pair);
    Py_DECREF(pair);
    if (failed)
        return NULL;
    self->size += PyBytes_GET_SIZE(args[0]) + PyBytes_GET_SIZE(args[1]) + 4;
    if (self->size > self->max_head) {
        raise_from(self->head_error);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *rh_done(RequestHead *self, PyObject *unused)
{
    (void)unused;
    if (rh_ready(self) < 0)
        return NULL;
    PyObject *fields = PyList_AsTuple(self->fields);
    if (fields == NULL)
        return NULL;
    PyObject *out = PyTuple_Pack(2, self->target, fields);
    Py_DECREF(fields);
    if (out == NULL)
        return NULL;
    self->in_head = 0;
    Py_ssize_t size = self->size;
    if (rh_clear(self) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    self->size = size;          /* a chunked body's trailer fields count on (until begin()) */
    return out;
}

static PyObject *rh_get_in_head(RequestHead *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->in_head);
}

static int rh_set_in_head(RequestHead *self, PyObject *value, void *closure)
{
    (void)closure;
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "in_head cannot be deleted");
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    if (truth < 0)
        return -1;
    self->in_head = (char)truth;
    return 0;
}

static PyMethodDef rh_methods[] = {
    {"begin", (PyCFunction)rh_begin, METH_NOARGS, "on_message_begin: a new head"},
    {"url", (PyCFunction)rh_url, METH_O, "on_url: a piece of the request-target"},
    {"header", (PyCFunction)(void (*)(void))rh_header, METH_FASTCALL, "on_header: one field"},
    {"done", (PyCFunction)rh_done, METH_NOARGS, "the head is complete: (target, fields)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef rh_getset[] = {
    {"in_head", (getter)rh_get_in_head, (setter)rh_set_in_head,
     "between begin() and done() (or set false after an error)", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject RequestHeadType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "gateway.dataplane._head.RequestHead",
    .tp_basicsize = sizeof(RequestHead),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A request head gathered from llhttp's events in C.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)rh_init,
    .tp_dealloc = (destructor)rh_dealloc,
    .tp_methods = rh_methods,
    .tp_getset = rh_getset,
};

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
