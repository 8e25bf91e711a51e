/*
 * platform/sync.h -- the platform layer's contract for channels: locks that
 * survive their holder's death, and waits on a 32-bit word in shared memory.
 *
 * Owns: sync_handles, the lock and wait-word ids (sync_lock_id,
 * sync_word_id), the bits of the shared words (SYNC_SEQ_MASK, SYNC_WAITERS),
 * the owner range SYNC_SLOT_MAX, SYNC_KIND_*, the clock and the sync_* calls.
 * May include: the C library, core/status.h, platform/segment.h (for
 * shm_char).  No OS header, no Python.h.
 *
 * Never raises.  One implementation per OS family; the build groups of
 * src/sources.txt pick them:
 *
 *   sync_posix.c     what every POSIX scheme shares (clock, pause, yield);
 *                    built with one of the two below
 *   sync_linux.c     futex(2) waits; lock words naming the holder's
 *                    liveness slot, a byte-range lock the kernel drops when
 *                    the holder's process dies (any PID namespace)
 *   sync_fallback.c  portable POSIX: sleep-backoff waits; a lock word that
 *                    holds the owner's pid, stolen when kill(pid, 0) says
 *                    the owner is gone (macOS, the BSDs; built and tested
 *                    on Linux with PYSHM_WAIT=fallback)
 *   sync_win32.c     named semaphores for waits; lock words naming the
 *                    holder's liveness slot, a named kernel object that
 *                    exists while the holder's object keeps its handle
 *                    (Windows deletes a name with its last handle, so a
 *                    dead process frees its slots), and a named event that
 *                    wakes the lock's sleepers
 *
 * Locks belong to an attached OBJECT (one sync_handles; in the fallback,
 * its process), never to a thread: any thread of the object may release a
 * lock another of its threads took (so that a zero-copy loan can be ended
 * by whichever thread lets go of it last), and a waiter never takes over a
 * lock held by its own object as if its holder were dead.  Every scheme
 * follows that rule; none stores or trusts a thread id.
 *
 * Shared words.  Everything that lives in the segment is a plain 32-bit
 * word whose every value is checked before use; no pointer, nothing a
 * library or the kernel follows, is ever stored there.  The words are the
 * CALLER's: a channel passes the ones of its header (core/ring.h), another
 * protocol its own (a single-writer type may pass NULL for a lock it does
 * not use, and then never takes that lock).
 *
 *   lock word                 0 free; else an owner id of the scheme (Linux
 *                             and Windows: a liveness slot, 1..SYNC_SLOT_MAX;
 *                             fallback: a pid) | SYNC_WAITERS when someone
 *                             may sleep on it (Linux, Windows).  Any other
 *                             value is garbage: SHM_ECORRUPT.
 *   wait word                 a sequence in SYNC_SEQ_MASK, bumped by the
 *                             side that moved its cursor; Linux keeps
 *                             SYNC_WAITERS in it ("someone sleeps on this
 *                             value"), so a waker makes a system call only
 *                             when the bit is set, and a waiter that died
 *                             costs one wake at most: the next bump clears it.
 *   waiter count (per word)   Windows only: registrations not yet served;
 *                             the waker takes the whole count (exchange to
 *                             0) and releases that many semaphore units, so
 *                             a dead waiter costs one unit at most.
 *
 * Every wait here is bounded and interruptible: it returns SHM_EINTR when a
 * signal arrived (POSIX), and lock waits return SHM_EINTR after each
 * check-in slice, so that the binding can take the GIL, run
 * PyErr_CheckSignals() and call again with the same deadline.  Nothing here
 * blocks for long without coming back.
 *
 * The shared memory is untrusted: a lock or wait word garbled by another
 * process gives SHM_ECORRUPT or SHM_ETIMEOUT (or a spurious wake-up), never
 * a crash.
 */
#ifndef PYSHM_PLATFORM_SYNC_H
#define PYSHM_PLATFORM_SYNC_H

#include <stdint.h>     /* uint32_t, int64_t, intptr_t */

#include "core/status.h"         /* shm_status, shm_error */
#include "platform/segment.h"     /* shm_char, SHM_NAME_MAX */

/* Which implementation a channel was created by; stored in its header so
   that builds with different lock schemes never share one channel.  A value
   is never reused for another scheme: 3 was Windows with named mutexes
   (locks owned by a thread, the lock words unused), whose channels this
   build refuses as they refuse ours. */
#define SYNC_KIND_LINUX         1
#define SYNC_KIND_FALLBACK      2
#define SYNC_KIND_WIN32_MUTEX   3   /* retired: never created, always refused */
#define SYNC_KIND_WIN32         4

/* The bits of a wait word: the sequence, and (Linux) "a waiter sleeps on
   this value".  The same in every scheme, so the channel core compares
   sequences with SYNC_SEQ_MASK whatever the build. */
#define SYNC_SEQ_MASK 0x7fffffffu
#define SYNC_WAITERS  0x80000000u

/* The largest liveness slot, the owner id of a lock word (Linux and
   Windows; the bits below SYNC_WAITERS would allow more, but a word above
   this is refused as garbage, so that a scribbled word is seen as such). */
#define SYNC_SLOT_MAX 0xfffffu

/* The two locks of a channel: which one sync_lock() and friends take (the
   index of sync_handles.lock, and of the WORDS array of sync_handles_open). */
typedef enum {
    SYNC_LOCK_SEND = 0,     /* serialises senders */
    SYNC_LOCK_RECV = 1,     /* serialises receivers */
} sync_lock_id;
#define SYNC_NLOCKS 2

/* The two wait words of a channel: which one sync_wait() and sync_bump()
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
 * Per-process state of one attached object (a channel, or another type
 * built on these locks and waits): its liveness slot (Linux: a descriptor
 * of the segment's file whose open file description holds a byte-range
 * lock on the slot's byte; Windows: the slot's named object) and, on
 * Windows, the named events and semaphores.  Right after sync_handles_init()
 * every handle is invalid, so sync_handles_close() is always safe.  Linux
 * keeps a process-wide list of open handles (for fork, see sync_linux.c):
 * the struct must not move between sync_handles_open() and
 * sync_handles_close().
 */
typedef struct sync_handles {
    intptr_t lock[SYNC_NLOCKS];     /* named events waking lock sleepers, by
                                       sync_lock_id; 0 for a NULL word (Windows) */
    intptr_t sem[SYNC_NWORDS];      /* named semaphores, by sync_word_id (Windows) */
    intptr_t live;                  /* the liveness slot's named object (Windows); 0 none */
    int fd;                         /* the slot's descriptor (Linux); -1 none */
    uint32_t slot;                  /* this object's liveness slot, 1..SYNC_SLOT_MAX
                                       (Linux, Windows); 0 none */
    int probing;                    /* a thread of this object is checking an owner (Linux) */
    uint32_t *words[SYNC_NLOCKS];   /* the lock words (NULL: unused), cleared of a
                                       new slot (Linux, Windows) */
    struct sync_handles *next, *prev;   /* the process's open handles (Linux) */
#ifdef _WIN32
    shm_char base[SHM_NAME_MAX + 1];    /* the object's name: its owners' slot names
                                           are derived from it when probed */
#endif
} sync_handles;

/* This process's id (getpid / GetCurrentProcessId): a channel records its
   creator's, so that tools can tell whether the creator still runs. */
uint32_t sync_process_id(void);

/* SYNC_KIND_* of this build. */
uint32_t sync_kind(void);

/*
 * The owner-id domain of this build's locks, stored in the header by the
 * creator and compared at attach: processes whose values differ cannot
 * share a channel.  0 where the locks work across every process that can
 * map the segment (Linux futex build: liveness slots are byte-range locks
 * on the shared file; Windows: liveness slots are named kernel objects in
 * the namespace the segment's name is in).  The fallback stores pids,
 * which mean something only inside one PID namespace: on Linux it returns
 * that namespace's inode number (0 if /proc cannot say), elsewhere 0.
 */
uint32_t sync_domain(void);

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
 * Set up this process's handles for the object NAME whose segment is open
 * as *FD (POSIX: the descriptor shm_segment kept, see segment.h; Windows:
 * unused) and whose lock words are WORDS[id] (NULL: that lock is not used
 * and must never be taken).  Linux takes *FD over (sets it to -1;
 * sync_handles_close closes it), claims a free liveness slot and clears any
 * lock word still naming that slot (its previous holder is gone: the kernel
 * let us lock its byte).  Windows creates or opens the named objects
 * derived from NAME, claims a free liveness slot (a slot name that did not
 * exist) and clears the words naming it likewise.  The fallback closes *FD
 * (its locks need no file).
 */
shm_status sync_handles_open(sync_handles *h, const shm_char *name, intptr_t *fd,
                             uint32_t *words[SYNC_NLOCKS], shm_error *err);
void sync_handles_close(sync_handles *h);

/*
 * How many channel objects, in any process, hold their handles on the
 * channel whose segment is open as FD (POSIX: a descriptor of its file,
 * opened by anyone; it need not be attached): a snapshot, in *USERS.
 * Linux counts the liveness slots held on the file (F_OFD_GETLK), which
 * every process that maps it sees, whatever its PID namespace.  -1 where
 * the scheme keeps no such record: the fallback (its lock words hold a pid
 * only while a lock is held) and Windows (named kernel objects).
 */
shm_status sync_users(intptr_t fd, long *users, shm_error *err);

/*
 * Take lock LOCK_ID (its word WORD) before DEADLINE.  SHM_OK: held (a
 * holder that died is detected and its lock taken over: whatever it was
 * doing is abandoned, which the channel protocol makes harmless).  A lock
 * belongs to the handles H, not to a thread: any thread of H may release
 * it, and a word that names H itself is never probed (H is alive) -- the
 * caller's slices (SHM_EINTR) are where it sees to its own holders.
 * SHM_ETIMEOUT at the deadline; SHM_EINTR after a check-in slice or a
 * signal (call again); SHM_ECORRUPT when the word holds no valid owner.
 * With an expired deadline the lock is tried for a short bounded spin only.
 */
shm_status sync_lock(sync_handles *h, sync_lock_id lock_id, uint32_t *word, int64_t deadline,
                     shm_error *err);

/* Try once, no spin: SHM_OK or SHM_ETIMEOUT (or SHM_ECORRUPT). */
shm_status sync_trylock(sync_handles *h, sync_lock_id lock_id, uint32_t *word,
                        shm_error *err);

/* Release a lock this object holds, from any of its threads.  A word that
   no longer names this object (overwritten by another process) is left
   alone. */
void sync_unlock(sync_handles *h, sync_lock_id lock_id, uint32_t *word);

/*
 * Block while the sequence of WORD (the wait word WORD_ID; COUNT its
 * waiter count, used on Windows) equals that of SEQ, until UNTIL at the
 * latest.  Registers this waiter first (Linux: SYNC_WAITERS in WORD;
 * Windows: COUNT), so that sync_bump() wakes it.  SHM_OK when the word
 * moved or a wake came (spurious returns are allowed: the caller
 * re-checks); SHM_ETIMEOUT when UNTIL came, or earlier at the end of this
 * scheme's own slice (the caller compares with its deadline); SHM_EINTR
 * on a signal.
 */
shm_status sync_wait(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t *count,
                     uint32_t seq, int64_t until, shm_error *err);

/*
 * Whether a waiter is registered on WORD now (COUNT its waiter count): the
 * next sync_bump() of it makes a system call to wake someone asleep (Linux:
 * SYNC_WAITERS in WORD; Windows: COUNT > 0; fallback: never, its sleepers
 * poll).  A snapshot with no ordering: a hint for the caller (a channel
 * tells the sleeper when it was woken), never a decision about the wake
 * itself, which sync_bump() alone makes.
 */
int sync_waiting(const uint32_t *word, const uint32_t *count);

/*
 * After a publish or a consume: move the sequence of WORD on and wake the
 * registered waiters (Linux: only when SYNC_WAITERS was set, clearing it in
 * the same step; Windows: as many semaphore units as COUNT held, taking the
 * count to 0; fallback: sleepers poll, no wake).
 */
void sync_bump(sync_handles *h, sync_word_id word_id, uint32_t *word, uint32_t *count);

#endif /* PYSHM_PLATFORM_SYNC_H */
