/*
 * platform/ready_fallback.c -- readiness in the portable build (macOS, the
 * BSDs; PYSHM_WAIT=fallback on Linux): the thread engine, and waits on
 * many words by the sync waits' own backoff.
 *
 * Owns: sync_ready in the portable build, sync_wait_many,
 * sync_watch_register, sync_park_sleep/wake/pass/max.
 * May include: the C library, POSIX headers, platform/ready.h,
 * core/atomics.h.  No Python.h.
 *
 * The portable scheme's senders only move the words (sync_fallback.c): no
 * one is woken, every waiter looks for itself, sleeping 10 us doubling to
 * 2 ms between looks.  Readiness follows the same rule: the watcher thread
 * (ready_thread.c) looks at every armed word of the process after each
 * nap, and pyshm.wait naps the same way over its words.  An idle async
 * waiter therefore costs what an idle sync waiter costs here (about 500
 * looks a second), once per process however many objects are armed.
 */
#include "platform/ready.h"

#include <errno.h>      /* ENOMEM, EINTR */
#include <stdint.h>     /* SIZE_MAX */
#include <stdlib.h>     /* calloc, free */
#include <time.h>       /* nanosleep */

#include "core/atomics.h"   /* loads of the shared words */

#define NAP_MIN_NS ((int64_t)10000)
#define NAP_MAX_NS ((int64_t)2000000)

struct sync_ready {
    sync_thr *thr;
};

uint32_t
sync_watch_register(const sync_watch *w, int *free_lock)
{
    /* Nothing to register: sleepers look for themselves. */
    uint32_t v = at_load32_sc(w->word);

    *free_lock = w->lock && v == 0;
    return v;
}

shm_status
sync_ready_open(sync_ready **out, shm_error *err)
{
    struct sync_ready *r = calloc(1, sizeof *r);
    shm_status status;

    if (r == NULL)
        return shm_fail_os(err, "calloc", ENOMEM);
    status = sync_thr_open(&r->thr, err);
    if (status != SHM_OK) {
        free(r);
        return status;
    }
    *out = r;
    return SHM_OK;
}

void
sync_ready_close(sync_ready *r)
{
    if (r == NULL)
        return;
    sync_thr_close(r->thr);
    free(r);
}

void
sync_ready_forget(sync_ready *r)
{
    if (r == NULL)
        return;
    sync_thr_forget(r->thr);
    free(r);
}

intptr_t
sync_ready_fd(const sync_ready *r)
{
    return sync_thr_fd(r->thr);
}

intptr_t
sync_ready_handle(const sync_ready *r)
{
    return sync_thr_fd(r->thr);
}

const char *
sync_ready_engine(const sync_ready *r)
{
    (void)r;
    return "thread";
}

shm_status
sync_ready_arm(sync_ready *r, unsigned n, const sync_watch *w, int *now, shm_error *err)
{
    return sync_thr_arm(r->thr, n, w, now, err);
}

void
sync_ready_disarm(sync_ready *r, unsigned n)
{
    sync_thr_disarm(r->thr, n);
}

unsigned
sync_ready_take(sync_ready *r)
{
    return sync_thr_take(r->thr);
}

void
sync_ready_wake(sync_ready *r)
{
    sync_thr_wake(r->thr);
}

/* One nap of *BACKOFF (never past UNTIL), then *BACKOFF doubles up to
   NAP_MAX_NS.  SHM_EINTR when a signal cut it short. */
static shm_status
nap(int64_t until, int64_t *backoff, shm_error *err)
{
    int64_t now = sync_now_ns(), ns = *backoff;
    struct timespec ts;

    if (until - now < ns)
        ns = until - now;
    if (ns > 0) {
        ts.tv_sec = (time_t)(ns / SYNC_NS_PER_S);
        ts.tv_nsec = (long)(ns % SYNC_NS_PER_S);
        if (nanosleep(&ts, NULL) != 0 && errno == EINTR)
            return shm_fail(err, SHM_EINTR, "interrupted");
    }
    *backoff = *backoff * 2 > NAP_MAX_NS ? NAP_MAX_NS : *backoff * 2;
    return SHM_OK;
}

shm_status
sync_wait_many(const sync_watch *w, const uint32_t *seen, size_t n, int64_t until,
               shm_error *err)
{
    int64_t backoff = NAP_MIN_NS;
    shm_status status;
    size_t i;

    for (;;) {
        for (i = 0; i < n; i++)
            if ((at_load32(w[i].word) ^ seen[i]) & SYNC_SEQ_MASK)
                return SHM_OK;
        if (until <= sync_now_ns())
            return shm_fail(err, SHM_ETIMEOUT, "timed out");
        status = nap(until, &backoff, err);
        if (status != SHM_OK)
            return status;
    }
}

size_t
sync_park_max(void)
{
    return SIZE_MAX;    /* a nap, whatever the count: one watcher */
}

void
sync_park_sleep(const sync_park *p, size_t n, int64_t until, int64_t *backoff)
{
    shm_error ignored;

    (void)p;
    (void)n;
    (void)nap(until, backoff, &ignored);
}

void
sync_park_wake(uint32_t *word)
{
    /* The watcher naps (2 ms at most): it sees the move at its next look. */
    (void)word;
}

void
sync_park_pass(uint32_t *word)
{
    (void)word;     /* lock sleepers poll here */
}
