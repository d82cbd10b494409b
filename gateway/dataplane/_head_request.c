/* RequestHead(max_target, max_head, target_error, head_error): what the client connection's
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

#include "_head.h"

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

static int rh_init(RequestHead *self, PyObject *args, PyObject *kwds)
{
    PyObject *target_error, *head_error;
    static char *kwlist[] = {"max_target", "max_head", "target_error", "head_error", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nnOO:RequestHead", kwlist, &self->max_target,
                                     &self->max_head, &target_error, &head_error))
        return -1;
    if (rh_clear(self) < 0)
        return -1;
    Py_XSETREF(self->target_error, Py_NewRef(target_error));
    Py_XSETREF(self->head_error, Py_NewRef(head_error));
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

PyTypeObject RequestHeadType = {
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
