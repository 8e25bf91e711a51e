/*
 * platform/ready.h -- readiness: the wait words and locks of
 * platform/sync.h watched for an event loop (a descriptor or a handle that
 * becomes ready), and waits on many words at once (pyshm.wait).
 *
 * Owns: sync_watch, sync_ready and the sync_ready_* calls, sync_wait_many,
 * the thread engine's contract (sync_thr_*, sync_park, sync_park_max).
 * May include: the C library, core/status.h, platform/sync.h.  No OS
 * header, no Python.h.
 *
 * The design (why nothing changes for senders).  A waiter of platform/sync.h
 * registers in the shared header before it sleeps -- the waiter bit of the
 * word (Linux), the waiter count (Windows) -- and a sender makes a system
 * call only for registered waiters.  An async waiter is such a waiter, whose
 * sleep is done by something other than a blocked thread of ours:
 *
 *   Linux     io_uring's IORING_OP_FUTEX_WAIT (kernel 6.7) on the very word,
 *             with the waiter bit set: the sender's FUTEX_WAKE completes it
 *             and the ring's descriptor becomes readable.  No format change,
 *             no change for senders (native programs and other builds of
 *             the same format wake async waiters too), no limit on waiters,
 *             any PID or network namespace; a waiter killed while armed
 *             leaves its waiter bit, which costs the next sender one wake,
 *             as a dead sync waiter does.  Where io_uring is refused
 *             (seccomp in containers, kernel.io_uring_disabled, kernels
 *             before 6.7), the thread engine below.
 *   Windows   the waiter count and the side's semaphore, as sync waiters
 *             use them, waited for by the system thread pool
 *             (RegisterWaitForSingleObject, the mechanism the
 *             ProactorEventLoop's wait_for_handle uses: one system wait
 *             thread serves up to 63 waits): its callback sets the object's
 *             event (the wait handle) and sends a byte on its socket (for
 *             select()).
 *   thread    POSIX without io_uring futex waits, and the portable build:
 *             one thread per process (ready_thread.c; one more per 127
 *             watches armed at once beyond the first 127) watches every
 *             armed word of the process -- futex_waitv (Linux 5.16) in one
 *             call, or, in the portable build whose senders wake no one, by
 *             polling with the sync waits' backoff -- and writes to the
 *             object's descriptor (an eventfd, or a pipe).
 *
 * Alternatives weighed (see also binding/ready.c): a doorbell registry in
 * the header that senders ring (a socket or event per waiter) changes the
 * format, makes every sender (native ones too) ring doorbells, limits the
 * registry's size and, with Linux abstract sockets, fails across network
 * namespaces that share /dev/shm.
 *
 * Protocol for callers: arm a watch, THEN check the condition (a message
 * queued, room, a newer generation); if it does not hold, wait for the
 * readiness; after it, take() and check again.  Arming registers first, so
 * a change between the check and the sleep is never missed.  Readiness is
 * a hint: spurious readiness is allowed, a lost one is not.
 *
 * Watches point into the object's mapping and sync handles: disarm them
 * (or close the sync_ready) before those go.  The caller serialises calls
 * on one sync_ready (the binding: the GIL), except sync_ready_wake(), which
 * any thread may call at any time while the object exists.
 */
#ifndef PYSHM_PLATFORM_READY_H
#define PYSHM_PLATFORM_READY_H

#include <stddef.h>     /* size_t */
#include <stdint.h>     /* uint32_t, intptr_t, int64_t */

#include "core/status.h"       /* shm_status, shm_error */
#include "platform/sync.h"     /* sync_handles, the word and lock ids */

/* Watches of one object: a channel's data and space words and its two locks. */
#define SYNC_READY_WATCHES 4

/* One thing to watch: wait word ID (a word of platform/sync.h, with its
   waiter count COUNT for Windows), or lock ID when LOCK is set (COUNT
   unused).  H: the object's handles. */
typedef struct {
    sync_handles *h;
    int lock;
    int id;
    uint32_t *word;
    uint32_t *count;
} sync_watch;

typedef struct sync_ready sync_ready;

/* A new readiness object, nothing armed, its descriptor not ready.  The
   engine is chosen once per process (sync_ready_engine). */
shm_status sync_ready_open(sync_ready **out, shm_error *err);

/* Disarm everything (no registration stays behind) and close. */
void sync_ready_close(sync_ready *r);

/* In a fork child, for an object opened in the parent: free this process's
   copy without touching what the parent still uses (the ring, the engine's
   thread).  Closes the inherited descriptors. */
void sync_ready_forget(sync_ready *r);

/* The descriptor that becomes readable (POSIX: io_uring, eventfd or pipe;
   Windows: a socket, for select()) and the Windows event (POSIX: the
   descriptor again). */
intptr_t sync_ready_fd(const sync_ready *r);
intptr_t sync_ready_handle(const sync_ready *r);

/* "io_uring", "thread" or "threadpool": which engine serves R. */
const char *sync_ready_engine(const sync_ready *r);

/*
 * Arm watch N (< SYNC_READY_WATCHES) on W, if it is not armed already:
 * register as a waiter of W's current value, so that the next move of the
 * word (a bump; a lock released) makes R ready.  A lock found free is not
 * armed: *NOW = 1 (look again at once).  SHM_OK, or SHM_EOS.
 */
shm_status sync_ready_arm(sync_ready *r, unsigned n, const sync_watch *w, int *now,
                          shm_error *err);

/* Take watch N's registration back (if it is armed); what it made ready
   may still be seen once. */
void sync_ready_disarm(sync_ready *r, unsigned n);

/*
 * Consume R's readiness (its descriptor is no longer ready unless
 * something new happens) and return the mask of watches whose arm ended
 * (they must be armed again).  A lock watch that was woken by its lock's
 * release passes the wake on to the lock's other sleepers (the caller may
 * not take the lock, and they would otherwise sleep until their slice
 * ends).
 */
unsigned sync_ready_take(sync_ready *r);

/* Make R ready now (close(), a condition found true after arming).  Any
   thread. */
void sync_ready_wake(sync_ready *r);

/*
 * Wait until one of the N wait words W[i] moves from SEEN[i] (values the
 * caller loaded before checking its conditions), until UNTIL at the
 * latest: registers as a waiter of each first.  SHM_OK (a move, a wake;
 * spurious returns allowed), SHM_ETIMEOUT at UNTIL, SHM_EINTR on a signal,
 * SHM_EVALUE when this build cannot wait on N words at once without
 * readiness objects (the caller then arms one per object and polls their
 * descriptors).  Windows waits in slices of SYNC_MANY_SLICE_MS.
 */
shm_status sync_wait_many(const sync_watch *w, const uint32_t *seen, size_t n, int64_t until,
                          shm_error *err);

/* ---- the thread engine (ready_thread.c, POSIX) ---------------------------------- */

/* What the thread sleeps on: an address and the value it must differ from
   (the kernel only compares it; the thread reads it under its lock). */
typedef struct {
    uint32_t *word;
    uint32_t value;
} sync_park;

/*
 * Sleep until one of the N words differs from its value or is woken, until
 * UNTIL at the latest (ready_linux.c: futex_waitv, in the kernel; before
 * Linux 5.16 and in the portable build: one nap of *BACKOFF ns, which is
 * then doubled up to 2 ms).  Returns early on a signal.  Never reads the
 * words from user space: they may be unmapped meanwhile.  N is at most
 * sync_park_max() (futex_waitv's 128; SIZE_MAX where the sleep is a nap).
 */
void sync_park_sleep(const sync_park *p, size_t n, int64_t until, int64_t *backoff);
size_t sync_park_max(void);

/* Wake the thread sleeping in sync_park_sleep on WORD (after moving it). */
void sync_park_wake(uint32_t *word);

/* A lock watch was woken by the lock's release, which wakes one sleeper:
   pass that wake on to the lock's other sleepers (Linux: FUTEX_WAKE of one;
   the portable build's sleepers poll: nothing). */
void sync_park_pass(uint32_t *word);

/* The thread engine's objects (ready_linux.c falls back to them;
   ready_fallback.c has no other): the calls of sync_ready, the same
   contract. */
typedef struct sync_thr sync_thr;

shm_status sync_thr_open(sync_thr **out, shm_error *err);
void sync_thr_close(sync_thr *t);
void sync_thr_forget(sync_thr *t);
int sync_thr_fd(const sync_thr *t);
shm_status sync_thr_arm(sync_thr *t, unsigned n, const sync_watch *w, int *now,
                        shm_error *err);
void sync_thr_disarm(sync_thr *t, unsigned n);
unsigned sync_thr_take(sync_thr *t);
void sync_thr_wake(sync_thr *t);

/* Register as a waiter of W (Linux: set the waiter bit) and return the
   value to sleep on: ready_linux.c for the futex build, a plain load in
   the portable one.  *FREE: a lock found free (nothing to wait for). */
uint32_t sync_watch_register(const sync_watch *w, int *free_lock);

#endif /* PYSHM_PLATFORM_READY_H */
