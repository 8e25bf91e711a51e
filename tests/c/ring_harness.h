/*
 * ring_harness.h -- what the two test programs of the channel core share:
 * tests/c/chan_test.c (POSIX, forked processes) and
 * tests/c/win32/test_channel.c (Windows, spawned processes).  Test code
 * only: the library never includes this.
 *
 *   test_ring, test_ring_create/open/close   a channel segment by name
 *   send_msg, recv_msg                       with a deadline, going round
 *                                            SHM_EINTR (signal / slice ends)
 *   checksum, rnd, in_seconds                message bodies and deadlines
 *
 * Includes the core and the segment contract only (shm_char makes names
 * char on POSIX and wchar_t on Windows), nothing OS-specific.  Every
 * function is static inline so that -Wunused-function stays quiet.
 */
#ifndef PYSHM_TESTS_RING_HARNESS_H
#define PYSHM_TESTS_RING_HARNESS_H

#include <stddef.h>     /* size_t */
#include <stdint.h>     /* uint32_t, uint64_t, int64_t */

#include "core/ring.h"          /* ring_* */
#include "platform/segment.h"   /* shm_segment_*, shm_char */

/* recv_msg(): nothing came before the deadline, or it did not fit. */
#define RECV_FAILED ((size_t)-1)

/* One process's view of a channel under test: the mapping and the ring.
   The caller writes NAME before test_ring_create() or test_ring_open(). */
typedef struct {
    shm_segment seg;
    ring_t ch;
    shm_char name[128];
} test_ring;

/* Create T->name as a new channel of CAPACITY bytes and attach T to it.
   SHM_OK, or the status of the step that failed (ERR says which). */
static inline shm_status
test_ring_create(test_ring *t, uint64_t capacity, shm_error *err)
{
    uint64_t cap;
    shm_status st;

    shm_segment_init(&t->seg);
    t->seg.keep_fd = 1;     /* the ring's locks take it over */
    ring_init(&t->ch);
    st = ring_capacity(capacity, &cap, err);
    if (st == SHM_OK)
        st = shm_segment_create(&t->seg, t->name, (size_t)ring_segment_size(cap), 0600, 0,
                                err);
    if (st == SHM_OK)
        st = ring_format(t->seg.addr, t->seg.size, cap, err);
    if (st == SHM_OK)
        st = ring_attach(&t->ch, &t->seg, t->name, err);
    return st;
}

/* Open T->name and attach, as another program would (in a forked child
   too: the parent's mapping is not reused). */
static inline shm_status
test_ring_open(test_ring *t, shm_error *err)
{
    shm_status st;

    shm_segment_init(&t->seg);
    t->seg.keep_fd = 1;
    ring_init(&t->ch);
    st = shm_segment_open(&t->seg, t->name, 0, err);
    if (st == SHM_OK)
        st = ring_attach(&t->ch, &t->seg, t->name, err);
    return st;
}

/* Detach and unmap; the name stays. */
static inline void
test_ring_close(test_ring *t)
{
    ring_detach(&t->ch);
    shm_segment_close(&t->seg);
}

/* FNV-1a, enough to catch torn or mixed-up messages. */
static inline uint32_t
checksum(const unsigned char *p, size_t n)
{
    uint32_t h = 2166136261u;
    size_t i;

    for (i = 0; i < n; i++)
        h = (h ^ p[i]) * 16777619u;
    return h;
}

/* A small seeded generator: the same STATE gives the same bodies. */
static inline uint32_t
rnd(uint32_t *state)
{
    *state = *state * 1103515245u + 12345u;
    return *state >> 8;
}

static inline int64_t
in_seconds(double s)
{
    return sync_now_ns() + (int64_t)(s * 1e9);
}

/* Send with a deadline SECONDS from now; the final status. */
static inline shm_status
send_msg(ring_t *ch, const void *data, size_t len, double seconds)
{
    shm_error err;
    shm_status st;
    ring_wait w = ring_wait_until(in_seconds(seconds));

    do {
        st = ring_send(ch, data, len, &w, &err);
    } while (st == SHM_EINTR);
    return st;
}

/* Receive into BUF (CAP bytes) with a deadline SECONDS from now; the
   length, or RECV_FAILED (a message larger than CAP stays queued). */
static inline size_t
recv_msg(ring_t *ch, void *buf, size_t cap, double seconds)
{
    ring_msg msg;
    shm_error err;
    shm_status st;
    ring_wait w = ring_wait_until(in_seconds(seconds));

    do {
        st = ring_recv_begin(ch, &w, &msg, &err);
    } while (st == SHM_EINTR);
    if (st != SHM_OK)
        return RECV_FAILED;
    if (msg.len > cap) {
        ring_recv_abort(ch);
        return RECV_FAILED;
    }
    ring_recv_commit(ch, &msg, buf);
    return msg.len;
}

#endif /* PYSHM_TESTS_RING_HARNESS_H */
