/*
 * bench_lock.exe -- what a channel lock costs on Windows (the "win32" group's
 * sync_lock / sync_unlock, through platform/sync.h only, so the same program
 * measures any Windows lock scheme).  A benchmark, not a test: it prints
 * numbers and asserts none.  Run under Wine by `make -C tests/c bench-win32`.
 *
 *   bench_lock.exe                          the parent: every measurement
 *   bench_lock.exe contend NAME GO N        child: N lock/unlock rounds
 *   bench_lock.exe wake NAME K              child: K blocked lock waits
 *
 * Measurements (each in its own channel):
 *   uncontended    lock + unlock in one thread, no one else attached
 *   contended      two processes each take the lock N times around a tiny
 *                  critical section; ns per acquisition and how often the
 *                  lock changed hands
 *   hand-off       a process blocked in sync_lock (past its spin, asleep)
 *                  and the holder in another process releasing: time from
 *                  the release to the waiter's return (median, p90, max)
 */
#include "core/ring.h"

#include <stdio.h>      /* printf */
#include <stdlib.h>     /* qsort, wcstoul */
#include <string.h>     /* memcpy */
#include <wchar.h>      /* swprintf */
#include <windows.h>    /* CreateEventW, Sleep */

#include "core/atomics.h"   /* the shared counters of the contended run */
#include "ring_harness.h"   /* test_ring, in_seconds */
#include "win32_harness.h"  /* harness_spawn_self, harness_reap */

#define UNCONTENDED_N 1000000
#define CONTEND_N 20000
#define WAKE_K 200
#define DEADLINE_MS 300000

/* The shared words of a run, in the channel's ring bytes (no message is
   ever sent: the ring is scratch memory both processes map). */
typedef struct {
    uint32_t counter;       /* acquisitions, bumped under the lock */
    uint32_t last;          /* the process that bumped it last (1 parent, 2 child) */
    uint32_t handoffs;      /* times the bumper differed from the last one */
    uint32_t round;         /* wake: the round the holder has reached */
    uint32_t ack;           /* wake: the round the waiter has finished */
    uint32_t pad;
    int64_t released;       /* wake: sync_now_ns() just before the unlock */
} shared_words;

static shared_words *
shared_of(test_ring *c)
{
    return (shared_words *)(void *)c->ch.ring;
}

static uint32_t *
send_word(test_ring *c)
{
    return &c->ch.hdr->send_lock;
}

/* Take the send lock, going round the slice returns (SHM_EINTR). */
static int
lock(test_ring *c)
{
    shm_error err;
    shm_status st;
    int64_t deadline = in_seconds(60);

    do {
        st = sync_lock(&c->ch.sync, SYNC_LOCK_SEND, send_word(c), deadline, &err);
    } while (st == SHM_EINTR);
    if (st != SHM_OK)
        printf("sync_lock: status %d\n", (int)st);
    return st == SHM_OK;
}

static void
unlock(test_ring *c)
{
    sync_unlock(&c->ch.sync, SYNC_LOCK_SEND, send_word(c));
}

static int
make_chan(test_ring *c, const wchar_t *tag)
{
    shm_error err;

    swprintf(c->name, sizeof c->name / sizeof c->name[0], L"Local\\pyshm_bl_%ls_%lu", tag,
             (unsigned long)GetCurrentProcessId());
    if (test_ring_create(c, 4096, &err) != SHM_OK) {
        printf("create failed\n");
        return 0;
    }
    return 1;
}

static int
open_chan(test_ring *c, const wchar_t *name)
{
    shm_error err;

    swprintf(c->name, sizeof c->name / sizeof c->name[0], L"%ls", name);
    if (test_ring_open(c, &err) != SHM_OK) {
        printf("open failed\n");
        return 0;
    }
    return 1;
}

/* The contended loop of one process (ME 1 or 2). */
static int
contend(test_ring *c, uint32_t me, uint32_t n)
{
    shared_words *s = shared_of(c);
    uint32_t i;

    for (i = 0; i < n; i++) {
        if (!lock(c))
            return 0;
        /* Plain accesses: the lock orders them (that is what is measured). */
        s->counter++;
        if (s->last != me) {
            s->handoffs++;
            s->last = me;
        }
        unlock(c);
    }
    return 1;
}

/* contend NAME GO N */
static int
child_contend(wchar_t **arg)
{
    HANDLE go = OpenEventW(SYNCHRONIZE, FALSE, arg[1]);
    test_ring c;
    int ok;

    if (go == NULL || !open_chan(&c, arg[0]))
        return 1;
    (void)WaitForSingleObject(go, INFINITE);
    ok = contend(&c, 2, (uint32_t)wcstoul(arg[2], NULL, 10));
    CloseHandle(go);
    test_ring_close(&c);
    return ok ? 0 : 1;
}

static int
cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* wake NAME K: each round, wait for the parent to hold the lock, then
   block in sync_lock until it lets go; print the hand-off times. */
static int
child_wake(wchar_t **arg)
{
    static int64_t took[WAKE_K];
    uint32_t k = (uint32_t)wcstoul(arg[1], NULL, 10), r;
    shared_words *s;
    test_ring c;

    if (k > WAKE_K || !open_chan(&c, arg[0]))
        return 1;
    s = shared_of(&c);
    for (r = 1; r <= k; r++) {
        while (at_load32(&s->round) != r)
            (void)SwitchToThread();
        if (!lock(&c))
            return 1;
        took[r - 1] = sync_now_ns() - *(volatile int64_t *)&s->released;
        unlock(&c);
        at_store32(&s->ack, r);
    }
    qsort(took, k, sizeof took[0], cmp_i64);
    printf("hand-off to a blocked waiter in another process: median %.1f us, p90 %.1f us, "
           "max %.1f us (%u rounds)\n", (double)took[k / 2] / 1e3,
           (double)took[k * 9 / 10] / 1e3, (double)took[k - 1] / 1e3, (unsigned)k);
    test_ring_close(&c);
    return 0;
}

static void
bench_uncontended(void)
{
    test_ring c;
    shm_error err;
    int64_t t0, t1, t2;
    int i, ok = 1;

    if (!make_chan(&c, L"u"))
        return;
    t0 = sync_now_ns();
    for (i = 0; i < UNCONTENDED_N && ok; i++) {
        ok = sync_lock(&c.ch.sync, SYNC_LOCK_SEND, send_word(&c), SYNC_FOREVER, &err) == SHM_OK;
        unlock(&c);
    }
    t1 = sync_now_ns();
    for (i = 0; i < UNCONTENDED_N && ok; i++) {
        ok = sync_trylock(&c.ch.sync, SYNC_LOCK_SEND, send_word(&c), &err) == SHM_OK;
        unlock(&c);
    }
    t2 = sync_now_ns();
    if (!ok)
        printf("uncontended: a lock failed\n");
    printf("uncontended lock+unlock: %.1f ns; trylock+unlock: %.1f ns (%d rounds)\n",
           (double)(t1 - t0) / UNCONTENDED_N, (double)(t2 - t1) / UNCONTENDED_N,
           UNCONTENDED_N);
    test_ring_close(&c);
}

static void
bench_contended(void)
{
    wchar_t go_name[128], args[400];
    PROCESS_INFORMATION pi;
    test_ring c;
    HANDLE go;
    int64_t t0, t1;
    int ok;

    if (!make_chan(&c, L"c"))
        return;
    swprintf(go_name, 128, L"Local\\pyshm_bl_go_%lu", (unsigned long)GetCurrentProcessId());
    go = CreateEventW(NULL, TRUE, FALSE, go_name);
    swprintf(args, 400, L"contend %ls %ls %d", c.name, go_name, CONTEND_N);
    if (go == NULL || !harness_spawn_self(args, &pi)) {
        test_ring_close(&c);
        return;
    }
    Sleep(500);     /* let the child attach and wait on GO (a benchmark: no handshake needed) */
    t0 = sync_now_ns();
    (void)SetEvent(go);
    ok = contend(&c, 1, CONTEND_N);
    ok = harness_reap(&pi, DEADLINE_MS) == 0 && ok;
    t1 = sync_now_ns();
    printf("contended, 2 processes x %d: %.1f ns per acquisition, %u hand-offs "
           "(%.1f%%), counter %u%s\n", CONTEND_N, (double)(t1 - t0) / (2.0 * CONTEND_N),
           (unsigned)shared_of(&c)->handoffs,
           100.0 * shared_of(&c)->handoffs / (2.0 * CONTEND_N),
           (unsigned)shared_of(&c)->counter, ok ? "" : " (a process failed)");
    CloseHandle(go);
    test_ring_close(&c);
}

static void
bench_wake(void)
{
    wchar_t args[400];
    PROCESS_INFORMATION pi;
    shared_words *s;
    test_ring c;
    uint32_t r;

    if (!make_chan(&c, L"w"))
        return;
    s = shared_of(&c);
    swprintf(args, 400, L"wake %ls %d", c.name, WAKE_K);
    if (!harness_spawn_self(args, &pi)) {
        test_ring_close(&c);
        return;
    }
    for (r = 1; r <= WAKE_K; r++) {
        if (!lock(&c))
            break;
        at_store32(&s->round, r);
        /* Long enough for the waiter to spin out and go to sleep. */
        Sleep(20);
        *(volatile int64_t *)&s->released = sync_now_ns();
        unlock(&c);
        while (at_load32(&s->ack) != r && WaitForSingleObject(pi.hProcess, 0) == WAIT_TIMEOUT)
            (void)SwitchToThread();
    }
    (void)harness_reap(&pi, DEADLINE_MS);
    test_ring_close(&c);
}

static int
parent(void)
{
    harness_say("bench_lock: lock scheme %s, %d CPUs\n", sync_kind_name(), sync_ncpu());
    bench_uncontended();
    bench_contended();
    bench_wake();
    return 0;
}

static const harness_role roles[] = {
    {L"contend", 3, child_contend},
    {L"wake", 2, child_wake},
    {NULL, 0, NULL},
};

int
wmain(int argc, wchar_t **argv)
{
    return harness_main(argc, argv, parent, roles,
                        "usage: bench_lock.exe [contend NAME GO N | wake NAME K]");
}
