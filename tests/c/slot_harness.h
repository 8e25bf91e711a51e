/*
 * slot_harness.h -- what the two test programs of the slot core share:
 * tests/c/slot_test.c (POSIX, forked processes) and tests/c/win32/test_slot.c
 * (Windows, spawned processes).  Test code only: the library never
 * includes this.
 *
 *   test_slot, test_slot_create/open/close   a slot segment by name
 *   fill_value, value_ok                     values that carry their own
 *                                            length, generation and writer,
 *                                            so that a reader can tell a
 *                                            whole value from a torn one
 *   publish_ok, read_checked, wait_for       with deadlines, going round
 *                                            SHM_EINTR (slices, signals)
 *
 * Includes the core and the segment contract only (shm_char makes names
 * char on POSIX and wchar_t on Windows).  Every function is static inline.
 */
#ifndef PYSHM_TESTS_SLOT_HARNESS_H
#define PYSHM_TESTS_SLOT_HARNESS_H

#include <stddef.h>     /* size_t */
#include <stdint.h>     /* uint32_t, uint64_t, int64_t */
#include <string.h>     /* memcpy */

#include "core/slot.h"          /* slot_* */
#include "platform/segment.h"   /* shm_segment_*, shm_char */
#include "platform/sync.h"      /* sync_now_ns */

/* One process's view of a slot under test; NAME is written by the caller
   before test_slot_create() or test_slot_open(). */
typedef struct {
    shm_segment seg;
    slot_t sl;
    shm_char name[128];
} test_slot;

static inline shm_status
test_slot_create(test_slot *t, uint64_t value_size, uint32_t cells, shm_error *err)
{
    shm_status st;

    shm_segment_init(&t->seg);
    t->seg.keep_fd = 1;     /* the slot's lock takes it over (Linux) */
    slot_init(&t->sl);
    st = slot_value_size(value_size, err);
    if (st == SHM_OK)
        st = shm_segment_create(&t->seg, t->name,
                                (size_t)slot_segment_size(value_size, cells), 0600, 0, err);
    if (st == SHM_OK)
        st = slot_format(t->seg.addr, t->seg.size, value_size, cells, err);
    if (st == SHM_OK)
        st = slot_attach(&t->sl, &t->seg, t->name, err);
    return st;
}

static inline shm_status
test_slot_open(test_slot *t, shm_error *err)
{
    shm_status st;

    shm_segment_init(&t->seg);
    t->seg.keep_fd = 1;
    slot_init(&t->sl);
    st = shm_segment_open(&t->seg, t->name, 0, err);
    if (st == SHM_OK)
        st = slot_attach(&t->sl, &t->seg, t->name, err);
    return st;
}

static inline void
test_slot_close(test_slot *t)
{
    slot_detach(&t->sl);
    shm_segment_close(&t->seg);
}

static inline int64_t
slot_in_seconds(double s)
{
    return sync_now_ns() + (int64_t)(s * 1e9);
}

/* ---- self-describing values ---------------------------------------------- */

/*
 * A test value of LEN bytes (a multiple of 8, at least 24): word 0 its
 * length, word 1 the generation it is published as, word 2 the writer's
 * id, every later word i = generation * K + i.  Any mix of two values, a
 * length that is not the value's, or a generation that is not the one the
 * read reports, fails value_ok().
 */
#define VALUE_MIN 24u
#define VALUE_K 0x9E3779B97F4A7C15ull

static inline void
fill_value(unsigned char *p, size_t len, uint64_t generation, uint64_t writer)
{
    uint64_t w[3], x;
    size_t i;

    w[0] = (uint64_t)len;
    w[1] = generation;
    w[2] = writer;
    memcpy(p, w, sizeof w);
    for (i = 3; i < len / 8; i++) {
        x = generation * VALUE_K + i;
        memcpy(p + 8 * i, &x, 8);
    }
}

/* 1 when P (LEN bytes, read as GENERATION) is a whole value of fill_value();
   *WRITER gets its writer id. */
static inline int
value_ok(const unsigned char *p, size_t len, uint64_t generation, uint64_t *writer)
{
    uint64_t w[3], x;
    size_t i;

    if (len < VALUE_MIN || len % 8 != 0)
        return 0;
    memcpy(w, p, sizeof w);
    if (w[0] != (uint64_t)len || w[1] != generation)
        return 0;
    for (i = 3; i < len / 8; i++) {
        memcpy(&x, p + 8 * i, 8);
        if (x != generation * VALUE_K + i)
            return 0;
    }
    if (writer != NULL)
        *writer = w[2];
    return 1;
}

/* A length for the next value: VALUE_MIN .. MAX, a multiple of 8. */
static inline size_t
value_len(uint32_t r, size_t max)
{
    size_t words = (max - VALUE_MIN) / 8 + 1;
    return VALUE_MIN + 8 * (size_t)(r % words);
}

/*
 * Publish a fill_value() of LEN bytes through a reserve (so the value can
 * carry its own generation), waiting for the lock until SECONDS from now.
 * The final status; *GENERATION gets the published one.
 */
static inline shm_status
publish_value(slot_t *sl, size_t len, uint64_t writer, double seconds, uint64_t *generation)
{
    slot_loan loan;
    shm_error err;
    shm_status st;
    int64_t deadline = slot_in_seconds(seconds);

    do {
        st = slot_reserve(sl, deadline, &loan, &err);
    } while (st == SHM_EINTR);
    if (st != SHM_OK)
        return st;
    fill_value(loan.data, len, loan.generation, writer);
    *generation = slot_commit(sl, &loan, len);
    return SHM_OK;
}

/* Wait until the generation passes AFTER (SECONDS at most): the status,
   the generation in *GENERATION. */
static inline shm_status
wait_for(slot_t *sl, uint64_t after, double seconds, uint64_t *generation)
{
    slot_waiting w = slot_wait_until(slot_in_seconds(seconds));
    shm_error err;
    shm_status st;

    do {
        st = slot_wait(sl, after, &w, generation, &err);
    } while (st == SHM_EINTR);
    return st;
}

#endif /* PYSHM_TESTS_SLOT_HARNESS_H */
