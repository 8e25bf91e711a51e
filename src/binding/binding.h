/*
 * binding/binding.h -- the binding layer's shared declarations.
 *
 * The binding owns every PyObject, the GIL, argument parsing and the mapping
 * from platform/core status codes to exceptions.  Files:
 *
 *   module.c               module definition, multi-phase init, module
 *                          state, pyshm.unlink(), the helpers declared below
 *   named.c                the lifecycle every named type shares (the
 *                          object head pyshm_named): opening by name, wait=,
 *                          pins, fork, close()/dealloc, unlink, the context
 *                          manager, pickling, repr; and the loans' life
 *                          with their object (pins, fork, close())
 *   sharedmemory_type.c    the pyshm.SharedMemory type
 *   channel_type.c         the pyshm.Channel type (over core/ring.h)
 *   slot_type.c            the pyshm.Slot type (over core/slot.h)
 *   loan_type.c            pyshm.Loan: the reserve() and recv_view() blocks
 *   objects.c              object messages: the frame of send_obj/recv_obj
 *                          around pickle protocol 5
 *   buffer_type.c          pyshm.MessageBuffer: fresh memory that received
 *                          objects (NumPy arrays...) keep pointing into
 *   ready.c                readiness: fileno()/wait_handle and the private
 *                          methods pyshm.asyncio builds on, pyshm.wait()
 *
 * Owns: pyshm_state, the pyshm_* helpers the types share, the object head
 * pyshm_named and its kinds' hooks (pyshm_kind), the loan record.
 * May include: Python.h and any header of src/.  It is the only layer that
 * includes Python.h: nothing in core/ or platform/ does.
 */
#ifndef PYSHM_BINDING_H
#define PYSHM_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "binding/compat.h"     /* 3.10 C-API names on Python 3.9 */

#include <stdint.h>            /* uint64_t */
#include <structmember.h>      /* PyMemberDef: the weak-reference slot's member */
#include "core/ring.h"         /* ring_t, ring_msg, ring_loan, ring_piece: loans, frames */
#include "core/slot.h"         /* slot_loan: a Slot's reserve() */
#include "core/status.h"       /* shm_status, shm_error for pyshm_raise */
#include "platform/pages.h"    /* shm_private: a loan's pages made private */
#include "platform/ready.h"    /* sync_ready: an object's readiness */
#include "platform/segment.h"  /* shm_char, SHM_NAME_MAX for names */

/* Copies at least this large run with the GIL released: below it the
   release/re-acquire costs more than the copy (about 0.1 us vs. ~3 us for
   64 KiB at memory speed). */
#define PYSHM_NOGIL_COPY_MIN (64 * 1024)

/* A bytes object at least this large that recv() fills is advised to fault
   cheaply first (platform/pages.h, shm_pages_prepare): it holds a whole
   huge page, and the copy into fresh pages would cost more in faults. */
#define PYSHM_PREPARE_MIN ((size_t)4 << 20)

/* Large MessageBuffer mappings kept for the next ones (buffer_type.c): at
   most this many, of at most this many bytes in all. */
#define PYSHM_SPARES 2
#define PYSHM_SPARE_BYTES ((size_t)512 << 20)

/* Per-module state (no mutable C globals): heap types and exceptions. */
typedef struct {
    PyTypeObject *SharedMemory_type;
    PyTypeObject *Channel_type;
    PyTypeObject *Slot_type;
    /* The named types and their kinds (named.c: pyshm_add_named_type), for
       tp_new to find a subclass's kind. */
    struct {
        PyTypeObject *type;     /* borrowed from the fields above */
        const struct pyshm_kind *kind;
    } kinds[3];
    int nkinds;
    PyObject *ProtocolError;    /* shared contents that break the protocol */
    PyTypeObject *Loan_type;
    PyTypeObject *MessageBuffer_type;
    /* Imported at the first object message (objects.c), NULL until then. */
    PyObject *pickle_dumps;     /* pickle.dumps */
    PyObject *pickle_loads;     /* pickle.loads */
    PyObject *dumps_kwnames;    /* ("buffer_callback",) for vectorcall */
    PyObject *loads_kwnames;    /* ("buffers",) */
    uint64_t fork_generation;   /* bumped in every fork child (os.register_at_fork) */
    struct pyshm_loan *loans;   /* this process's loans that hold or keep anything
                                   (named.c: the fork handler and close() walk
                                   it); guarded by the GIL */
    int forks;                  /* os.fork() calls of this process between their
                                   "before" and "after_in_parent" handlers: the
                                   loans' copies for the child are kept until the
                                   last one is done (the GIL is let go in between,
                                   for the import lock) */
    shm_pages spares[PYSHM_SPARES];     /* large MessageBuffer mappings kept
                                           for the next ones (buffer_type.c);
                                           guarded by the GIL */
    int spares_closed;          /* the module was cleared: buffers unmap their own */
} pyshm_state;

extern PyModuleDef pyshm_module_def;

static inline pyshm_state *
pyshm_get_state(PyObject *module)
{
    return (pyshm_state *)PyModule_GetState(module);
}

/* Module state reached from an instance of one of our heap types or of a
   subclass of one; NULL with TypeError for any other type. */
pyshm_state *pyshm_state_from_type(PyTypeObject *type);

/*
 * Thread marks.  A loan remembers the thread that took it, to refuse a call
 * of that thread that would wait for its own loan and an __exit__ from
 * another, and to see that thread gone (its loan can then never be left:
 * the binding ends it as a failed block).  Thread identifiers are reused as
 * soon as a thread ends, so the mark is an object of the thread's own,
 * kept in its thread state's dict, which Python clears when the thread
 * ends: a weak reference to it is dead from then on and never names
 * another thread.
 *
 * pyshm_thread_mark: a weak reference to this thread's mark (made on first
 * use; a new reference), or NULL with an exception set.
 * pyshm_thread_is: 1 when MARK (such a reference) is this thread's.
 * pyshm_thread_alive: 1 while MARK's thread has not ended.
 */
PyObject *pyshm_thread_mark(pyshm_state *st);
int pyshm_thread_is(pyshm_state *st, PyObject *mark);
int pyshm_thread_alive(PyObject *mark);

/* Add each type to the module (called from module exec, in order). */
int pyshm_sharedmemory_exec(PyObject *module, pyshm_state *st);
int pyshm_channel_exec(PyObject *module, pyshm_state *st);
int pyshm_slot_exec(PyObject *module, pyshm_state *st);
int pyshm_loan_exec(PyObject *module, pyshm_state *st);
int pyshm_buffer_exec(PyObject *module, pyshm_state *st);

/*
 * A segment name converted for the platform layer: UTF-8 (filesystem
 * encoding) on POSIX, wide characters on Windows.  Validated: a str, not
 * empty, no NUL, no '/', not longer than SHM_NAME_MAX.
 */
typedef struct {
    const shm_char *chars;  /* the name; valid until pyshm_name_release() */
    PyObject *owner;        /* POSIX: the bytes object chars points into; NULL on Windows */
    shm_char *wide;         /* Windows: the PyMem buffer chars points to; NULL on POSIX */
} pyshm_name;

int pyshm_name_from_object(PyObject *obj, pyshm_name *out);
void pyshm_name_release(pyshm_name *name);

/* Remove segment NAME (a str) without the GIL; None, or NULL with the
   exception set.  Shared by pyshm.unlink and the types' unlink(). */
PyObject *pyshm_unlink_name(pyshm_state *st, PyObject *name);

/* The OS codes of "that name is taken" and "no such name", as
   shm_error.os_code holds them. */
#ifdef _WIN32
#  define PYSHM_OS_EEXIST 183   /* ERROR_ALREADY_EXISTS */
#  define PYSHM_OS_ENOENT 2     /* ERROR_FILE_NOT_FOUND */
#else
#  include <errno.h>            /* EEXIST, ENOENT */
#  define PYSHM_OS_EEXIST EEXIST
#  define PYSHM_OS_ENOENT ENOENT
#endif

/* Generate a fresh random name of at most 14 characters (FreeBSD's limit). */
PyObject *pyshm_random_name(void);

/*
 * The NAME argument of a constructor: a str, or None to have a random name
 * made, which only CREATE allows.  WHAT ("segment", "channel") names the
 * object in the messages.  0, or -1 with TypeError/ValueError set.
 */
int pyshm_name_arg(PyObject *name, int create, const char *what);

/* The MODE argument: NULL (not given) leaves *MODE as it is; otherwise
   POSIX permission bits, 0 to 0o7777.  0, or -1 with an exception set. */
int pyshm_mode_arg(PyObject *obj, int *mode);

/*
 * Opens or creates the object behind one name: the type's own work (map,
 * format, attach...).  Runs WITHOUT the GIL, so it touches no Python object.
 * ARG is the type's context; SIGNALS is for the platform calls' interrupted
 * hook: set shm_hooks.interrupted = pyshm_interrupted and interrupted_arg =
 * SIGNALS.  On failure ERR says why and nothing is left open or created;
 * SHM_EINTR means a signal handler raised (the exception is set).
 */
typedef shm_status (*pyshm_open_fn)(void *arg, const shm_char *name, void *signals,
                                    shm_error *err);

/*
 * The interrupted hook (shm_hooks) of an OPEN_FN's platform calls, called
 * without the GIL: takes the GIL, runs the Python signal handlers
 * (PyErr_CheckSignals) and lets go of it again.  0 to make the interrupted
 * call again; non-zero when a handler raised (the exception stays set for
 * pyshm_open_by_name to return).
 */
int pyshm_interrupted(void *signals);

/*
 * Run OPEN_FN for a constructor's NAME argument (checked by pyshm_name_arg):
 * a str is converted and OPEN_FN runs once on it; None makes fresh random
 * names until OPEN_FN succeeds on one that is free (OPEN_FN must then create
 * exclusively: a taken name is an OS "already exists" error, and the next
 * name is tried).  Returns the name to keep (a new reference), or NULL with
 * the exception set (OPEN_FN's failure via pyshm_raise, the name as filename).
 */
PyObject *pyshm_open_by_name(pyshm_state *st, PyObject *name, pyshm_open_fn open_fn, void *arg,
                             const char *what);

/*
 * exist_ok=True opened an existing object instead of creating one: is it
 * what the caller asked for?  One rule for every type, by the kind of its
 * size argument ARG ("size", "capacity"):
 *   PYSHM_AT_LEAST  a raw amount of memory: the existing object may be
 *                   larger than asked, never smaller (SharedMemory.size;
 *                   on Windows the existing size is page-rounded, so it
 *                   counts as the whole pages it can hold);
 *   PYSHM_EXACTLY   a size that is part of the object's format: it must be
 *                   the one asked (Channel.capacity, a Slot's size), when
 *                   the caller gave it -- a type calls this only then.
 * GIVEN is the argument as passed, ASKED what a new object would have had
 * (GIVEN rounded as a create rounds it), FOUND the existing object's.
 * 0 when it fits; else -1 with ValueError naming WHAT ("segment",
 * "channel"), NAME and both sizes.  The caller then closes what it opened:
 * nothing of the existing object has changed.
 */
typedef enum {
    PYSHM_AT_LEAST,
    PYSHM_EXACTLY,
} pyshm_size_rule;

int pyshm_exist_ok_size(PyObject *name, const char *what, const char *arg,
                        pyshm_size_rule rule, uint64_t given, uint64_t asked, uint64_t found);

/* Unmap SEG without the GIL (a large mapping takes long to tear down),
   after clearing the caller's copy so that nothing can reach it meanwhile;
   called with the GIL. */
void pyshm_unmap(shm_segment *seg);

/*
 * track=True of a constructor that created NAME: have NAME removed when this
 * process exits without unlinking it, even by a crash (pyshm._track, over
 * multiprocessing's resource tracker; nothing on Windows, where names die
 * with their last handle).  pyshm_unlink_name forgets a tracked name.
 * 0, or -1 with an exception set and NAME removed again (the caller still
 * closes its mapping).
 */
int pyshm_track_name(pyshm_state *st, PyObject *name);

/*
 * __reduce__ of the named types: pickled by NAME, SELF's type reopens it in
 * the receiving process -- type(self)(name, **KWARGS), KWARGS NULL or a dict
 * of keyword arguments (functools.partial carries them).  As the standard
 * library's SharedMemory does; on Windows the name must still be open
 * somewhere when the receiver opens it.
 */
PyObject *pyshm_reduce_by_name(PyObject *self, PyObject *name, PyObject *kwargs);

/*
 * Raise the exception for ERR.  NAME (may be NULL) becomes the OSError's
 * filename.  Returns NULL for convenience.
 */
PyObject *pyshm_raise(pyshm_state *st, const shm_error *err, PyObject *name);

/*
 * Vectorcall argument matching for METH_FASTCALL | METH_KEYWORDS methods.
 * NAMES is a NULL-terminated list; the first MAX_POS may be positional, the
 * first MIN_REQUIRED are mandatory.  OUT[i] gets a borrowed reference, or NULL
 * where the argument was not given.  Raises TypeError like CPython does.
 */
int pyshm_parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                     PyObject *kwnames, const char *const *names,
                     Py_ssize_t max_pos, Py_ssize_t min_required, PyObject **out);

/*
 * Integer arguments.  pyshm_ssize_arg: any __index__ object; values outside
 * [MIN, PY_SSIZE_T_MAX] (huge ones included) are ValueError naming WHAT.
 */
int pyshm_ssize_arg(PyObject *obj, const char *what, Py_ssize_t min, Py_ssize_t *out);

/* Seconds argument WHAT ("timeout", "wait"): None (or NULL) -> *forever =
   1; else a number >= 0, not NaN (infinity and huge values: *forever). */
int pyshm_seconds_arg(PyObject *obj, const char *what, double *seconds, int *forever);

/* The timeout argument of the blocking calls: pyshm_seconds_arg's rules. */
int pyshm_timeout_arg(PyObject *obj, double *seconds, int *forever);

/* Get a contiguous buffer from OBJ, writable when WRITABLE is non-zero
   (PyBUF_SIMPLE, plus PyBUF_WRITABLE then).  TypeError with a hint for str,
   for non-buffers and for read-only or non-contiguous buffers; FNAME names
   the method in the messages. */
int pyshm_get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *fname);

/* ---- the named-object lifecycle: named.c ------------------------------------- */

/* The sides a loan may hold, and the lock each one takes: a channel's two,
   a slot's write lock.  (Also the index of pyshm_named.held.) */
#define PYSHM_SEND 0        /* Channel.reserve(): the send lock */
#define PYSHM_RECV 1        /* Channel.recv_view(): the receive lock */
#define PYSHM_PUBLISH 2     /* Slot.reserve(): the write lock */
#define PYSHM_NSIDES 3

typedef struct pyshm_named pyshm_named;

/*
 * An object's readiness (platform/ready.h; binding/ready.c), made at its
 * first use: by fileno() / wait_handle, by pyshm.asyncio's waits (the
 * private methods _arm, _take, _disarm, _hold, _release) and by
 * pyshm.wait() where it polls descriptors.  With the GIL, like everything
 * of the object.  Part of every named object's head; a type without
 * readiness (SharedMemory, no kind->ready_arm) never makes one.
 */
typedef struct {
    sync_ready *ready;      /* NULL until first needed, and after close() */
    int holds;              /* pyshm.asyncio's registrations of the descriptor with a
                               loop: close() keeps it open until the last goes (a
                               descriptor closed under a selector's feet is worse) */
    int closed;             /* close() ran: READY is closed at the last hold's end */
    int fileno;             /* fileno() or wait_handle was asked for: a take's
                               TimeoutError arms the receive side again */
    unsigned long owner;    /* the latest _hold()'s token: _take(token) of an older
                               one (a loop that let go) takes nothing */
    int64_t spun_at;        /* a spin before arming ran out then (sync_now_ns; 0 none) */
    int64_t spin_began;     /* ... having begun then */
    int64_t woken_at;       /* ... and the readiness came then: the next arm adapts
                               the spin budget to the block in between */
    int spun_id;            /* the wait word of that spin */
} pyshm_readiness;

typedef struct pyshm_loan pyshm_loan;

/*
 * A type's part of the shared lifecycle: what it is called and its few
 * hooks.  One static pyshm_kind per type; NULL hooks do nothing.  Hooks
 * marked "no GIL" run without it and touch no Python object; the others
 * run with it and must not run Python code.
 */
typedef struct pyshm_kind {
    const char *type_name;      /* "Slot": messages and repr */
    const char *what;           /* "slot": what the name is of, in messages */
    const char *size_arg;       /* "size", "capacity": the size argument's name */
    pyshm_size_rule size_rule;  /* how exist_ok compares it (pyshm_exist_ok_size) */
    Py_ssize_t size_default;    /* the size argument when not given */
    /* The size argument GIVEN (>= 0): *ASKED is what a new object gets
       (GIVEN once rounded).  0, or -1 with ValueError (a size a CREATE
       cannot have, say). */
    int (*size_check)(Py_ssize_t given, int create, uint64_t *asked);
    /* Bytes of the segment of a new object of ASKED. */
    uint64_t (*segment_size)(uint64_t asked);
    /* No GIL.  Write a new object's format into its zero-filled segment
       before it is published (NULL: a raw segment).  With a format, the
       kind also says when an opened segment is whole (FORMATTED), and the
       segment's descriptor is kept for ATTACH (POSIX: the locks' liveness
       lives on the file). */
    shm_status (*format)(void *addr, size_t size, uint64_t asked, shm_error *err);
    int (*formatted)(const void *addr, size_t size);
    /* No GIL.  Check the mapped segment and attach to it (NAME: for the
       locks' names), and set SELF->size; on failure nothing of it stays
       attached.  The type's own fields are all zero until then (tp_alloc).
       NULL: a raw segment, whose size is its mapping's. */
    shm_status (*attach)(pyshm_named *self, const shm_char *name, shm_error *err);
    /* Undo ATTACH, right before the segment is unmapped. */
    void (*detach)(pyshm_named *self);
    /* close() while operations are pinned: make this process's waits on it
       return soon (they find it closed). */
    void (*cancel)(pyshm_named *self);
    /* close() asked: 0 to go on, -1 with an exception to refuse (exports
       alive).  Also frees what the object keeps for Python (a cached view). */
    int (*closing)(pyshm_named *self);
    /* The Python objects the type's own fields hold, for the GC: visit
       them (tp_traverse), drop them (tp_clear, tp_dealloc). */
    int (*traverse)(pyshm_named *self, visitproc visit, void *arg);
    void (*clear)(pyshm_named *self);
    /* Loans.  TAKE: with the mapping pinned, wait (TIMEOUT) for LOAN->side
       and hold it: 0 with LOAN->data and LOAN->len set, or -1 with an
       exception (nothing held).  END: let go of a loan HELD by this process
       (COMMIT publishes or consumes; else nothing is seen).  REBASE: the
       object goes on through a second mapping of its segment at ADDR. */
    int (*loan_take)(pyshm_named *self, pyshm_loan *loan, size_t size, PyObject *timeout);
    void (*loan_end)(pyshm_named *self, pyshm_loan *loan, int commit);
    void (*rebase)(pyshm_named *self, void *addr);
    /* The repr of an open object; keyword arguments that pickling passes
       on (NULL result with no exception: none). */
    PyObject *(*repr)(pyshm_named *self);
    PyObject *(*reduce_kwargs)(pyshm_named *self);
    /* Readiness (binding/ready.c; NULL for a type without it).  With the
       GIL, SELF open.  READY_ARM: arm what SIDE waits for and look --
       PYSHM_RECV: what a receive, or a slot's wait(after=ARG), waits for;
       PYSHM_SEND: room for a message of ARG bytes; ARG NULL: the defaults
       of fileno() and pyshm.wait (a message; a generation newer than this
       object saw) -- 1 when it looks possible now, 0 when armed, -1 with
       an exception.  With SPIN, first spin as the type's sync waits do
       before they block: 2 when the word moved meanwhile (nothing armed:
       try again now).  READY_NOW: is SELF ready in pyshm.wait's sense now.
       READY_WATCH: the wait word pyshm.wait sleeps on. */
    int (*ready_arm)(pyshm_named *self, int side, PyObject *arg, int spin);
    int (*ready_now)(pyshm_named *self);
    sync_watch (*ready_watch)(pyshm_named *self);
} pyshm_kind;

/*
 * The head of every named object: the first member of SharedMemoryObject,
 * ChannelObject and SlotObject.  Right after pyshm_named_new() every field
 * holds its "nothing" value, so every error path is a plain decref.
 *
 * Pins: the mapping stays while anything of this process uses it.
 * pyshm_pin() raises PINS and pyshm_unpin() lowers it; an operation pins
 * for as long as it runs without the GIL, and for as long as it holds a
 * lock or a message across Python code.  close() -- from any thread, at
 * any time -- only marks the object closed and, while pins are out,
 * cancels this process's waits (kind->cancel); the last unpin unmaps.  So
 * no thread ever touches an unmapped segment.  The count is per process: a
 * fork child starts with none (the parent's threads are not there), and an
 * unpin with a token from before the fork lowers nothing.
 */
struct pyshm_named {
    PyObject_HEAD
    const pyshm_kind *kind;
    pyshm_state *st;            /* the module's state: kept alive by our type, which
                                   holds the module (looked up once: it walks the MRO) */
    shm_segment seg;            /* seg.addr == NULL once unmapped (or before __init__) */
    PyObject *name;             /* str, as given or generated; NULL until __init__ opened */
    uint64_t size;              /* what the size argument names, as opened: the segment's
                                   bytes, the ring's capacity, the largest value;
                                   exist_ok compares it; kept after close() */
    Py_ssize_t pins;            /* operations of this process using the mapping
                                   without the GIL or holding a lock or message */
    int closed;                 /* close() was called, or __init__ has not opened
                                   (the unmap may wait for the last pin) */
    int held[PYSHM_NSIDES];     /* this process's HELD loans of each side (0 or 1;
                                   the loans list says whose) */
    uint64_t fork_generation;   /* the state's fork_generation when PINS and HELD
                                   were last right for this process */
    pyshm_readiness rd;         /* fileno(), pyshm.asyncio, pyshm.wait (binding/ready.c) */
    PyObject *weakreflist;
};

/* tp_new of every named type: an object of its kind in the "not opened"
   state (the work is done in __init__, so that subclasses may take other
   arguments in theirs).  Every field of the type's own is zero. */
PyObject *pyshm_named_new(PyTypeObject *type, PyObject *args, PyObject *kwds);

/* What a constructor was given, parsed by the type's __init__ (thin). */
typedef struct {
    PyObject *name;         /* str, or None: a random name (create only) */
    int create;
    int exist_ok;
    int readonly;
    int track;
    PyObject *size;         /* the size argument; NULL: not given */
    PyObject *mode;         /* NULL: 0o600 */
    PyObject *wait;         /* NULL or None: a missing name fails at once */
} pyshm_open_args;

/*
 * The work of __init__: check the arguments, open or create the object
 * (waiting for its name as wait= says), check what exist_ok found, track
 * it.  0 with the object open, or -1 with an exception set and nothing
 * left open or created.
 */
int pyshm_named_open(pyshm_named *self, const pyshm_open_args *args);

/* ValueError unless SELF is open. */
int pyshm_named_check_open(pyshm_named *self);

/* Raise for ERR of an operation on SELF (pyshm_raise, the name as
   filename and in ProtocolError's message).  Returns NULL. */
PyObject *pyshm_named_raise(pyshm_named *self, const shm_error *err);

/* In a fork child (for the first time since the fork): drop the counts of
   the parent's threads; the parent's loans of SELF are dead here. */
void pyshm_named_after_fork(pyshm_named *self);

/* Pin the mapping (see pyshm_named); returns the token for the unpin.
   The last unpin after close() unmaps. */
uint64_t pyshm_pin(pyshm_named *self);
void pyshm_unpin(pyshm_named *self, uint64_t token);

/* Absolute deadline (sync_now_ns) for a parsed timeout: SYNC_FOREVER, or
   an expired non-zero value for 0 ("try, but do not wait"). */
int64_t pyshm_deadline(int forever, double seconds);

/*
 * Call OP(SELF, ARG, ERR) without the GIL, the mapping pinned, until it
 * stops asking for a signal check (SHM_EINTR): the signal handlers run
 * between the calls, and the object's loans whose thread has ended are
 * abandoned first (one may hold the lock OP waits for).  Returns OP's last
 * status; *RAISED is 1 when an exception is set instead (a handler raised,
 * or SELF was closed meanwhile).
 */
typedef shm_status (*pyshm_op)(pyshm_named *self, void *arg, shm_error *err);
shm_status pyshm_run_unlocked(pyshm_named *self, pyshm_op op, void *arg, shm_error *err,
                              int *raised);

/*
 * Take what a call holds across Python code (a side's lock, a message)
 * without ever waiting for the GIL while holding it (other processes would
 * wait on this process's GIL): TAKE(SELF, ARG, ERR) tries once with the GIL,
 * never waiting; while it finds the lock busy or nothing to take
 * (SHM_ETIMEOUT), WAIT(SELF, ARG, ERR) waits without the GIL
 * (pyshm_run_unlocked) until TAKE may succeed, taking and letting go on the
 * way, so that it holds nothing when it comes back; then the signal handlers
 * run (one that raises leaves everything untaken) and SELF must still be
 * open, and TAKE tries again (another thread or process may have been
 * quicker).  0 with what TAKE took; -1 with an exception set, nothing held.
 */
int pyshm_take(pyshm_named *self, pyshm_op take, pyshm_op wait, void *arg);

/*
 * Before a call that takes SIDE's lock: the calling thread may not hold a
 * loan of that side (the call would wait for its own lock); RuntimeError
 * naming FNAME.  Another thread's loan is waited for, as any holder is.
 */
int pyshm_check_side(pyshm_named *self, int side, const char *fname);

/* The methods and attributes every named type shares, for its tables. */
void pyshm_named_dealloc(PyObject *self);
int pyshm_named_traverse(PyObject *self, visitproc visit, void *arg);
int pyshm_named_clear(PyObject *self);
PyObject *pyshm_named_repr(PyObject *self);
PyObject *pyshm_named_close(PyObject *self, PyObject *ignored);
PyObject *pyshm_named_unlink(PyObject *self, PyObject *ignored);
PyObject *pyshm_named_enter(PyObject *self, PyObject *ignored);
PyObject *pyshm_named_exit(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *pyshm_named_reduce(PyObject *self, PyObject *ignored);
PyObject *pyshm_named_get_name(PyObject *self, void *closure);
PyObject *pyshm_named_get_closed(PyObject *self, void *closure);
extern PyMemberDef pyshm_named_members[];

/* The method table entries of the shared lifecycle, with the type's own
   docstrings (each type says what closing and unlinking mean for it). */
#define PYSHM_NAMED_METHODS(close_doc, unlink_doc, reduce_doc)                          \
    {"close", (PyCFunction)pyshm_named_close, METH_NOARGS, close_doc},                  \
    {"unlink", (PyCFunction)pyshm_named_unlink, METH_NOARGS, unlink_doc},               \
    {"__enter__", (PyCFunction)pyshm_named_enter, METH_NOARGS, NULL},                   \
    {"__exit__", (PyCFunction)(void (*)(void))pyshm_named_exit, METH_FASTCALL, NULL},   \
    {"__reduce__", (PyCFunction)pyshm_named_reduce, METH_NOARGS, reduce_doc}

/* The type slots every named type shares, ahead of its own. */
#define PYSHM_NAMED_SLOTS                                                             \
    {Py_tp_new, pyshm_named_new},                                                       \
    {Py_tp_dealloc, pyshm_named_dealloc},                                               \
    {Py_tp_traverse, pyshm_named_traverse},                                             \
    {Py_tp_clear, pyshm_named_clear},                                                   \
    {Py_tp_repr, pyshm_named_repr},                                                     \
    {Py_tp_members, pyshm_named_members}

/* The spec of a named type: pyshm.NAME, its object struct, its slots.
   Subclassable (users of the standard library's SharedMemory subclass it);
   GC-tracked so that subclass instances with a __dict__ in a cycle are
   collected. */
#define PYSHM_NAMED_SPEC(NAME, OBJECT, SLOTS) {                                       \
    .name = "pyshm." NAME,                                                              \
    .basicsize = sizeof(OBJECT),                                                        \
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_BASETYPE |      \
             Py_TPFLAGS_HAVE_GC,                                                        \
    .slots = SLOTS,                                                                     \
}

/*
 * The hooks of a type over a core object (core/ring.h, core/slot.h), which
 * follow one convention -- PREFIX_init(core), PREFIX_attach(core, seg,
 * name, err), PREFIX_detach(core), PREFIX_cancel(core), PREFIX_rebase(core,
 * addr), PREFIX_formatted(addr, size) -- written once: PYSHM_CORE_HOOKS
 * defines the static adapters PREFIX_hook_* for OBJECT (the type's struct),
 * whose core is member FIELD and whose size argument names the core's
 * member SIZE; PYSHM_CORE_KIND(PREFIX) puts them in the type's pyshm_kind.
 */
#define PYSHM_CORE_HOOKS(OBJECT, FIELD, PREFIX, SIZE)                                  \
    static shm_status                                                                   \
    PREFIX##_hook_attach(pyshm_named *head, const shm_char *name, shm_error *err)      \
    {                                                                                   \
        OBJECT *self = (OBJECT *)head;                                                  \
        shm_status status;                                                              \
                                                                                        \
        PREFIX##_init(&self->FIELD);                                                    \
        status = PREFIX##_attach(&self->FIELD, &head->seg, name, err);                  \
        head->size = (uint64_t)self->FIELD.SIZE;                                        \
        return status;                                                                  \
    }                                                                                   \
    static void                                                                         \
    PREFIX##_hook_detach(pyshm_named *head)                                             \
    {                                                                                   \
        PREFIX##_detach(&((OBJECT *)head)->FIELD);                                      \
    }                                                                                   \
    static void                                                                         \
    PREFIX##_hook_cancel(pyshm_named *head)                                             \
    {                                                                                   \
        PREFIX##_cancel(&((OBJECT *)head)->FIELD);                                      \
    }                                                                                   \
    static void                                                                         \
    PREFIX##_hook_rebase(pyshm_named *head, void *addr)                                 \
    {                                                                                   \
        PREFIX##_rebase(&((OBJECT *)head)->FIELD, addr);                                \
    }

#define PYSHM_CORE_KIND(PREFIX)                                                        \
    .formatted = PREFIX##_formatted,                                                    \
    .attach = PREFIX##_hook_attach,                                                     \
    .detach = PREFIX##_hook_detach,                                                     \
    .cancel = PREFIX##_hook_cancel,                                                     \
    .rebase = PREFIX##_hook_rebase

/* Make the type of SPEC, add it to MODULE and keep it in *TYPE.  0 or -1. */
int pyshm_add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **type);

/* The same for a named type of KIND: its objects get KIND (tp_new). */
int pyshm_add_named_type(PyObject *module, pyshm_state *st, PyType_Spec *spec,
                         const pyshm_kind *kind, PyTypeObject **type);

/* ---- loans: named.c and loan_type.c ------------------------------------------- */

/*
 * Where a loan stands with its object's segment (named.c owns the moves):
 *
 *   IDLE       nothing of the segment: not taken yet, or ended
 *   HELD       holds its side's lock and a pin, in the process that took it
 *              (PIN is that process's fork generation)
 *   CARVED     holds nothing of the segment: its lock was let go (close())
 *              or was the parent's (a fork child), and its pages were made
 *              a private copy in place (PRIV), which it unmaps at its end
 *   INHERITED  a fork child's copy of a HELD loan whose pages could not be
 *              made private (no mremap): no lock; a pin of the child (PIN)
 *              keeps the mapping its views point into
 *
 * HELD, CARVED and INHERITED loans are on the module's list (pyshm_state
 * .loans).  Whatever the state, ending a loan (pyshm_loan_end) only
 * touches the segment when it is HELD in this very process.
 */
enum {
    PYSHM_LOAN_IDLE = 0,
    PYSHM_LOAN_HELD,
    PYSHM_LOAN_CARVED,
    PYSHM_LOAN_INHERITED,
};

struct pyshm_loan {
    int side;               /* PYSHM_SEND, PYSHM_RECV, PYSHM_PUBLISH */
    ring_loan loan;         /* PYSHM_SEND: the reserved record */
    ring_msg msg;           /* PYSHM_RECV: the held message */
    slot_loan cell;         /* PYSHM_PUBLISH: the cell being filled */
    unsigned char *data;    /* the memory lent, in the segment */
    size_t len;
    int state;              /* PYSHM_LOAN_* */
    int refused;            /* its block is over but exports live on (loan_type.c):
                               close() may end it */
    int forked;             /* taken by a parent of this fork child: dead here */
    int retiring;           /* chosen for retire() (named.c), for one call */
    uint64_t pin;           /* HELD, INHERITED: the pin's token (fork generation) */
    PyObject *owner;        /* HELD: the taking thread's mark (a weak reference) */
    PyObject *object;       /* the Loan this is part of (borrowed) */
    PyObject *named;        /* its Channel or Slot (borrowed: the Loan holds it) */
    shm_private priv;       /* CARVED: the private pages (priv.at NULL: none) */
    struct pyshm_loan *next, *prev;     /* pyshm_state.loans */
};

/*
 * Wait (TIMEOUT as the side's calls take it) for LOAN->side of the object
 * NAMED (kind->loan_take: room for SIZE bytes, the next message, the write
 * lock).  0 with the loan HELD (the side's lock taken for this object, the
 * mapping pinned, the calling thread its owner); -1 with an exception set
 * (a closed object, a timeout, or this thread holding that side already:
 * RuntimeError).  LOAN->object must be set.
 */
int pyshm_loan_begin(PyObject *named, pyshm_loan *loan, size_t size, PyObject *timeout);

/*
 * End a loan, from any thread, with the GIL: COMMIT publishes (send, a
 * slot) or consumes the message (recv); otherwise nothing of it is seen or
 * the message stays queued.  Only a loan HELD by this process touches the
 * segment (see the states above); any other just lets go of what it keeps.
 * No export of the loan's memory may be alive.
 */
void pyshm_loan_end(PyObject *named, pyshm_loan *loan, int commit);

/*
 * The fork handlers' parts (module.c, os.register_at_fork).  In the child,
 * every loan on the list was taken by the parent and is dead: each one's
 * pages become a private copy (its views stay valid and no longer reach
 * the segment) and its object goes on through a fresh mapping; its lock
 * stays the parent's.  The copies are made in the parent, before the fork,
 * while it holds the loans (after the fork it may give their space back at
 * once); the parent drops its own after the fork.
 */
void pyshm_named_before_fork(pyshm_state *st);
void pyshm_named_after_fork_parent(pyshm_state *st);
void pyshm_named_after_fork_child(pyshm_state *st);

/*
 * A HELD loan whose owner thread has ended (loan_type.c): it can never be
 * left, so it ends as a failed block -- now if no export of it is alive,
 * else when the last one goes (or at close()).  Called by named.c.
 */
void pyshm_loan_abandon(PyObject *loan);

/* A new pyshm.Loan of SIDE of NAMED (a context manager), not yet taken:
   SIZE bytes to lend (send, publish), TIMEOUT as given. */
PyObject *pyshm_loan_new(pyshm_state *st, PyObject *named, int side, size_t size,
                         PyObject *timeout);

/* ---- readiness: ready.c ---------------------------------------------------------- */

/* Watch numbers of an object's sync_ready: a channel's data and space
   words and its two locks; a slot's generation word (WATCH_DATA). */
#define PYSHM_WATCH_DATA  0
#define PYSHM_WATCH_SPACE 1
#define PYSHM_WATCH_RLOCK 2
#define PYSHM_WATCH_SLOCK 3

/* The lifecycle's calls (named.c): close() disarms, makes the descriptor
   ready (waiters look and find the object closed) and closes it unless a
   loop's hold keeps it for now; deallocation closes what is left; a fork
   child forgets the parent's (nothing of it is touched). */
void pyshm_readiness_closed(pyshm_readiness *rd);
void pyshm_readiness_free(pyshm_readiness *rd);
void pyshm_readiness_forked(pyshm_readiness *rd);

/*
 * For the types' ready_arm hooks.  pyshm_ready_arm_ring: arm the ring CH's
 * SIDE (PYSHM_RECV: a message, with the receive lock; PYSHM_SEND: room for
 * SIZE bytes, with the send lock), after a spin (SPIN; the GIL let go).
 * pyshm_ready_arm_watch: arm watch N on W alone (the caller then looks).
 * 2 when the spin saw the word move (ring; nothing armed), 1 when it looks
 * possible now (ring), 0 when armed, -1 with an exception.
 */
int pyshm_ready_arm_ring(pyshm_named *self, ring_t *ch, int side, size_t size, int spin);
int pyshm_ready_arm_watch(pyshm_named *self, unsigned n, const sync_watch *w);

/* The watch of wait word ID (SYNC_WORD_DATA, SYNC_WORD_SPACE) of an object
   whose handles are H: WORD and its waiter count COUNT in the header. */
sync_watch pyshm_ready_word(sync_handles *h, sync_word_id id, uint32_t *word,
                            uint32_t *count);

/* A take with timeout=0 raised TimeoutError: when fileno() is in use, arm
   the receive side again (the documented protocol: take until
   TimeoutError, then wait on the descriptor).  Keeps the exception set. */
void pyshm_ready_rearm(pyshm_named *self);

/* The methods and attributes of readiness, for the tables of the types
   that have it (kind->ready_arm): fileno() and pyshm.asyncio's private
   methods; wait_handle and _ready_engine. */
PyObject *pyshm_ready_fileno(PyObject *self, PyObject *ignored);
PyObject *pyshm_ready_arm_method(PyObject *self, PyObject *const *args, Py_ssize_t nargs,
                                 PyObject *kwnames);
PyObject *pyshm_ready_take(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *pyshm_ready_disarm(PyObject *self, PyObject *ignored);
PyObject *pyshm_ready_hold(PyObject *self, PyObject *ignored);
PyObject *pyshm_ready_release(PyObject *self, PyObject *ignored);
PyObject *pyshm_ready_get_handle(PyObject *self, void *closure);
PyObject *pyshm_ready_get_engine(PyObject *self, void *closure);

#define PYSHM_READY_METHODS(fileno_doc)                                                 \
    {"fileno", (PyCFunction)pyshm_ready_fileno, METH_NOARGS, fileno_doc},               \
    /* pyshm.asyncio's (binding/ready.c says what each does) */                          \
    {"_arm", (PyCFunction)(void (*)(void))pyshm_ready_arm_method,                        \
     METH_FASTCALL | METH_KEYWORDS, NULL},                                               \
    {"_take", (PyCFunction)(void (*)(void))pyshm_ready_take, METH_FASTCALL, NULL},       \
    {"_disarm", (PyCFunction)pyshm_ready_disarm, METH_NOARGS, NULL},                     \
    {"_hold", (PyCFunction)pyshm_ready_hold, METH_NOARGS, NULL},                         \
    {"_release", (PyCFunction)pyshm_ready_release, METH_NOARGS, NULL}

#define PYSHM_READY_GETSET(handle_doc)                                                  \
    {"wait_handle", pyshm_ready_get_handle, NULL, handle_doc, NULL},                     \
    {"_ready_engine", pyshm_ready_get_engine, NULL,                                      \
     "Private: which readiness engine serves this object (None before its first\n"      \
     "use): 'io_uring', 'thread' or 'threadpool' (platform/ready.h).", NULL}

/* Add pyshm.wait to the module. */
int pyshm_ready_exec(PyObject *module, pyshm_state *st);

/* ---- object messages: objects.c and buffer_type.c --------------------------- */

/* An object message ready to send: the frame (see objects.c) as pieces for
   ring_sendv().  Every field holds what pyshm_frame_release() frees. */
typedef struct {
    ring_piece *pieces;     /* PyMem */
    size_t npieces;
    size_t len;             /* payload bytes in all */
    unsigned char *head;    /* the frame's head (PyMem) */
    PyObject *stream;       /* the pickle stream (bytes) */
    PyObject *buffers;      /* the list of out-of-band PickleBuffers */
    Py_buffer *views;       /* one exported view per out-of-band buffer (PyMem) */
    Py_ssize_t nviews;
} pyshm_frame;

/* Import what object messages need (pickle), once per module; before
   any lock is taken, as an import runs Python code.  0, or -1. */
int pyshm_objects_ready(pyshm_state *st);

/* Pickle OBJ (protocol 5, out-of-band buffers) into FRAME.  0, or -1 with
   an exception set and FRAME released. */
int pyshm_frame_pickle(pyshm_state *st, PyObject *obj, pyshm_frame *frame);
void pyshm_frame_release(pyshm_frame *frame);

/* A received frame's layout, read from the held message and checked. */
typedef struct {
    size_t len;             /* payload bytes */
    size_t stream_off;      /* the pickle stream */
    size_t stream_len;
    Py_ssize_t nbuf;
    uint64_t *table;        /* PyMem: NBUF pairs (offset, length) */
} pyshm_frame_in;

/*
 * Read the head of the held object message MSG of CH and check it as
 * untrusted input.  0, or -1 with ProtocolError (a frame that breaks the
 * format) or MemoryError set; IN holds nothing to free then.
 */
int pyshm_frame_parse(pyshm_state *st, const ring_t *ch, const ring_msg *msg,
                      pyshm_frame_in *in);

/*
 * The object the frame IN is copied into before unpickling: a bytes object
 * of the pickle stream when there is no out-of-band buffer, else a
 * MessageBuffer of the whole payload.  *DST, *OFFSET and *N say where to
 * copy which bytes of the payload.  NULL with MemoryError set.
 */
PyObject *pyshm_frame_target(pyshm_state *st, const pyshm_frame_in *in, unsigned char **dst,
                             size_t *offset, size_t *n);

/* Unpickle TARGET (filled) as laid out by IN; the object, or NULL. */
PyObject *pyshm_frame_unpickle(pyshm_state *st, const pyshm_frame_in *in, PyObject *target);
void pyshm_frame_in_release(pyshm_frame_in *in);

/* A new MessageBuffer of SIZE writable bytes (64-byte aligned) at *DATA;
   huge-page backed when large.  NULL with an exception set. */
PyObject *pyshm_buffer_new(pyshm_state *st, size_t size, unsigned char **data);

/* Unmap the kept mappings and keep no more (the module's m_clear). */
void pyshm_buffer_spares_close(pyshm_state *st);

#endif /* PYSHM_BINDING_H */
