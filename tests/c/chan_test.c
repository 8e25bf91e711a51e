/*
 * chan_test -- the channel core (src/core/ring.c + a sync file +
 * src/platform/segment_posix.c) between processes made with fork(), no
 * Python.  Built twice by the Makefile from the groups of src/sources.txt:
 * with sync_linux.c (futex, robust mutexes) and with sync_fallback.c.
 *
 *   chan_test            run every check; prints "all passed" at the end
 *
 * Checks: echo with checksums over sizes 0..max through a child; timeouts
 * on empty and full; three senders into one receiver with per-sender order
 * and no loss; a sender killed with SIGKILL mid-stream while another keeps
 * sending (no partial message, no stuck lock); corrupt cursors and length
 * words give SHM_ECORRUPT; a segment that is not a channel is refused.
 * Exit code 0 only when all passed.
 */
#include "core/ring.h"

#include <signal.h>     /* kill, SIGKILL */
#include <stdio.h>      /* printf, fprintf */
#include <stdlib.h>     /* exit, malloc, getenv */
#include <string.h>     /* memcmp, memset */
#include <sys/wait.h>   /* waitpid */
#include <unistd.h>     /* fork, getpid, _exit */

#include "ring_harness.h"   /* test_ring, send_msg, recv_msg, checksum, rnd */

#define CHECK(cond) do { if (!(cond)) fail(__LINE__, #cond); } while (0)

static void
fail(int line, const char *what)
{
    fprintf(stderr, "chan_test: line %d: check failed: %s (pid %d)\n", line, what,
            (int)getpid());
    fflush(stderr);
    _exit(1);
}

static uint32_t rng_state = 12345;

/* A channel made or opened here: its name is tagged with this pid, after
   PYSHM_TEST_PREFIX when the caller gives one (the pytest run gives one of
   its session's names, so that its leftover check sees these too). */
static void
make_chan(test_ring *t, const char *tag, uint64_t capacity)
{
    const char *prefix = getenv("PYSHM_TEST_PREFIX");
    shm_error err;

    snprintf(t->name, sizeof t->name, "%s%s_%d", prefix != NULL ? prefix : "ctest_", tag,
             (int)getpid());
    CHECK(test_ring_create(t, capacity, &err) == SHM_OK);
}

/* In a child after fork: attach anew through the name, like another program. */
static void
reopen_chan(test_ring *t)
{
    shm_error err;
    CHECK(test_ring_open(t, &err) == SHM_OK);
}

static void
drop_chan(test_ring *t)
{
    shm_error err;
    test_ring_close(t);
    (void)shm_segment_unlink(t->name, &err);
}

/* Send or receive within SECONDS, or fail the test. */
static void
send_ok(ring_t *ch, const void *data, size_t len, double seconds)
{
    CHECK(send_msg(ch, data, len, seconds) == SHM_OK);
}

static size_t
recv_ok(ring_t *ch, void *buf, size_t cap, double seconds)
{
    size_t n = recv_msg(ch, buf, cap, seconds);
    CHECK(n != RECV_FAILED);
    return n;
}

static int
reap(pid_t pid)
{
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

/* ---- checks --------------------------------------------------------------- */

static void
test_echo(void)
{
    test_ring req, rep;
    unsigned char *buf, *out;
    size_t max, size, n;
    uint32_t sum;
    pid_t pid;
    int i;

    make_chan(&req, "req", 8192);
    make_chan(&rep, "rep", 256);
    max = (size_t)ring_max_message(req.ch.capacity);
    buf = malloc(max);
    out = malloc(max);
    CHECK(buf != NULL && out != NULL);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        reopen_chan(&req);
        reopen_chan(&rep);
        for (;;) {
            n = recv_ok(&req.ch, buf, max, 30);
            if (n == 4 && memcmp(buf, "stop", 4) == 0) {
                /* Freed, not left to _exit: valgrind calls a block whose
                   last pointer the compiler dropped "definitely lost". */
                free(buf);
                free(out);
                _exit(0);
            }
            sum = checksum(buf, n);
            send_ok(&rep.ch, &sum, sizeof sum, 30);
        }
    }
    for (i = 0; i < 3000; i++) {
        size = i < 200 ? (size_t)i : (i % 97 == 0 ? max : rnd(&rng_state) % (max + 1));
        memset(out, i & 0xff, size);
        if (size > 0)
            out[size - 1] = (unsigned char)rnd(&rng_state);
        send_ok(&req.ch, out, size, 30);
        CHECK(recv_ok(&rep.ch, &sum, sizeof sum, 30) == sizeof sum);
        CHECK(sum == checksum(out, size));
    }
    send_ok(&req.ch, "stop", 4, 30);
    CHECK(reap(pid) == 0);
    free(buf);
    free(out);
    drop_chan(&req);
    drop_chan(&rep);
    printf("echo with checksums: ok\n");
}

static void
test_timeouts(void)
{
    test_ring t;
    ring_msg msg;
    shm_error err;
    unsigned char data[40] = {0};
    int64_t start;
    int n = 0;

    make_chan(&t, "tmo", 128);
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_ETIMEOUT);
    start = sync_now_ns();
    CHECK(recv_msg(&t.ch, data, sizeof data, 0.05) == RECV_FAILED);     /* SHM_ETIMEOUT */
    CHECK(sync_now_ns() - start >= 50000000);
    while (ring_send(&t.ch, data, sizeof data, NULL, &err) == SHM_OK)
        n++;
    CHECK(n == 128 / 48);
    CHECK(send_msg(&t.ch, data, sizeof data, 0.05) == SHM_ETIMEOUT);
    CHECK(ring_send(&t.ch, data, 121, NULL, &err) == SHM_EVALUE);
    drop_chan(&t);
    printf("timeouts: ok\n");
}

static void
test_senders(void)
{
    enum { SENDERS = 3, PER = 20000 };
    test_ring t;
    uint32_t rec[2], next[SENDERS] = {0};
    pid_t pids[SENDERS];
    int s, i, total = 0;

    make_chan(&t, "mul", 512);
    for (s = 0; s < SENDERS; s++) {
        pids[s] = fork();
        CHECK(pids[s] >= 0);
        if (pids[s] == 0) {
            reopen_chan(&t);
            for (i = 0; i < PER; i++) {
                rec[0] = (uint32_t)s;
                rec[1] = (uint32_t)i;
                send_ok(&t.ch, rec, sizeof rec, 30);
            }
            _exit(0);
        }
    }
    while (total < SENDERS * PER) {
        CHECK(recv_ok(&t.ch, rec, sizeof rec, 30) == sizeof rec);
        CHECK(rec[0] < SENDERS);
        CHECK(rec[1] == next[rec[0]]);     /* per-sender order, nothing lost */
        next[rec[0]]++;
        total++;
    }
    for (s = 0; s < SENDERS; s++)
        CHECK(reap(pids[s]) == 0);
    drop_chan(&t);
    printf("%d senders, one receiver, order kept: ok\n", SENDERS);
}

static void
stream_forever(test_ring *t)
{
    static unsigned char body[30000];
    uint32_t sum;
    size_t n;

    reopen_chan(t);
    for (;;) {
        n = 4 + rnd(&rng_state) % (sizeof body - 4);
        memset(body + 4, (int)(rnd(&rng_state) & 0xff), n - 4);
        body[n - 1] = (unsigned char)rnd(&rng_state);
        sum = checksum(body + 4, n - 4);
        memcpy(body, &sum, 4);
        send_ok(&t->ch, body, n, 30);
    }
}

static void
test_killed_sender(void)
{
    static unsigned char buf[30000];
    test_ring t;
    pid_t victim, other;
    uint32_t sum;
    size_t n;
    int round, i;

    make_chan(&t, "kil", 100000);
    for (round = 0; round < 20; round++) {
        rng_state = (uint32_t)round * 7u + 1u;
        victim = fork();
        CHECK(victim >= 0);
        if (victim == 0)
            stream_forever(&t);
        rng_state += 1000;
        other = fork();
        CHECK(other >= 0);
        if (other == 0)
            stream_forever(&t);
        for (i = 0; i < 5 + round % 7; i++) {
            n = recv_ok(&t.ch, buf, sizeof buf, 30);
            memcpy(&sum, buf, 4);
            CHECK(n >= 4 && sum == checksum(buf + 4, n - 4));
        }
        kill(victim, SIGKILL);
        (void)reap(victim);
        for (i = 0; i < 40; i++) {      /* the other sender is never blocked */
            n = recv_ok(&t.ch, buf, sizeof buf, 30);
            memcpy(&sum, buf, 4);
            CHECK(n >= 4 && sum == checksum(buf + 4, n - 4));
        }
        kill(other, SIGKILL);
        (void)reap(other);
        for (;;) {
            ring_msg msg;
            shm_error err;
            if (ring_recv_begin(&t.ch, NULL, &msg, &err) != SHM_OK)
                break;
            CHECK(msg.len >= 4 && msg.len <= sizeof buf);
            ring_recv_commit(&t.ch, &msg, buf);
            memcpy(&sum, buf, 4);
            CHECK(sum == checksum(buf + 4, msg.len - 4));
        }
    }
    drop_chan(&t);
    printf("senders killed mid-stream: ok\n");
}

static void
test_corrupt(void)
{
    test_ring t;
    ring_msg msg;
    shm_error err;
    ring_header *h;
    shm_segment seg;
    ring_t other;

    make_chan(&t, "cor", 256);
    h = t.ch.hdr;
    send_ok(&t.ch, "abc", 3, 1);
    h->write_cursor = (uint64_t)1 << 40;
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_ECORRUPT);
    CHECK(ring_send(&t.ch, "x", 1, NULL, &err) == SHM_ECORRUPT);
    h->write_cursor = 16;
    h->read_cursor = 3;
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_ECORRUPT);
    h->read_cursor = 0;
    memset(t.ch.ring, 0xff, 8);         /* the length word */
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_ECORRUPT);
    /* Not a channel, and a foreign capacity. */
    h->capacity = 1u << 30;
    shm_segment_init(&seg);
    seg.keep_fd = 1;
    ring_init(&other);
    CHECK(shm_segment_open(&seg, t.name, 0, &err) == SHM_OK);
    CHECK(ring_attach(&other, &seg, t.name, &err) == SHM_ECORRUPT);
    h->magic = 0x12345678;
    CHECK(ring_attach(&other, &seg, t.name, &err) == SHM_ECORRUPT);
    shm_segment_close(&seg);
    drop_chan(&t);
    printf("corrupt headers refused: ok\n");
}

int
main(void)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("chan_test: wait scheme %s\n", sync_kind_name());
    test_timeouts();
    test_corrupt();
    test_echo();
    test_senders();
    test_killed_sender();
    printf("all passed\n");
    return 0;
}
