/*
 * binding/binding.h -- the binding layer's shared declarations.
 *
 * The binding owns every PyObject, the GIL, argument parsing and the mapping
 * from platform/core status codes to exceptions.  Files:
 *
 *   module.c               module definition, multi-phase init, module
 *                          state, pyshm.unlink(), the helpers declared below
 *   sharedmemory_type.c    the pyshm.SharedMemory type
 *   channel_type.c         the pyshm.Channel type (over core/ring.h)
 *   loan_type.c            pyshm.Loan: reserve() and recv_view() blocks
 *   objects.c              object messages: the frame of send_obj/recv_obj
 *                          around pickle protocol 5
 *   buffer_type.c          pyshm.MessageBuffer: fresh memory that received
 *                          objects (NumPy arrays...) keep pointing into
 *   ready.c                readiness: fileno()/wait_handle and the private
 *                          methods pyshm.asyncio builds on, pyshm.wait()
 *
 * Owns: pyshm_state, the pyshm_* helpers both types use.
 * May include: Python.h and any header of src/.  It is the only layer that
 * includes Python.h: nothing in core/ or platform/ does.
 */
#ifndef PYSHM_BINDING_H
#define PYSHM_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "binding/compat.h"     /* 3.10 C-API names on Python 3.9 */

#include <stdint.h>            /* uint64_t */
#include "core/ring.h"         /* ring_t, ring_msg, ring_loan, ring_piece: loans, frames */
#include "core/status.h"       /* shm_status, shm_error for pyshm_raise */
#include "platform/pages.h"    /* shm_private: a loan's pages made private */
#include "platform/ready.h"    /* sync_ready: an object's readiness */
#include "platform/segment.h"  /* shm_char, SHM_NAME_MAX for names */

/* Copies at least this large run with the GIL released: below it the
   release/re-acquire costs more than the copy (about 0.1 us vs. ~3 us for
   64 KiB at memory speed). */
#define PYSHM_NOGIL_COPY_MIN (64 * 1024)

/* Per-module state (no mutable C globals): heap types and exceptions. */
typedef struct {
    PyTypeObject *SharedMemory_type;
    PyTypeObject *Channel_type;
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
                                   (channel_type.c: the fork handler and close()
                                   walk it); guarded by the GIL */
    int forks;                  /* os.fork() calls of this process between their
                                   "before" and "after_in_parent" handlers: the
                                   loans' copies for the child are kept until the
                                   last one is done (the GIL is let go in between,
                                   for the import lock) */
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
 * Fork.  A child of fork() has only the thread that forked: the counts an
 * object keeps of its other threads' operations (Channel pins, SharedMemory
 * copies without the GIL) mean nothing there, and would keep close() from
 * ever unmapping.  Each object notes the generation it last saw; when
 * pyshm_fork_generation() differs it is in a child and drops those counts
 * (what lives on in the child, such as a memoryview, is kept).  The
 * generation counts forks through os.register_at_fork, which every fork
 * made from Python (os.fork, multiprocessing) runs.
 */
static inline uint64_t
pyshm_fork_generation(PyTypeObject *type)
{
    return pyshm_state_from_type(type)->fork_generation;
}

/* 1 (and *SEEN brought up to date) when this process is a fork child that
   uses an object of TYPE for the first time since the fork; else 0. */
static inline int
pyshm_forked(PyTypeObject *type, uint64_t *seen)
{
    uint64_t generation = pyshm_fork_generation(type);

    if (generation == *seen)
        return 0;
    *seen = generation;
    return 1;
}

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

/* Timeout argument: None -> *forever = 1; else seconds >= 0, finite. */
int pyshm_timeout_arg(PyObject *obj, double *seconds, int *forever);

/* Get a contiguous buffer from OBJ, writable when WRITABLE is non-zero
   (PyBUF_SIMPLE, plus PyBUF_WRITABLE then).  TypeError with a hint for str,
   for non-buffers and for read-only or non-contiguous buffers; FNAME names
   the method in the messages. */
int pyshm_get_buffer(PyObject *obj, Py_buffer *view, int writable, const char *fname);

/* ---- loans: channel_type.c and loan_type.c -------------------------------- */

/* The two sides of a channel a loan may hold. */
#define PYSHM_SEND 0
#define PYSHM_RECV 1

/*
 * Where a loan stands with the ring (channel_type.c owns the moves):
 *
 *   IDLE       nothing of the ring: not taken yet, or ended
 *   HELD       holds its side's lock and a pin, in the process that took it
 *              (PIN is that process's fork generation)
 *   CARVED     holds nothing of the ring: its lock was let go (close()) or
 *              was the parent's (a fork child), and its pages were made a
 *              private copy in place (PRIV), which it unmaps at its end
 *   INHERITED  a fork child's copy of a HELD loan whose pages could not be
 *              made private (no mremap): no lock; a pin of the child (PIN)
 *              keeps the mapping its views point into
 *
 * HELD, CARVED and INHERITED loans are on the module's list (pyshm_state
 * .loans).  Whatever the state, ending a loan (pyshm_channel_loan_end) only
 * touches the ring when it is HELD in this very process.
 */
enum {
    PYSHM_LOAN_IDLE = 0,
    PYSHM_LOAN_HELD,
    PYSHM_LOAN_CARVED,
    PYSHM_LOAN_INHERITED,
};

typedef struct pyshm_loan {
    int side;               /* PYSHM_SEND: reserve(); PYSHM_RECV: recv_view() */
    ring_loan loan;         /* PYSHM_SEND: the reserved record */
    ring_msg msg;           /* PYSHM_RECV: the held message */
    unsigned char *data;    /* the payload: in the ring, or COPY */
    size_t len;
    void *copy;             /* PYSHM_RECV: a private copy (PyMem_Raw) of a message
                               that straddles the ring's end; else NULL */
    int state;              /* PYSHM_LOAN_* */
    int refused;            /* its block is over but exports live on (loan_type.c):
                               close() may end it */
    int forked;             /* taken by a parent of this fork child: dead here */
    int retiring;           /* chosen for retire() (channel_type.c), for one call */
    uint64_t pin;           /* HELD, INHERITED: the pin's token (fork generation) */
    PyObject *owner;        /* HELD: the taking thread's mark (a weak reference) */
    PyObject *object;       /* the Loan this is part of (borrowed) */
    PyObject *channel;      /* its Channel (borrowed: the Loan holds it) */
    shm_private priv;       /* CARVED: the private pages (priv.at NULL: none) */
    struct pyshm_loan *next, *prev;     /* pyshm_state.loans */
} pyshm_loan;

/*
 * Wait (TIMEOUT as for send/recv) for LOAN->side of CHANNEL: room for a
 * record of SIZE bytes that is contiguous in the ring (send), or the next
 * message (recv).  0 with the loan HELD (the side's lock taken for this
 * object, the mapping pinned, the calling thread its owner); -1 with an
 * exception set (a closed channel, a timeout, or this thread holding that
 * side already: RuntimeError).  LOAN->object must be set.
 */
int pyshm_channel_loan_begin(PyObject *channel, pyshm_loan *loan, size_t size,
                             PyObject *timeout);

/*
 * End a loan, from any thread, with the GIL: COMMIT publishes the record
 * (send) or consumes the message (recv); otherwise nothing of it is seen
 * (send) or the message stays queued (recv).  Only a loan HELD by this
 * process touches the ring (see the states above); any other just lets go
 * of what it keeps.  No export of the loan's memory may be alive.
 */
void pyshm_channel_loan_end(PyObject *channel, pyshm_loan *loan, int commit);

/*
 * The fork handlers' parts (module.c, os.register_at_fork).  In the child,
 * every loan on the list was taken by the parent and is dead: each one's
 * pages become a private copy (its views stay valid and no longer reach
 * the ring) and its channel goes on through a fresh mapping; its lock stays
 * the parent's.  The copies are made in the parent, before the fork, while
 * it holds the loans (after the fork it may give their ring space back at
 * once); the parent drops its own after the fork.
 */
void pyshm_channel_before_fork(pyshm_state *st);
void pyshm_channel_after_fork_parent(pyshm_state *st);
void pyshm_channel_after_fork(pyshm_state *st);

/*
 * A HELD loan whose owner thread has ended (loan_type.c): it can never be
 * left, so it ends as a failed block -- now if no export of it is alive,
 * else when the last one goes (or at close()).  Called by the channel.
 */
void pyshm_loan_abandon(PyObject *loan);

/* A new pyshm.Loan of SIDE of CHANNEL (a context manager), not yet taken:
   SIZE bytes to reserve (send), TIMEOUT as given. */
PyObject *pyshm_loan_new(pyshm_state *st, PyObject *channel, int side, size_t size,
                         PyObject *timeout);

/* ---- readiness: ready.c, for the object types ------------------------------------ */

/*
 * An object's readiness (platform/ready.h), made at its first use: by
 * fileno() / wait_handle, by pyshm.asyncio's waits (the private methods
 * _arm, _take, _disarm, _hold, _release) and by pyshm.wait() where it
 * polls descriptors.  With the GIL, like everything of the object.
 */
typedef struct {
    sync_ready *ready;      /* NULL until first needed, and after close() */
    int holds;              /* pyshm.asyncio's registrations of the descriptor with a
                               loop: close() keeps it open until the last goes (a
                               descriptor closed under a selector's feet is worse) */
    int closed;             /* close() ran: READY is closed at the last hold's end */
    int fileno;             /* fileno() or wait_handle was asked for: a receive's
                               TimeoutError arms the receive side again */
} pyshm_readiness;

/* Watch numbers of a channel's sync_ready. */
#define PYSHM_WATCH_DATA  0
#define PYSHM_WATCH_SPACE 1
#define PYSHM_WATCH_RLOCK 2
#define PYSHM_WATCH_SLOCK 3

void pyshm_readiness_init(pyshm_readiness *rd);
/* close(): disarm, make ready (waiters look and find the object closed),
   and close the descriptor unless a hold keeps it for now. */
void pyshm_readiness_closed(pyshm_readiness *rd);
/* Deallocation: close whatever is left. */
void pyshm_readiness_free(pyshm_readiness *rd);
/* A fork child's first use of an object opened before the fork. */
void pyshm_readiness_forked(pyshm_readiness *rd);

/*
 * Arm the channel CH's SIDE (PYSHM_RECV: a message; PYSHM_SEND: room for a
 * message of SIZE bytes) and look at it: 1 when the caller should try
 * again at once (it looks possible: a message queued and the lock free,
 * room), 0 when armed (wait for the descriptor), -1 with an exception.
 */
int pyshm_channel_arm(pyshm_readiness *rd, ring_t *ch, int side, size_t size);

/* The channel methods that ready.c implements (channel_type.c checks that
   the channel is open and passes its ring). */
PyObject *pyshm_ready_fileno(PyObject *self, pyshm_readiness *rd, ring_t *ch);
PyObject *pyshm_ready_handle(PyObject *self, pyshm_readiness *rd, ring_t *ch);
PyObject *pyshm_ready_arm(PyObject *self, pyshm_readiness *rd, ring_t *ch, PyObject *const *args,
                          Py_ssize_t nargs, PyObject *kwnames);
PyObject *pyshm_ready_take(PyObject *self, pyshm_readiness *rd);
PyObject *pyshm_ready_disarm(PyObject *self, pyshm_readiness *rd);
PyObject *pyshm_ready_hold(PyObject *self, pyshm_readiness *rd, ring_t *ch);
PyObject *pyshm_ready_release(PyObject *self, pyshm_readiness *rd);
PyObject *pyshm_ready_engine(pyshm_readiness *rd);

/* A receive of CH raised TimeoutError: when fileno() is in use, arm the
   receive side again (the documented protocol: take until TimeoutError,
   then wait on the descriptor). */
void pyshm_channel_rearm(pyshm_readiness *rd, ring_t *ch);

/*
 * For pyshm.wait(): OBJ's ring and readiness, the mapping pinned until
 * pyshm_channel_wait_end(OBJ, *TOKEN).  0, or -1 with TypeError (not a
 * Channel) or ValueError (closed).
 */
int pyshm_channel_wait_begin(PyObject *obj, ring_t **ch, pyshm_readiness **rd,
                             uint64_t *token);
void pyshm_channel_wait_end(PyObject *obj, uint64_t token);
/* Is OBJ (a Channel, began) closed now? */
int pyshm_channel_is_closed(PyObject *obj);

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

#endif /* PYSHM_BINDING_H */
