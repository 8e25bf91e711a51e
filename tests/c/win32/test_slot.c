/*
 * test_slot.exe -- the slot core on Windows (src/core/slot.c + the "win32"
 * group: platform/segment_win32.c, platform/sync_win32.c), run under Wine by
 * `make check-win32`.
 *
 *   test_slot.exe                          run every check (the parent)
 *   test_slot.exe write NAME ID COUNT      child: publish COUNT values
 *   test_slot.exe read NAME LAST WRITERS   child: read until generation LAST,
 *                                          every read whole
 *   test_slot.exe stream NAME ID           child: publish for ever
 *   test_slot.exe hold NAME READY          child: reserve a cell (the write
 *                                          lock), write half, set READY, sleep
 *   test_slot.exe wait NAME READY          child: set READY, block until a
 *                                          publish, read it whole
 *
 * Checks: lengths, generations, a small buffer, reserve/abort, waits and
 * their slices, cancel, marks steering the writer, a channel opened as a
 * slot and the reverse, in one process; two writer and two reader
 * processes, no read torn and every generation counted once; writers
 * terminated at random instants and one terminated holding the write
 * lock (its lock word names the holder's liveness slot, which dies with
 * it: taken over), the previous value whole; waiters in
 * other processes woken by a publish.  The last line is "all passed" only
 * when every check held.
 */
#include "core/slot.h"

#include <stdio.h>      /* printf */
#include <stdlib.h>     /* malloc, free */
#include <string.h>     /* memcmp, memset, memcpy, strstr */
#include <wchar.h>      /* swprintf, wcstoul */
#include <windows.h>    /* CreateEventW, TerminateProcess, Sleep */

#include "ring_harness.h"   /* test_ring (a channel to open as a slot), rnd */
#include "slot_harness.h"   /* test_slot, fill_value, value_ok, publish_value, wait_for */
#include "win32_harness.h"  /* CHECK, harness_spawn_self, harness_reap */

#define DEADLINE_MS 60000
#define DEADLINE_S 60.0

static uint32_t rng_state = 777;

static int
make_slot(test_slot *t, const wchar_t *tag, uint64_t value_size, uint32_t cells)
{
    shm_error err;

    swprintf(t->name, sizeof t->name / sizeof t->name[0], L"Local\\pyshm_st_%ls_%lu", tag,
             (unsigned long)GetCurrentProcessId());
    return CHECK(test_slot_create(t, value_size, cells, &err) == SHM_OK);
}

static int
open_slot(test_slot *t, const wchar_t *name)
{
    shm_error err;

    swprintf(t->name, sizeof t->name / sizeof t->name[0], L"%ls", name);
    return CHECK(test_slot_open(t, &err) == SHM_OK);
}

/* The newest value, whole, not older than AFTER: its generation (0 on a
   failed check). */
static uint64_t
read_whole(test_slot *t, unsigned char *buf, uint64_t after)
{
    size_t len;
    uint64_t gen = 0;
    shm_error err;

    if (!CHECK(slot_read(&t->sl, buf, (size_t)t->sl.value_size, &len, &gen, &err) == SHM_OK))
        return 0;
    CHECK(gen >= after);
    CHECK(gen == 0 || value_ok(buf, len, gen, NULL));
    return gen;
}

/* ===================================================================== */
/* Children                                                               */

/* write NAME ID COUNT */
static int
child_write(wchar_t **arg)
{
    test_slot t;
    uint64_t id = wcstoul(arg[1], NULL, 10), gen;
    unsigned long count = wcstoul(arg[2], NULL, 10), i;
    uint32_t state = (uint32_t)id * 31u + 7u;

    if (!open_slot(&t, arg[0]))
        return 1;
    for (i = 0; i < count; i++) {
        if (!CHECK(publish_value(&t.sl, value_len(rnd(&state), (size_t)t.sl.value_size), id,
                                 DEADLINE_S, &gen) == SHM_OK))
            break;
    }
    test_slot_close(&t);
    return *harness_failures() != 0;
}

/* read NAME LAST WRITERS */
static int
child_read(wchar_t **arg)
{
    test_slot t;
    uint64_t last = wcstoul(arg[1], NULL, 10), writers = wcstoul(arg[2], NULL, 10);
    uint64_t gen, prev = 0, writer;
    unsigned char *buf;
    size_t len;
    shm_error err;

    if (!open_slot(&t, arg[0]))
        return 1;
    buf = malloc((size_t)t.sl.value_size);
    if (!CHECK(buf != NULL))
        return 1;
    do {
        if (!CHECK(slot_read(&t.sl, buf, (size_t)t.sl.value_size, &len, &gen, &err) == SHM_OK))
            break;
        if (!CHECK(gen >= prev))
            break;
        if (gen > 0 && (!CHECK(value_ok(buf, len, gen, &writer)) || !CHECK(writer < writers)))
            break;
        prev = gen;
    } while (gen < last);
    free(buf);
    test_slot_close(&t);
    return *harness_failures() != 0;
}

/* stream NAME ID */
static int
child_stream(wchar_t **arg)
{
    test_slot t;
    uint64_t id = wcstoul(arg[1], NULL, 10), gen;
    uint32_t state = (uint32_t)GetCurrentProcessId();

    if (!open_slot(&t, arg[0]))
        return 1;
    for (;;) {      /* until the parent terminates us */
        if (publish_value(&t.sl, value_len(rnd(&state), (size_t)t.sl.value_size), id,
                          DEADLINE_S, &gen) != SHM_OK)
            return 1;
    }
}

/* hold NAME READY */
static int
child_hold(wchar_t **arg)
{
    HANDLE ready = OpenEventW(EVENT_MODIFY_STATE, FALSE, arg[1]);
    test_slot t;
    slot_loan loan;
    shm_error err;
    shm_status st;
    int64_t deadline;

    if (!CHECK(ready != NULL) || !open_slot(&t, arg[0]))
        return 1;
    deadline = slot_in_seconds(DEADLINE_S);
    do {
        st = slot_reserve(&t.sl, deadline, &loan, &err);
    } while (st == SHM_EINTR);
    if (!CHECK(st == SHM_OK))
        return 1;
    memset(loan.data, 0xEE, (size_t)t.sl.value_size / 2);
    CHECK(SetEvent(ready));
    Sleep(DEADLINE_MS);     /* terminated in here */
    return 1;
}

/* wait NAME READY */
static int
child_wait(wchar_t **arg)
{
    HANDLE ready = OpenEventW(EVENT_MODIFY_STATE, FALSE, arg[1]);
    unsigned char buf[512];
    test_slot t;
    uint64_t gen = 0;

    if (!CHECK(ready != NULL) || !open_slot(&t, arg[0]))
        return 1;
    slot_set_spin(&t.sl, 0);        /* block at once */
    CHECK(SetEvent(ready));
    CHECK(wait_for(&t.sl, 0, DEADLINE_S, &gen) == SHM_OK);
    CHECK(gen >= 1 && read_whole(&t, buf, 1) >= 1);
    test_slot_close(&t);
    return *harness_failures() != 0;
}

/* ===================================================================== */
/* Checks run by the parent                                               */

static void
test_one_process(void)
{
    unsigned char data[128], out[160];
    test_slot t;
    size_t len;
    uint64_t gen = 0, g = 0;
    slot_loan loan;
    slot_waiting w;
    shm_error err;
    int i;

    if (!make_slot(&t, L"one", 100, SLOT_CELLS))
        return;
    CHECK(slot_read(&t.sl, out, sizeof out, &len, &g, &err) == SHM_OK);
    CHECK_EQ(len, 0);
    CHECK_EQ(g, 0);
    for (i = 0; i <= 100; i++) {
        memset(data, i + 1, (size_t)i);
        if (!CHECK(slot_publish(&t.sl, data, (size_t)i, SLOT_FOREVER, &gen, &err) == SHM_OK))
            break;
        CHECK_EQ(gen, i + 1);
        CHECK(slot_read(&t.sl, out, sizeof out, &len, &g, &err) == SHM_OK);
        if (!CHECK_EQ(len, i) || !CHECK_EQ(g, gen) || !CHECK(memcmp(out, data, len) == 0))
            break;
    }
    CHECK(slot_publish(&t.sl, data, 101, SLOT_FOREVER, &g, &err) == SHM_EVALUE);
    memset(out, 0xAA, sizeof out);
    CHECK(slot_read(&t.sl, out, 99, &len, &g, &err) == SHM_EVALUE);
    CHECK_EQ(len, 100);
    CHECK(out[0] == 0xAA && out[98] == 0xAA);
    CHECK(slot_reserve(&t.sl, SLOT_NOWAIT, &loan, &err) == SHM_OK);
    memset(loan.data, 0x55, 100);
    slot_abort(&t.sl, &loan);
    CHECK_EQ(slot_generation(&t.sl), gen);
    CHECK(slot_read(&t.sl, out, sizeof out, &len, &g, &err) == SHM_OK);
    CHECK(len == 100 && memcmp(out, data, 100) == 0);
    CHECK(wait_for(&t.sl, gen, 0.05, &g) == SHM_ETIMEOUT);
    w = slot_wait_until(slot_in_seconds(5));
    CHECK(slot_wait(&t.sl, gen, &w, &g, &err) == SHM_EINTR);
    slot_cancel(&t.sl);
    CHECK(wait_for(&t.sl, gen, 5, &g) == SHM_EVALUE);
    test_slot_close(&t);

    /* Marks: a reader in the middle of a copy keeps its cell. */
    if (make_slot(&t, L"mrk", 64, 4)) {
        slot_view a, b, c;
        CHECK(slot_publish(&t.sl, "one", 3, SLOT_FOREVER, &gen, &err) == SHM_OK);
        CHECK(slot_read_begin(&t.sl, &a, &err) == SHM_OK);
        for (i = 0; i < 10; i++)
            CHECK(slot_publish(&t.sl, "x", 1, SLOT_FOREVER, &gen, &err) == SHM_OK);
        CHECK(memcmp(a.data, "one", 3) == 0);
        CHECK(slot_read_end(&t.sl, &a) == 1);
        CHECK(slot_read_begin(&t.sl, &a, &err) == SHM_OK);
        CHECK(slot_publish(&t.sl, "b", 1, SLOT_FOREVER, &gen, &err) == SHM_OK);
        CHECK(slot_read_begin(&t.sl, &b, &err) == SHM_OK);
        CHECK(slot_publish(&t.sl, "c", 1, SLOT_FOREVER, &gen, &err) == SHM_OK);
        CHECK(slot_read_begin(&t.sl, &c, &err) == SHM_OK);
        CHECK(slot_publish(&t.sl, "d", 1, SLOT_FOREVER, &gen, &err) == SHM_OK);
        CHECK(slot_publish(&t.sl, "forced", 6, SLOT_FOREVER, &gen, &err) == SHM_OK);
        CHECK(slot_read_end(&t.sl, &a) == 0);
        CHECK(slot_read_end(&t.sl, &b) == 1);
        CHECK(slot_read_end(&t.sl, &c) == 1);
        test_slot_close(&t);
    }

    /* A channel opened as a slot, and a slot opened as a channel. */
    {
        test_ring r;
        test_slot o;
        swprintf(r.name, 128, L"Local\\pyshm_st_ch_%lu", (unsigned long)GetCurrentProcessId());
        if (CHECK(test_ring_create(&r, 4096, &err) == SHM_OK)) {
            swprintf(o.name, 128, L"%ls", r.name);
            CHECK(test_slot_open(&o, &err) == SHM_ECORRUPT);
            CHECK(err.detail != NULL && strstr(err.detail, "is a channel, not a slot"));
            test_slot_close(&o);
        }
        test_ring_close(&r);
        if (make_slot(&t, L"sl", 64, SLOT_CELLS)) {
            swprintf(r.name, 128, L"%ls", t.name);
            CHECK(test_ring_open(&r, &err) == SHM_ECORRUPT);
            CHECK(err.detail != NULL && strstr(err.detail, "is a slot, not a channel"));
            test_ring_close(&r);
        }
        test_slot_close(&t);
    }
    harness_say("one process: lengths, small buffer, reserve, waits, marks, kinds: done\n");
}

static void
test_writers_and_readers(void)
{
    enum { WRITERS = 2, READERS = 2, PER = 5000 };
    wchar_t args[300];
    PROCESS_INFORMATION pi[WRITERS + READERS];
    unsigned char buf[2048];
    int i, started = 0;
    test_slot t;

    if (!make_slot(&t, L"wr", 2048, SLOT_CELLS))
        return;
    for (i = 0; i < READERS; i++) {
        swprintf(args, 300, L"read %ls %d %d", t.name, WRITERS * PER, WRITERS);
        if (CHECK(harness_spawn_self(args, &pi[started])))
            started++;
    }
    for (i = 0; i < WRITERS; i++) {
        swprintf(args, 300, L"write %ls %d %d", t.name, i, PER);
        if (CHECK(harness_spawn_self(args, &pi[started])))
            started++;
    }
    for (i = 0; i < started; i++)
        CHECK_EQ(harness_reap(&pi[i], 5 * DEADLINE_MS), 0);
    if (started == WRITERS + READERS) {
        CHECK_EQ(slot_generation(&t.sl), WRITERS * PER);
        CHECK_EQ(read_whole(&t, buf, 0), WRITERS * PER);
    }
    test_slot_close(&t);
    harness_say("two writer and two reader processes: no read torn, every generation: done\n");
}

static void
test_killed_writer(void)
{
    static unsigned char buf[30000];
    wchar_t ready_name[128], args[400];
    PROCESS_INFORMATION pi;
    uint64_t gen = 0;
    HANDLE ready;
    test_slot t;
    int round;

    if (!make_slot(&t, L"kill", sizeof buf, SLOT_CELLS))
        return;
    for (round = 0; round < 8; round++) {
        swprintf(args, 400, L"stream %ls 1", t.name);
        if (!CHECK(harness_spawn_self(args, &pi)))
            break;
        Sleep(rnd(&rng_state) % 40);
        CHECK(TerminateProcess(pi.hProcess, 9));
        (void)harness_reap(&pi, DEADLINE_MS);
        gen = read_whole(&t, buf, gen);
        CHECK(publish_value(&t.sl, value_len(rnd(&rng_state), sizeof buf), 2, DEADLINE_S,
                            &gen) == SHM_OK);
        CHECK_EQ(read_whole(&t, buf, gen), gen);
    }
    /* Terminated for sure while holding the write lock: the lock word names
       the child's liveness slot (a named object that dies with its last
       handle), so the next writer's wait probes it, finds it gone and takes
       the lock over. */
    swprintf(ready_name, 128, L"Local\\pyshm_st_ready_%lu", (unsigned long)GetCurrentProcessId());
    ready = CreateEventW(NULL, TRUE, FALSE, ready_name);
    swprintf(args, 400, L"hold %ls %ls", t.name, ready_name);
    if (CHECK(ready != NULL) && CHECK(harness_spawn_self(args, &pi))) {
        CHECK(harness_wait_event(ready, pi.hProcess, DEADLINE_MS, "READY"));
        {
            /* Held by the child: a lock word naming a liveness slot (no
               named mutex), which a second writer cannot take. */
            uint32_t word = t.sl.hdr->write_lock & ~SYNC_WAITERS;
            slot_loan loan;
            shm_error err;

            CHECK(word >= 1 && word <= SYNC_SLOT_MAX && word != t.sl.sync.slot);
            CHECK_EQ(slot_reserve(&t.sl, SLOT_NOWAIT, &loan, &err), SHM_ETIMEOUT);
        }
        CHECK(TerminateProcess(pi.hProcess, 9));
        (void)harness_reap(&pi, DEADLINE_MS);
        CHECK_EQ(read_whole(&t, buf, gen), gen);
        CHECK(publish_value(&t.sl, 4096, 3, DEADLINE_S, &gen) == SHM_OK);
        CHECK_EQ(read_whole(&t, buf, gen), gen);
    }
    if (ready != NULL)
        CloseHandle(ready);
    test_slot_close(&t);
    harness_say("writers terminated mid-publish and holding the lock: done\n");
}

static void
test_wait_wake(void)
{
    enum { WAITERS = 2 };
    wchar_t ready_name[128], args[400];
    PROCESS_INFORMATION pi[WAITERS];
    HANDLE ready[WAITERS];
    uint64_t gen;
    int64_t until;
    test_slot t;
    int i, started = 0;

    if (!make_slot(&t, L"wait", 512, SLOT_CELLS))
        return;
    for (i = 0; i < WAITERS; i++) {
        swprintf(ready_name, 128, L"Local\\pyshm_st_wr%d_%lu", i,
                 (unsigned long)GetCurrentProcessId());
        ready[i] = CreateEventW(NULL, TRUE, FALSE, ready_name);
        swprintf(args, 400, L"wait %ls %ls", t.name, ready_name);
        if (CHECK(ready[i] != NULL) && CHECK(harness_spawn_self(args, &pi[i]))) {
            CHECK(harness_wait_event(ready[i], pi[i].hProcess, DEADLINE_MS, "READY"));
            started++;
        }
    }
    /* READY comes just before the wait: wait until both registered. */
    until = slot_in_seconds(DEADLINE_S);
    while (t.sl.hdr->gen_waiters < (uint32_t)started && sync_now_ns() < until)
        Sleep(1);
    CHECK_EQ(t.sl.hdr->gen_waiters, started);
    CHECK(publish_value(&t.sl, 256, 0, DEADLINE_S, &gen) == SHM_OK);
    for (i = 0; i < started; i++)
        CHECK_EQ(harness_reap(&pi[i], DEADLINE_MS), 0);
    for (i = 0; i < WAITERS; i++)
        if (ready[i] != NULL)
            CloseHandle(ready[i]);
    test_slot_close(&t);
    harness_say("waiters in other processes woken by a publish: done\n");
}

static int
parent(void)
{
    harness_say("test_slot: wait scheme %s\n", sync_kind_name());
    test_one_process();
    test_writers_and_readers();
    test_killed_writer();
    test_wait_wake();
    return harness_finish();
}

static const harness_role roles[] = {
    {L"write", 3, child_write},
    {L"read", 3, child_read},
    {L"stream", 2, child_stream},
    {L"hold", 2, child_hold},
    {L"wait", 2, child_wait},
    {NULL, 0, NULL},
};

int
wmain(int argc, wchar_t **argv)
{
    return harness_main(argc, argv, parent, roles,
                        "usage: test_slot.exe [write NAME ID N | read NAME LAST WRITERS | "
                        "stream NAME ID | hold NAME READY | wait NAME READY]");
}
