/* The `out` hook of every vCPU, called by Unicorn for each `out` instruction: the port's
 * handler (the machine's port_out table) called straight from C as handler(cpu, port, value).
 * A ctypes callback costs more than the handler itself: the thunk converts five arguments and
 * builds a tuple, and a Python frame then checks the CPL and looks the port up.
 *
 * At CPL > 0 the hook calls the vCPU's checked path instead (IOPL and the TSS I/O bitmap are
 * Python's); a handler's exception cannot cross into Unicorn, so it is handed to on_error,
 * which stops the run and re-raises it after emu_start. Python keeps every object alive. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

struct out_hook {
    const uint32_t *hflags;   /* env->hflags in place: CPL in bits 0-1 */
    PyObject *ports;          /* dict: port -> handler(cpu, port, value) */
    PyObject *cpu;            /* the VCpu, first argument of every handler */
    PyObject *checked;        /* checked(None, port, size, value, None): CPL > 0 */
    PyObject *on_error;       /* on_error(exception) */
};

static void hand_over_error(struct out_hook *h)
{
    PyObject *type, *value, *tb, *r;

    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    r = PyObject_CallOneArg(h->on_error, value != NULL ? value : Py_None);
    if (r == NULL)
        PyErr_WriteUnraisable(h->on_error);
    Py_XDECREF(r);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
}

void ftemu_out_hook(void *uc, uint32_t port, int size, uint32_t value, struct out_hook *h)
{
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *p = PyLong_FromUnsignedLong(port);
    PyObject *v = PyLong_FromUnsignedLong(value);
    PyObject *r = NULL;

    (void)uc;
    if (p == NULL || v == NULL) {
        /* no memory for two ints: r stays NULL and the error is handed over */
    } else if (*h->hflags & 3) {
        PyObject *s = PyLong_FromLong(size);
        if (s != NULL)
            r = PyObject_CallFunctionObjArgs(h->checked, Py_None, p, s, v, Py_None, NULL);
        Py_XDECREF(s);
    } else {
        PyObject *fn = PyDict_GetItemWithError(h->ports, p);   /* borrowed */
        if (fn != NULL) {
            PyObject *args[3] = {h->cpu, p, v};
            r = PyObject_Vectorcall(fn, args, 3, NULL);
        } else if (!PyErr_Occurred()) {
            r = Py_NewRef(Py_None);
        }
    }
    if (r == NULL)
        hand_over_error(h);
    Py_XDECREF(r);
    Py_XDECREF(p);
    Py_XDECREF(v);
    PyGILState_Release(gil);
}
