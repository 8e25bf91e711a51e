/*
 * test_locks.exe -- the Windows locks of src/platform/sync_win32.c (lock
 * words naming liveness slots, a named event waking sleepers), through
 * platform/sync.h and the channel core, run under Wine by `make
 * check-win32`.
 *
 *   test_locks.exe                          run every check (the parent)
 *   test_locks.exe hold NAME READY          child: take the send lock, set
 *                                           READY, wait to be terminated
 *   test_locks.exe handoff NAME READY GO    child: take the send lock, set
 *                                           READY, wait for GO, release it
 *
 * Checks:
 *   - a lock belongs to the attached object, not to a thread: released by
 *     another thread than the one that took it (which still runs), it is
 *     free for everyone; another thread of the same object waiting for it
 *     is never handed it as "dead" (its own slot is never probed);
 *   - a holder terminated (TerminateProcess) while it holds the lock, with
 *     a waiter already asleep on it: the waiter takes it over;
 *   - a holder that closed its object without releasing: taken over;
 *   - a waiter asleep on a lock held by another process gets it when that
 *     process releases it; a release signals the lock's named event only
 *     when SYNC_WAITERS was set (no system call otherwise);
 *   - a lock word holding garbage (owner 0 with the waiter bit, an owner
 *     above SYNC_SLOT_MAX, all ones) is SHM_ECORRUPT for every way of
 *     taking it; a dead owner's lock is taken over even by a call whose
 *     deadline has passed; a live owner's (another object's, or our own)
 *     times out;
 *   - a lock whose word was NULL at open is refused (SHM_EVALUE), the other
 *     one works;
 *   - a channel made by the retired named-mutex scheme (sync_kind 3) is
 *     refused at attach; a new one records SYNC_KIND_WIN32.
 * Every wait has a deadline; nothing sleeps a fixed time to synchronise.
 */
#include "core/ring.h"

#include <stdio.h>      /* printf */
#include <string.h>     /* memset */
#include <wchar.h>      /* swprintf */
#include <windows.h>    /* CreateThread, CreateEventW, OpenEventW, TerminateProcess */

#include "core/atomics.h"   /* reading the lock words as another process would */
#include "ring_harness.h"   /* test_ring, in_seconds */
#include "win32_harness.h"  /* CHECK, harness_spawn_self, harness_reap */

#define DEADLINE_MS 60000
#define DEADLINE_S 60.0
#define OWNER(v) ((v) & ~SYNC_WAITERS)

static int
make_chan(test_ring *c, const wchar_t *tag)
{
    shm_error err;

    swprintf(c->name, sizeof c->name / sizeof c->name[0], L"Local\\pyshm_lk_%ls_%lu", tag,
             (unsigned long)GetCurrentProcessId());
    return CHECK(test_ring_create(c, 4096, &err) == SHM_OK);
}

/* Another attached object on the same channel (in this process or a child). */
static int
open_chan(test_ring *c, const wchar_t *name)
{
    shm_error err;

    swprintf(c->name, sizeof c->name / sizeof c->name[0], L"%ls", name);
    return CHECK(test_ring_open(c, &err) == SHM_OK);
}

static uint32_t *
send_word(test_ring *c)
{
    return &c->ch.hdr->send_lock;
}

/* Take the send lock of C before SECONDS from now, going round the slice
   returns; the final status. */
static shm_status
lock_within(test_ring *c, double seconds)
{
    int64_t deadline = in_seconds(seconds);
    shm_error err;
    shm_status st;

    do {
        st = sync_lock(&c->ch.sync, SYNC_LOCK_SEND, send_word(c), deadline, &err);
    } while (st == SHM_EINTR);
    return st;
}

static shm_status
trylock(test_ring *c)
{
    shm_error err;
    return sync_trylock(&c->ch.sync, SYNC_LOCK_SEND, send_word(c), &err);
}

/* One try whose deadline has passed: spins, probes a busy owner, never sleeps. */
static shm_status
lock_expired(test_ring *c)
{
    shm_error err;
    return sync_lock(&c->ch.sync, SYNC_LOCK_SEND, send_word(c), 1, &err);
}

static void
unlock(test_ring *c)
{
    sync_unlock(&c->ch.sync, SYNC_LOCK_SEND, send_word(c));
}

/* Wait until the send lock word of C satisfies (word & MASK) == WANT: what
   another thread or process does is seen there.  1 when it did in time. */
static int
word_becomes(test_ring *c, uint32_t mask, uint32_t want)
{
    int64_t until = in_seconds(DEADLINE_S);

    while ((at_load32(send_word(c)) & mask) != want) {
        if (sync_now_ns() >= until)
            return 0;
        (void)SwitchToThread();
    }
    return 1;
}

/* The name of slot K's liveness object (sync_win32.c: NAME#lv + 5 hex digits). */
static void
slot_name(wchar_t *buf, size_t cap, const wchar_t *chan, uint32_t k)
{
    swprintf(buf, cap, L"%ls#lv%05x", chan, (unsigned)k);
}

/* A slot of channel C that nobody holds (no such name): a dead owner. */
static uint32_t
dead_slot(test_ring *c)
{
    wchar_t name[300];
    uint32_t k = c->ch.sync.slot;
    HANDLE h;

    for (;;) {
        k = k % SYNC_SLOT_MAX + 1;
        slot_name(name, 300, c->name, k);
        h = OpenEventW(SYNCHRONIZE, FALSE, name);
        if (h == NULL && GetLastError() == ERROR_FILE_NOT_FOUND)
            return k;
        if (h != NULL)
            CloseHandle(h);
    }
}

/* ===================================================================== */
/* Threads                                                                */

/* A thread that takes C's send lock, reports the status in TOOK, then waits
   for LEAVE before it ends (so that it is alive while others act). */
typedef struct {
    test_ring *c;
    HANDLE took;
    HANDLE leave;
    double seconds;
    shm_status status;
} locker;

static DWORD WINAPI
locker_main(void *arg)
{
    locker *l = arg;

    l->status = lock_within(l->c, l->seconds);
    (void)SetEvent(l->took);
    (void)WaitForSingleObject(l->leave, DEADLINE_MS);
    return 0;
}

static int
start_locker(locker *l, test_ring *c, double seconds, HANDLE *thread)
{
    l->c = c;
    l->seconds = seconds;
    l->status = SHM_EOS;
    l->took = CreateEventW(NULL, TRUE, FALSE, NULL);
    l->leave = CreateEventW(NULL, TRUE, FALSE, NULL);
    *thread = NULL;
    if (!CHECK(l->took != NULL && l->leave != NULL))
        return 0;
    *thread = CreateThread(NULL, 0, locker_main, l, 0, NULL);
    return CHECK(*thread != NULL);
}

static void
end_locker(locker *l, HANDLE thread)
{
    if (l->leave != NULL)
        (void)SetEvent(l->leave);
    if (thread != NULL) {
        CHECK(WaitForSingleObject(thread, DEADLINE_MS) == WAIT_OBJECT_0);
        CloseHandle(thread);
    }
    if (l->took != NULL)
        CloseHandle(l->took);
    if (l->leave != NULL)
        CloseHandle(l->leave);
}

/* ===================================================================== */
/* Children                                                               */

/* hold NAME READY: killed by the parent while it holds the lock. */
static int
child_hold(wchar_t **arg)
{
    HANDLE ready = OpenEventW(EVENT_MODIFY_STATE, FALSE, arg[1]);
    test_ring c;

    if (!CHECK(ready != NULL) || !open_chan(&c, arg[0]))
        return 1;
    if (!CHECK(lock_within(&c, DEADLINE_S) == SHM_OK))
        return 1;
    CHECK(SetEvent(ready));
    Sleep(DEADLINE_MS);     /* the parent terminates us long before */
    return 1;
}

/* handoff NAME READY GO: release the lock when told to, from this process. */
static int
child_handoff(wchar_t **arg)
{
    HANDLE ready = OpenEventW(EVENT_MODIFY_STATE, FALSE, arg[1]);
    HANDLE go = OpenEventW(SYNCHRONIZE, FALSE, arg[2]);
    test_ring c;

    if (!CHECK(ready != NULL && go != NULL) || !open_chan(&c, arg[0]))
        return 1;
    if (!CHECK(lock_within(&c, DEADLINE_S) == SHM_OK))
        return 1;
    CHECK(SetEvent(ready));
    CHECK(WaitForSingleObject(go, DEADLINE_MS) == WAIT_OBJECT_0);
    unlock(&c);
    test_ring_close(&c);
    CloseHandle(ready);
    CloseHandle(go);
    return *harness_failures() != 0;
}

/* ===================================================================== */
/* Checks run by the parent                                               */

static void
test_released_by_another_thread(void)
{
    test_ring c, other;
    locker a;
    HANDLE thread;

    if (!make_chan(&c, L"thr"))
        return;
    if (!open_chan(&other, c.name)) {
        test_ring_close(&c);
        return;
    }
    /* Thread A takes the lock and stays alive, holding nothing else. */
    if (start_locker(&a, &c, DEADLINE_S, &thread) &&
        CHECK(WaitForSingleObject(a.took, DEADLINE_MS) == WAIT_OBJECT_0) &&
        CHECK(a.status == SHM_OK)) {
        CHECK_EQ(OWNER(at_load32(send_word(&c))), c.ch.sync.slot);
        /* Another thread of the same object: its own slot is never taken for
           a dead one, so it waits like anyone (and times out). */
        CHECK(trylock(&c) == SHM_ETIMEOUT);
        CHECK(lock_expired(&c) == SHM_ETIMEOUT);
        CHECK(lock_within(&c, 0.2) == SHM_ETIMEOUT);
        CHECK(trylock(&other) == SHM_ETIMEOUT);
        /* This thread (not A, which is still running) releases it... */
        unlock(&c);
        CHECK_EQ(at_load32(send_word(&c)), 0);
        /* ...and it is free for every object and thread. */
        CHECK(trylock(&other) == SHM_OK);
        unlock(&other);
        CHECK(trylock(&c) == SHM_OK);
        unlock(&c);
        CHECK(WaitForSingleObject(thread, 0) == WAIT_TIMEOUT);     /* A still runs */
    }
    end_locker(&a, thread);
    test_ring_close(&other);
    test_ring_close(&c);
    harness_say("lock released by another thread of its object: done\n");
}

static void
test_terminated_holder(void)
{
    wchar_t ready_name[128], args[400];
    PROCESS_INFORMATION pi;
    HANDLE ready, thread = NULL;
    locker w;
    test_ring c;
    uint32_t holder;

    swprintf(ready_name, 128, L"Local\\pyshm_lk_ready_%lu", (unsigned long)GetCurrentProcessId());
    if (!make_chan(&c, L"kill"))
        return;
    ready = CreateEventW(NULL, TRUE, FALSE, ready_name);
    swprintf(args, 400, L"hold %ls %ls", c.name, ready_name);
    if (CHECK(ready != NULL) && CHECK(harness_spawn_self(args, &pi))) {
        if (CHECK(harness_wait_event(ready, pi.hProcess, DEADLINE_MS, "READY"))) {
            holder = OWNER(at_load32(send_word(&c)));
            CHECK(holder != 0 && holder != c.ch.sync.slot);
            /* A waiter here, asleep on the holder (its bit is in the word). */
            if (start_locker(&w, &c, DEADLINE_S, &thread)) {
                CHECK(word_becomes(&c, SYNC_WAITERS, SYNC_WAITERS));
                CHECK(WaitForSingleObject(w.took, 0) == WAIT_TIMEOUT);
                /* Killed holding it: no release ever comes. */
                CHECK(TerminateProcess(pi.hProcess, 9));
                CHECK(WaitForSingleObject(w.took, DEADLINE_MS) == WAIT_OBJECT_0);
                CHECK(w.status == SHM_OK);
                CHECK_EQ(OWNER(at_load32(send_word(&c))), c.ch.sync.slot);
                unlock(&c);
            }
            end_locker(&w, thread);
        }
        (void)TerminateProcess(pi.hProcess, 9);
        (void)harness_reap(&pi, DEADLINE_MS);
    }
    /* Free for anyone again. */
    CHECK(trylock(&c) == SHM_OK);
    unlock(&c);
    if (ready != NULL)
        CloseHandle(ready);
    test_ring_close(&c);
    harness_say("holder terminated while a waiter slept: taken over: done\n");
}

static void
test_closed_holder(void)
{
    test_ring c, gone;

    if (!make_chan(&c, L"closed"))
        return;
    if (open_chan(&gone, c.name)) {
        CHECK(trylock(&gone) == SHM_OK);
        /* Closed without releasing (a thread that never let go): the slot's
           name goes with the object. */
        test_ring_close(&gone);
        CHECK(trylock(&c) == SHM_ETIMEOUT);         /* a try never probes */
        CHECK(lock_expired(&c) == SHM_OK);          /* taken over at once */
        CHECK_EQ(at_load32(send_word(&c)), c.ch.sync.slot);
        unlock(&c);
    }
    test_ring_close(&c);
    harness_say("holder closed without releasing: taken over: done\n");
}

static void
test_release_wakes_a_sleeper(void)
{
    wchar_t ready_name[128], go_name[128], ev_name[300], args[600];
    PROCESS_INFORMATION pi;
    HANDLE ready, go, ev, thread = NULL;
    test_ring c, mine;
    locker w;

    swprintf(ready_name, 128, L"Local\\pyshm_lk_hready_%lu", (unsigned long)GetCurrentProcessId());
    swprintf(go_name, 128, L"Local\\pyshm_lk_hgo_%lu", (unsigned long)GetCurrentProcessId());
    if (!make_chan(&c, L"wake"))
        return;
    ready = CreateEventW(NULL, TRUE, FALSE, ready_name);
    go = CreateEventW(NULL, TRUE, FALSE, go_name);
    /* The lock's wake event, by the name every process derives. */
    swprintf(ev_name, 300, L"%ls#lkS", c.name);
    ev = OpenEventW(SYNCHRONIZE | EVENT_MODIFY_STATE, FALSE, ev_name);
    CHECK(ev != NULL);

    /* 1. Releases from this process: the event is set only when the word
       says someone may sleep. */
    if (ev != NULL && open_chan(&mine, c.name)) {
        CHECK(trylock(&mine) == SHM_OK);
        unlock(&mine);
        CHECK(WaitForSingleObject(ev, 0) == WAIT_TIMEOUT);    /* no bit, no wake */
        CHECK(trylock(&mine) == SHM_OK);
        at_store32(send_word(&mine), mine.ch.sync.slot | SYNC_WAITERS);   /* "a sleeper" */
        unlock(&mine);
        CHECK_EQ(at_load32(send_word(&c)), 0);
        CHECK(WaitForSingleObject(ev, 0) == WAIT_OBJECT_0);   /* one wake, consumed here */
        CHECK(WaitForSingleObject(ev, 0) == WAIT_TIMEOUT);
        test_ring_close(&mine);
    }

    /* 2. A waiter here asleep on a lock held by another process, which
       releases it. */
    swprintf(args, 600, L"handoff %ls %ls %ls", c.name, ready_name, go_name);
    if (CHECK(ready != NULL && go != NULL) && CHECK(harness_spawn_self(args, &pi))) {
        if (CHECK(harness_wait_event(ready, pi.hProcess, DEADLINE_MS, "READY")) &&
            start_locker(&w, &c, DEADLINE_S, &thread)) {
            CHECK(word_becomes(&c, SYNC_WAITERS, SYNC_WAITERS));
            CHECK(WaitForSingleObject(w.took, 0) == WAIT_TIMEOUT);
            CHECK(SetEvent(go));
            CHECK(WaitForSingleObject(w.took, DEADLINE_MS) == WAIT_OBJECT_0);
            CHECK(w.status == SHM_OK);
            /* Taken after sleeping: the bit stays, for other sleepers. */
            CHECK_EQ(at_load32(send_word(&c)), c.ch.sync.slot | SYNC_WAITERS);
            unlock(&c);
            CHECK_EQ(at_load32(send_word(&c)), 0);
        }
        end_locker(&w, thread);
        (void)SetEvent(go);
        CHECK_EQ(harness_reap(&pi, DEADLINE_MS), 0);
    }
    if (ev != NULL)
        CloseHandle(ev);
    if (ready != NULL)
        CloseHandle(ready);
    if (go != NULL)
        CloseHandle(go);
    test_ring_close(&c);
    harness_say("waiter asleep woken by a release in another process: done\n");
}

static void
test_lock_words(void)
{
    static const uint32_t garbage[] = {
        SYNC_WAITERS, 0xFFFFFFFFu, SYNC_SLOT_MAX + 1, (SYNC_SLOT_MAX + 1) | SYNC_WAITERS,
        0x7FFFFFFFu,
    };
    unsigned char buf[16];
    test_ring c, other;
    ring_msg msg;
    shm_error err;
    uint32_t dead;
    size_t i;
    int w;

    if (!make_chan(&c, L"words"))
        return;
    for (i = 0; i < sizeof garbage / sizeof garbage[0]; i++) {
        at_store32(send_word(&c), garbage[i]);
        at_store32(&c.ch.hdr->recv_lock, garbage[i]);
        CHECK(trylock(&c) == SHM_ECORRUPT);
        CHECK(lock_expired(&c) == SHM_ECORRUPT);
        CHECK(lock_within(&c, 1) == SHM_ECORRUPT);
        CHECK(ring_send(&c.ch, "x", 1, NULL, &err) == SHM_ECORRUPT);
        CHECK(send_msg(&c.ch, "x", 1, 1) == SHM_ECORRUPT);
        CHECK(ring_recv_begin(&c.ch, NULL, &msg, &err) == SHM_ECORRUPT);
        /* Left as it was: garbage is reported, not repaired or followed. */
        CHECK_EQ(at_load32(send_word(&c)), garbage[i]);
    }
    at_store32(&c.ch.hdr->recv_lock, 0);
    /* A dead owner (a slot whose name nobody holds), with and without the
       waiter bit: a try leaves it, any lock call takes it over at once. */
    for (w = 0; w < 2; w++) {
        dead = dead_slot(&c) | (w ? SYNC_WAITERS : 0);
        at_store32(send_word(&c), dead);
        CHECK(trylock(&c) == SHM_ETIMEOUT);
        CHECK(lock_expired(&c) == SHM_OK);
        CHECK_EQ(OWNER(at_load32(send_word(&c))), c.ch.sync.slot);
        unlock(&c);
        CHECK_EQ(at_load32(send_word(&c)), 0);
    }
    CHECK(send_msg(&c.ch, "dead", 4, 1) == SHM_OK);
    CHECK_EQ(recv_msg(&c.ch, buf, sizeof buf, 1), 4);
    /* A live owner: another object's slot, or our own (never probed). */
    if (open_chan(&other, c.name)) {
        at_store32(send_word(&c), other.ch.sync.slot);
        CHECK(lock_expired(&c) == SHM_ETIMEOUT);
        CHECK(lock_within(&c, 0.2) == SHM_ETIMEOUT);
        CHECK(send_msg(&c.ch, "x", 1, 0.2) == SHM_ETIMEOUT);
        CHECK_EQ(at_load32(send_word(&c)) & ~SYNC_WAITERS, other.ch.sync.slot);
        test_ring_close(&other);
        /* Closed: now it is a dead owner, taken over. */
        CHECK(lock_expired(&c) == SHM_OK);
        unlock(&c);
    }
    at_store32(send_word(&c), c.ch.sync.slot);
    CHECK(lock_expired(&c) == SHM_ETIMEOUT);
    CHECK(send_msg(&c.ch, "x", 1, 0.2) == SHM_ETIMEOUT);
    at_store32(send_word(&c), 0);
    /* An unlock by an object the word does not name leaves it alone. */
    at_store32(send_word(&c), c.ch.sync.slot % SYNC_SLOT_MAX + 1);
    unlock(&c);
    CHECK_EQ(at_load32(send_word(&c)), c.ch.sync.slot % SYNC_SLOT_MAX + 1);
    at_store32(send_word(&c), 0);
    test_ring_close(&c);
    harness_say("garbage, dead and live owners in a lock word: done\n");
}

static void
test_null_word(void)
{
    test_ring c;
    sync_handles h;
    uint32_t *words[SYNC_NLOCKS];
    intptr_t fd = -1;
    shm_error err;
    wchar_t ev_name[300];
    HANDLE ev;

    if (!make_chan(&c, L"null"))
        return;
    /* A caller with a single lock (a one-writer type): the other is NULL. */
    sync_handles_init(&h);
    words[SYNC_LOCK_SEND] = &c.ch.hdr->send_lock;
    words[SYNC_LOCK_RECV] = NULL;
    if (CHECK(sync_handles_open(&h, c.name, &fd, words, &err) == SHM_OK)) {
        CHECK(sync_lock(&h, SYNC_LOCK_RECV, &c.ch.hdr->recv_lock, 1, &err) == SHM_EVALUE);
        CHECK(sync_trylock(&h, SYNC_LOCK_RECV, &c.ch.hdr->recv_lock, &err) == SHM_EVALUE);
        CHECK(sync_trylock(&h, SYNC_LOCK_SEND, &c.ch.hdr->send_lock, &err) == SHM_OK);
        CHECK(trylock(&c) == SHM_ETIMEOUT);
        sync_unlock(&h, SYNC_LOCK_SEND, &c.ch.hdr->send_lock);
        CHECK(trylock(&c) == SHM_OK);
        unlock(&c);
        sync_handles_close(&h);
    }
    sync_handles_close(&h);     /* twice: safe */
    /* Only the channel's own object holds the recv lock's event now. */
    swprintf(ev_name, 300, L"%ls#lkR", c.name);
    ev = OpenEventW(SYNCHRONIZE, FALSE, ev_name);
    CHECK(ev != NULL);
    if (ev != NULL)
        CloseHandle(ev);
    test_ring_close(&c);
    harness_say("a lock not used by its caller (NULL word): done\n");
}

static void
test_schemes(void)
{
    test_ring c, other;
    shm_error err;

    if (!make_chan(&c, L"kind"))
        return;
    CHECK_EQ(c.ch.hdr->sync_kind, SYNC_KIND_WIN32);
    CHECK_EQ(sync_kind(), 4);
    /* As the named-mutex builds made them: refused, whatever the locks hold. */
    c.ch.hdr->sync_kind = SYNC_KIND_WIN32_MUTEX;
    shm_segment_init(&other.seg);
    ring_init(&other.ch);
    if (CHECK(shm_segment_open(&other.seg, c.name, 0, &err) == SHM_OK)) {
        CHECK(ring_attach(&other.ch, &other.seg, c.name, &err) == SHM_ECORRUPT);
        CHECK(err.detail != NULL && strstr(err.detail, "named mutexes") != NULL);
        c.ch.hdr->sync_kind = SYNC_KIND_LINUX;
        CHECK(ring_attach(&other.ch, &other.seg, c.name, &err) == SHM_ECORRUPT);
        c.ch.hdr->sync_kind = SYNC_KIND_WIN32;
        CHECK(ring_attach(&other.ch, &other.seg, c.name, &err) == SHM_OK);
        ring_detach(&other.ch);
    }
    shm_segment_close(&other.seg);
    test_ring_close(&c);
    harness_say("other lock schemes refused at attach: done\n");
}

static int
parent(void)
{
    harness_say("test_locks: lock scheme %s\n", sync_kind_name());
    test_released_by_another_thread();
    test_terminated_holder();
    test_closed_holder();
    test_release_wakes_a_sleeper();
    test_lock_words();
    test_null_word();
    test_schemes();
    return harness_finish();
}

static const harness_role roles[] = {
    {L"hold", 2, child_hold},
    {L"handoff", 3, child_handoff},
    {NULL, 0, NULL},
};

int
wmain(int argc, wchar_t **argv)
{
    return harness_main(argc, argv, parent, roles,
                        "usage: test_locks.exe [hold NAME READY | handoff NAME READY GO]");
}
