/*
 * test_channel.exe -- the channel core on Windows (src/core/ring.c + the
 * "win32" group: platform/segment_win32.c, platform/sync_win32.c), run under
 * Wine by `make check-win32`.
 *
 *   test_channel.exe                       run every check (the parent)
 *   test_channel.exe echo REQ REP          child: answer each message on REQ
 *                                          with its checksum on REP, until "stop"
 *   test_channel.exe send NAME TAG COUNT   child: send COUNT numbered messages
 *   test_channel.exe stream NAME SEED      child: send checksummed messages for ever
 *   test_channel.exe block NAME READY      child: set event READY, then wait in recv
 *
 * Checks: sizes 0..max and timeouts in one process; a sending and a receiving
 * process (echo with checksums); two sender processes with per-sender order;
 * a sender killed with TerminateProcess mid-stream while another keeps
 * sending (its lock taken over from the dead slot, no partial message); a
 * receiver killed while blocked blocks nobody and leaves no waiter
 * registration behind once a message was sent; corrupt headers and foreign
 * segments refused.  The last line is "all passed" only when every check held.
 * The roles are the table at the end, run by harness_main.
 */
#include "core/ring.h"

#include <stdio.h>      /* printf */
#include <stdlib.h>     /* malloc, free */
#include <string.h>     /* memcmp, memset, memcpy */
#include <wchar.h>      /* swprintf, wcstoul, wcscmp */
#include <windows.h>    /* CreateEventW, TerminateProcess */

#include "ring_harness.h"   /* test_ring, send_msg, recv_msg, checksum, rnd */
#include "win32_harness.h"  /* CHECK, harness_spawn_self, harness_reap */

#define DEADLINE_MS 60000
#define DEADLINE_S 60.0

/* Create the channel named after TAG and this process into C; 1 when it
   worked (else a failed check is counted). */
static int
make_chan(test_ring *c, const wchar_t *tag, uint64_t capacity)
{
    shm_error err;

    swprintf(c->name, sizeof c->name / sizeof c->name[0], L"Local\\pyshm_ct_%ls_%lu", tag,
             (unsigned long)GetCurrentProcessId());
    return CHECK(test_ring_create(c, capacity, &err) == SHM_OK);
}

/* In a child: open the parent's channel NAME into C. */
static int
open_chan(test_ring *c, const wchar_t *name)
{
    shm_error err;

    swprintf(c->name, sizeof c->name / sizeof c->name[0], L"%ls", name);
    return CHECK(test_ring_open(c, &err) == SHM_OK);
}

/* ===================================================================== */
/* Children                                                               */

/* echo REQ REP */
static int
child_echo(wchar_t **arg)
{
    const wchar_t *req_name = arg[0], *rep_name = arg[1];
    test_ring req, rep;
    unsigned char *buf;
    size_t n, max;
    uint32_t sum;

    if (!open_chan(&req, req_name) || !open_chan(&rep, rep_name))
        return 1;
    max = (size_t)ring_max_message(req.ch.capacity);
    buf = malloc(max + 1);
    if (!CHECK(buf != NULL))
        return 1;
    for (;;) {
        n = recv_msg(&req.ch, buf, max, DEADLINE_S);
        if (!CHECK(n != RECV_FAILED))
            break;
        if (n == 4 && memcmp(buf, "stop", 4) == 0)
            break;
        sum = checksum(buf, n);
        if (!CHECK(send_msg(&rep.ch, &sum, sizeof sum, DEADLINE_S) == SHM_OK))
            break;
    }
    free(buf);
    test_ring_close(&req);
    test_ring_close(&rep);
    return *harness_failures() != 0;
}

/* send NAME TAG COUNT */
static int
child_send(wchar_t **arg)
{
    test_ring c;
    uint32_t rec[2], i, count = (uint32_t)wcstoul(arg[2], NULL, 10);

    if (!open_chan(&c, arg[0]))
        return 1;
    rec[0] = (uint32_t)wcstoul(arg[1], NULL, 10);
    for (i = 0; i < count; i++) {
        rec[1] = i;
        if (!CHECK(send_msg(&c.ch, rec, sizeof rec, DEADLINE_S) == SHM_OK))
            break;
    }
    test_ring_close(&c);
    return *harness_failures() != 0;
}

/* stream NAME SEED */
static int
child_stream(wchar_t **arg)
{
    static unsigned char body[20000];
    uint32_t state = (uint32_t)wcstoul(arg[1], NULL, 10), sum;
    test_ring c;
    size_t n;

    if (!open_chan(&c, arg[0]))
        return 1;
    for (;;) {      /* until the parent terminates us */
        n = 4 + rnd(&state) % (sizeof body - 4);
        memset(body + 4, (int)(rnd(&state) & 0xff), n - 4);
        body[n - 1] = (unsigned char)rnd(&state);
        sum = checksum(body + 4, n - 4);
        memcpy(body, &sum, 4);
        if (send_msg(&c.ch, body, n, DEADLINE_S) != SHM_OK)
            return 1;
    }
}

/* block NAME READY */
static int
child_block(wchar_t **arg)
{
    HANDLE ready = OpenEventW(EVENT_MODIFY_STATE, FALSE, arg[1]);
    unsigned char buf[64];
    test_ring c;

    if (!CHECK(ready != NULL) || !open_chan(&c, arg[0]))
        return 1;
    CHECK(SetEvent(ready));
    (void)recv_msg(&c.ch, buf, sizeof buf, DEADLINE_S);    /* killed in here */
    return 1;
}

/* ===================================================================== */
/* Checks run by the parent                                               */

static void
test_one_process(void)
{
    unsigned char data[256], out[256];
    test_ring c;
    ring_msg msg;
    shm_error err;
    size_t size, n;
    int64_t start;
    int i, full = 0;

    if (!make_chan(&c, L"one", 256))
        return;
    for (i = 0; i < 600; i++) {     /* every size, at every ring offset */
        size = (size_t)(i % 249);
        memset(data, i & 0xff, size);
        CHECK(send_msg(&c.ch, data, size, 1) == SHM_OK);
        n = recv_msg(&c.ch, out, sizeof out, 1);
        if (!CHECK_EQ(n, size) || !CHECK(memcmp(data, out, size) == 0))
            break;
    }
    CHECK(ring_send(&c.ch, data, 249, NULL, &err) == SHM_EVALUE);
    CHECK(ring_recv_begin(&c.ch, NULL, &msg, &err) == SHM_ETIMEOUT);
    start = sync_now_ns();
    CHECK_EQ(recv_msg(&c.ch, out, sizeof out, 0.1), RECV_FAILED);   /* SHM_ETIMEOUT */
    CHECK(sync_now_ns() - start >= 90000000);
    {
        /* A long wait comes back every slice (SHM_EINTR) for a signal check. */
        ring_wait w = ring_wait_until(in_seconds(0.3));
        CHECK(ring_recv_begin(&c.ch, &w, &msg, &err) == SHM_EINTR);
        CHECK(sync_now_ns() < w.deadline);
    }
    while (ring_send(&c.ch, data, 40, NULL, &err) == SHM_OK)
        full++;
    CHECK_EQ(full, 256 / 48);
    start = sync_now_ns();
    CHECK(send_msg(&c.ch, data, 40, 0.1) == SHM_ETIMEOUT);
    CHECK(sync_now_ns() - start >= 90000000);
    /* Corruption: a cursor from nowhere, then a foreign segment. */
    c.ch.hdr->write_cursor = (uint64_t)1 << 40;
    CHECK(ring_recv_begin(&c.ch, NULL, &msg, &err) == SHM_ECORRUPT);
    CHECK(ring_send(&c.ch, data, 1, NULL, &err) == SHM_ECORRUPT);
    {
        test_ring other;
        shm_segment_init(&other.seg);
        ring_init(&other.ch);
        c.ch.hdr->magic = 0x01020304;
        CHECK(shm_segment_open(&other.seg, c.name, 0, &err) == SHM_OK);
        CHECK(ring_attach(&other.ch, &other.seg, c.name, &err) == SHM_ECORRUPT);
        shm_segment_close(&other.seg);
    }
    test_ring_close(&c);
    harness_say("one process: sizes, timeouts, corruption: done\n");
}

static void
test_echo(void)
{
    wchar_t args[400];
    unsigned char *data;
    PROCESS_INFORMATION pi;
    test_ring req, rep;
    uint32_t sum, state = 99;
    size_t size, max;
    int i;

    if (!make_chan(&req, L"req", 70000) || !make_chan(&rep, L"rep", 64))
        return;
    max = (size_t)ring_max_message(req.ch.capacity);
    data = malloc(max);
    swprintf(args, 400, L"echo %ls %ls", req.name, rep.name);
    if (CHECK(data != NULL) && CHECK(harness_spawn_self(args, &pi))) {
        for (i = 0; i < 400; i++) {
            size = i < 40 ? (size_t)i : (i % 50 == 0 ? max : rnd(&state) % (max + 1));
            memset(data, (int)(rnd(&state) & 0xff), size);
            if (!CHECK(send_msg(&req.ch, data, size, DEADLINE_S) == SHM_OK))
                break;
            if (!CHECK_EQ(recv_msg(&rep.ch, &sum, sizeof sum, DEADLINE_S), sizeof sum))
                break;
            if (!CHECK_EQ(sum, checksum(data, size)))
                break;
        }
        CHECK(send_msg(&req.ch, "stop", 4, DEADLINE_S) == SHM_OK);
        CHECK_EQ(harness_reap(&pi, DEADLINE_MS), 0);
    }
    free(data);
    test_ring_close(&req);
    test_ring_close(&rep);
    harness_say("echo between two processes with checksums: done\n");
}

static void
test_two_senders(void)
{
    enum { COUNT = 5000 };
    wchar_t args[300];
    PROCESS_INFORMATION pi[2];
    uint32_t rec[2], next[2] = {0, 0};
    int s, got = 0, started = 0;
    test_ring c;

    if (!make_chan(&c, L"two", 512))
        return;
    for (s = 0; s < 2; s++) {
        swprintf(args, 300, L"send %ls %d %d", c.name, s, COUNT);
        if (CHECK(harness_spawn_self(args, &pi[s])))
            started++;
    }
    while (started == 2 && got < 2 * COUNT) {
        if (!CHECK_EQ(recv_msg(&c.ch, rec, sizeof rec, DEADLINE_S), sizeof rec))
            break;
        if (!CHECK(rec[0] < 2) || !CHECK_EQ(rec[1], next[rec[0]]))
            break;
        next[rec[0]]++;
        got++;
    }
    CHECK_EQ(got, 2 * COUNT);
    for (s = 0; s < started; s++)
        CHECK_EQ(harness_reap(&pi[s], DEADLINE_MS), 0);
    test_ring_close(&c);
    harness_say("two sender processes, order kept, nothing lost: done\n");
}

static int
recv_checked(ring_t *ch, double seconds)
{
    static unsigned char buf[20000];
    uint32_t sum;
    size_t n = recv_msg(ch, buf, sizeof buf, seconds);

    if (!CHECK(n != RECV_FAILED && n >= 4))
        return 0;
    memcpy(&sum, buf, 4);
    return CHECK_EQ(sum, checksum(buf + 4, n - 4));
}

static void
test_killed_sender(void)
{
    wchar_t args[300];
    PROCESS_INFORMATION victim, other;
    ring_msg msg;
    shm_error err;
    int round, i, ok = 1;
    test_ring c;

    if (!make_chan(&c, L"kill", 60000))
        return;
    for (round = 0; ok && round < 6; round++) {
        swprintf(args, 300, L"stream %ls %d", c.name, 2 * round + 1);
        if (!CHECK(harness_spawn_self(args, &victim)))
            break;
        swprintf(args, 300, L"stream %ls %d", c.name, 2 * round + 2);
        if (!CHECK(harness_spawn_self(args, &other))) {
            (void)TerminateProcess(victim.hProcess, 9);
            (void)harness_reap(&victim, DEADLINE_MS);
            break;
        }
        for (i = 0; ok && i < 3 + round; i++)
            ok = recv_checked(&c.ch, DEADLINE_S);
        /* Mid-stream, maybe holding the send lock: its liveness slot's name
           dies with it, and the other sender takes the lock over. */
        CHECK(TerminateProcess(victim.hProcess, 9));
        (void)harness_reap(&victim, DEADLINE_MS);
        for (i = 0; ok && i < 30; i++)
            ok = recv_checked(&c.ch, DEADLINE_S);
        CHECK(TerminateProcess(other.hProcess, 9));
        (void)harness_reap(&other, DEADLINE_MS);
        while (ok && ring_recv_begin(&c.ch, NULL, &msg, &err) == SHM_OK) {
            ring_recv_abort(&c.ch);
            ok = recv_checked(&c.ch, 1);
        }
    }
    CHECK(send_msg(&c.ch, "after", 5, 1) == SHM_OK);
    test_ring_close(&c);
    harness_say("senders terminated mid-stream: done\n");
}

static void
test_killed_receiver(void)
{
    wchar_t ready_name[128], args[400];
    PROCESS_INFORMATION pi;
    unsigned char buf[16];
    HANDLE ready;
    test_ring c;

    swprintf(ready_name, 128, L"Local\\pyshm_ct_ready_%lu", (unsigned long)GetCurrentProcessId());
    if (!make_chan(&c, L"blk", 128))
        return;
    ready = CreateEventW(NULL, TRUE, FALSE, ready_name);
    swprintf(args, 400, L"block %ls %ls", c.name, ready_name);
    if (CHECK(ready != NULL) && CHECK(harness_spawn_self(args, &pi))) {
        CHECK(harness_wait_event(ready, pi.hProcess, DEADLINE_MS, "READY"));
        {
            /* READY comes just before its recv: wait until it registered. */
            int64_t until = in_seconds(DEADLINE_S);
            while (c.ch.hdr->data_waiters == 0 && sync_now_ns() < until)
                Sleep(1);
            CHECK_EQ(c.ch.hdr->data_waiters, 1);
        }
        CHECK(TerminateProcess(pi.hProcess, 9));
        (void)harness_reap(&pi, DEADLINE_MS);
    }
    /* Nothing is blocked by the dead receiver, and its registration costs
       one semaphore release at most: the first send takes the whole waiter
       count, so later sends release nothing (the count stays 0). */
    CHECK(send_msg(&c.ch, "x", 1, 1) == SHM_OK);
    CHECK_EQ(c.ch.hdr->data_waiters, 0);
    CHECK_EQ(recv_msg(&c.ch, buf, sizeof buf, 1), 1);
    CHECK(send_msg(&c.ch, "y", 1, 1) == SHM_OK);
    CHECK_EQ(c.ch.hdr->data_waiters, 0);
    CHECK_EQ(recv_msg(&c.ch, buf, sizeof buf, 1), 1);
    if (ready != NULL)
        CloseHandle(ready);
    test_ring_close(&c);
    harness_say("receiver terminated while blocked: done\n");
}

static int
parent(void)
{
    harness_say("test_channel: wait scheme %s\n", sync_kind_name());
    test_one_process();
    test_echo();
    test_two_senders();
    test_killed_sender();
    test_killed_receiver();
    return harness_finish();
}

static const harness_role roles[] = {
    {L"echo", 2, child_echo},
    {L"send", 3, child_send},
    {L"stream", 2, child_stream},
    {L"block", 2, child_block},
    {NULL, 0, NULL},
};

int
wmain(int argc, wchar_t **argv)
{
    return harness_main(argc, argv, parent, roles,
                        "usage: test_channel.exe [echo REQ REP | send NAME TAG N | "
                        "stream NAME SEED | block NAME READY]");
}
