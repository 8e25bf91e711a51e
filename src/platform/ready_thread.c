/*
 * platform/ready_thread.c -- the thread engine of platform/ready.h (POSIX):
 * one thread per process watches every armed word of the process and makes
 * the armed objects' descriptors readable.
 *
 * Owns: sync_thr and the sync_thr_* calls, the watcher thread, its list of
 * armed objects and its fork handler.
 * May include: the C library, POSIX headers (eventfd on Linux),
 * platform/ready.h, core/atomics.h.  No Python.h.
 *
 * Used where io_uring has no futex waits (ready_linux.c falls back to it:
 * seccomp filters in containers, kernel.io_uring_disabled, kernels before
 * 6.7) and by the portable build (ready_fallback.c), whose senders wake no
 * one.  Each object's descriptor is an eventfd (Linux) or the read end of a
 * pipe.  Arming registers as a waiter of the word (ready.h) and puts the
 * (address, value) pair on the list; the thread sleeps on all of them and
 * on a control word of its own (sync_park_sleep: futex_waitv on Linux,
 * naps in the portable build), and after every wake looks at each armed
 * word under the list's lock: one that moved ends its arm and makes its
 * object readable.  Arming and disarming move the control word, so the
 * thread sleeps on the current list.  The thread reads a word only under
 * the lock, and disarming (which the binding does before the mapping
 * goes) takes it off the list under the lock: no word is ever read after
 * its unmap.
 *
 * Many watches.  futex_waitv sleeps on 128 words at most (its control word
 * and 127 armed watches).  So the watches are shared out among watcher
 * threads, each with its own control word, at most sync_park_max() - 1
 * watches each (a watch is given to the first watcher with room when it
 * is armed): a process with up to 127 armed watches -- 127 objects
 * awaited at once, or a receive waiting behind a loan arms two -- has one
 * watcher, more start as the armed watches pass each multiple of 127, and
 * every one of them sleeps in the kernel until a word moves: no polling.
 * A watcher whose watches are all gone waits on its condition variable
 * (no wake-ups) and is reused; they are not stopped.  The portable build
 * naps whatever the count (its senders wake no one): sync_park_max() is
 * unbounded there, one watcher.
 *
 * Fork: the child has no watcher thread; a pthread_atfork child handler
 * empties the list (the parent's objects in the child are forgotten by
 * the binding, sync_thr_forget) and the next arm starts a new thread.
 */
#include "platform/ready.h"

#include <errno.h>      /* EAGAIN, EINTR */
#include <fcntl.h>      /* fcntl, O_NONBLOCK, FD_CLOEXEC */
#include <pthread.h>    /* the thread, its lock */
#include <signal.h>     /* sigfillset, pthread_sigmask: signals stay with Python's thread */
#include <stdint.h>     /* SIZE_MAX, uintptr_t */
#include <stdlib.h>     /* calloc, free */
#include <unistd.h>     /* read, write, pipe, close */
#ifdef __linux__
#include <sys/eventfd.h>    /* eventfd: one descriptor instead of a pipe's two */
#endif

#include "core/atomics.h"   /* the control word */

#define NAP_MIN_NS ((int64_t)10000)
#define PARK_MAX 128            /* futex_waitv's limit: a control word and 127 watches */
#define SHARDS_MAX 64           /* watchers: 64 * 127 armed watches at once */

typedef struct {
    int armed;
    unsigned shard;             /* the watcher that sleeps on it, while armed */
    uint32_t value;             /* the value the word must leave */
    sync_watch w;
} thr_watch;

/* One watcher thread and what it sleeps on. */
typedef struct {
    uint32_t ctl;               /* moved (and woken) when its watches change */
    size_t armed;               /* watches given to it */
    int running;                /* its thread exists (in this process) */
    pthread_cond_t idle;        /* nothing armed: it waits here, not in the kernel */
} thr_shard;

struct sync_thr {
    int rfd, wfd;               /* eventfd (rfd == wfd) or pipe */
    thr_watch watch[SYNC_READY_WATCHES];
    unsigned fired;             /* watches whose word moved, not yet taken */
    unsigned woken;             /* ... of them, lock watches (pass the wake on) */
    int signalled;              /* the descriptor was written and not yet drained */
    int waked;                  /* ... by sync_thr_wake (no watch of its own) */
    int linked;
    struct sync_thr *next, *prev;
};

static pthread_mutex_t thr_lock = PTHREAD_MUTEX_INITIALIZER;
static sync_thr *thr_list;      /* objects with an armed watch; under thr_lock */
static thr_shard thr_shards[SHARDS_MAX];    /* under thr_lock (ctl: atomics) */
static unsigned thr_nshards;    /* shards in use (their cond initialised) */
static pthread_once_t thr_once = PTHREAD_ONCE_INIT;
static int thr_atfork_rc;

static void
thr_fork_prepare(void)
{
    (void)pthread_mutex_lock(&thr_lock);
}

static void
thr_fork_parent(void)
{
    (void)pthread_mutex_unlock(&thr_lock);
}

static void
thr_fork_child(void)
{
    sync_thr *t, *next;
    unsigned k;

    /* The watchers are the parent's; the objects on the list belong to the
       parent too and are forgotten by the binding. */
    for (t = thr_list; t != NULL; t = next) {
        next = t->next;
        t->linked = 0;
        t->next = t->prev = NULL;
    }
    thr_list = NULL;
    for (k = 0; k < thr_nshards; k++) {
        thr_shards[k].running = 0;
        thr_shards[k].armed = 0;
        /* The parent's watcher may have waited on it. */
        (void)pthread_cond_init(&thr_shards[k].idle, NULL);
    }
    (void)pthread_mutex_unlock(&thr_lock);
}

static void
thr_init(void)
{
    thr_atfork_rc = pthread_atfork(thr_fork_prepare, thr_fork_parent, thr_fork_child);
}

static void
link_thr(sync_thr *t)
{
    if (t->linked)
        return;
    t->prev = NULL;
    t->next = thr_list;
    if (thr_list != NULL)
        thr_list->prev = t;
    thr_list = t;
    t->linked = 1;
}

static void
unlink_thr(sync_thr *t)
{
    if (!t->linked)
        return;
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        thr_list = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    t->next = t->prev = NULL;
    t->linked = 0;
}

/* Move watcher K's control word: it looks at its watches again (thr_lock
   held). */
static void
poke(unsigned k)
{
    thr_shard *sh = &thr_shards[k];

    (void)at_add32_sc(&sh->ctl, 1);
    (void)pthread_cond_signal(&sh->idle);
    sync_park_wake(&sh->ctl);
}

/* Make T's descriptor readable (thr_lock held). */
static void
signal_thr(sync_thr *t)
{
#ifdef __linux__
    uint64_t one = 1;
    const void *buf = &one;
    size_t len = sizeof one;
#else
    static const char one = 1;
    const void *buf = &one;
    size_t len = 1;
#endif

    if (t->signalled)
        return;
    /* Non-blocking: a full pipe or a saturated counter is readable already. */
    while (write(t->wfd, buf, len) < 0 && errno == EINTR)
        ;
    t->signalled = 1;
}

static void *
watcher(void *arg)
{
    unsigned k = (unsigned)(uintptr_t)arg, i;
    thr_shard *sh = &thr_shards[k];
    sync_park parks[PARK_MAX];
    size_t n;
    int64_t backoff = NAP_MIN_NS;
    sync_thr *t;
    int moved;

    (void)pthread_mutex_lock(&thr_lock);
    for (;;) {
        if (sh->armed == 0) {
            /* Nothing armed: no naps (the portable build would nap for
               ever), a condition variable that arming signals. */
            (void)pthread_cond_wait(&sh->idle, &thr_lock);
            continue;
        }
        n = 0;
        parks[n].word = &sh->ctl;
        parks[n].value = at_load32(&sh->ctl);
        n++;
        /* At most sync_park_max() - 1 watches are this watcher's (Linux:
           PARK_MAX - 1); the portable build's may be more, but its sleep
           is a nap that looks at none of them (all are looked at after). */
        for (t = thr_list; t != NULL && n < PARK_MAX; t = t->next) {
            for (i = 0; i < SYNC_READY_WATCHES && n < PARK_MAX; i++) {
                thr_watch *x = &t->watch[i];
                if (!x->armed || x->shard != k)
                    continue;
                parks[n].word = x->w.word;
                parks[n].value = x->value;
                n++;
            }
        }
        (void)pthread_mutex_unlock(&thr_lock);
        sync_park_sleep(parks, n, SYNC_FOREVER, &backoff);
        (void)pthread_mutex_lock(&thr_lock);
        moved = 0;
        for (t = thr_list; t != NULL; t = t->next) {
            for (i = 0; i < SYNC_READY_WATCHES; i++) {
                thr_watch *x = &t->watch[i];
                if (!x->armed || x->shard != k || at_load32(x->w.word) == x->value)
                    continue;
                x->armed = 0;
                sh->armed--;
                t->fired |= 1u << i;
                if (x->w.lock)
                    t->woken |= 1u << i;
                signal_thr(t);
                moved = 1;
            }
        }
        if (moved || at_load32(&sh->ctl) != parks[0].value)
            backoff = NAP_MIN_NS;
    }
    return NULL;
}

/* Start watcher K if this process has none (thr_lock held).  Signals are
   blocked in it, so that they go to Python's threads. */
static shm_status
start_watcher(unsigned k, shm_error *err)
{
    pthread_attr_t attr;
    pthread_t tid;
    sigset_t all, old;
    int rc;

    if (thr_shards[k].running)
        return SHM_OK;
    if (pthread_attr_init(&attr) != 0)
        return shm_fail_os(err, "pthread_attr_init", ENOMEM);
    (void)pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    (void)sigfillset(&all);
    (void)pthread_sigmask(SIG_SETMASK, &all, &old);
    rc = pthread_create(&tid, &attr, watcher, (void *)(uintptr_t)k);
    (void)pthread_sigmask(SIG_SETMASK, &old, NULL);
    (void)pthread_attr_destroy(&attr);
    if (rc != 0)
        return shm_fail_os(err, "pthread_create", rc);
    thr_shards[k].running = 1;
    return SHM_OK;
}

/* The watcher with room for one more watch, started if need be (thr_lock
   held).  SHM_OK with *K, or an error (too many watches at once). */
static shm_status
shard_for_watch(unsigned *k, shm_error *err)
{
    size_t room = sync_park_max();
    unsigned i;

    room = room == SIZE_MAX ? SIZE_MAX : room - 1;  /* the control word */
    for (i = 0; i < thr_nshards; i++)
        if (thr_shards[i].armed < room)
            break;
    if (i == thr_nshards) {
        if (i == SHARDS_MAX)
            return shm_fail_os(err, "sync_ready_arm", EAGAIN);
        if (pthread_cond_init(&thr_shards[i].idle, NULL) != 0)
            return shm_fail_os(err, "pthread_cond_init", ENOMEM);
        thr_shards[i].armed = 0;
        thr_shards[i].running = 0;
        thr_nshards++;
    }
    *k = i;
    return start_watcher(i, err);
}

static int
set_flags(int fd)
{
    int fl = fcntl(fd, F_GETFL);

    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 || fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
        return -1;
    return 0;
}

shm_status
sync_thr_open(sync_thr **out, shm_error *err)
{
    sync_thr *t;
    int code;

    (void)pthread_once(&thr_once, thr_init);
    if (thr_atfork_rc != 0)
        return shm_fail_os(err, "pthread_atfork", thr_atfork_rc);
    t = calloc(1, sizeof *t);
    if (t == NULL)
        return shm_fail_os(err, "calloc", ENOMEM);
#ifdef __linux__
    t->rfd = t->wfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (t->rfd < 0) {
        code = errno;
        free(t);
        return shm_fail_os(err, "eventfd", code);
    }
#else
    {
        int fds[2];
        /* pipe2 is not everywhere (macOS): flags set after. */
        if (pipe(fds) != 0) {
            code = errno;
            free(t);
            return shm_fail_os(err, "pipe", code);
        }
        if (set_flags(fds[0]) != 0 || set_flags(fds[1]) != 0) {
            code = errno;
            (void)close(fds[0]);
            (void)close(fds[1]);
            free(t);
            return shm_fail_os(err, "fcntl", code);
        }
        t->rfd = fds[0];
        t->wfd = fds[1];
    }
#endif
    (void)set_flags;
    *out = t;
    return SHM_OK;
}

static void
close_fds(sync_thr *t)
{
    if (t->rfd >= 0)
        (void)close(t->rfd);
    if (t->wfd >= 0 && t->wfd != t->rfd)
        (void)close(t->wfd);
    t->rfd = t->wfd = -1;
}

/* Take watch N of T off its watcher (thr_lock held). */
static void
disarm_locked(sync_thr *t, unsigned n)
{
    thr_watch *x = &t->watch[n];

    if (!x->armed)
        return;
    x->armed = 0;
    thr_shards[x->shard].armed--;
    poke(x->shard);
}

void
sync_thr_close(sync_thr *t)
{
    unsigned i;

    (void)pthread_mutex_lock(&thr_lock);
    for (i = 0; i < SYNC_READY_WATCHES; i++)
        disarm_locked(t, i);
    unlink_thr(t);
    (void)pthread_mutex_unlock(&thr_lock);
    close_fds(t);
    free(t);
}

void
sync_thr_forget(sync_thr *t)
{
    /* In a fork child: the child handler took it off the list. */
    close_fds(t);
    free(t);
}

int
sync_thr_fd(const sync_thr *t)
{
    return t->rfd;
}

shm_status
sync_thr_arm(sync_thr *t, unsigned n, const sync_watch *w, int *now, shm_error *err)
{
    thr_watch *x = &t->watch[n];
    shm_status status;
    uint32_t v;
    unsigned k;
    int free_lock;

    *now = 0;
    (void)pthread_mutex_lock(&thr_lock);
    if (x->armed) {
        (void)pthread_mutex_unlock(&thr_lock);
        return SHM_OK;
    }
    status = shard_for_watch(&k, err);
    if (status != SHM_OK) {
        (void)pthread_mutex_unlock(&thr_lock);
        return status;
    }
    v = sync_watch_register(w, &free_lock);
    if (free_lock) {
        (void)pthread_mutex_unlock(&thr_lock);
        *now = 1;
        return SHM_OK;
    }
    x->armed = 1;
    x->shard = k;
    x->value = v;
    x->w = *w;
    thr_shards[k].armed++;
    link_thr(t);
    poke(k);
    (void)pthread_mutex_unlock(&thr_lock);
    return SHM_OK;
}

/* Empty T's descriptor (thr_lock held). */
static void
drain(sync_thr *t)
{
    char buf[64];

    for (;;) {
        ssize_t got = read(t->rfd, buf, sizeof buf);
        if (got > 0 || (got < 0 && errno == EINTR))
            continue;
        break;
    }
}

void
sync_thr_disarm(sync_thr *t, unsigned n)
{
    unsigned i;
    int any = 0, pass;

    (void)pthread_mutex_lock(&thr_lock);
    if (!t->watch[n].armed && !(t->fired & (1u << n))) {
        (void)pthread_mutex_unlock(&thr_lock);
        return;
    }
    disarm_locked(t, n);
    pass = (t->woken & (1u << n)) != 0;
    t->fired &= ~(1u << n);
    t->woken &= ~(1u << n);
    /* Nothing else fired, no wake asked for: the descriptor's readiness
       was this watch's alone, gone with it (no needless wake-up of the
       loop). */
    if (t->fired == 0 && !t->waked && t->signalled) {
        drain(t);
        t->signalled = 0;
    }
    for (i = 0; i < SYNC_READY_WATCHES; i++)
        any |= t->watch[i].armed;
    if (!any)
        unlink_thr(t);
    (void)pthread_mutex_unlock(&thr_lock);
    if (pass)
        sync_park_pass(t->watch[n].w.word);     /* as take() would have */
}

unsigned
sync_thr_take(sync_thr *t)
{
    unsigned fired, woken, i;

    (void)pthread_mutex_lock(&thr_lock);
    fired = t->fired;
    woken = t->woken;
    t->fired = t->woken = 0;
    t->waked = 0;
    /* Drained under the lock: a signal after this is a new one. */
    drain(t);
    t->signalled = 0;
    for (i = 0; i < SYNC_READY_WATCHES; i++)
        if (woken & (1u << i))
            sync_park_pass(t->watch[i].w.word);
    (void)pthread_mutex_unlock(&thr_lock);
    return fired;
}

void
sync_thr_wake(sync_thr *t)
{
    (void)pthread_mutex_lock(&thr_lock);
    t->waked = 1;
    signal_thr(t);
    (void)pthread_mutex_unlock(&thr_lock);
}
