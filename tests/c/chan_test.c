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
 * Loans (ring_reserve): contiguous at every offset of the ring up to the
 * largest message (padding records laid and skipped), an aborted loan
 * leaves nothing, a stream of loans through a child, a sender killed
 * holding a loan leaves nothing visible; sends as contiguous as loans at
 * every offset; gathered sends (ring_sendv) keep their pieces and kind;
 * corrupt padding or kind bits, and a record that straddles the ring's
 * end, give SHM_ECORRUPT.  Spin budgets: the rule on chosen times, and
 * between processes a budget that goes to 0 when messages come long after
 * the wait began and back when they come soon, left alone with spin off;
 * a wake time stored only for a sleeping waiter (futex build).
 * Exit code 0 only when all passed.
 */
#include "core/ring.h"
#include "core/spin.h"     /* spin_learn, the budgets' bounds */

#include <signal.h>     /* kill, SIGKILL */
#include <sys/mman.h>   /* mmap: the spin test's shared page */
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

#ifdef PYSHM_COVERAGE
/* libgcov's: write this process's line counts now (a coverage build only,
   tests/c/Makefile PYSHM_COVERAGE=1). */
extern void __gcov_dump(void);
#endif

/* A forked child's end.  _exit(), not exit(): the child must not flush the
   parent's stdio buffers or run its atexit handlers; but a coverage build
   writes its counts at exit(), so it writes them here first, or the paths
   that only children drive would never be counted. */
static void
child_exit(int code)
{
#ifdef PYSHM_COVERAGE
    __gcov_dump();
#endif
    _exit(code);
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
                child_exit(0);
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
            child_exit(0);
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

/* ---- loans and gathered sends ------------------------------------------------ */

/* Reserve LEN bytes at once, or fail the test; the payload must lie inside
   the ring without straddling its end. */
static void
reserve_ok(test_ring *t, size_t len, ring_loan *loan)
{
    shm_error err;

    CHECK(ring_reserve(&t->ch, len, NULL, loan, &err) == SHM_OK);
    CHECK(loan->len == len);
    CHECK(loan->data >= t->ch.ring + 8);
    CHECK(loan->data + len <= t->ch.ring + t->ch.capacity);
}

/* The next message, read in place; it must be LEN bytes of FILL. */
static void
expect_in_place(test_ring *t, size_t len, int fill, unsigned kind)
{
    ring_msg msg;
    shm_error err;
    const unsigned char *p;
    size_t i;

    CHECK(ring_recv_begin(&t->ch, NULL, &msg, &err) == SHM_OK);
    CHECK(msg.len == len && msg.kind == kind);
    p = ring_recv_data(&t->ch, &msg);
    CHECK(p != NULL);
    for (i = 0; i < len; i++)
        CHECK(p[i] == (unsigned char)fill);
    ring_recv_commit(&t->ch, &msg, NULL);
}

static void
test_loans_every_offset(void)
{
    enum { CAP = 256 };
    test_ring t;
    ring_loan loan;
    ring_msg msg;
    shm_error err;
    unsigned char filler[CAP];
    size_t max, off, len;
    int fill = 1;

    make_chan(&t, "lof", CAP);
    max = (size_t)ring_max_message(t.ch.capacity);
    memset(filler, 0, sizeof filler);
    for (off = 0; off < CAP; off += 8) {
        for (len = 0; len <= max; len += (len < 16 || len > max - 16) ? 1 : 29) {
            /* Move the cursors to OFFSET: one message of OFFSET - 8 bytes. */
            if (off > 0) {
                send_ok(&t.ch, filler, off - 8, 1);
                CHECK(recv_ok(&t.ch, filler, sizeof filler, 1) == off - 8);
            }
            CHECK(ring_queued(&t.ch) == 0);
            /* The ring is empty: every loan fits at once, in front of the
               cursor or at offset 0 (the sender lays the padding and, with
               the recv lock free, consumes it itself). */
            reserve_ok(&t, len, &loan);
            if (8 + ((len + 7) & ~(size_t)7) > CAP - off)
                CHECK(loan.data == t.ch.ring + 8);
            else
                CHECK(loan.data == t.ch.ring + off + 8);
            memset(loan.data, fill, len);
            ring_reserve_commit(&t.ch, &loan, RING_KIND_BYTES);
            expect_in_place(&t, len, fill, RING_KIND_BYTES);
            CHECK(ring_queued(&t.ch) == 0);
            fill = fill % 250 + 1;
            /* Back to offset 0 for the next round: fill the rest exactly. */
            {
                uint64_t at = t.ch.hdr->write_cursor % CAP;
                if (at != 0) {
                    send_ok(&t.ch, filler, (size_t)(CAP - at - 8), 1);
                    CHECK(recv_ok(&t.ch, filler, sizeof filler, 1) == CAP - at - 8);
                }
                CHECK(t.ch.hdr->write_cursor % CAP == 0);
            }
        }
    }
    /* An aborted loan leaves nothing, and its space is reused. */
    reserve_ok(&t, 100, &loan);
    memset(loan.data, 0xee, 100);
    ring_reserve_abort(&t.ch);
    CHECK(ring_queued(&t.ch) == 0);
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_ETIMEOUT);
    send_ok(&t.ch, "after", 5, 1);
    CHECK(recv_ok(&t.ch, filler, sizeof filler, 1) == 5 && memcmp(filler, "after", 5) == 0);
    CHECK(ring_reserve(&t.ch, max + 1, NULL, &loan, &err) == SHM_EVALUE);
    drop_chan(&t);
    printf("loans contiguous at every offset: ok\n");
}

/*
 * Sends (ring_send), like loans, never straddle the ring's end: at every
 * offset, every length up to the largest message lands in one piece, in
 * front of the cursor or at offset 0 behind a padding record; one that
 * fits on neither side publishes the padding alone and waits for a
 * receiver to clear it.
 */
static void
test_sends_every_offset(void)
{
    enum { CAP = 256 };
    test_ring t;
    ring_msg msg;
    shm_error err;
    unsigned char data[CAP], out[CAP];
    size_t off, len, max, i;
    const unsigned char *place;

    make_chan(&t, "sof", CAP);
    max = (size_t)ring_max_message(t.ch.capacity);
    for (off = 0; off < CAP; off += 8) {
        for (len = 0; len <= max; len += (len < 16 || len > max - 16) ? 1 : 13) {
            /* Back to offset 0, then on to OFF: whole laps of messages. */
            while (t.ch.hdr->write_cursor % CAP != 0) {
                send_ok(&t.ch, out, (size_t)(CAP - t.ch.hdr->write_cursor % CAP - 8), 1);
                (void)recv_ok(&t.ch, out, sizeof out, 1);
            }
            if (off > 0) {
                send_ok(&t.ch, out, off - 8, 1);
                CHECK(recv_ok(&t.ch, out, sizeof out, 1) == off - 8);
            }
            CHECK(t.ch.hdr->write_cursor % CAP == off && ring_queued(&t.ch) == 0);
            for (i = 0; i < len; i++)
                data[i] = (unsigned char)(off * 7 + len * 3 + i);
            /* Empty: it fits at once (see test_loans_every_offset). */
            CHECK(ring_send(&t.ch, data, len, NULL, &err) == SHM_OK);
            CHECK(ring_messages(&t.ch) == 1);
            CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_OK && msg.len == len);
            place = ring_recv_data(&t.ch, &msg);
            CHECK(place == t.ch.ring + 8 + (8 + ((len + 7) & ~(size_t)7) > CAP - off ? 0 : off));
            CHECK(place + len <= t.ch.ring + CAP);
            CHECK(len == 0 || memcmp(place, data, len) == 0);
            ring_recv_commit(&t.ch, &msg, out);
            CHECK(len == 0 || memcmp(out, data, len) == 0);
            CHECK(ring_queued(&t.ch) == 0);
        }
    }
    /* With a message queued, a record that fits on neither side of the
       cursor publishes the padding alone and waits: the receivers clear the
       way.  Cursor at 144, 8 bytes queued, then 200 bytes (208 > 96 left in
       front, > the 160 of the offset). */
    send_ok(&t.ch, out, (size_t)(CAP - t.ch.hdr->write_cursor % CAP - 8), 1);
    (void)recv_ok(&t.ch, out, sizeof out, 1);
    send_ok(&t.ch, out, 136, 1);
    CHECK(recv_ok(&t.ch, out, sizeof out, 1) == 136);
    send_ok(&t.ch, "eightbyt", 8, 1);
    CHECK(ring_send(&t.ch, data, 200, NULL, &err) == SHM_ETIMEOUT);
    CHECK(ring_queued(&t.ch) == 16 + 96 && ring_messages(&t.ch) == 1);
    CHECK(recv_ok(&t.ch, out, sizeof out, 1) == 8 && memcmp(out, "eightbyt", 8) == 0);
    CHECK(ring_queued(&t.ch) == 96 && ring_messages(&t.ch) == 0);   /* the lone padding */
    CHECK(ring_send(&t.ch, data, 200, NULL, &err) == SHM_ETIMEOUT);   /* 160 free only */
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_ETIMEOUT);  /* takes the padding */
    CHECK(ring_queued(&t.ch) == 0);
    send_ok(&t.ch, data, 200, 1);
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_OK && msg.len == 200);
    CHECK(ring_recv_data(&t.ch, &msg) == t.ch.ring + 8);
    ring_recv_commit(&t.ch, &msg, NULL);
    /* The empty ring's shortcut needs the recv lock free at once: with a
       receiver holding it (here a held message of the same object, then
       let go), the padding is published alone and left to it. */
    send_ok(&t.ch, out, 40, 1);                     /* offset 208 -> 0 */
    CHECK(recv_ok(&t.ch, out, sizeof out, 1) == 40);
    send_ok(&t.ch, out, 88, 1);                     /* 0 -> 96 */
    CHECK(recv_ok(&t.ch, out, sizeof out, 1) == 88);
    CHECK(ring_queued(&t.ch) == 0 && t.ch.hdr->write_cursor % CAP == 96);
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_ETIMEOUT);
    {
        /* A second object holds the recv lock (as a receiver's loan would). */
        test_ring holder;

        memcpy(holder.name, t.name, sizeof holder.name);
        CHECK(test_ring_open(&holder, &err) == SHM_OK);
        CHECK(sync_trylock(&holder.ch.sync, SYNC_LOCK_RECV, &holder.ch.hdr->recv_lock,
                           &err) == SHM_OK);
        CHECK(ring_send(&t.ch, data, 200, NULL, &err) == SHM_ETIMEOUT);
        CHECK(ring_queued(&t.ch) == 160 && ring_messages(&t.ch) == 0);
        sync_unlock(&holder.ch.sync, SYNC_LOCK_RECV, &holder.ch.hdr->recv_lock);
        test_ring_close(&holder);
    }
    CHECK(ring_send(&t.ch, data, 200, NULL, &err) == SHM_ETIMEOUT);  /* padding queued */
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_ETIMEOUT);
    send_ok(&t.ch, data, 200, 1);
    CHECK(recv_ok(&t.ch, out, sizeof out, 1) == 200 && memcmp(out, data, 200) == 0);
    drop_chan(&t);
    printf("sends contiguous at every offset: ok\n");
}

static void
test_sendv(void)
{
    test_ring t;
    ring_piece pieces[4];
    ring_msg msg;
    shm_error err;
    unsigned char out[200];

    make_chan(&t, "gat", 128);
    /* Cursor at 96: the gathered record would wrap, so it goes to offset 0
       behind a padding record (published with it). */
    send_ok(&t.ch, out, 88, 1);
    CHECK(recv_ok(&t.ch, out, sizeof out, 1) == 88);
    pieces[0].data = "head";
    pieces[0].len = 4;
    pieces[1].data = "";
    pieces[1].len = 0;
    pieces[2].data = "-middle-";
    pieces[2].len = 8;
    pieces[3].data = "0123456789abcdefghijklmnopqrstuvwxyz";
    pieces[3].len = 36;
    CHECK(ring_sendv(&t.ch, pieces, 4, RING_KIND_OBJECT, NULL, &err) == SHM_OK);
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_OK);
    CHECK(msg.kind == RING_KIND_OBJECT && msg.len == 48);
    CHECK(ring_recv_data(&t.ch, &msg) == t.ch.ring + 8);   /* in place, at the start */
    CHECK(memcmp(ring_recv_data(&t.ch, &msg), "head-middle-", 12) == 0);
    ring_recv_read(&t.ch, &msg, 10, out, 20);
    CHECK(memcmp(out, "e-0123456789abcdefgh", 20) == 0);
    ring_recv_commit(&t.ch, &msg, out);
    CHECK(memcmp(out, "head-middle-0123456789abcdefghijklmnopqrstuvwxyz", 48) == 0);
    /* Too long in sum, or an unknown kind: refused, nothing sent. */
    pieces[0].len = 80;
    pieces[0].data = out;
    CHECK(ring_sendv(&t.ch, pieces, 4, RING_KIND_OBJECT, NULL, &err) == SHM_EVALUE);
    CHECK(ring_sendv(&t.ch, pieces, 1, RING_KIND_MAX + 1, NULL, &err) == SHM_EVALUE);
    CHECK(ring_queued(&t.ch) == 0);
    drop_chan(&t);
    printf("gathered sends: ok\n");
}

/* A child streams loans of random sizes (up to the largest) to the parent. */
static void
test_loan_stream(void)
{
    enum { N = 3000 };
    test_ring t;
    ring_loan loan;
    ring_msg msg;
    shm_error err;
    const unsigned char *p;
    uint32_t sum, state = 99;
    ring_wait w;
    size_t max, len;
    pid_t pid;
    int i;
    shm_status st;

    make_chan(&t, "lst", 4096);
    max = (size_t)ring_max_message(t.ch.capacity);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        reopen_chan(&t);
        for (i = 0; i < N; i++) {
            len = 4 + rnd(&state) % (i % 5 == 0 ? max - 3 : 300);
            w = ring_wait_until(in_seconds(30));
            do {
                st = ring_reserve(&t.ch, len, &w, &loan, &err);
            } while (st == SHM_EINTR);
            CHECK(st == SHM_OK);
            CHECK(loan.data + len <= t.ch.ring + t.ch.capacity);
            memset(loan.data + 4, (int)(rnd(&state) & 0xff), len - 4);
            sum = checksum(loan.data + 4, len - 4);
            memcpy(loan.data, &sum, 4);
            ring_reserve_commit(&t.ch, &loan, RING_KIND_BYTES);
        }
        child_exit(0);
    }
    for (i = 0; i < N; i++) {
        w = ring_wait_until(in_seconds(30));
        do {
            st = ring_recv_begin(&t.ch, &w, &msg, &err);
        } while (st == SHM_EINTR);
        CHECK(st == SHM_OK && msg.len >= 4);
        p = ring_recv_data(&t.ch, &msg);
        CHECK(p != NULL);       /* a loan's record is always in one piece */
        memcpy(&sum, p, 4);
        CHECK(sum == checksum(p + 4, msg.len - 4));
        ring_recv_commit(&t.ch, &msg, NULL);
    }
    CHECK(reap(pid) == 0);
    CHECK(ring_queued(&t.ch) == 0);
    drop_chan(&t);
    printf("a stream of loans, read in place: ok\n");
}

/* A sender killed while it holds a loan (and the send lock): nothing of the
   loan becomes visible and the next sender goes on. */
static void
test_killed_loan(void)
{
    test_ring t;
    ring_loan loan;
    ring_wait w;
    shm_error err;
    shm_status st;
    unsigned char buf[64];
    int fds[2], round;
    char c;
    pid_t pid;

    make_chan(&t, "klo", 1024);
    for (round = 0; round < 4; round++) {
        CHECK(pipe(fds) == 0);
        pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            reopen_chan(&t);
            /* Round 2 and 3: a loan that needs padding (cursor at 1000). */
            w = ring_wait_until(in_seconds(30));
            do {
                st = ring_reserve(&t.ch, round < 2 ? 40 : 500, &w, &loan, &err);
            } while (st == SHM_EINTR);
            CHECK(st == SHM_OK);
            memset(loan.data, 0xab, loan.len);
            CHECK(write(fds[1], "x", 1) == 1);
            for (;;)
                pause();
        }
        close(fds[1]);
        CHECK(read(fds[0], &c, 1) == 1);
        close(fds[0]);
        kill(pid, SIGKILL);
        (void)reap(pid);
        CHECK(recv_msg(&t.ch, buf, sizeof buf, 0) == RECV_FAILED);
        CHECK(ring_queued(&t.ch) == 0);
        send_ok(&t.ch, "next", 4, 5);
        CHECK(recv_ok(&t.ch, buf, sizeof buf, 5) == 4 && memcmp(buf, "next", 4) == 0);
        if (round == 1) {
            /* Move the cursor to 1000 for the padded rounds. */
            while (t.ch.hdr->write_cursor % 1024 != 1000) {
                uint64_t at = t.ch.hdr->write_cursor % 1024;
                size_t n = at < 1000 ? (size_t)(1000 - at - 8) : (size_t)(1024 - at - 8);
                static unsigned char big[1024];
                send_ok(&t.ch, big, n, 5);
                CHECK(recv_msg(&t.ch, big, sizeof big, 5) == n);
            }
        }
    }
    (void)err;
    drop_chan(&t);
    printf("sender killed holding a loan: ok\n");
}

static void
test_corrupt_records(void)
{
    test_ring t;
    ring_msg msg;
    shm_error err;
    uint64_t word;

    make_chan(&t, "crc", 256);
    send_ok(&t.ch, "abcdefgh", 8, 1);
    /* Padding that does not reach the end of the ring. */
    word = RING_REC_PAD | 8;
    memcpy(t.ch.ring, &word, 8);
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_ECORRUPT);
    /* Reserved bits, and an unknown kind. */
    word = 8 | ((uint64_t)1 << 50);
    memcpy(t.ch.ring, &word, 8);
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_ECORRUPT);
    word = 8 | ((uint64_t)(RING_KIND_MAX + 1) << RING_KIND_SHIFT);
    memcpy(t.ch.ring, &word, 8);
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_ECORRUPT);
    /* Restored, it is received whole. */
    word = 8;
    memcpy(t.ch.ring, &word, 8);
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_OK && msg.len == 8);
    ring_recv_commit(&t.ch, &msg, NULL);
    /* A record that would straddle the ring's end (version 4 never writes
       one): the cursors at 240, 32 bytes queued, a length word of 20 bytes
       there (8 + 24 > the 16 bytes before the end). */
    t.ch.hdr->read_cursor = t.ch.hdr->write_cursor = 240;
    t.ch.seen_write = 0;
    word = 20;
    memcpy(t.ch.ring + 240, &word, 8);
    t.ch.hdr->write_cursor = 272;
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_ECORRUPT);
    CHECK(ring_queued(&t.ch) == 32);
    /* Short enough to end at the ring's end exactly: a message. */
    word = 8;
    memcpy(t.ch.ring + 240, &word, 8);
    t.ch.hdr->write_cursor = 256;
    CHECK(ring_recv_begin(&t.ch, NULL, &msg, &err) == SHM_OK && msg.len == 8);
    ring_recv_commit(&t.ch, &msg, NULL);
    CHECK(ring_queued(&t.ch) == 0);
    drop_chan(&t);
    printf("corrupt records refused: ok\n");
}

/* ---- spin budgets ------------------------------------------------------------ */

/* The rule (spin_learn) on chosen times: a wake time within the
   longest spin of the wait's start doubles the budget (from 0: the start
   budget), a later one halves it down to 0; a wake time outside the wait
   (none, garbage, stale) leaves the sleep's length to judge; a wait that
   slept whole slices halves it. */
static void
test_spin_rule(void)
{
    const int64_t t = (int64_t)1000000000;
    uint32_t b = (uint32_t)SPIN_MAX_NS;
    int n;

    CHECK(spin_learn(0, t, t, t + 9000, t + 5000, 0) == (uint32_t)SPIN_START_NS);
    CHECK(spin_learn(12000, t, t + 12000, t + 70000, t + SPIN_MAX_NS, 0) == 24000);
    CHECK(spin_learn(40000, t, t + 40000, t + 45000, t + 41000, 0) ==
          (uint32_t)SPIN_MAX_NS);
    for (n = 0; b > 0 && n < 100; n++)
        b = spin_learn(b, t, t + (int64_t)b, t + 300000, t + SPIN_MAX_NS + 1, 0);
    CHECK(b == 0 && n <= 7);
    CHECK(spin_learn(0, t, t, t + 300000, t + 200000, 0) == 0);
    /* No usable wake time: the sleep decides. */
    CHECK(spin_learn(4000, t, t + 4000, t + 4000 + SPIN_SHORT_BLOCK_NS - 1, 0, 0) == 8000);
    CHECK(spin_learn(4000, t, t + 4000, t + 4000 + SPIN_SHORT_BLOCK_NS, 0, 0) == 2000);
    CHECK(spin_learn(4000, t, t, t + 50, t - 1, 0) == 8000);
    CHECK(spin_learn(4000, t, t, t + 50, t + 51, 0) == 8000);
    CHECK(spin_learn(4000, t, t, t + SPIN_SHORT_BLOCK_NS * 3, INT64_MIN, 0) == 2000);
    CHECK(spin_learn(1500, t, t, t + SPIN_SHORT_BLOCK_NS * 3, INT64_MAX, 0) == 0);
    /* Whole slices slept: long, whatever the rest says. */
    CHECK(spin_learn(4000, t, t, t + 10, t + 1, 1) == 2000);
    printf("spin budget rule: ok\n");
}

/* What the receiver tells the sender in test_spin_learns. */
typedef struct {
    volatile int64_t since;     /* the clock just before the receiver's wait */
    volatile int round;         /* the message the receiver waits for (0: stop) */
    volatile int phase;         /* 1 long waits, 2 short, 3 long with spin off */
} spin_page;

/*
 * The budget learns between processes.  The sender publishes each message
 * only once the receiver waits for it (its round and, in the futex build,
 * its waiter bit: it sleeps) and then -- phases 1 and 3 -- only after
 * SPIN_MAX twice over (the futex build: the receiver's wake time says so)
 * or SHORT_BLOCK 50 times over (the fallback: its sleep says so) has
 * passed: a spin could not have caught it, and a few such waits take the
 * budget to 0.  Phase 2 publishes at once (the fallback: SHORT_BLOCK / 5
 * after the wait began): within a few tries (a preempted process may make
 * one wait long) the budget is back.  With spin off (phase 3) it is left
 * as it was.  And the wake time is stored only when a waiter sleeps (the
 * futex build; the fallback never stores one).  The sender gives up after
 * a minute, or when the receiver is gone (a check failed there).
 */
static void
test_spin_learns(void)
{
    test_ring t;
    spin_page *sp;
    ring_header *h;
    int64_t seen, wait;
    uint32_t kept;
    int futex = sync_kind() == SYNC_KIND_LINUX, k = 0, got = 0;
    pid_t pid;

    make_chan(&t, "spin", 4096);
    h = t.ch.hdr;
    sp = mmap(NULL, sizeof *sp, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK(sp != MAP_FAILED);
    sp->round = -1;
    /* Nobody waits: a send stores no wake time. */
    send_ok(&t.ch, &k, sizeof k, 30);
    CHECK(h->data_woken == 0);
    CHECK(recv_ok(&t.ch, &got, sizeof got, 30) == sizeof got);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        int64_t before, give_up;
        pid_t parent = getppid();

        reopen_chan(&t);
        h = t.ch.hdr;
        for (;;) {
            /* Every wait here ends: a parent that failed a check has gone. */
            give_up = sync_now_ns() + (int64_t)60 * SYNC_NS_PER_S;
            while ((k = __atomic_load_n(&sp->round, __ATOMIC_ACQUIRE)) < 0) {
                CHECK(sync_now_ns() < give_up && getppid() == parent);
                sync_cpu_relax();
            }
            if (k == 0)
                break;
            __atomic_store_n(&sp->round, -1, __ATOMIC_RELAXED);
            if (futex) {
                /* Asleep: its wait began before this. */
                while (!(__atomic_load_n(&h->data_seq, __ATOMIC_ACQUIRE) & SYNC_WAITERS)) {
                    CHECK(sync_now_ns() < give_up && getppid() == parent);
                    sync_cpu_relax();
                }
                seen = sync_now_ns();
                wait = sp->phase == 2 ? 0 : 2 * SPIN_MAX_NS;
            } else {
                /* Its sleepers register nowhere: time from just before the
                   wait (short: most likely in its first naps by then). */
                seen = sp->since;
                wait = sp->phase == 2 ? SPIN_SHORT_BLOCK_NS / 5 : 50 * SPIN_SHORT_BLOCK_NS;
            }
            while (sync_now_ns() < seen + wait)
                sync_cpu_relax();
            before = sync_now_ns();
            send_ok(&t.ch, &k, sizeof k, 30);
            if (futex)
                CHECK((int64_t)__atomic_load_n(&h->data_woken, __ATOMIC_RELAXED) >= before &&
                      (int64_t)__atomic_load_n(&h->data_woken, __ATOMIC_RELAXED) <=
                          sync_now_ns());
            else
                CHECK(__atomic_load_n(&h->data_woken, __ATOMIC_RELAXED) == 0);
        }
        test_ring_close(&t);
        child_exit(0);
    }

#define WAIT_FOR(n) do {                                                    \
        sp->since = sync_now_ns();                                          \
        __atomic_store_n(&sp->round, (n), __ATOMIC_RELEASE);                \
        CHECK(recv_ok(&t.ch, &got, sizeof got, 30) == sizeof got && got == (n)); \
    } while (0)

    /* Four long waits take the start budget to 0; a message that is there
       before the wait begins (this process was not running) teaches
       nothing, hence up to 40 rounds, as up to 50 for the way back. */
    sp->phase = 1;
    for (k = 1; k <= 40 && t.ch.spin[SYNC_WORD_DATA] != 0; k++)
        WAIT_FOR(k);
    CHECK(t.ch.spin[SYNC_WORD_DATA] == 0);
    sp->phase = 2;
    for (k = 41; k <= 90 && t.ch.spin[SYNC_WORD_DATA] == 0; k++)
        WAIT_FOR(k);
    CHECK(t.ch.spin[SYNC_WORD_DATA] > 0);
    kept = t.ch.spin[SYNC_WORD_DATA];
    sp->phase = 3;
    ring_set_spin(&t.ch, 0);
    WAIT_FOR(100);
    CHECK(t.ch.spin[SYNC_WORD_DATA] == kept);
#undef WAIT_FOR
    __atomic_store_n(&sp->round, 0, __ATOMIC_RELEASE);
    CHECK(reap(pid) == 0);
    munmap(sp, sizeof *sp);
    drop_chan(&t);
    printf("spin budget learns (%s): ok\n", futex ? "wake times" : "sleeps");
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
    test_loans_every_offset();
    test_sends_every_offset();
    test_sendv();
    test_loan_stream();
    test_killed_loan();
    test_corrupt_records();
    test_spin_rule();
    test_spin_learns();
    printf("all passed\n");
    return 0;
}
