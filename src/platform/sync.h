/*
 * platform/sync.h -- the platform layer's contract for channels: locks that
 * survive their holder's death, and waits on a 32-bit word in shared memory.
 *
 * Owns: sync_handles, the lock and wait-word ids (sync_lock_id,
 * sync_word_id), SYNC_KIND_*, the clock and the sync_* calls.
 * May include: the C library, core/status.h, platform/segment.h (for
 * shm_char).  No OS header, no Python.h.
 *
 * Never raises.  One implementation per OS family; the build groups of
 * src/sources.txt pick them:
 *
 *   sync_posix.c     what every POSIX scheme shares (clock, pause, yield,
 *                    the handle stubs); built with one of the two below
 *   sync_linux.c     futex(2) waits; robust process-shared pthread mutexes
 *   sync_fallback.c  portable POSIX: sleep-backoff waits; a lock word that
 *                    holds the owner's pid, stolen when kill(pid, 0) says
 *                    the owner is gone (macOS, the BSDs; built and tested
 *                    on Linux with PYSHM_WAIT=fallback)
 *   sync_win32.c     named semaphores for waits, named mutexes for locks
 *                    (WAIT_ABANDONED when the owner died)
 *
 * Every wait here is bounded by a deadline and is interruptible: it returns
 * SHM_EINTR when a signal arrived (POSIX) or when a check-in slice ran out
 * (lock waits everywhere, all waits on Windows), so that the binding can
 * take the GIL, run PyErr_CheckSignals() and call again with the same
 * deadline.  Nothing here blocks for long without coming back.
 *
 * The shared memory is untrusted: a lock area or word garbled by another
 * process gives SHM_ECORRUPT or SHM_ETIMEOUT, never a crash.
 */
#ifndef PYSHM_PLATFORM_SYNC_H
#define PYSHM_PLATFORM_SYNC_H

#include <stdint.h>     /* uint32_t, int64_t, intptr_t */

#include "core/status.h"         /* shm_status, shm_error */
#include "platform/segment.h"     /* shm_char, SHM_NAME_MAX */

/* Which implementation a channel was created by; stored in its header so
   that builds with different lock schemes never share one channel. */
#define SYNC_KIND_LINUX     1
#define SYNC_KIND_FALLBACK  2
#define SYNC_KIND_WIN32     3

/* Bytes reserved in the shared header for each lock (a pthread_mutex_t is
   40 bytes on x86-64 glibc; the fallback uses one word; Windows none). */
#define SYNC_LOCK_AREA 128

/* The two locks of a channel: which one sync_lock() and friends take (the
   index of sync_handles.lock, and of the AREA array of sync_locks_format). */
typedef enum {
    SYNC_LOCK_SEND = 0,     /* serialises senders */
    SYNC_LOCK_RECV = 1,     /* serialises receivers */
} sync_lock_id;
#define SYNC_NLOCKS 2

/* The two wait words of a channel: which one sync_wait() and sync_wake()
   are about (the index of sync_handles.sem, and of the ring's spin budgets). */
typedef enum {
    SYNC_WORD_DATA = 0,     /* bumped by senders after a publish; receivers wait on it */
    SYNC_WORD_SPACE = 1,    /* bumped by receivers after a consume; senders wait on it */
} sync_word_id;
#define SYNC_NWORDS 2

/* Deadlines are absolute sync_now_ns() values.  SYNC_FOREVER never expires;
   any value <= now has expired (callers use 0 for "do not wait"). */
#define SYNC_FOREVER INT64_MAX

/* Nanoseconds per second, for clock and timeout arithmetic. */
#define SYNC_NS_PER_S ((int64_t)1000000000)

/*
 * Per-process handles of one channel's OS objects: Windows named mutexes
 * and semaphores; unused on POSIX (everything lives in the segment).
 * Right after sync_handles_init() every handle is invalid, so
 * sync_handles_close() is always safe.
 */
typedef struct {
    intptr_t lock[SYNC_NLOCKS];     /* named mutexes, by sync_lock_id (Windows) */
    intptr_t sem[SYNC_NWORDS];      /* named semaphores, by sync_word_id (Windows) */
} sync_handles;

/* This process's id (getpid / GetCurrentProcessId): a channel records its
   creator's, so that tools can tell whether the creator still runs. */
uint32_t sync_process_id(void);

/* SYNC_KIND_* of this build. */
uint32_t sync_kind(void);

/* Human-readable name of this build's scheme ("futex", "fallback", "win32"). */
const char *sync_kind_name(void);

/* Monotonic clock in nanoseconds. */
int64_t sync_now_ns(void);

/* One spin-loop step: a pause/yield hint to the CPU. */
void sync_cpu_relax(void);

/* Let another runnable thread on this CPU run (sched_yield / SwitchToThread):
   a spinning waiter whose peer was woken onto its own CPU would otherwise
   keep the peer from answering until the spin ends. */
void sync_yield(void);

/* Number of CPUs this process may run on (>= 1); spinning is pointless on one. */
int sync_ncpu(void);

/* The CPU this thread runs on now, counted from 1; 0 when the OS cannot say.
   A hint only (the thread may move at once): it lets a spinner see that its
   peer last ran on its own CPU, where spinning only delays the peer. */
uint32_t sync_cpu(void);

void sync_handles_init(sync_handles *h);

/*
 * Prepare the lock areas of a new channel (creator only, before it is
 * published).  AREA[id] points to SYNC_LOCK_AREA bytes for lock ID
 * (a sync_lock_id).
 */
shm_status sync_locks_format(void *area[SYNC_NLOCKS], shm_error *err);

/*
 * Open this process's handles to the OS objects of the channel NAME
 * (Windows: create-or-open named objects derived from NAME; POSIX: nothing).
 */
shm_status sync_handles_open(sync_handles *h, const shm_char *name, shm_error *err);
void sync_handles_close(sync_handles *h);

/*
 * Take lock LOCK_ID (its area AREA) before DEADLINE.  SHM_OK: held (a holder
 * that died is detected and its lock taken over: whatever it was doing is
 * abandoned, which the channel protocol makes harmless).  SHM_ETIMEOUT at
 * the deadline; SHM_EINTR after a check-in slice (call again);
 * SHM_ECORRUPT when the lock area is garbage.  With an expired deadline the
 * lock is tried for a short bounded spin only.
 */
shm_status sync_lock(sync_handles *h, sync_lock_id lock_id, void *area, int64_t deadline,
                     shm_error *err);

/* Try once, no spin: SHM_OK or SHM_ETIMEOUT (or SHM_ECORRUPT). */
shm_status sync_trylock(sync_handles *h, sync_lock_id lock_id, void *area, shm_error *err);

void sync_unlock(sync_handles *h, sync_lock_id lock_id, void *area);

/*
 * Block while *WORD (the wait word WORD_ID) == EXPECTED, until DEADLINE.
 * SHM_OK when woken or when the word differs (spurious returns are allowed:
 * the caller re-checks); SHM_ETIMEOUT; SHM_EINTR on a signal or check-in
 * slice.
 */
shm_status sync_wait(sync_handles *h, sync_word_id word_id, uint32_t *word,
                     uint32_t expected, int64_t deadline, shm_error *err);

/*
 * Wake the waiters of WORD (the wait word WORD_ID; the caller has bumped it
 * already).  WAITERS is the count the caller read: futexes wake everyone
 * regardless; Windows releases that many semaphore units (capped), and a
 * surplus unit only causes one spurious return later.
 */
void sync_wake(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t waiters);

#endif /* PYSHM_PLATFORM_SYNC_H */
