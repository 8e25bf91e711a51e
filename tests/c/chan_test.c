/*
 * chan_test -- the channel core (chan.c + a sync file + shm_posix.c) between
 * processes made with fork(), no Python.  Built twice by the Makefile: with
 * sync_linux.c (futex, robust mutexes) and with sync_fallback.c.
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
#include <stdlib.h>     /* exit, malloc */
#include <string.h>     /* memcmp, memset */
#include <sys/wait.h>   /* waitpid */
#include <unistd.h>     /* fork, getpid, _exit */

#define CHECK(cond) do { if (!(cond)) fail(__LINE__, #cond); } while (0)

static void
fail(int line, const char *what)
{
    fprintf(stderr, "chan_test: line %d: check failed: %s (pid %d)\n", line, what,
            (int)getpid());
    fflush(stderr);
    _exit(1);
}

/* FNV-1a, enough to catch torn or mixed-up messages. */
static uint32_t
checksum(const unsigned char *p, size_t n)
{
    uint32_t h = 2166136261u;
    size_t i;
    for (i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

static uint32_t rng_state = 12345;
static uint32_t
rnd(void)
{
    rng_state = rng_state * 1103515245u + 12345u;
    return rng_state >> 8;
}

typedef struct {
    shm_segment seg;
    ring_t ch;
    char name[64];
} test_chan;

static void
make_chan(test_chan *t, const char *tag, uint64_t capacity)
{
    shm_error err;
    uint64_t cap;

    snprintf(t->name, sizeof t->name, "ctest_%s_%d", tag, (int)getpid());
    shm_segment_init(&t->seg);
    ring_init(&t->ch);
    CHECK(ring_capacity(capacity, &cap, &err) == SHM_OK);
    CHECK(shm_segment_create(&t->seg, t->name, (size_t)ring_segment_size(cap), 0600, 0,
                             &err) == SHM_OK);
    CHECK(ring_format(t->seg.addr, t->seg.size, cap, &err) == SHM_OK);
    CHECK(ring_attach(&t->ch, t->seg.addr, t->seg.size, t->name, &err) == SHM_OK);
}

/* In a child after fork: attach anew through the name, like another program. */
static void
reopen_chan(test_chan *t)
{
    shm_error err;
    shm_segment_init(&t->seg);
    ring_init(&t->ch);
    CHECK(shm_segment_open(&t->seg, t->name, 0, &err) == SHM_OK);
    CHECK(ring_attach(&t->ch, t->seg.addr, t->seg.size, t->name, &err) == SHM_OK);
}

static void
drop_chan(test_chan *t)
{
    shm_error err;
    ring_detach(&t->ch);
    shm_segment_close(&t->seg);
    (void)shm_segment_unlink(t->name, &err);
}

static int64_t
in_seconds(double s)
{
    return sync_now_ns() + (int64_t)(s * 1e9);
}

/* Receive with a deadline into BUF (CAP bytes); returns the length. */
static size_t
recv_msg(ring_t *ch, void *buf, size_t cap, double seconds)
{
    ring_msg msg;
    shm_error err;
    shm_status st;
    int64_t deadline = in_seconds(seconds);

    do {
        st = ring_recv_begin(ch, deadline, &msg, &err);
    } while (st == SHM_EINTR);
    CHECK(st == SHM_OK);
    CHECK(msg.len <= cap);
    ring_recv_commit(ch, &msg, buf);
    return msg.len;
}

static void
send_msg(ring_t *ch, const void *data, size_t len, double seconds)
{
    shm_error err;
    shm_status st;
    int64_t deadline = in_seconds(seconds);

    do {
        st = ring_send(ch, data, len, deadline, &err);
    } while (st == SHM_EINTR);
    CHECK(st == SHM_OK);
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
    test_chan req, rep;
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
            n = recv_msg(&req.ch, buf, max, 30);
            if (n == 4 && memcmp(buf, "stop", 4) == 0)
                _exit(0);
            sum = checksum(buf, n);
            send_msg(&rep.ch, &sum, sizeof sum, 30);
        }
    }
    for (i = 0; i < 3000; i++) {
        size = i < 200 ? (size_t)i : (i % 97 == 0 ? max : rnd() % (max + 1));
        memset(out, i & 0xff, size);
        if (size > 0)
            out[size - 1] = (unsigned char)rnd();
        send_msg(&req.ch, out, size, 30);
        CHECK(recv_msg(&rep.ch, &sum, sizeof sum, 30) == sizeof sum);
        CHECK(sum == checksum(out, size));
    }
    send_msg(&req.ch, "stop", 4, 30);
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
    test_chan t;
    ring_msg msg;
    shm_error err;
    unsigned char data[40] = {0};
    int64_t start;
    int n = 0;

    make_chan(&t, "tmo", 128);
    CHECK(ring_recv_begin(&t.ch, RING_NOWAIT, &msg, &err) == SHM_ETIMEOUT);
    start = sync_now_ns();
    CHECK(ring_recv_begin(&t.ch, in_seconds(0.05), &msg, &err) == SHM_ETIMEOUT);
    CHECK(sync_now_ns() - start >= 50000000);
    while (ring_send(&t.ch, data, sizeof data, RING_NOWAIT, &err) == SHM_OK)
        n++;
    CHECK(n == 128 / 48);
    CHECK(ring_send(&t.ch, data, sizeof data, in_seconds(0.05), &err) == SHM_ETIMEOUT);
    CHECK(ring_send(&t.ch, data, 121, RING_NOWAIT, &err) == SHM_EVALUE);
    drop_chan(&t);
    printf("timeouts: ok\n");
}

static void
test_senders(void)
{
    enum { SENDERS = 3, PER = 20000 };
    test_chan t;
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
                send_msg(&t.ch, rec, sizeof rec, 30);
            }
            _exit(0);
        }
    }
    while (total < SENDERS * PER) {
        CHECK(recv_msg(&t.ch, rec, sizeof rec, 30) == sizeof rec);
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
stream_forever(test_chan *t)
{
    static unsigned char body[30000];
    uint32_t sum;
    size_t n;

    reopen_chan(t);
    for (;;) {
        n = 4 + rnd() % (sizeof body - 4);
        memset(body + 4, (int)(rnd() & 0xff), n - 4);
        body[n - 1] = (unsigned char)rnd();
        sum = checksum(body + 4, n - 4);
        memcpy(body, &sum, 4);
        send_msg(&t->ch, body, n, 30);
    }
}

static void
test_killed_sender(void)
{
    static unsigned char buf[30000];
    test_chan t;
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
            n = recv_msg(&t.ch, buf, sizeof buf, 30);
            memcpy(&sum, buf, 4);
            CHECK(n >= 4 && sum == checksum(buf + 4, n - 4));
        }
        kill(victim, SIGKILL);
        (void)reap(victim);
        for (i = 0; i < 40; i++) {      /* the other sender is never blocked */
            n = recv_msg(&t.ch, buf, sizeof buf, 30);
            memcpy(&sum, buf, 4);
            CHECK(n >= 4 && sum == checksum(buf + 4, n - 4));
        }
        kill(other, SIGKILL);
        (void)reap(other);
        for (;;) {
            ring_msg msg;
            shm_error err;
            if (ring_recv_begin(&t.ch, RING_NOWAIT, &msg, &err) != SHM_OK)
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
    test_chan t;
    ring_msg msg;
    shm_error err;
    ring_header *h;
    shm_segment seg;
    ring_t other;

    make_chan(&t, "cor", 256);
    h = t.ch.hdr;
    send_msg(&t.ch, "abc", 3, 1);
    h->write_cursor = (uint64_t)1 << 40;
    CHECK(ring_recv_begin(&t.ch, RING_NOWAIT, &msg, &err) == SHM_ECORRUPT);
    CHECK(ring_send(&t.ch, "x", 1, RING_NOWAIT, &err) == SHM_ECORRUPT);
    h->write_cursor = 16;
    h->read_cursor = 3;
    CHECK(ring_recv_begin(&t.ch, RING_NOWAIT, &msg, &err) == SHM_ECORRUPT);
    h->read_cursor = 0;
    memset(t.ch.ring, 0xff, 8);         /* the length word */
    CHECK(ring_recv_begin(&t.ch, RING_NOWAIT, &msg, &err) == SHM_ECORRUPT);
    /* Not a channel, and a foreign capacity. */
    h->capacity = 1u << 30;
    shm_segment_init(&seg);
    ring_init(&other);
    CHECK(shm_segment_open(&seg, t.name, 0, &err) == SHM_OK);
    CHECK(ring_attach(&other, seg.addr, seg.size, t.name, &err) == SHM_ECORRUPT);
    h->magic = 0x12345678;
    CHECK(ring_attach(&other, seg.addr, seg.size, t.name, &err) == SHM_ECORRUPT);
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
