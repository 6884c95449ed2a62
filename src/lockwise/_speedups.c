/* lockwise._speedups: the hot path of Lock and RLock in C.
 *
 * The pure-Python classes in _primitives.py are the reference. The two base
 * types here (LockBase, RLockBase) carry the same fields as the pure classes'
 * __slots__ (_inner, _owner, _site, _acq, _serial, and _count for RLock) and
 * implement acquire/release/__enter__/__exit__ for the common cases only:
 *
 *   - an uncontended, untimed acquire (one non-blocking try of the inner
 *     _thread.lock), including the re-entry of an RLock by its owner;
 *   - a release.
 *
 * Everything else goes back to the Python functions given to setup():
 * contention, timeouts and argument validation (self._acquire_slow), nested
 * acquisitions (the lock-order check, through a Python trampoline so that
 * _order.note sees the same frames as from the pure class), and the first
 * use of a thread that has no state yet (_state.new_state). The accelerated
 * Python subclasses (see _accel.py) provide everything else.
 *
 * Invariant: no Python code runs (calls, finalizers via DECREF) while a lock's
 * fields are half-updated. Fields are set first; old values are released last.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <frameobject.h>
#include <pythread.h>
#include <math.h>
#include <time.h>
#ifdef MS_WINDOWS
#include <windows.h>
#else
#include <errno.h>
#include <semaphore.h>
#endif

#if PY_VERSION_HEX < 0x030A0000
static inline PyObject *lw_newref(PyObject *o) { Py_INCREF(o); return o; }
#define Py_NewRef(o) lw_newref((PyObject *)(o))
static inline PyObject *lw_xnewref(PyObject *o) { Py_XINCREF(o); return o; }
#define Py_XNewRef(o) lw_xnewref((PyObject *)(o))
#endif

/* Free-threaded builds (no GIL): what the GIL used to order is ordered here by
 *
 *   - per-object critical sections (Py_BEGIN_CRITICAL_SECTION(self)) around
 *     every store of a lock's object fields (owner, acq) and around the reads
 *     of those fields by other threads, as CPython's own member descriptors
 *     do (PyMember_SetOne stores under the object's critical section,
 *     PyMember_GetOne reads with _Py_TryIncrefCompare or under it): a
 *     reader's INCREF never races the writer's DECREF of the old value;
 *   - atomics for the flags and counters read by other threads (InnerLock's
 *     `locked`, whose release is a compare-exchange so that exactly one of
 *     two racing releases wins; held_in_with; an RLock's count; the quiet
 *     wait);
 *   - no process-wide cache: the calling thread's state is found in its own
 *     thread dict, with strong references (PyDict_GetItemRef);
 *   - strong references from containers other threads may change (the held
 *     list of a thread is snapshotted, the site cache read with
 *     PyDict_GetItemRef).
 *
 * Fields assigned once when a lock is made, before it is shared (_inner,
 * _site), and ThreadState slots assigned once in its __init__ (held, ident)
 * or written only by their own thread (quiet), are read directly.
 * With the GIL every macro below is the plain access it replaces, and the
 * critical sections are no-ops: GIL builds run the code they ran before. */
#ifdef Py_GIL_DISABLED
#define LW_FT 1
#define LW_LOAD_PTR(field) ((PyObject *)_Py_atomic_load_ptr_acquire(&(field)))
#define LW_STORE_PTR(field, v) _Py_atomic_store_ptr_release(&(field), (v))
#define LW_LOAD_I8(field) _Py_atomic_load_int8_relaxed(&(field))
#define LW_STORE_I8(field, v) _Py_atomic_store_int8_relaxed(&(field), (int8_t)(v))
#define LW_LOAD_SSIZE(field) _Py_atomic_load_ssize_relaxed(&(field))
#define LW_STORE_SSIZE(field, v) _Py_atomic_store_ssize_relaxed(&(field), (v))
#define LW_LOAD_I32(field) _Py_atomic_load_int32_relaxed(&(field))
#define LW_ADD_I32(field, v) ((void)_Py_atomic_add_int32(&(field), (v)))
#define LW_LOAD_I64(field) _Py_atomic_load_int64_relaxed(&(field))
#define LW_STORE_I64(field, v) _Py_atomic_store_int64_relaxed(&(field), (v))
#else
#define LW_LOAD_PTR(field) ((PyObject *)(field))
#define LW_STORE_PTR(field, v) ((field) = (v))
#define LW_LOAD_I8(field) (field)
#define LW_STORE_I8(field, v) ((field) = (int8_t)(v))
#define LW_LOAD_SSIZE(field) (field)
#define LW_STORE_SSIZE(field, v) ((field) = (v))
#define LW_LOAD_I32(field) (field)
#define LW_ADD_I32(field, v) ((void)((field) += (v)))  /* with the GIL held */
#define LW_LOAD_I64(field) (field)
#define LW_STORE_I64(field, v) ((field) = (v))
#endif

#ifndef Py_BEGIN_CRITICAL_SECTION  /* before 3.13: the GIL is the critical section */
#define Py_BEGIN_CRITICAL_SECTION(op) {
#define Py_END_CRITICAL_SECTION() }
#endif

typedef struct {
    PyObject_HEAD
    PyObject *inner;        /* the _thread.lock */
    PyObject *owner;        /* ThreadState or None */
    PyObject *site;         /* Site */
    PyObject *acq;          /* (code, lineno) of the owner's acquisition, or None */
    PyObject *serial;       /* int, 0 until numbered */
    PyObject *weakreflist;
    Py_ssize_t count;       /* RLock recursion count (unused by Lock) */
    int acq_lasti;          /* instruction offset that gave acq (-1: unknown) */
    int8_t held_in_with;    /* Lock: the holder took it by __enter__ (its __exit__ releases) */
} LockObject;

/* Set once by setup(); strong references, kept for the life of the process. */
static PyObject *g_local;          /* _state._local (threading.local) */
static PyObject *g_new_state;      /* _state.new_state */
static PyObject *g_settings;       /* _config.settings */
static PyObject *g_note;           /* trampoline calling _order.note(ts, lock) */
static PyObject *g_internal_files; /* _sites.INTERNAL_FILES (a set) */
static PyObject *g_ts_key;         /* key of the cached state in the thread dict */
static PyTypeObject *g_ts_type;    /* _state.ThreadState */
static Py_ssize_t g_held_offset = -1, g_ident_offset = -1, g_quiet_offset = -1;
static PyObject *g_order;          /* the _order module (its _known set) */
static PyTypeObject *g_inner_type; /* _thread.lock */
static PyObject *g_inner_acquire, *g_inner_release;  /* its unbound methods */
#ifndef LW_FT
/* One-entry cache of the last thread's state: (thread state, its id) -> ts.
 * With the GIL only: without it, two threads would race on it (and pair one
 * thread's tstate with another's state), and its writes would be a shared
 * cache line every acquire of every thread bounces. */
static PyThreadState *g_last_tstate;
static uint64_t g_last_tstate_id;
static PyObject *g_last_ts;
#endif

static PyObject *s_locked;
static PyObject *s_acquire, *s_release, *s_held, *s_ident, *s_signal, *s_lock_order,
    *s_ts, *s_acquire_slow, *s_minus_one, *s_zero, *s_quiet, *s_site, *s_known,
    *s_known_instances, *s_serial;

/* ------------------------------------------------------------------ helpers */

/* ts.<slot> (new ref), read from the slot directly for a real ThreadState. */
static PyObject *
state_slot(PyObject *ts, Py_ssize_t offset, PyObject *name)
{
    if (offset >= 0 && Py_TYPE(ts) == g_ts_type) {
        PyObject *v = *(PyObject **)((char *)ts + offset);
        if (v != NULL)
            return Py_NewRef(v);
    }
    return PyObject_GetAttr(ts, name);
}

static int
frame_lasti(PyFrameObject *frame)
{
#if PY_VERSION_HEX >= 0x030B0000
    return PyFrame_GetLasti(frame);
#else
    return frame->f_lasti;
#endif
}

#ifndef LW_FT
/* The calling thread's ThreadState (borrowed), or NULL if it has none yet
 * (no exception set), or NULL with an exception set on error.
 * _state._local.ts is the truth; the thread dict caches it. */
static PyObject *
cached_state(void)
{
    PyObject *tdict = PyThreadState_GetDict();
    PyObject *ts;
    if (tdict != NULL) {
        ts = PyDict_GetItemWithError(tdict, g_ts_key);
        if (ts != NULL)
            return ts;
        if (PyErr_Occurred())
            return NULL;
    }
    ts = PyObject_GetAttr(g_local, s_ts);
    if (ts == NULL) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
        }
        return NULL;
    }
    if (tdict != NULL && PyDict_SetItem(tdict, g_ts_key, ts) < 0) {
        Py_DECREF(ts);
        return NULL;
    }
    if (tdict == NULL) {
        /* Cannot cache: the local keeps it alive, hand back a borrowed ref. */
        Py_DECREF(ts);
        return ts;
    }
    Py_DECREF(ts);  /* the thread dict holds it now */
    return ts;
}

/* The calling thread's state, created (in Python) on first use. New ref. */
static PyObject *
current_state(void)
{
    PyThreadState *tstate = PyThreadState_Get();
    uint64_t id = PyThreadState_GetID(tstate);
    if (tstate == g_last_tstate && id == g_last_tstate_id && g_last_ts != NULL)
        return Py_NewRef(g_last_ts);
    PyObject *ts = cached_state();
    if (ts != NULL) {
        Py_INCREF(ts);
    }
    else {
        if (PyErr_Occurred())
            return NULL;
        ts = PyObject_CallNoArgs(g_new_state);
        if (ts == NULL)
            return NULL;
        PyObject *tdict = PyThreadState_GetDict();
        if (tdict != NULL && PyDict_SetItem(tdict, g_ts_key, ts) < 0) {
            Py_DECREF(ts);
            return NULL;
        }
    }
    /* Only the thread state's address and id key the cache: ids are never
     * reused, so a new thread at a recycled address misses. */
    PyObject *old = g_last_ts;
    g_last_tstate = tstate;
    g_last_tstate_id = id;
    g_last_ts = Py_NewRef(ts);
    Py_XDECREF(old);
    return ts;
}
/* Is ts the calling thread's state? 1 when the cache says so; 0 means "not
 * known to be" (the caller then compares thread idents). No reference, no
 * error. */
static inline int
is_current_state(PyObject *ts)
{
    PyThreadState *tstate = PyThreadState_Get();
    return ts == g_last_ts && tstate == g_last_tstate
        && PyThreadState_GetID(tstate) == g_last_tstate_id;
}
#else  /* LW_FT */
/* A per-thread cache of the state (thread-local storage, never shared): the
 * thread state it belongs to (its address, interpreter and id: ids are only
 * unique per interpreter) and the state, borrowed from the thread's dict. The
 * dict entry is written once (when missing) and never replaced, and the dict
 * lives as long as the thread state, so the borrowed reference is valid
 * whenever the three keys match. */
#if defined(_MSC_VER)
#define LW_THREAD_LOCAL __declspec(thread)
#else
#define LW_THREAD_LOCAL _Thread_local
#endif
static LW_THREAD_LOCAL PyThreadState *tls_tstate;
static LW_THREAD_LOCAL PyInterpreterState *tls_interp;
static LW_THREAD_LOCAL uint64_t tls_id;
static LW_THREAD_LOCAL PyObject *tls_ts;

/* The calling thread's state, created (in Python) on first use. New ref.
 * Found in the thread's own dict (only this thread reads or writes it), with a
 * strong reference; _state._local.ts is the truth the dict caches. */
static PyObject *
current_state(void)
{
    PyThreadState *tstate = PyThreadState_Get();
    PyInterpreterState *interp = PyThreadState_GetInterpreter(tstate);
    uint64_t id = PyThreadState_GetID(tstate);
    if (tls_ts != NULL && tls_tstate == tstate && tls_interp == interp && tls_id == id)
        return Py_NewRef(tls_ts);
    PyObject *tdict = PyThreadState_GetDict();
    PyObject *ts = NULL;
    if (tdict != NULL) {
        int r = PyDict_GetItemRef(tdict, g_ts_key, &ts);
        if (r > 0) {
            tls_tstate = tstate;
            tls_interp = interp;
            tls_id = id;
            tls_ts = ts;  /* borrowed: the dict keeps it */
            return ts;
        }
        if (r < 0)
            return NULL;
    }
    ts = PyObject_GetAttr(g_local, s_ts);
    if (ts == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError))
            return NULL;
        PyErr_Clear();
        ts = PyObject_CallNoArgs(g_new_state);
        if (ts == NULL)
            return NULL;
    }
    if (tdict != NULL && PyDict_SetItem(tdict, g_ts_key, ts) < 0) {
        Py_DECREF(ts);
        return NULL;
    }
    return ts;
}

/* As above (the thread-local cache, whose keys must all match). */
static inline int
is_current_state(PyObject *ts)
{
    PyThreadState *tstate = PyThreadState_Get();
    return ts == tls_ts && ts != NULL && tls_tstate == tstate
        && tls_interp == PyThreadState_GetInterpreter(tstate)
        && tls_id == PyThreadState_GetID(tstate);
}
#endif

/* ---------------------------------------------------------------- InnerLock
 *
 * The lock under every accelerated Lock and RLock: a PyThread lock (public
 * API of pythread.h) in a small object with the Python protocol of
 * _thread.lock (acquire(blocking=True, timeout=-1), release, locked,
 * _at_fork_reinit, the context manager), used by the Python code of lockwise
 * (the slow path in _waitfor blocks on it) and tried and released directly
 * by the hot path below, without a method call.
 *
 * Arguments: the common ones (bool blocking; int or float timeout that is -1
 * or in [0, 1e9] s) are handled here; anything else is first given to a fresh
 * _thread.lock's acquire, so that errors are the interpreter's own, with this
 * interpreter version's messages (a fresh lock never blocks). */

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    int8_t locked;          /* held by someone: set after taking `lock`, cleared by
                             * the one release that claims it (inner_claim) */
    int32_t queued;         /* threads blocked on `lock` right now (changed with
                             * the GIL held, or atomically without one); in the
                             * padding after `locked`: no bigger object */
} InnerLockObject;

/* A contended acquire that finds this many threads already blocked on the
 * inner lock skips the quiet wait (see inner_quiet_wait). */
#define LW_QUEUE_SKIP 2

/* The release of an InnerLock: 1 when this caller turned `locked` from 1 to 0
 * and so must give `lock` back, 0 when it was not locked. Without the GIL
 * this is a compare-exchange: of two threads releasing at once (a program
 * bug that threading reports as RuntimeError), exactly one wins, and the
 * PyThread lock (a semaphore on some platforms) is never released twice. */
static inline int
inner_claim(InnerLockObject *il)
{
#ifdef LW_FT
    int8_t expected = 1;
    return _Py_atomic_compare_exchange_int8(&il->locked, &expected, 0);
#else
    if (!il->locked)
        return 0;
    il->locked = 0;
    return 1;
#endif
}

static PyTypeObject InnerLock_Type;
static PyObject *g_allocate_lock;  /* _thread.allocate_lock, for validation */

/* Largest timeout handled without asking _thread first (seconds). */
#define LW_TIMEOUT_FAST_MAX 1e9

static long long
monotonic_us(void)
{
#ifdef MS_WINDOWS
    static LARGE_INTEGER freq;
    LARGE_INTEGER now;
    if (freq.QuadPart == 0)
        QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&now);
    return (long long)((double)now.QuadPart * 1e6 / (double)freq.QuadPart);
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
#endif
}

/* Acquire within `us` microseconds (-1: forever, 0: just try), as
 * _thread.lock does: a first try with the GIL held, then a wait without it
 * that signals interrupt; on an interrupt, run the signal handlers (an
 * exception from one ends the wait) and wait again for the time left.
 * 1 acquired, 0 timed out, -1 error (exception set). */
static int
inner_acquire_timed(InnerLockObject *self, long long us)
{
    PyLockStatus r = PyThread_acquire_lock_timed(self->lock, 0, 0);
    if (r == PY_LOCK_ACQUIRED) {
        LW_STORE_I8(self->locked, 1);
        return 1;
    }
    if (us == 0)
        return 0;
    if (us > PY_TIMEOUT_MAX)
        us = PY_TIMEOUT_MAX;
    long long deadline = us > 0 ? monotonic_us() + us : 0;
    for (;;) {
        LW_ADD_I32(self->queued, 1);
        Py_BEGIN_ALLOW_THREADS
        r = PyThread_acquire_lock_timed(self->lock, (PY_TIMEOUT_T)us, 1);
        Py_END_ALLOW_THREADS
        LW_ADD_I32(self->queued, -1);
        if (r != PY_LOCK_INTR)
            break;
        if (Py_MakePendingCalls() < 0)
            return -1;
        if (us > 0) {
            us = deadline - monotonic_us();
            if (us <= 0) {
                r = PyThread_acquire_lock_timed(self->lock, 0, 0);
                break;
            }
        }
    }
    if (r == PY_LOCK_ACQUIRED) {
        LW_STORE_I8(self->locked, 1);
        return 1;
    }
    return 0;
}

/* Let _thread.lock.acquire judge these arguments: -1 with its exception
 * set, 0 when it accepts them. */
static int
validate_with_thread_lock(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (g_allocate_lock == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "lockwise._speedups.setup() was not called");
        return -1;
    }
    PyObject *probe = PyObject_CallNoArgs(g_allocate_lock);
    if (probe == NULL)
        return -1;
    PyObject *meth = PyObject_GetAttr(probe, s_acquire);
    Py_DECREF(probe);
    if (meth == NULL)
        return -1;
    PyObject *res = PyObject_Vectorcall(meth, args, (size_t)nargs, kwnames);
    Py_DECREF(meth);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* A timeout this code takes as is: -1, or 0 <= t <= LW_TIMEOUT_FAST_MAX.
 * Sets *us (microseconds, rounded up; -1 for forever). */
static int
plain_timeout(PyObject *t, long long *us)
{
    double d;
    if (t == s_minus_one) {
        *us = -1;
        return 1;
    }
    if (PyFloat_CheckExact(t)) {
        d = PyFloat_AS_DOUBLE(t);
    }
    else if (PyLong_CheckExact(t)) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(t, &overflow);
        if (overflow || (v == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        d = (double)v;
    }
    else {
        return 0;
    }
    if (d == -1.0) {
        *us = -1;
        return 1;
    }
    if (!(d >= 0.0 && d <= LW_TIMEOUT_FAST_MAX))  /* also NaN */
        return 0;
    double x = ceil(d * 1e6);
    *us = (long long)x;
    return 1;
}

static PyObject *
innerlock_acquire(InnerLockObject *self, PyObject *const *args, Py_ssize_t nargs,
                  PyObject *kwnames)
{
    PyObject *blocking = Py_True, *timeout = s_minus_one;
    int ok = nargs <= 2;
    if (ok && nargs >= 1)
        blocking = args[0];
    if (ok && nargs >= 2)
        timeout = args[1];
    if (ok && kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; ok && i < nkw; i++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, i);
            if (nargs < 1 && PyUnicode_CompareWithASCIIString(key, "blocking") == 0)
                blocking = args[nargs + i];
            else if (nargs < 2 && PyUnicode_CompareWithASCIIString(key, "timeout") == 0)
                timeout = args[nargs + i];
            else
                ok = 0;  /* unknown or repeated: _thread says how */
        }
    }
    long long us = -1;
    int blk = 1;
    if (ok) {
        if (blocking == Py_True || blocking == Py_False)
            blk = blocking == Py_True;
        else
            ok = 0;
    }
    if (ok)
        ok = plain_timeout(timeout, &us);
    if (ok && !blk && us != -1)
        ok = 0;  /* a timeout for a non-blocking call: _thread's error */
    if (!ok) {
        /* Unusual arguments: valid for _thread.lock, or its exception. */
        if (validate_with_thread_lock(args, nargs, kwnames) < 0)
            return NULL;
        blk = PyObject_IsTrue(blocking);
        if (blk < 0)
            return NULL;
        if (blk && timeout != s_minus_one) {
            double d;
            if (PyFloat_Check(timeout)) {
                d = PyFloat_AsDouble(timeout);
            }
            else {
                long long v = PyLong_AsLongLong(timeout);
                if (v == -1 && PyErr_Occurred())
                    return NULL;
                d = (double)v;
            }
            if (d == -1.0 && PyErr_Occurred())
                return NULL;
            us = d < 0 ? -1 : (long long)ceil(d * 1e6);
        }
    }
    int got = inner_acquire_timed(self, blk ? us : 0);
    if (got < 0)
        return NULL;
    return PyBool_FromLong(got);
}

static PyObject *
innerlock_enter(InnerLockObject *self, PyObject *Py_UNUSED(ignored))
{
    int got = inner_acquire_timed(self, -1);
    if (got < 0)
        return NULL;
    return PyBool_FromLong(got);
}

static PyObject *
innerlock_release(InnerLockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!inner_claim(self)) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return NULL;
    }
    PyThread_release_lock(self->lock);
    Py_RETURN_NONE;
}

static PyObject *
innerlock_exit(InnerLockObject *self, PyObject *const *Py_UNUSED(args),
               Py_ssize_t Py_UNUSED(nargs))
{
    return innerlock_release(self, NULL);
}

static PyObject *
innerlock_locked(InnerLockObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(LW_LOAD_I8(self->locked));
}

/* In a child after fork(): a new, unlocked lock. A lock held at the fork
 * (by a thread that does not exist here) is left allocated, not freed:
 * destroying a held lock is undefined behaviour for some implementations. */
static PyObject *
innerlock_at_fork_reinit(InnerLockObject *self, PyObject *Py_UNUSED(ignored))
{
    PyThread_type_lock fresh = PyThread_allocate_lock();
    if (fresh == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "can't allocate lock");
        return NULL;
    }
    PyThread_type_lock old = self->lock;
    int was_locked = self->locked;
    self->lock = fresh;
    self->locked = 0;
    self->queued = 0;  /* the threads that waited are the parent's */
    if (old != NULL && !was_locked)
        PyThread_free_lock(old);
    Py_RETURN_NONE;
}

static PyObject *
alloc_inner(PyTypeObject *type)
{
    InnerLockObject *self = (InnerLockObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->locked = 0;
    self->lock = PyThread_allocate_lock();
    if (self->lock == NULL) {
        Py_DECREF(self);
        PyErr_SetString(PyExc_RuntimeError, "can't allocate lock");
        return NULL;
    }
    return (PyObject *)self;
}

static PyObject *
innerlock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) || (kwds != NULL && PyDict_GET_SIZE(kwds))) {
        PyErr_SetString(PyExc_TypeError, "InnerLock() takes no arguments");
        return NULL;
    }
    return alloc_inner(type);
}

static void
innerlock_dealloc(InnerLockObject *self)
{
    if (self->lock != NULL) {
        if (self->locked)
            PyThread_release_lock(self->lock);  /* freeing a held lock is unsafe */
        PyThread_free_lock(self->lock);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
innerlock_repr(InnerLockObject *self)
{
    return PyUnicode_FromFormat("<%s %s object at %p>",
                                LW_LOAD_I8(self->locked) ? "locked" : "unlocked",
                                Py_TYPE(self)->tp_name, (void *)self);
}

static PyMethodDef innerlock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))innerlock_acquire,
     METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool, as _thread.lock.acquire"},
    {"release", (PyCFunction)innerlock_release, METH_NOARGS,
     "Release the lock (RuntimeError if it is not locked)."},
    {"locked", (PyCFunction)innerlock_locked, METH_NOARGS, "Whether the lock is held."},
    {"_at_fork_reinit", (PyCFunction)innerlock_at_fork_reinit, METH_NOARGS,
     "Make a new, unlocked lock (in a child process after fork)."},
    {"__enter__", (PyCFunction)innerlock_enter, METH_NOARGS, "Acquire the lock."},
    {"__exit__", (PyCFunction)(void (*)(void))innerlock_exit, METH_FASTCALL,
     "Release the lock."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject InnerLock_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockwise._speedups.InnerLock",
    .tp_basicsize = sizeof(InnerLockObject),
    .tp_dealloc = (destructor)innerlock_dealloc,
    .tp_repr = (reprfunc)innerlock_repr,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "InnerLock(): the raw lock under accelerated lockwise locks "
              "(the protocol of _thread.lock, on a PyThread lock).",
    .tp_methods = innerlock_methods,
    .tp_new = innerlock_new,
};

/* lockwise._mp's raw lock (defined below, with the module's other types). */
static PyTypeObject SemInner_Type;
static int seminner_try(PyObject *op);
static int seminner_give(PyObject *op);
static void seminner_set_with(PyObject *op);

/* inner.acquire(False): 1 acquired, 0 not, -1 error. */
static int
inner_try(PyObject *inner)
{
    if (Py_IS_TYPE(inner, &SemInner_Type))
        return seminner_try(inner);
    if (Py_IS_TYPE(inner, &InnerLock_Type)) {  /* no method call: the hot path */
        InnerLockObject *il = (InnerLockObject *)inner;
        if (PyThread_acquire_lock_timed(il->lock, 0, 0) != PY_LOCK_ACQUIRED)
            return 0;
        LW_STORE_I8(il->locked, 1);
        return 1;
    }
    if (Py_TYPE(inner) == g_inner_type) {
        PyObject *args[2] = {inner, Py_False};
        PyObject *res = PyObject_Vectorcall(g_inner_acquire, args, 2, NULL);
        if (res == NULL)
            return -1;
        int got = (res == Py_True) ? 1 : PyObject_IsTrue(res);
        Py_DECREF(res);
        return got;
    }
    /* stack[0] is scratch space the callee may use (ARGUMENTS_OFFSET). */
    PyObject *stack[3] = {NULL, inner, Py_False};
    PyObject *res = PyObject_VectorcallMethod(
        s_acquire, stack + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (res == NULL)
        return -1;
    int got = (res == Py_True) ? 1 : PyObject_IsTrue(res);
    Py_DECREF(res);
    return got;
}

static int
inner_release(PyObject *inner)
{
    if (Py_IS_TYPE(inner, &SemInner_Type))
        return seminner_give(inner);
    if (Py_IS_TYPE(inner, &InnerLock_Type)) {
        InnerLockObject *il = (InnerLockObject *)inner;
        if (!inner_claim(il)) {
            PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
            return -1;
        }
        PyThread_release_lock(il->lock);
        return 0;
    }
    if (Py_TYPE(inner) == g_inner_type) {
        PyObject *args[1] = {inner};
        PyObject *res = PyObject_Vectorcall(g_inner_release, args, 1, NULL);
        if (res == NULL)
            return -1;
        Py_DECREF(res);
        return 0;
    }
    PyObject *stack[2] = {NULL, inner};
    PyObject *res = PyObject_VectorcallMethod(
        s_release, stack + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (res == NULL)
        return -1;
    Py_DECREF(res);
    return 0;
}

/* Microseconds a contended, untimed acquire waits (without the GIL, like
 * _thread.lock) before going to the Python slow path, which registers the
 * wait and checks for deadlock. Most contended waits end sooner, so they cost
 * no more than with threading. 0 (set while the profiler times every wait)
 * sends every contended acquire to the slow path at once. */
static int64_t g_quiet_us = 1000;  /* atomic: set from Python by any thread */

/* Wait up to g_quiet_us for an InnerLock: 1 acquired, 0 not (timed out,
 * interrupted by a signal, or not an InnerLock: the slow path handles those).
 *
 * Not at all when LW_QUEUE_SKIP threads already wait for it: behind a queue
 * the wait is likely to outlast the quiet wait, and a quiet wait that times
 * out costs a wake-up and a GIL hand-off before the slow path registers the
 * wait anyway. (1,000 threads woken by one notify_all() all queue for the
 * Condition's lock: each woke twice.) The slow path then registers at once
 * and sleeps until a release wakes it. */
static int
inner_quiet_wait(PyObject *inner)
{
    int64_t us = LW_LOAD_I64(g_quiet_us);
    if (us <= 0 || !Py_IS_TYPE(inner, &InnerLock_Type))
        return 0;
    InnerLockObject *il = (InnerLockObject *)inner;
    if (LW_LOAD_I32(il->queued) >= LW_QUEUE_SKIP)
        return 0;
    PyLockStatus r;
    LW_ADD_I32(il->queued, 1);
    Py_BEGIN_ALLOW_THREADS
    r = PyThread_acquire_lock_timed(il->lock, (PY_TIMEOUT_T)us, 1);
    Py_END_ALLOW_THREADS
    LW_ADD_I32(il->queued, -1);
    if (r != PY_LOCK_ACQUIRED)
        return 0;
    LW_STORE_I8(il->locked, 1);
    return 1;
}

/* Release the inner lock while an exception is pending, keeping that one. */
static void
inner_release_keep_error(PyObject *inner)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (inner_release(inner) < 0)
        PyErr_Clear();
    PyErr_Restore(type, value, tb);
}

static int
is_internal(PyCodeObject *code)
{
    return PySet_Contains(g_internal_files, code->co_filename);
}

/* self->acq = acq (stolen), with its acq_lasti. Other threads read _acq
 * (reports): the store is made under the lock's critical section, and the old
 * value released after it (see the top of this file). */
static void
set_acq(LockObject *self, PyObject *acq, int lasti)
{
    PyObject *old;
    Py_BEGIN_CRITICAL_SECTION(self);
    old = self->acq;
    self->acq_lasti = lasti;
    LW_STORE_PTR(self->acq, acq);
    Py_END_CRITICAL_SECTION();
    Py_XDECREF(old);
}

/* Record in self->acq the (code, lineno) of the first user frame at or above
 * the caller's frame, as _primitives._acquire_site does. Reuses the current
 * tuple when the site is unchanged (the common case in a loop). */
static int
record_site(LockObject *self)
{
    PyFrameObject *frame = PyEval_GetFrame();  /* borrowed */
    if (frame == NULL) {
        set_acq(self, Py_NewRef(Py_None), self->acq_lasti);
        return 0;
    }
    PyCodeObject *code = PyFrame_GetCode(frame);  /* new ref */
    PyObject *old = self->acq;
    int lasti = frame_lasti(frame);
    if (old != NULL && PyTuple_CheckExact(old) && PyTuple_GET_SIZE(old) == 2
        && PyTuple_GET_ITEM(old, 0) == (PyObject *)code) {
        /* Same code as the last acquisition, which was a user frame. acq_lasti
         * is reset whenever Python code assigns _acq. */
        if (lasti >= 0 && lasti == self->acq_lasti) {
            Py_DECREF(code);
            return 0;
        }
        int line = PyFrame_GetLineNumber(frame);
        long oldline = PyLong_AsLong(PyTuple_GET_ITEM(old, 1));
        if (oldline == line) {
            self->acq_lasti = lasti;
            Py_DECREF(code);
            return 0;
        }
        if (oldline == -1 && PyErr_Occurred())
            PyErr_Clear();
        PyObject *acq = Py_BuildValue("(Oi)", code, line);
        Py_DECREF(code);
        if (acq == NULL)
            return -1;
        set_acq(self, acq, lasti);
        return 0;
    }
    int first = 1;
    Py_INCREF(frame);
    for (;;) {
        int internal = is_internal(code);
        if (internal < 0) {
            Py_DECREF(code);
            Py_DECREF(frame);
            return -1;
        }
        if (!internal)
            break;
        PyFrameObject *back = PyFrame_GetBack(frame);  /* new ref or NULL */
        Py_DECREF(frame);
        Py_DECREF(code);
        if (back == NULL) {
            set_acq(self, Py_NewRef(Py_None), self->acq_lasti);
            return 0;
        }
        frame = back;
        code = PyFrame_GetCode(frame);
        first = 0;
    }
    if (!first) {
        /* Found up the stack (e.g. the caller of threading.Condition.__enter__):
         * the same user frame position as last time gives the same site, with
         * no line-table decoding and no new tuple. */
        lasti = frame_lasti(frame);
        if (lasti >= 0 && lasti == self->acq_lasti && old != NULL && PyTuple_CheckExact(old)
            && PyTuple_GET_SIZE(old) == 2 && PyTuple_GET_ITEM(old, 0) == (PyObject *)code) {
            Py_DECREF(code);
            Py_DECREF(frame);
            return 0;
        }
    }
    PyObject *acq = Py_BuildValue("(Oi)", code, PyFrame_GetLineNumber(frame));
    Py_DECREF(code);
    Py_DECREF(frame);
    if (acq == NULL)
        return -1;
    /* acq_lasti is the position, in acq's code, that gave acq: a position in
     * that code maps to one line wherever the frame is found. */
    set_acq(self, acq, lasti);
    return 0;
}

/* Remove lock from owner.held (last item usually), as _primitives._drop_held. */
static int
drop_held(PyObject *owner, PyObject *lock)
{
    PyObject *held = state_slot(owner, g_held_offset, s_held);
    if (held == NULL)
        return -1;
    if (!PyList_Check(held)) {
        Py_DECREF(held);
        PyErr_SetString(PyExc_TypeError, "ThreadState.held is not a list");
        return -1;
    }
    int rc = 0;
#ifdef LW_FT
    /* Another thread may release a Lock this thread holds (a hand-off) and
     * so change this list: the search and the removal are one step, under
     * the list's own critical section (as list methods are). Items move one
     * pointer at a time (atomically), as CPython's list does for its
     * lock-free readers. */
    int found = 0;
    Py_BEGIN_CRITICAL_SECTION(held);
    Py_ssize_t n = PyList_GET_SIZE(held);
    PyObject **items = ((PyListObject *)held)->ob_item;
    for (Py_ssize_t i = n - 1; i >= 0; i--) {
        if (items[i] == lock) {
            for (Py_ssize_t j = i; j < n - 1; j++)
                _Py_atomic_store_ptr_release(&items[j], items[j + 1]);
            Py_SET_SIZE(held, n - 1);
            found = 1;
            break;
        }
    }
    Py_END_CRITICAL_SECTION();
    if (found)
        Py_DECREF(lock);  /* alive in the caller: no code runs */
#else
    Py_ssize_t n = PyList_GET_SIZE(held);
    if (n && PyList_GET_ITEM(held, n - 1) == lock) {
        /* Pop without shrinking the list's storage (as list.pop may): the next
         * acquire appends into it without allocating. The item is `lock`,
         * alive in the caller, so no code runs here. */
        Py_SET_SIZE(held, n - 1);
        Py_DECREF(lock);
    }
    else {
        for (Py_ssize_t i = n - 1; i >= 0; i--) {
            if (PyList_GET_ITEM(held, i) == lock) {
                rc = PyList_SetSlice(held, i, i + 1, NULL);
                break;
            }
        }
    }
#endif
    Py_DECREF(held);
    return rc;
}

static PyTypeObject LockBase_Type, RLockBase_Type;

static PyObject *
site_of_lock(PyObject *lock)  /* new ref */
{
    if (PyObject_TypeCheck(lock, &LockBase_Type) || PyObject_TypeCheck(lock, &RLockBase_Type)) {
        PyObject *site = ((LockObject *)lock)->site;
        if (site != NULL)
            return Py_NewRef(site);
    }
    return PyObject_GetAttr(lock, s_site);
}

/* A lock's object field (new ref, or NULL without an error when unset), read
 * under the lock's critical section: for the fields that other threads may
 * set after the lock is shared (_serial, _acq). */
static PyObject *
lock_field(LockObject *self, PyObject **field)
{
    PyObject *v;
    Py_BEGIN_CRITICAL_SECTION(self);
    v = Py_XNewRef(LW_LOAD_PTR(*field));
    Py_END_CRITICAL_SECTION();
    return v;
}

/* (key, serials of the held locks, serial of self): _order.note's key for
 * nested locks of one site. New ref; NULL without an error when self has no
 * serial yet (note must run), NULL with an error on failure. `held` is the
 * thread's held list (GIL) or a snapshot of it (tuple, free-threaded). */
static PyObject *
instance_key(PyObject *key, PyObject *held, Py_ssize_t n, LockObject *self)
{
    PyObject *own = lock_field(self, &self->serial);
    if (own == NULL)
        return NULL;
    int numbered = PyObject_IsTrue(own);
    if (numbered <= 0) {
        Py_DECREF(own);
        return NULL;
    }
    PyObject *serials = PyTuple_New(n);
    if (serials == NULL) {
        Py_DECREF(own);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (PySequence_Fast_GET_SIZE(held) != n) {  /* changed under us */
            Py_DECREF(serials);
            Py_DECREF(own);
            return NULL;
        }
        PyObject *lock = PySequence_Fast_GET_ITEM(held, i);
        PyObject *serial = NULL;
        if (PyObject_TypeCheck(lock, &LockBase_Type) || PyObject_TypeCheck(lock, &RLockBase_Type))
            serial = lock_field((LockObject *)lock, &((LockObject *)lock)->serial);
        if (serial == NULL)
            serial = PyObject_GetAttr(lock, s_serial);
        if (serial == NULL) {  /* not ours to judge: let note() decide */
            PyErr_Clear();
            Py_DECREF(serials);
            Py_DECREF(own);
            return NULL;
        }
        PyTuple_SET_ITEM(serials, i, serial);
    }
    PyObject *ikey = PyTuple_Pack(3, key, serials, own);
    Py_DECREF(serials);
    Py_DECREF(own);
    return ikey;
}

/* The fast path of _order.note(ts, lock), in C: 1 when note would return None
 * at once (lockwise reporting, or this chain of sites was validated before),
 * 0 when note must run, -1 on error. Mirrors _order.note's first lines.
 * Without the GIL, another thread may change ts.held (it releases a Lock this
 * thread holds): the chain is read from a snapshot, with strong references. */
static int
order_known(PyObject *ts, LockObject *self, PyObject *held_list)
{
    if (g_order == NULL || self->site == NULL)
        return 0;
    PyObject *quiet = state_slot(ts, g_quiet_offset, s_quiet);
    if (quiet == NULL)
        return -1;
    int q = PyObject_IsTrue(quiet);
    Py_DECREF(quiet);
    if (q)
        return q < 0 ? -1 : 1;
#ifdef LW_FT
    PyObject *held = PyList_AsTuple(held_list);
    if (held == NULL)
        return -1;
#else
    PyObject *held = held_list;
#endif
    int r = -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(held);
    PyObject *key = NULL;
    PyObject *chain = PyTuple_New(n);
    if (chain == NULL)
        goto done;
    int in_chain = 0;
    for (Py_ssize_t i = 0; i < n && i < PySequence_Fast_GET_SIZE(held); i++) {
        PyObject *site = site_of_lock(PySequence_Fast_GET_ITEM(held, i));
        if (site == NULL) {
            Py_DECREF(chain);
            goto done;
        }
        if (site == self->site)
            in_chain = 1;
        PyTuple_SET_ITEM(chain, i, site);
    }
    if (PySequence_Fast_GET_SIZE(held) != n) {  /* changed under us */
        Py_DECREF(chain);
        r = 0;
        goto done;
    }
    key = PyTuple_Pack(2, chain, self->site);
    Py_DECREF(chain);
    if (key == NULL)
        goto done;
    if (in_chain) {
        /* Locks of one site nested: _order._known_instances, keyed by serials. */
        PyObject *ikey = instance_key(key, held, n, self);
        Py_DECREF(key);
        key = ikey;
        if (ikey == NULL) {
            r = PyErr_Occurred() ? -1 : 0;
            goto done;
        }
    }
    PyObject *known = PyObject_GetAttr(g_order, in_chain ? s_known_instances : s_known);
    if (known == NULL)
        goto done;
    r = PySet_Check(known) ? PySet_Contains(known, key) : 0;
    Py_DECREF(known);
done:
    Py_XDECREF(key);
#ifdef LW_FT
    Py_DECREF(held);
#endif
    return r;
}

/* Is `held` non-empty and lock-order checking on? 1/0/-1. */
static int
needs_order_check(PyObject *held)
{
    if (!PyList_GET_SIZE(held))
        return 0;
    PyObject *on = PyObject_GetAttr(g_settings, s_lock_order);
    if (on == NULL)
        return -1;
    int r = PyObject_IsTrue(on);
    Py_DECREF(on);
    return r;
}

/* Parse two arguments named `names` into *blocking and *timeout (borrowed;
 * the caller sets their defaults). */
static int
parse_two(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
          const char *const names[2], PyObject **blocking, PyObject **timeout)
{
    if (nargs > 2) {
        PyErr_Format(PyExc_TypeError,
                     "acquire() takes at most 2 arguments (%zd given)", nargs);
        return -1;
    }
    if (nargs >= 1)
        *blocking = args[0];
    if (nargs >= 2)
        *timeout = args[1];
    if (kwnames != NULL) {
        Py_ssize_t nkw = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t i = 0; i < nkw; i++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, i);
            PyObject *value = args[nargs + i];
            int which = -1;
            for (int j = 0; j < 2; j++) {
                int eq = PyUnicode_CompareWithASCIIString(key, names[j]);
                if (eq == 0) {
                    which = j;
                    break;
                }
            }
            if (which < 0) {
                PyErr_Format(PyExc_TypeError,
                             "acquire() got an unexpected keyword argument '%S'", key);
                return -1;
            }
            if (which < nargs) {
                PyErr_Format(PyExc_TypeError,
                             "acquire() got multiple values for argument '%s'",
                             names[which]);
                return -1;
            }
            if (which == 0)
                *blocking = value;
            else
                *timeout = value;
        }
    }
    return 0;
}

/* Parse (blocking=True, timeout=-1). *fast is 1 when timeout == -1. */
static int
parse_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
           PyObject **blocking, PyObject **timeout, int *fast)
{
    static const char *const names[] = {"blocking", "timeout"};
    *blocking = Py_True;
    *timeout = s_minus_one;
    if (parse_two(args, nargs, kwnames, names, blocking, timeout) < 0)
        return -1;
    PyObject *t = *timeout;
    if (t == s_minus_one) {
        *fast = 1;
    }
    else if (PyLong_CheckExact(t)) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(t, &overflow);
        *fast = (!overflow && v == -1);
    }
    else if (PyFloat_CheckExact(t)) {
        *fast = (PyFloat_AS_DOUBLE(t) == -1.0);
    }
    else {
        int eq = PyObject_RichCompareBool(t, s_minus_one, Py_EQ);
        if (eq < 0)
            return -1;
        *fast = eq;
    }
    return 0;
}

/* multiprocessing's signature, for the locks over its semaphore (MPLock,
 * MPRLock): (block=True, timeout=None). None waits for ever, and a
 * non-blocking call ignores its timeout: both are the fast path's. A negative
 * timeout is 0, as multiprocessing reads it; any other goes to _acquire_slow
 * as given (a timeout of threading's kind from here on). */
static int
parse_mp_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames,
              PyObject **blocking, PyObject **timeout, int *fast)
{
    static const char *const names[] = {"block", "timeout"};
    *blocking = Py_True;
    *timeout = Py_None;
    if (parse_two(args, nargs, kwnames, names, blocking, timeout) < 0)
        return -1;
    if (*timeout == Py_None) {
        *fast = 1;
        return 0;
    }
    int blk = PyObject_IsTrue(*blocking);
    if (blk < 0)
        return -1;
    *fast = !blk;
    if (blk) {
        int negative = PyObject_RichCompareBool(*timeout, s_zero, Py_LT);
        if (negative < 0)
            return -1;
        if (negative)
            *timeout = s_zero;
    }
    return 0;
}

/* The parser for this lock's acquire: multiprocessing's for its semaphore. */
#define PARSE_ACQUIRE(self) \
    ((self)->inner != NULL && Py_IS_TYPE((self)->inner, &SemInner_Type) \
     ? parse_mp_args : parse_args)

/* self._acquire_slow(blocking, timeout, frame, waited[, True]): `waited` says
 * that the quiet wait was already spent here; `in_with` (Lock.__enter__ only)
 * adds the argument saying so. The Python slow path returns True with the
 * lock recorded, or False or raises with the inner lock not taken, whatever
 * asynchronous exception interrupts it; its result comes back here, then to
 * the caller, with no eval-breaker check in between. */
static PyObject *
call_slow(LockObject *self, PyObject *blocking, PyObject *timeout, int waited, int in_with)
{
    PyObject *frame = (PyObject *)PyEval_GetFrame();
    PyObject *stack[7] = {NULL, (PyObject *)self, blocking, timeout, frame ? frame : Py_None,
                          waited ? Py_True : Py_False, Py_True};
    return PyObject_VectorcallMethod(
        s_acquire_slow, stack + 1, (in_with ? 6 : 5) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* Clear the owner (None, and held_in_with and count 0) when it is `expect`,
 * or whatever thread owns it when expect is NULL, in one step under the
 * lock's critical section: of two threads releasing at once, one only takes
 * the owner's reference. Returns that reference (the caller releases it), or
 * NULL when the lock had no owner (or not `expect`). */
static PyObject *
take_owner(LockObject *self, PyObject *expect)
{
    PyObject *old = NULL;
    Py_BEGIN_CRITICAL_SECTION(self);
    PyObject *cur = self->owner;
    if (cur != NULL && cur != Py_None && (expect == NULL || cur == expect)) {
        old = cur;
        LW_STORE_I8(self->held_in_with, 0);
        LW_STORE_SSIZE(self->count, 0);
        LW_STORE_PTR(self->owner, Py_NewRef(Py_None));
    }
    Py_END_CRITICAL_SECTION();
    return old;
}

/* After the inner lock was taken without waiting: the lock-order check (for a
 * blocking acquire made while holding others), then record the owner.
 * On error the inner lock is released again. Returns 0 / -1. */
static int
take(LockObject *self, PyObject *ts, int blocking, int is_rlock, int in_with)
{
    PyObject *held = state_slot(ts, g_held_offset, s_held);
    if (held == NULL)
        goto fail;
    if (!PyList_Check(held)) {
        PyErr_SetString(PyExc_TypeError, "ThreadState.held is not a list");
        Py_DECREF(held);
        goto fail;
    }
    /* The owner is recorded first: the lock-order check below may run Python
     * code, and so a finalizer or a signal handler that takes this lock
     * again. It must find the lock owned by this thread: an RLock re-entry
     * then succeeds, and a Lock's self-wait is seen (not a wait on a lock
     * owned by nobody, which no rule can report). */
    PyObject *old_owner;
    Py_BEGIN_CRITICAL_SECTION(self);
    old_owner = self->owner;
    LW_STORE_I8(self->held_in_with, in_with);
    if (is_rlock)
        LW_STORE_SSIZE(self->count, 1);
    LW_STORE_PTR(self->owner, Py_NewRef(ts));
    Py_END_CRITICAL_SECTION();
    if (old_owner != NULL) {
        /* Only a multiprocessing lock is free with an owner on record (not
         * None): another process released it (a hand-off). That ownership is
         * over; its entry in the old owner's held list goes (this thread's
         * too). */
        if (old_owner != Py_None && Py_IS_TYPE(self->inner, &SemInner_Type)
                && drop_held(old_owner, (PyObject *)self) < 0)
            PyErr_Clear();
        Py_DECREF(old_owner);
    }
    if (blocking) {
        int check = needs_order_check(held);
        if (check < 0)
            goto undo;
        if (check == 0)
            check = 2;  /* no check wanted: skip note below */
        else
            check = 1;
        if (check == 1)
            check = order_known(ts, self, held);
        if (check < 0)
            goto undo;
        if (check == 0 && PyList_GET_SIZE(held)) {
            PyObject *stack[3] = {NULL, ts, (PyObject *)self};
            PyObject *error = PyObject_Vectorcall(
                g_note, stack + 1, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            if (error == NULL)
                goto undo;
            if (error != Py_None) {
                if (PyExceptionInstance_Check(error))
                    PyErr_SetObject((PyObject *)Py_TYPE(error), error);
                else
                    PyErr_SetString(PyExc_TypeError, "lock-order check returned a non-exception");
                Py_DECREF(error);
                goto undo;
            }
            Py_DECREF(error);
        }
    }
    if (record_site(self) < 0)
        goto undo;
    if (PyList_Append(held, (PyObject *)self) < 0)
        goto undo;  /* out of memory: as if the acquire had failed */
    Py_DECREF(held);
    return 0;
undo:
    Py_XDECREF(take_owner(self, ts));
    Py_DECREF(held);
fail:
    inner_release_keep_error(self->inner);
    return -1;
}

static int
check_init(LockObject *self)
{
    if (self->inner == NULL) {
        PyErr_SetString(PyExc_AttributeError, "_inner: lock not initialized");
        return -1;
    }
    if (g_local == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "lockwise._speedups.setup() was not called");
        return -1;
    }
    return 0;
}

/* --------------------------------------------------------------------- Lock */

static PyObject *
lock_acquire_impl(LockObject *self, PyObject *blocking, PyObject *timeout, int fast,
                  int in_with)
{
    if (check_init(self) < 0)
        return NULL;
    if (fast) {
        int blk = PyObject_IsTrue(blocking);
        if (blk < 0)
            return NULL;
        int got = inner_try(self->inner);
        if (got < 0)
            return NULL;
        if (!got) {
            if (!blk)
                Py_RETURN_FALSE;  /* a failed try, as the pure Lock answers it */
            got = inner_quiet_wait(self->inner);
            if (!got)
                return call_slow(self, blocking, timeout, LW_LOAD_I64(g_quiet_us) > 0, in_with);
        }
        PyObject *ts = current_state();
        if (ts == NULL) {
            inner_release_keep_error(self->inner);
            return NULL;
        }
        int rc = take(self, ts, blk, 0, in_with);
        Py_DECREF(ts);
        if (rc < 0)
            return NULL;
        if (in_with && Py_IS_TYPE(self->inner, &SemInner_Type))
            seminner_set_with(self->inner);
        Py_RETURN_TRUE;
    }
    return call_slow(self, blocking, timeout, 0, in_with);
}

static PyObject *
lock_acquire(LockObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs == 0 && kwnames == NULL)  /* acquire(): every signature's defaults */
        return lock_acquire_impl(self, Py_True, s_minus_one, 1, 0);
    PyObject *blocking, *timeout;
    int fast;
    if (PARSE_ACQUIRE(self)(args, nargs, kwnames, &blocking, &timeout, &fast) < 0)
        return NULL;
    return lock_acquire_impl(self, blocking, timeout, fast, 0);
}

static PyObject *
lock_enter(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    return lock_acquire_impl(self, Py_True, s_minus_one, 1, 1);
}

static PyObject *
lock_release(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_init(self) < 0)
        return NULL;
    PyObject *owner = take_owner(self, NULL);  /* we now own the old reference */
    if (owner == NULL) {
        /* Unlocked (the inner lock raises RuntimeError as threading does), or
         * an acquirer is between taking the inner lock and recording itself. */
        if (inner_release(self->inner) < 0)
            return NULL;
        Py_RETURN_NONE;
    }
    /* From here on the inner lock is given back whatever fails: the owner is
     * cleared, so a lock left taken would be held by nobody, for ever. */
    if (drop_held(owner, (PyObject *)self) < 0)
        goto error;
    if (is_current_state(owner))
        goto released;  /* its owner releases it: the common case, no ident read */
    PyObject *ident = state_slot(owner, g_ident_offset, s_ident);
    if (ident == NULL)
        goto error;
    unsigned long id = PyLong_AsUnsignedLong(ident);
    Py_DECREF(ident);
    if (id == (unsigned long)-1 && PyErr_Occurred())
        goto error;
    if (id != PyThread_get_thread_ident()) {
        if (self->site == NULL) {
            PyErr_SetString(PyExc_AttributeError, "_site");
            goto error;
        }
        if (PyObject_SetAttr(self->site, s_signal, Py_True) < 0)
            goto error;
    }
released:
    Py_DECREF(owner);
    if (inner_release(self->inner) < 0)
        return NULL;
    Py_RETURN_NONE;
error:
    inner_release_keep_error(self->inner);
    Py_DECREF(owner);
    return NULL;
}

static PyObject *
lock_exit(LockObject *self, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs))
{
    return lock_release(self, NULL);
}

/* What threading.Condition asks of a lock: for Lock, "held by any thread"
 * (its own fallback tries and releases the lock; this asks without trying). */
static PyObject *
lock_is_owned(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_init(self) < 0)
        return NULL;
    if (Py_IS_TYPE(self->inner, &InnerLock_Type))
        return PyBool_FromLong(LW_LOAD_I8(((InnerLockObject *)self->inner)->locked));
    PyObject *stack[2] = {NULL, self->inner};
    PyObject *res = PyObject_VectorcallMethod(
        s_locked, stack + 1, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (res == NULL)
        return NULL;
    int t = PyObject_IsTrue(res);
    Py_DECREF(res);
    if (t < 0)
        return NULL;
    return PyBool_FromLong(t);
}

/* -------------------------------------------------------------------- RLock */

static PyObject *
rlock_acquire_impl(LockObject *self, PyObject *blocking, PyObject *timeout, int fast)
{
    if (check_init(self) < 0)
        return NULL;
    if (fast) {
        int blk = PyObject_IsTrue(blocking);
        if (blk < 0)
            return NULL;
        PyObject *ts = current_state();
        if (ts == NULL)
            return NULL;
        if (LW_LOAD_PTR(self->owner) == ts) {  /* only this thread stores ts there */
            Py_DECREF(ts);
            LW_STORE_SSIZE(self->count, LW_LOAD_SSIZE(self->count) + 1);
            Py_RETURN_TRUE;
        }
        int got = inner_try(self->inner);
        if (got < 0) {
            Py_DECREF(ts);
            return NULL;
        }
        if (!got) {
            if (!blk) {
                Py_DECREF(ts);
                Py_RETURN_FALSE;  /* a failed try, as the pure RLock answers it */
            }
            got = inner_quiet_wait(self->inner);
            if (!got) {
                Py_DECREF(ts);
                return call_slow(self, blocking, timeout, LW_LOAD_I64(g_quiet_us) > 0, 0);
            }
        }
        int rc = take(self, ts, blk, 1, 0);
        Py_DECREF(ts);
        if (rc < 0)
            return NULL;
        Py_RETURN_TRUE;
    }
    return call_slow(self, blocking, timeout, 0, 0);
}

static PyObject *
rlock_acquire(LockObject *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs == 0 && kwnames == NULL)  /* acquire(): every signature's defaults */
        return rlock_acquire_impl(self, Py_True, s_minus_one, 1);
    PyObject *blocking, *timeout;
    int fast;
    if (PARSE_ACQUIRE(self)(args, nargs, kwnames, &blocking, &timeout, &fast) < 0)
        return NULL;
    return rlock_acquire_impl(self, blocking, timeout, fast);
}

static PyObject *
rlock_enter(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    return rlock_acquire_impl(self, Py_True, s_minus_one, 1);
}

static PyObject *
rlock_release(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_init(self) < 0)
        return NULL;
    PyObject *ts = current_state();
    if (ts == NULL)
        return NULL;
    if (LW_LOAD_PTR(self->owner) != ts) {
        Py_DECREF(ts);
        PyErr_SetString(PyExc_RuntimeError, "cannot release un-acquired lock");
        return NULL;
    }
    Py_ssize_t count = LW_LOAD_SSIZE(self->count) - 1;
    if (count) {
        LW_STORE_SSIZE(self->count, count);
        Py_DECREF(ts);
        Py_RETURN_NONE;
    }
    /* == ts: take over the field's reference (count set to 0 with it) */
    PyObject *owner = take_owner(self, ts);
    int rc = drop_held(ts, (PyObject *)self);
    if (rc < 0) {
        /* The owner is cleared: give the inner lock back all the same. */
        inner_release_keep_error(self->inner);
    }
    Py_XDECREF(owner);
    Py_DECREF(ts);
    if (rc < 0)
        return NULL;
    if (inner_release(self->inner) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* For RLock: held by the calling thread. */
static PyObject *
rlock_is_owned(LockObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *ts = current_state();
    if (ts == NULL)
        return NULL;
    int mine = LW_LOAD_PTR(self->owner) == ts;
    Py_DECREF(ts);
    return PyBool_FromLong(mine);
}

static PyObject *
rlock_exit(LockObject *self, PyObject *const *Py_UNUSED(args), Py_ssize_t Py_UNUSED(nargs))
{
    return rlock_release(self, NULL);
}

/* ------------------------------------------------------------ type plumbing */

static int
lock_traverse(LockObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->inner);
    Py_VISIT(self->owner);
    Py_VISIT(self->site);
    Py_VISIT(self->acq);
    Py_VISIT(self->serial);
    return 0;
}

static int
lock_clear(LockObject *self)
{
    Py_CLEAR(self->inner);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->site);
    Py_CLEAR(self->acq);
    Py_CLEAR(self->serial);
    return 0;
}

static void
lock_dealloc(LockObject *self)
{
    PyObject_GC_UnTrack(self);
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    lock_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define COMMON_MEMBERS \
    {"_inner", T_OBJECT_EX, offsetof(LockObject, inner), 0, NULL}, \
    {"_owner", T_OBJECT_EX, offsetof(LockObject, owner), 0, NULL}, \
    {"_site", T_OBJECT_EX, offsetof(LockObject, site), 0, NULL}, \
    {"_serial", T_OBJECT_EX, offsetof(LockObject, serial), 0, NULL}

static PyMemberDef lock_members[] = {
    COMMON_MEMBERS,
    {NULL, 0, 0, 0, NULL},
};

static PyMemberDef rlock_members[] = {
    COMMON_MEMBERS,
    {"_count", T_PYSSIZET, offsetof(LockObject, count), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

/* _acq is a property so that assignments from Python (the slow path, fork)
 * invalidate the C shortcut in record_site. */
static PyObject *
lock_get_acq(LockObject *self, void *Py_UNUSED(closure))
{
    PyObject *acq = lock_field(self, &self->acq);
    if (acq == NULL)
        PyErr_SetString(PyExc_AttributeError, "_acq");
    return acq;
}

static int
lock_set_acq(LockObject *self, PyObject *value, void *Py_UNUSED(closure))
{
    set_acq(self, Py_XNewRef(value), -1);
    return 0;
}

static PyGetSetDef lock_getset[] = {
    {"_acq", (getter)lock_get_acq, (setter)lock_set_acq, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
lock_get_held_in_with(LockObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(LW_LOAD_I8(self->held_in_with));
}

/* Lock only: read-only for users; the shared Python code (slow path, fork)
 * sets it through _set_held_in_with. */
static PyGetSetDef plain_lock_getset[] = {
    {"_acq", (getter)lock_get_acq, (setter)lock_set_acq, NULL, NULL},
    {"_held_in_with", (getter)lock_get_held_in_with, NULL,
     "True while the holder took the lock with `with` (__enter__).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
lock_set_held_in_with(LockObject *self, PyObject *value)
{
    int v = PyObject_IsTrue(value);
    if (v < 0)
        return NULL;
    LW_STORE_I8(self->held_in_with, v);
    Py_RETURN_NONE;
}

static PyObject *
lock_new(PyTypeObject *type, PyObject *Py_UNUSED(args), PyObject *Py_UNUSED(kwds))
{
    LockObject *self = (LockObject *)type->tp_alloc(type, 0);
    if (self != NULL)
        self->acq_lasti = -1;
    return (PyObject *)self;
}

static PyMethodDef lock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))lock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool"},
    {"__enter__", (PyCFunction)lock_enter, METH_NOARGS, "Acquire the lock."},
    {"release", (PyCFunction)lock_release, METH_NOARGS, "Release the lock."},
    {"__exit__", (PyCFunction)(void (*)(void))lock_exit, METH_FASTCALL, "Release the lock."},
    {"_is_owned", (PyCFunction)lock_is_owned, METH_NOARGS, "Whether the lock is held."},
    {"_set_held_in_with", (PyCFunction)lock_set_held_in_with, METH_O,
     "Set _held_in_with (lockwise's slow path and Condition only)."},
    {NULL, NULL, 0, NULL},
};

static PyMethodDef rlock_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))rlock_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool"},
    {"__enter__", (PyCFunction)rlock_enter, METH_NOARGS, "Acquire the lock."},
    {"release", (PyCFunction)rlock_release, METH_NOARGS, "Release the lock."},
    {"__exit__", (PyCFunction)(void (*)(void))rlock_exit, METH_FASTCALL, "Release the lock."},
    {"_is_owned", (PyCFunction)rlock_is_owned, METH_NOARGS,
     "Whether the calling thread holds the lock."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LockBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockwise._speedups.LockBase",
    .tp_basicsize = sizeof(LockObject),
    .tp_dealloc = (destructor)lock_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "C hot path of lockwise.Lock (use lockwise.Lock).",
    .tp_traverse = (traverseproc)lock_traverse,
    .tp_clear = (inquiry)lock_clear,
    .tp_weaklistoffset = offsetof(LockObject, weakreflist),
    .tp_methods = lock_methods,
    .tp_members = lock_members,
    .tp_getset = plain_lock_getset,
    .tp_new = lock_new,
};

static PyTypeObject RLockBase_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockwise._speedups.RLockBase",
    .tp_basicsize = sizeof(LockObject),
    .tp_dealloc = (destructor)lock_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "C hot path of lockwise.RLock (use lockwise.RLock).",
    .tp_traverse = (traverseproc)lock_traverse,
    .tp_clear = (inquiry)lock_clear,
    .tp_weaklistoffset = offsetof(LockObject, weakreflist),
    .tp_methods = rlock_methods,
    .tp_members = rlock_members,
    .tp_getset = lock_getset,
    .tp_new = lock_new,
};

/* ------------------------------------------------------------------ module */

/* Offset of a __slots__ member of a type, or -1 (then getattr is used). */
static Py_ssize_t
slot_offset(PyObject *type, PyObject *name)
{
    PyObject *descr = PyObject_GetAttr(type, name);
    if (descr == NULL) {
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t offset = -1;
    if (Py_IS_TYPE(descr, &PyMemberDescr_Type)) {
        PyMemberDef *def = ((PyMemberDescrObject *)descr)->d_member;
        if (def->type == T_OBJECT_EX && !(def->flags & READONLY))
            offset = def->offset;
    }
    Py_DECREF(descr);
    return offset;
}

static PyObject *
speedups_setup(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *local, *new_state, *settings, *note, *internal_files, *ts_type, *inner;
    PyObject *order = NULL;
    if (!PyArg_ParseTuple(args, "OOOOO!O!O|O:setup", &local, &new_state, &settings, &note,
                          &PySet_Type, &internal_files, &PyType_Type, &ts_type, &inner,
                          &order))
        return NULL;
    Py_XINCREF(order);
    Py_XSETREF(g_order, order);
    PyObject *acquire = PyObject_GetAttr((PyObject *)Py_TYPE(inner), s_acquire);
    if (acquire == NULL)
        return NULL;
    PyObject *release = PyObject_GetAttr((PyObject *)Py_TYPE(inner), s_release);
    if (release == NULL) {
        Py_DECREF(acquire);
        return NULL;
    }
    Py_XSETREF(g_inner_acquire, acquire);
    Py_XSETREF(g_inner_release, release);
    Py_INCREF(Py_TYPE(inner));
    Py_XSETREF(g_inner_type, Py_TYPE(inner));
    Py_INCREF(ts_type);
    Py_XSETREF(g_ts_type, (PyTypeObject *)ts_type);
    g_held_offset = slot_offset(ts_type, s_held);
    g_ident_offset = slot_offset(ts_type, s_ident);
    g_quiet_offset = slot_offset(ts_type, s_quiet);
    if (PyErr_Occurred())
        return NULL;
    Py_XSETREF(g_local, Py_NewRef(local));
    Py_XSETREF(g_new_state, Py_NewRef(new_state));
    Py_XSETREF(g_settings, Py_NewRef(settings));
    Py_XSETREF(g_note, Py_NewRef(note));
    Py_XSETREF(g_internal_files, Py_NewRef(internal_files));
    Py_RETURN_NONE;
}

static PyObject *
speedups_set_quiet_wait(PyObject *Py_UNUSED(module), PyObject *arg)
{
    long long us = PyLong_AsLongLong(arg);
    if (us == -1 && PyErr_Occurred())
        return NULL;
#ifdef LW_FT
    long long previous = _Py_atomic_exchange_int64(&g_quiet_us, us < 0 ? 0 : (int64_t)us);
#else
    long long previous = g_quiet_us;
    g_quiet_us = us < 0 ? 0 : us;
#endif
    return PyLong_FromLongLong(previous);
}

/* ------------------------------------------------------ a Condition's RLock */

static PyTypeObject *g_rlock_type;  /* lockwise's (accelerated) RLock class */
static PyObject *g_by_offset;       /* _sites._by_offset */
static PyObject *g_site_of;         /* _sites.site_of */

/* The site of the first user frame at or above `frame`, as _sites.site_of
 * finds it: from its (id(code), lasti) cache, else by calling site_of. */
static PyObject *
site_for(PyObject *frame_obj)  /* new ref */
{
    PyFrameObject *frame = (PyFrameObject *)Py_NewRef(frame_obj);
    PyCodeObject *code = PyFrame_GetCode(frame);
    for (;;) {
        int internal = is_internal(code);
        if (internal < 0)
            goto fail;
        if (!internal)
            break;
        PyFrameObject *back = PyFrame_GetBack(frame);
        if (back == NULL)
            goto slow;
        Py_DECREF(frame);
        Py_DECREF(code);
        frame = back;
        code = PyFrame_GetCode(frame);
    }
    PyObject *key = Py_BuildValue("(Ni)", PyLong_FromVoidPtr(code), frame_lasti(frame));
    if (key == NULL)
        goto fail;
#if PY_VERSION_HEX >= 0x030D0000
    /* Other threads add to the cache: a strong reference to the entry. */
    PyObject *entry = NULL;
    if (PyDict_GetItemRef(g_by_offset, key, &entry) < 0) {
        Py_DECREF(key);
        goto fail;
    }
#else
    PyObject *entry = Py_XNewRef(PyDict_GetItemWithError(g_by_offset, key));
#endif
    Py_DECREF(key);
    if (entry != NULL && PyTuple_CheckExact(entry) && PyTuple_GET_SIZE(entry) == 2
        && PyTuple_GET_ITEM(entry, 0) == (PyObject *)code) {
        PyObject *site = Py_NewRef(PyTuple_GET_ITEM(entry, 1));
        Py_DECREF(entry);
        Py_DECREF(code);
        Py_DECREF(frame);
        return site;
    }
    Py_XDECREF(entry);
    if (PyErr_Occurred())
        goto fail;
slow:
    Py_DECREF(code);
    PyObject *site = PyObject_CallOneArg(g_site_of, (PyObject *)frame);
    Py_DECREF(frame);
    return site;
fail:
    Py_DECREF(code);
    Py_DECREF(frame);
    return NULL;
}

/* new_rlock(frame): what _primitives.rlock_at(_sites.site_of(frame)) makes. */
static PyObject *
speedups_new_rlock(PyObject *Py_UNUSED(module), PyObject *frame)
{
    if (g_rlock_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "lockwise._speedups.setup_rlock() was not called");
        return NULL;
    }
    if (!PyFrame_Check(frame)) {
        PyErr_SetString(PyExc_TypeError, "new_rlock() expects a frame");
        return NULL;
    }
    PyObject *site = site_for(frame);
    if (site == NULL)
        return NULL;
    PyObject *inner = alloc_inner(&InnerLock_Type);
    if (inner == NULL) {
        Py_DECREF(site);
        return NULL;
    }
    PyObject *serial = PyLong_FromLong(0);
    if (serial == NULL) {
        Py_DECREF(inner);
        Py_DECREF(site);
        return NULL;
    }
    LockObject *self = (LockObject *)g_rlock_type->tp_alloc(g_rlock_type, 0);
    if (self == NULL) {
        Py_DECREF(serial);
        Py_DECREF(inner);
        Py_DECREF(site);
        return NULL;
    }
    self->inner = inner;
    self->owner = Py_NewRef(Py_None);
    self->site = site;
    self->acq = Py_NewRef(Py_None);
    self->acq_lasti = -1;
    self->serial = serial;
    self->count = 0;
    return (PyObject *)self;
}

static PyObject *
speedups_setup_rlock(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *rlock_type, *by_offset, *site_of;
    if (!PyArg_ParseTuple(args, "O!O!O:setup_rlock", &PyType_Type, &rlock_type,
                          &PyDict_Type, &by_offset, &site_of))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)rlock_type, &RLockBase_Type)) {
        PyErr_SetString(PyExc_TypeError, "setup_rlock() expects a subclass of RLockBase");
        return NULL;
    }
    Py_INCREF(rlock_type);
    Py_XSETREF(g_rlock_type, (PyTypeObject *)rlock_type);
    Py_XSETREF(g_by_offset, Py_NewRef(by_offset));
    Py_XSETREF(g_site_of, Py_NewRef(site_of));
    Py_RETURN_NONE;
}


/* ------------------------------------------------------------------ SemInner
 *
 * The raw lock under lockwise._mp's MPLock and MPRLock: a multiprocessing
 * semaphore (its bound acquire/release) with the holder's slot in shared
 * memory (int64 pid, thread ident, count, with-flag, process start time),
 * written as the semaphore is taken and cleared before it is given back.
 * lockwise._mp.SemInner is the reference; this one saves the Python frames
 * on the uncontended path. A blocking acquire that does not succeed at once,
 * and a release by a thread that is not the recorded holder, call the
 * Python functions given to setup_mp(). The slot is only written by the
 * holder (and cleared by the releaser); other processes read it for reports.
 */

enum { SLOT_PID, SLOT_IDENT, SLOT_GEN, SLOT_WITH, SLOT_START, SLOT_N };

typedef struct {
    PyObject_HEAD
    PyObject *sem_acquire, *sem_release, *is_zero;
    PyObject *lock_ref;      /* weakref to the MPLock (exposed as _lock) */
    Py_buffer view;          /* the slot's buffer, held for our lifetime */
    int64_t *slot;
#ifndef MS_WINDOWS
    sem_t *handle;           /* the POSIX semaphore (sem.handle), or NULL */
#endif
    PyObject *weakreflist;
} SemInnerObject;

static PyObject *g_mp_wait, *g_mp_foreign;  /* _mp.wait, _mp.released_by_another */
static int64_t g_mp_pid, g_mp_start;        /* this process (set again after fork) */

static PyObject *
seminner_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *sem, *slot, *lock;
    static char *kwlist[] = {"sem", "slot", "lock", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:SemInner", kwlist, &sem, &slot, &lock))
        return NULL;
    SemInnerObject *self = (SemInnerObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    if (PyObject_GetBuffer(slot, &self->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    if (self->view.len < (Py_ssize_t)(SLOT_N * sizeof(int64_t))
        || ((uintptr_t)self->view.buf % sizeof(int64_t)) != 0) {
        PyErr_SetString(PyExc_ValueError, "SemInner: the slot is too small or not aligned");
        Py_DECREF(self);
        return NULL;
    }
    self->slot = (int64_t *)self->view.buf;
    if ((self->sem_acquire = PyObject_GetAttrString(sem, "acquire")) == NULL
        || (self->sem_release = PyObject_GetAttrString(sem, "release")) == NULL
        || (self->is_zero = PyObject_GetAttrString(sem, "_is_zero")) == NULL
        || (self->lock_ref = PyWeakref_NewRef(lock, NULL)) == NULL) {
        Py_DECREF(self);
        return NULL;
    }
#ifndef MS_WINDOWS
    /* The try and the release call the semaphore directly (no method call);
     * a blocking wait goes through sem.acquire, which handles signals. Only
     * for a plain semaphore: a recursive one counts its owner's acquisitions
     * in the SemLock object, which these calls would bypass. */
    PyObject *kind = PyObject_GetAttrString(sem, "kind");
    PyObject *handle = kind ? PyObject_GetAttrString(sem, "handle") : NULL;
    if (kind != NULL && handle != NULL && PyLong_Check(kind) && PyLong_AsLong(kind) == 1)
        self->handle = (sem_t *)PyLong_AsVoidPtr(handle);  /* SEMAPHORE == 1 */
    Py_XDECREF(kind);
    Py_XDECREF(handle);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        self->handle = NULL;
    }
#endif
    return (PyObject *)self;
}

static void
seminner_dealloc(SemInnerObject *self)
{
    if (self->weakreflist != NULL)
        PyObject_ClearWeakRefs((PyObject *)self);
    Py_XDECREF(self->sem_acquire);
    Py_XDECREF(self->sem_release);
    Py_XDECREF(self->is_zero);
    Py_XDECREF(self->lock_ref);
    if (self->slot != NULL)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static void
seminner_mark(SemInnerObject *self)
{
    int64_t *slot = self->slot;
    slot[SLOT_IDENT] = (int64_t)PyThread_get_thread_ident();
    slot[SLOT_WITH] = 0;
    slot[SLOT_START] = g_mp_start;
    slot[SLOT_GEN] += 1;
    slot[SLOT_PID] = g_mp_pid;
}

/* sem.acquire(block[, timeout]) -> 1 taken (slot marked), 0 not, -1 error. */
static int
seminner_take(SemInnerObject *self, PyObject *block, PyObject *timeout)
{
    PyObject *args[2] = {block, timeout};
    PyObject *res = PyObject_Vectorcall(self->sem_acquire, args, timeout ? 2 : 1, NULL);
    if (res == NULL)
        return -1;
    int got = (res == Py_True) ? 1 : PyObject_IsTrue(res);
    Py_DECREF(res);
    if (got == 1)
        seminner_mark(self);
    return got;
}

static PyObject *
seminner_acquire(SemInnerObject *self, PyObject *const *args, Py_ssize_t nargs,
                 PyObject *kwnames)
{
    PyObject *blocking, *timeout;
    int fast;
    if (parse_args(args, nargs, kwnames, &blocking, &timeout, &fast) < 0)
        return NULL;
    int got = seminner_try((PyObject *)self);
    if (got != 0)
        return got < 0 ? NULL : Py_NewRef(Py_True);
    int blk = PyObject_IsTrue(blocking);
    if (blk <= 0)
        return blk < 0 ? NULL : Py_NewRef(Py_False);
    if (g_mp_wait == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "lockwise._speedups.setup_mp() was not called");
        return NULL;
    }
    PyObject *wargs[2] = {(PyObject *)self, timeout};
    return PyObject_Vectorcall(g_mp_wait, wargs, 2, NULL);
}

static PyObject *
seminner_take_method(SemInnerObject *self, PyObject *timeout)
{
    int got = seminner_take(self, Py_True, timeout);
    return got < 0 ? NULL : PyBool_FromLong(got);
}

static int
seminner_try(PyObject *op)
{
    SemInnerObject *self = (SemInnerObject *)op;
#ifndef MS_WINDOWS
    if (self->handle != NULL) {
        int r;
        do {
            r = sem_trywait(self->handle);
        } while (r < 0 && errno == EINTR);
        if (r == 0) {
            seminner_mark(self);
            return 1;
        }
        if (errno == EAGAIN)
            return 0;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
#endif
    return seminner_take(self, Py_False, NULL);
}

/* The release: refused as multiprocessing refuses it (a lock released too
 * many times), else the store is told when the releaser is not the recorded
 * holder, the slot is cleared, and the semaphore posted. 0, or -1 with an
 * exception and nothing changed. */
static int
seminner_give(PyObject *op)
{
    SemInnerObject *self = (SemInnerObject *)op;
    int64_t *slot = self->slot;
#ifndef MS_WINDOWS
    if (self->handle != NULL) {
        int value;
        if (sem_getvalue(self->handle, &value) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        if (value >= 1) {
            PyErr_SetString(PyExc_ValueError, "semaphore or lock released too many times");
            return -1;
        }
    }
#endif
    if (slot[SLOT_PID] != g_mp_pid
        || slot[SLOT_IDENT] != (int64_t)PyThread_get_thread_ident()) {
        if (g_mp_foreign != NULL) {
            PyObject *r = PyObject_CallOneArg(g_mp_foreign, op);
            if (r == NULL)
                PyErr_Clear();  /* reported by the callback itself; release anyway */
            Py_XDECREF(r);
        }
    }
    slot[SLOT_PID] = 0;
#ifndef MS_WINDOWS
    if (self->handle != NULL) {
        if (sem_post(self->handle) < 0) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        return 0;
    }
#endif
    PyObject *r = PyObject_CallNoArgs(self->sem_release);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static void
seminner_set_with(PyObject *op)
{
    ((SemInnerObject *)op)->slot[SLOT_WITH] = 1;
}

static PyObject *
seminner_release(SemInnerObject *self, PyObject *Py_UNUSED(ignored))
{
    if (seminner_give((PyObject *)self) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
seminner_locked(SemInnerObject *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *r = PyObject_CallNoArgs(self->is_zero);
    if (r == NULL)
        return NULL;
    int z = PyObject_IsTrue(r);
    Py_DECREF(r);
    return z < 0 ? NULL : PyBool_FromLong(z);
}

static PyMethodDef seminner_methods[] = {
    {"acquire", (PyCFunction)(void (*)(void))seminner_acquire, METH_FASTCALL | METH_KEYWORDS,
     "acquire(blocking=True, timeout=-1) -> bool"},
    {"release", (PyCFunction)seminner_release, METH_NOARGS, "Release the semaphore."},
    {"locked", (PyCFunction)seminner_locked, METH_NOARGS, "Whether the semaphore is taken."},
    {"take", (PyCFunction)seminner_take_method, METH_O,
     "take(timeout) -> bool: wait for the semaphore (None: forever), mark the slot."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef seminner_members[] = {
    {"_lock", T_OBJECT_EX, offsetof(SemInnerObject, lock_ref), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject SemInner_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "lockwise._speedups.SemInner",
    .tp_basicsize = sizeof(SemInnerObject),
    .tp_dealloc = (destructor)seminner_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "SemInner(sem, slot, lock): the raw lock under lockwise._mp's locks.",
    .tp_weaklistoffset = offsetof(SemInnerObject, weakreflist),
    .tp_methods = seminner_methods,
    .tp_members = seminner_members,
    .tp_new = seminner_new,
};

static PyObject *
speedups_setup_mp(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *wait, *foreign;
    long long pid, start;
    if (!PyArg_ParseTuple(args, "OOLL:setup_mp", &wait, &foreign, &pid, &start))
        return NULL;
    Py_XSETREF(g_mp_wait, Py_NewRef(wait));
    Py_XSETREF(g_mp_foreign, Py_NewRef(foreign));
    g_mp_pid = pid;
    g_mp_start = start;
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------ permit tables
 *
 * Who holds the permits of a multiprocessing Semaphore (lockwise._mp): a
 * table in shared memory that every process using the semaphore maps, with a
 * header of two int64 (a ticket counter and the count of permits taken while
 * the table was full) and entries of four int64 (pid, thread ident, ticket,
 * process start time). An entry is claimed by a compare-and-swap of its pid
 * from 0 to -1 (being written), filled, and published by storing the pid:
 * two processes never claim one entry, and a reader skips a half-written
 * one. A release clears the releaser's own entry; a release by a thread that
 * holds none (a semaphore used as a signal, or a hand-off) first uses up the
 * overflow count, then clears the oldest entry, so that the table matches
 * the permits outstanding. These are facts for reports, never grounds for
 * raising: any process may release a semaphore. GCC and Clang only (their
 * __atomic builtins are lock-free on int64 on every platform CPython runs
 * multiprocessing on); elsewhere the functions are absent and lockwise
 * leaves semaphores untracked. */

#if defined(__GNUC__) || defined(__clang__)
#define LW_PERMITS 1
enum { PT_TICKET, PT_OVERFLOW, PT_HEADER };
enum { PE_PID, PE_IDENT, PE_TICKET, PE_START, PE_N };

/* The table's int64 words and its entry count, or NULL with an exception
 * (also before setup_mp() gave this process's pid: an entry needs it). */
static int64_t *
permit_table(PyObject *obj, Py_buffer *view, Py_ssize_t *n)
{
    if (g_mp_pid <= 0) {
        PyErr_SetString(PyExc_RuntimeError, "lockwise._speedups.setup_mp() was not called");
        return NULL;
    }
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0)
        return NULL;
    Py_ssize_t words = view->len / (Py_ssize_t)sizeof(int64_t);
    if (words < PT_HEADER + PE_N || ((uintptr_t)view->buf % sizeof(int64_t)) != 0) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "permit table too small or not aligned");
        return NULL;
    }
    *n = (words - PT_HEADER) / PE_N;
    return (int64_t *)view->buf;
}

/* claim_permit(table): the calling thread takes an entry (this process's pid
 * and start time as setup_mp() last gave them). */
static PyObject *
speedups_claim_permit(PyObject *Py_UNUSED(module), PyObject *obj)
{
    int64_t pid = g_mp_pid, start = g_mp_start;
    int64_t ident = (int64_t)PyThread_get_thread_ident();
    Py_buffer view;
    Py_ssize_t n;
    int64_t *t = permit_table(obj, &view, &n);
    if (t == NULL)
        return NULL;
    int64_t ticket = __atomic_add_fetch(&t[PT_TICKET], 1, __ATOMIC_RELAXED);
    Py_ssize_t found = -1;
    for (Py_ssize_t i = 0; i < n && found < 0; i++) {
        int64_t *e = t + PT_HEADER + i * PE_N;
        int64_t expected = 0;
        if (__atomic_load_n(&e[PE_PID], __ATOMIC_RELAXED) == 0
            && __atomic_compare_exchange_n(&e[PE_PID], &expected, -1, 0,
                                           __ATOMIC_ACQUIRE, __ATOMIC_RELAXED)) {
            __atomic_store_n(&e[PE_IDENT], ident, __ATOMIC_RELAXED);
            __atomic_store_n(&e[PE_TICKET], ticket, __ATOMIC_RELAXED);
            __atomic_store_n(&e[PE_START], start, __ATOMIC_RELAXED);
            __atomic_store_n(&e[PE_PID], pid, __ATOMIC_RELEASE);
            found = i;
        }
    }
    if (found < 0)
        __atomic_add_fetch(&t[PT_OVERFLOW], 1, __ATOMIC_RELAXED);
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(found);
}

/* drop_permit(table): a permit is given back by the calling thread. */
static PyObject *
speedups_drop_permit(PyObject *Py_UNUSED(module), PyObject *obj)
{
    int64_t pid = g_mp_pid;
    int64_t ident = (int64_t)PyThread_get_thread_ident();
    Py_buffer view;
    Py_ssize_t n;
    int64_t *t = permit_table(obj, &view, &n);
    if (t == NULL)
        return NULL;
    Py_ssize_t dropped = -1;
    /* The releaser's own entry. */
    for (Py_ssize_t i = 0; i < n && dropped < 0; i++) {
        int64_t *e = t + PT_HEADER + i * PE_N;
        int64_t expected = pid;
        if (__atomic_load_n(&e[PE_PID], __ATOMIC_ACQUIRE) == pid
            && __atomic_load_n(&e[PE_IDENT], __ATOMIC_RELAXED) == ident
            && __atomic_compare_exchange_n(&e[PE_PID], &expected, 0, 0,
                                           __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            dropped = i;
    }
    /* Else a permit taken while the table was full. */
    int64_t over = __atomic_load_n(&t[PT_OVERFLOW], __ATOMIC_RELAXED);
    while (dropped < 0 && over > 0) {
        if (__atomic_compare_exchange_n(&t[PT_OVERFLOW], &over, over - 1, 0,
                                        __ATOMIC_RELAXED, __ATOMIC_RELAXED))
            dropped = -2;
    }
    /* Else the oldest holder's (a bounded number of tries: holders come and go). */
    for (int attempt = 0; dropped == -1 && attempt < 8; attempt++) {
        int64_t *oldest = NULL, oldest_pid = 0, oldest_ticket = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            int64_t *e = t + PT_HEADER + i * PE_N;
            int64_t p = __atomic_load_n(&e[PE_PID], __ATOMIC_ACQUIRE);
            int64_t k = __atomic_load_n(&e[PE_TICKET], __ATOMIC_RELAXED);
            if (p > 0 && (oldest == NULL || k < oldest_ticket)) {
                oldest = e;
                oldest_pid = p;
                oldest_ticket = k;
            }
        }
        if (oldest == NULL)
            break;
        if (__atomic_compare_exchange_n(&oldest[PE_PID], &oldest_pid, 0, 0,
                                        __ATOMIC_RELEASE, __ATOMIC_RELAXED))
            dropped = (oldest - (t + PT_HEADER)) / PE_N;
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(dropped);
}
#endif  /* __GNUC__ || __clang__ */

/* own_methods(cls, names): set on cls a method descriptor of its own for each
 * named C method of its base (LockBase or RLockBase), bound to cls.
 *
 * Why: CPython 3.11+ specializes `lock.acquire()` into a direct call of the C
 * function only while type(lock) is exactly the type the descriptor was made
 * for. The classes lockwise uses are Python subclasses of the C bases, so an
 * inherited descriptor fails that check on every call, and each call takes
 * the generic path (a method-descriptor vectorcall, its type check, the
 * recursion guard): measured with callgrind, about 350 instructions per
 * acquire+release pair. The descriptor made here calls the same C function;
 * an instance of a further subclass still passes its type check (isinstance),
 * only not the specialization. */
static PyObject *
speedups_own_methods(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *cls, *names;
    if (!PyArg_ParseTuple(args, "O!O:own_methods", &PyType_Type, &cls, &names))
        return NULL;
    PyTypeObject *type = (PyTypeObject *)cls;
    PyMethodDef *defs;
    if (PyType_IsSubtype(type, &RLockBase_Type))
        defs = rlock_methods;
    else if (PyType_IsSubtype(type, &LockBase_Type))
        defs = lock_methods;
    else {
        PyErr_Format(PyExc_TypeError, "own_methods: %R is not a lockwise lock class", cls);
        return NULL;
    }
    PyObject *seq = PySequence_Fast(names, "own_methods: names must be a sequence");
    if (seq == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *name = PySequence_Fast_GET_ITEM(seq, i);
        const char *cname = PyUnicode_Check(name) ? PyUnicode_AsUTF8(name) : NULL;
        if (cname == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "own_methods: %R is not a name", name);
            goto error;
        }
        PyMethodDef *def = defs;
        while (def->ml_name != NULL && strcmp(def->ml_name, cname) != 0)
            def++;
        if (def->ml_name == NULL) {
            PyErr_Format(PyExc_ValueError, "own_methods: %R is not a method of %s", name,
                         defs == rlock_methods ? RLockBase_Type.tp_name : LockBase_Type.tp_name);
            goto error;
        }
        PyObject *descr = PyDescr_NewMethod(type, def);
        if (descr == NULL)
            goto error;
        int r = PyObject_SetAttr(cls, name, descr);
        Py_DECREF(descr);
        if (r < 0)
            goto error;
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
error:
    Py_DECREF(seq);
    return NULL;
}

static PyMethodDef module_methods[] = {
    {"own_methods", speedups_own_methods, METH_VARARGS,
     "own_methods(cls, names): give cls its own descriptors of the named C methods of "
     "its base, so that CPython specializes calls on exact instances of cls."},
    {"new_rlock", speedups_new_rlock, METH_O,
     "new_rlock(frame) -> a new RLock whose creation site is the first user frame "
     "at or above frame (a Condition's own lock)."},
    {"setup_rlock", speedups_setup_rlock, METH_VARARGS,
     "setup_rlock(RLock, by_offset, site_of): the class new_rlock makes and the site "
     "cache it reads (called once by lockwise._primitives)."},
    {"setup_mp", speedups_setup_mp, METH_VARARGS,
     "setup_mp(wait, released_by_another, pid, start): lockwise._mp's slow paths and "
     "this process's pid and start time (called again after fork)."},
#ifdef LW_PERMITS
    {"claim_permit", speedups_claim_permit, METH_O,
     "claim_permit(table) -> the entry the calling thread took, or -1 (the table "
     "is full: counted as overflow)."},
    {"drop_permit", speedups_drop_permit, METH_O,
     "drop_permit(table) -> the entry cleared (the calling thread's own, else "
     "the oldest), -2 (an overflow permit), or -1 (none)."},
#endif
    {"set_quiet_wait", speedups_set_quiet_wait, METH_O,
     "set_quiet_wait(us) -> previous: how long a contended acquire waits in C "
     "before the slow path (0: not at all)."},
    {"setup", speedups_setup, METH_VARARGS,
     "setup(local, new_state, settings, note, internal_files, ThreadState, a_lock"
     "[, order_module]): wire the hot path "
     "to lockwise's Python modules (called once by lockwise._accel)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "lockwise._speedups",
    .m_doc = "C hot path of lockwise.Lock and lockwise.RLock (optional accelerator).",
    .m_size = -1,
    .m_methods = module_methods,
};

#define INTERN(var, text) \
    do { if ((var = PyUnicode_InternFromString(text)) == NULL) return NULL; } while (0)

PyMODINIT_FUNC
PyInit__speedups(void)
{
    INTERN(s_acquire, "acquire");
    INTERN(s_locked, "locked");
    INTERN(s_release, "release");
    INTERN(s_held, "held");
    INTERN(s_ident, "ident");
    INTERN(s_signal, "signal");
    INTERN(s_lock_order, "lock_order");
    INTERN(s_ts, "ts");
    INTERN(s_acquire_slow, "_acquire_slow");
    INTERN(s_quiet, "quiet");
    INTERN(s_site, "_site");
    INTERN(s_known, "_known");
    INTERN(s_known_instances, "_known_instances");
    INTERN(s_serial, "_serial");
    INTERN(g_ts_key, "lockwise._speedups.thread_state");
    if ((s_zero = PyLong_FromLong(0)) == NULL)
        return NULL;
    if ((s_minus_one = PyLong_FromLong(-1)) == NULL)
        return NULL;
    if (PyType_Ready(&LockBase_Type) < 0 || PyType_Ready(&RLockBase_Type) < 0
        || PyType_Ready(&InnerLock_Type) < 0 || PyType_Ready(&SemInner_Type) < 0)
        return NULL;
    if (g_allocate_lock == NULL) {
        PyObject *thread = PyImport_ImportModule("_thread");
        if (thread == NULL)
            return NULL;
        g_allocate_lock = PyObject_GetAttrString(thread, "allocate_lock");
        Py_DECREF(thread);
        if (g_allocate_lock == NULL)
            return NULL;
    }
    PyObject *m = PyModule_Create(&speedups_module);
    if (m == NULL)
        return NULL;
#ifdef Py_GIL_DISABLED
    /* Correct without the GIL (see the top of this file): importing lockwise
     * leaves a free-threaded interpreter free-threaded. */
    if (PyUnstable_Module_SetGIL(m, Py_MOD_GIL_NOT_USED) < 0) {
        Py_DECREF(m);
        return NULL;
    }
#endif
    Py_INCREF(&InnerLock_Type);
    if (PyModule_AddObject(m, "InnerLock", (PyObject *)&InnerLock_Type) < 0) {
        Py_DECREF(&InnerLock_Type);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&SemInner_Type);
    if (PyModule_AddObject(m, "SemInner", (PyObject *)&SemInner_Type) < 0) {
        Py_DECREF(&SemInner_Type);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&LockBase_Type);
    if (PyModule_AddObject(m, "LockBase", (PyObject *)&LockBase_Type) < 0) {
        Py_DECREF(&LockBase_Type);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&RLockBase_Type);
    if (PyModule_AddObject(m, "RLockBase", (PyObject *)&RLockBase_Type) < 0) {
        Py_DECREF(&RLockBase_Type);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
