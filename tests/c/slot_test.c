/*
 * slot_test -- the slot core (src/core/slot.c + a sync file +
 * src/platform/segment_posix.c) between processes made with fork(), no
 * Python.  Built twice by the Makefile from the groups of src/sources.txt:
 * with sync_linux.c (futex) and with sync_fallback.c.
 *
 *   slot_test              run every check; prints "all passed" at the end
 *   slot_test bench [S]    measure reads/s of a 64 KiB value with an idle
 *                          writer and with a writer publishing flat out
 *                          (S seconds each, default 2), counting torn reads
 *                          and retries; prints the figures, asserts only
 *                          that no read was torn
 *
 * Checks: values of every length, generations, a too-small buffer, a
 * too-long value, reserve/commit/abort, in one process; marks steer the
 * writer away from a cell being read and only a forced publish (every
 * other cell announced) overwrites one, the oldest; a mark left by a dead
 * reader is cleared by such a publish; every kind of foreign segment
 * refused with its reason (a channel opened as a slot and the reverse);
 * writers and readers in several processes, with 4 cells and with 2 (the
 * forced path all the time), no read torn and every generation counted
 * once; a writer killed at random instants and one killed holding the
 * lock, the previous value whole and the next writer going on; waiters in
 * other processes woken by a publish, timeouts, cancel; a fuzz loop of
 * hostile bytes over header and cells (run under ASan in CI), and a
 * process scribbling while others read.  Exit code 0 only when all passed.
 */
#include "core/slot.h"
#include "core/ring.h"

#include <signal.h>     /* kill, SIGKILL, alarm */
#include <stdio.h>      /* printf, fprintf */
#include <stdlib.h>     /* exit, malloc, getenv, atof */
#include <string.h>     /* memcmp, memset, strstr */
#include <sys/wait.h>   /* waitpid */
#include <time.h>       /* nanosleep */
#include <unistd.h>     /* fork, getpid, _exit, pipe */

#include "ring_harness.h"   /* test_ring (a channel to open as a slot), rnd, checksum */
#include "slot_harness.h"   /* test_slot, fill_value, value_ok, publish_value, wait_for */

#define CHECK(cond) do { if (!(cond)) fail(__LINE__, #cond); } while (0)

static void
fail(int line, const char *what)
{
    fprintf(stderr, "slot_test: line %d: check failed: %s (pid %d)\n", line, what,
            (int)getpid());
    fflush(stderr);
    _exit(1);
}

static uint32_t rng_state = 4242;

/* A slot or channel name tagged with this pid, after PYSHM_TEST_PREFIX when
   the caller gives one (the pytest run's leftover check then sees it). */
static void
name_for(char *out, size_t size, const char *tag)
{
    const char *prefix = getenv("PYSHM_TEST_PREFIX");

    snprintf(out, size, "%s%s_%d", prefix != NULL ? prefix : "stest_", tag, (int)getpid());
}

static void
make_slot(test_slot *t, const char *tag, uint64_t value_size, uint32_t cells)
{
    shm_error err;

    name_for(t->name, sizeof t->name, tag);
    CHECK(test_slot_create(t, value_size, cells, &err) == SHM_OK);
}

static void
reopen_slot(test_slot *t)
{
    shm_error err;
    CHECK(test_slot_open(t, &err) == SHM_OK);
}

static void
drop_slot(test_slot *t)
{
    shm_error err;
    test_slot_close(t);
    (void)shm_segment_unlink(t->name, &err);
}

static int
reap(pid_t pid)
{
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static void
publish_ok(slot_t *sl, const void *data, size_t len, uint64_t *generation)
{
    shm_error err;
    shm_status st;
    int64_t deadline = slot_in_seconds(30);

    do {
        st = slot_publish(sl, data, len, deadline, generation, &err);
    } while (st == SHM_EINTR);
    CHECK(st == SHM_OK);
}

static void
sleep_us(long us)
{
    struct timespec ts;

    ts.tv_sec = us / 1000000;
    ts.tv_nsec = (us % 1000000) * 1000;
    (void)nanosleep(&ts, NULL);
}

/* ---- one process ------------------------------------------------------------ */

static void
test_basics(void)
{
    test_slot t;
    unsigned char data[128], out[160];
    size_t len, n;
    uint64_t gen, g;
    slot_loan loan;
    slot_view view;
    slot_waiting w;
    shm_error err;
    int i;

    make_slot(&t, "bas", 100, SLOT_CELLS);
    CHECK(slot_generation(&t.sl) == 0);
    CHECK(slot_read(&t.sl, out, sizeof out, &len, &gen, &err) == SHM_OK);
    CHECK(len == 0 && gen == 0);
    CHECK(slot_read_begin(&t.sl, &view, &err) == SHM_OK);
    CHECK(view.generation == 0 && view.len == 0 && view.data == NULL);
    CHECK(slot_read_end(&t.sl, &view) == 1);
    /* Every length from 0 to the size, read back whole; generations count. */
    for (i = 0; i <= 100; i++) {
        memset(data, i + 1, (size_t)i);
        publish_ok(&t.sl, data, (size_t)i, &gen);
        CHECK(gen == (uint64_t)i + 1);
        CHECK(slot_read(&t.sl, out, sizeof out, &len, &g, &err) == SHM_OK);
        CHECK(len == (size_t)i && g == gen && memcmp(out, data, len) == 0);
        CHECK(slot_generation(&t.sl) == gen);
    }
    /* Too long: refused, nothing published. */
    CHECK(slot_publish(&t.sl, data, 101, SLOT_FOREVER, &g, &err) == SHM_EVALUE);
    CHECK(slot_generation(&t.sl) == gen);
    /* A buffer too small: the value's length and generation, nothing copied. */
    memset(out, 0xAA, sizeof out);
    CHECK(slot_read(&t.sl, out, 99, &len, &g, &err) == SHM_EVALUE);
    CHECK(len == 100 && g == gen);
    for (n = 0; n < sizeof out; n++)
        CHECK(out[n] == 0xAA);
    /* Reserve: aborted, nothing changes; committed, it is the value. */
    CHECK(slot_reserve(&t.sl, SLOT_FOREVER, &loan, &err) == SHM_OK);
    CHECK(loan.generation == gen + 1);
    memset(loan.data, 0x55, 100);
    slot_abort(&t.sl, &loan);
    CHECK(slot_generation(&t.sl) == gen);
    CHECK(slot_read(&t.sl, out, sizeof out, &len, &g, &err) == SHM_OK);
    CHECK(len == 100 && g == gen && memcmp(out, data, 100) == 0);
    CHECK(slot_reserve(&t.sl, SLOT_NOWAIT, &loan, &err) == SHM_OK);
    memcpy(loan.data, "in place", 8);
    CHECK(slot_commit(&t.sl, &loan, 8) == gen + 1);
    CHECK(slot_read(&t.sl, out, sizeof out, &len, &g, &err) == SHM_OK);
    CHECK(len == 8 && g == gen + 1 && memcmp(out, "in place", 8) == 0);
    gen = g;
    /* Every publish moves the wait word on (what wakes the waiters). */
    {
        uint32_t before = t.sl.hdr->gen_seq & SYNC_SEQ_MASK;
        publish_ok(&t.sl, "moves", 5, &gen);
        CHECK((t.sl.hdr->gen_seq & SYNC_SEQ_MASK) != before);
    }
    /* Waits: a newer generation at once, none after the latest. */
    w = slot_wait_until(SLOT_NOWAIT);
    CHECK(slot_wait(&t.sl, gen - 1, &w, &g, &err) == SHM_OK && g == gen);
    w = slot_wait_until(SLOT_NOWAIT);
    CHECK(slot_wait(&t.sl, gen, &w, &g, &err) == SHM_ETIMEOUT);
    CHECK(wait_for(&t.sl, gen, 0.05, &g) == SHM_ETIMEOUT);
    /* A long wait comes back every slice (SHM_EINTR) for a signal check. */
    w = slot_wait_until(slot_in_seconds(5));
    CHECK(slot_wait(&t.sl, gen, &w, &g, &err) == SHM_EINTR && w.resumed);
    /* Cancelled: waits and writes say "closed". */
    slot_cancel(&t.sl);
    CHECK(wait_for(&t.sl, gen, 5, &g) == SHM_EVALUE);
    CHECK(slot_publish(&t.sl, data, 1, SLOT_FOREVER, &g, &err) == SHM_EVALUE);
    CHECK(strstr(err.detail, "closed") != NULL);
    drop_slot(&t);
    printf("basics: lengths, generations, small buffer, reserve, waits: ok\n");
}

/* The cell that latest names now. */
static uint32_t
latest_cell(const test_slot *t)
{
    return (uint32_t)(t->sl.hdr->latest & SLOT_CELL_MASK);
}

static void
test_marks(void)
{
    test_slot t;
    slot_view a, b, c, dead;
    uint64_t gen;
    shm_error err;
    uint32_t cell_a, cell_dead;
    int i;

    make_slot(&t, "mrk", 64, 4);
    publish_ok(&t.sl, "one", 3, &gen);
    /* A reader in the middle of a copy keeps its cell: ten publishes go
       round the other three cells. */
    CHECK(slot_read_begin(&t.sl, &a, &err) == SHM_OK && a.generation == 1);
    cell_a = a.cell;
    for (i = 0; i < 10; i++) {
        publish_ok(&t.sl, "more", 4, &gen);
        CHECK(latest_cell(&t) != cell_a);
    }
    CHECK(a.len == 3 && memcmp(a.data, "one", 3) == 0);
    CHECK(slot_read_end(&t.sl, &a) == 1);
    /* Three reads in flight on three older values: the next publish finds
       every cell but the latest announced and takes the oldest -- its
       reader alone starts again, the others finish whole. */
    CHECK(slot_read_begin(&t.sl, &a, &err) == SHM_OK);
    publish_ok(&t.sl, "b", 1, &gen);
    CHECK(slot_read_begin(&t.sl, &b, &err) == SHM_OK);
    publish_ok(&t.sl, "c", 1, &gen);
    CHECK(slot_read_begin(&t.sl, &c, &err) == SHM_OK);
    CHECK(a.cell != b.cell && b.cell != c.cell && a.cell != c.cell);
    publish_ok(&t.sl, "d", 1, &gen);
    CHECK(latest_cell(&t) != a.cell && latest_cell(&t) != b.cell && latest_cell(&t) != c.cell);
    publish_ok(&t.sl, "forced", 6, &gen);
    CHECK(latest_cell(&t) == a.cell);
    CHECK(slot_read_end(&t.sl, &a) == 0);
    CHECK(slot_read_end(&t.sl, &b) == 1);
    CHECK(slot_read_end(&t.sl, &c) == 1);
    /* A reader that died mid-read leaves its mark: its cell is skipped
       while others are free, and the first forced publish takes it back. */
    drop_slot(&t);
    make_slot(&t, "mrd", 64, 3);
    publish_ok(&t.sl, "x", 1, &gen);
    CHECK(slot_read_begin(&t.sl, &dead, &err) == SHM_OK);     /* never ended */
    cell_dead = dead.cell;
    for (i = 0; i < 20; i++) {
        publish_ok(&t.sl, "y", 1, &gen);
        CHECK(latest_cell(&t) != cell_dead);
    }
    CHECK(slot_read_begin(&t.sl, &a, &err) == SHM_OK);        /* on the latest */
    publish_ok(&t.sl, "z", 1, &gen);        /* into the one free cell */
    publish_ok(&t.sl, "w", 1, &gen);        /* forced: the dead mark's cell */
    CHECK(latest_cell(&t) == cell_dead);
    CHECK(slot_read_end(&t.sl, &a) == 1);
    for (i = 0; i < 6; i++)
        publish_ok(&t.sl, "v", 1, &gen);    /* all three cells in use again */
    drop_slot(&t);
    printf("marks steer the writer; forced publishes take the oldest: ok\n");
}

/* Open NAME as a slot: the status, ERR filled. */
static shm_status
attach_as_slot(const char *name, shm_error *err)
{
    test_slot o;
    shm_status st;

    snprintf(o.name, sizeof o.name, "%s", name);
    st = test_slot_open(&o, err);
    test_slot_close(&o);
    return st;
}

static int
detail_has(const shm_error *err, const char *text)
{
    return err->detail != NULL && strstr(err->detail, text) != NULL;
}

static void
test_refusals(void)
{
    test_slot t;
    test_ring r;
    slot_header saved;
    shm_error err;
    shm_segment seg;
    ring_t ch;
    const char *prefix = getenv("PYSHM_TEST_PREFIX");

    /* A channel opened as a slot, and a slot opened as a channel. */
    snprintf(r.name, sizeof r.name, "%sref_ch_%d", prefix != NULL ? prefix : "stest_",
             (int)getpid());
    CHECK(test_ring_create(&r, 4096, &err) == SHM_OK);
    CHECK(attach_as_slot(r.name, &err) == SHM_ECORRUPT);
    CHECK(detail_has(&err, "is a channel, not a slot"));
    test_ring_close(&r);
    (void)shm_segment_unlink(r.name, &err);
    make_slot(&t, "ref", 256, SLOT_CELLS);
    shm_segment_init(&seg);
    seg.keep_fd = 1;
    ring_init(&ch);
    CHECK(shm_segment_open(&seg, t.name, 0, &err) == SHM_OK);
    CHECK(ring_attach(&ch, &seg, t.name, &err) == SHM_ECORRUPT);
    CHECK(detail_has(&err, "is a slot, not a channel"));
    ring_detach(&ch);
    shm_segment_close(&seg);

    /* Every field of the constant line, one at a time. */
    memcpy(&saved, t.sl.hdr, sizeof saved);
#define REFUSED(field, value, text)                                 \
    do {                                                            \
        t.sl.hdr->field = (value);                                  \
        CHECK(attach_as_slot(t.name, &err) == SHM_ECORRUPT);        \
        CHECK(detail_has(&err, text));                              \
        memcpy(t.sl.hdr, &saved, sizeof saved);                     \
        CHECK(attach_as_slot(t.name, &err) == SHM_OK);              \
    } while (0)
    REFUSED(magic, 0, "no magic number");
    REFUSED(magic, 0x12345678u, "no slot magic number");
    REFUSED(version, 2, "another format version");
    REFUSED(version, 0, "another format version");
    REFUSED(header_size, 256, "bad size");
    REFUSED(cells, 1, "number of cells");
    REFUSED(cells, SLOT_MAX_CELLS + 1, "number of cells");
    REFUSED(cells, 100000, "number of cells");
    REFUSED(value_size, 0, "does not fit");
    REFUSED(value_size, 257 + 64, "does not fit");     /* the cells outgrow the segment */
    REFUSED(value_size, SLOT_MAX_SIZE + 1, "does not fit");
    REFUSED(value_size, UINT64_MAX, "does not fit");
    REFUSED(cell_size, slot_cell_size(256) + 64, "does not fit");
    REFUSED(cell_size, 0, "does not fit");
    REFUSED(sync_kind, sync_kind() == SYNC_KIND_LINUX ? SYNC_KIND_FALLBACK : SYNC_KIND_LINUX,
            "another wait/lock scheme");
    REFUSED(sync_domain, sync_domain() + 1, "PID namespace");
#undef REFUSED
    drop_slot(&t);

    /* A raw segment: zeros, too small. */
    name_for(t.name, sizeof t.name, "raw");
    shm_segment_init(&t.seg);
    CHECK(shm_segment_create(&t.seg, t.name, 100, 0600, 0, &err) == SHM_OK);
    CHECK(attach_as_slot(t.name, &err) == SHM_ECORRUPT && detail_has(&err, "too small"));
    shm_segment_close(&t.seg);
    (void)shm_segment_unlink(t.name, &err);
    CHECK(shm_segment_create(&t.seg, t.name, 4096, 0600, 0, &err) == SHM_OK);
    CHECK(attach_as_slot(t.name, &err) == SHM_ECORRUPT && detail_has(&err, "no magic"));
    shm_segment_close(&t.seg);
    (void)shm_segment_unlink(t.name, &err);
    /* Sizes: 0 and beyond the limit are refused before anything exists. */
    CHECK(slot_value_size(0, &err) == SHM_EVALUE);
    CHECK(slot_value_size(SLOT_MAX_SIZE + 1, &err) == SHM_EVALUE);
    CHECK(slot_value_size(1, &err) == SHM_OK);
    printf("foreign segments refused, each with its reason: ok\n");
}

/* ---- processes --------------------------------------------------------------- */

/* A writer child: COUNT self-describing values of random lengths. */
static void
writer_child(test_slot *t, uint64_t id, int count)
{
    uint32_t state = (uint32_t)(id * 7919u + 1u);
    uint64_t gen;
    int i;

    reopen_slot(t);
    for (i = 0; i < count; i++)
        CHECK(publish_value(&t->sl, value_len(rnd(&state), (size_t)t->sl.value_size), id, 30,
                            &gen) == SHM_OK);
    test_slot_close(t);
    _exit(0);
}

/* A reader child: reads until the generation reaches LAST; every read
   whole, generations never going back; exits 0 when all held. */
static void
reader_child(test_slot *t, uint64_t last, int writers)
{
    unsigned char *buf;
    size_t len;
    uint64_t gen, prev = 0, writer;
    shm_error err;
    long reads = 0;

    int64_t give_up = slot_in_seconds(300);

    reopen_slot(t);
    buf = malloc((size_t)t->sl.value_size);
    CHECK(buf != NULL);
    do {
        CHECK(sync_now_ns() < give_up);     /* the writers never got there */
        CHECK(slot_read(&t->sl, buf, (size_t)t->sl.value_size, &len, &gen, &err) == SHM_OK);
        CHECK(gen >= prev);
        if (gen > 0) {
            CHECK(value_ok(buf, len, gen, &writer));
            CHECK(writer < (uint64_t)writers);
        }
        prev = gen;
        reads++;
    } while (gen < last);
    CHECK(reads > 0);
    free(buf);
    test_slot_close(t);
    _exit(0);
}

static void
test_writers_and_readers(uint32_t cells, size_t value_size)
{
    enum { WRITERS = 2, READERS = 3, PER = 20000 };
    test_slot t;
    pid_t pids[WRITERS + READERS];
    unsigned char *buf;
    size_t len;
    uint64_t gen;
    shm_error err;
    int i;

    make_slot(&t, "wr", value_size, cells);
    for (i = 0; i < READERS; i++) {
        pids[WRITERS + i] = fork();
        CHECK(pids[WRITERS + i] >= 0);
        if (pids[WRITERS + i] == 0)
            reader_child(&t, (uint64_t)WRITERS * PER, WRITERS);
    }
    for (i = 0; i < WRITERS; i++) {
        pids[i] = fork();
        CHECK(pids[i] >= 0);
        if (pids[i] == 0)
            writer_child(&t, (uint64_t)i, PER);
    }
    for (i = 0; i < WRITERS + READERS; i++)
        CHECK(reap(pids[i]) == 0);
    /* The lock serialised the writers: every publish got its own generation. */
    CHECK(slot_generation(&t.sl) == (uint64_t)WRITERS * PER);
    buf = malloc(value_size);
    CHECK(buf != NULL);
    CHECK(slot_read(&t.sl, buf, value_size, &len, &gen, &err) == SHM_OK);
    CHECK(gen == (uint64_t)WRITERS * PER && value_ok(buf, len, gen, NULL));
    free(buf);
    drop_slot(&t);
    printf("%d writers, %d readers, %u cells of %zu bytes: no read torn, %d generations: ok\n",
           WRITERS, READERS, cells, value_size, WRITERS * PER);
}

/*
 * The write lock serialises writers: writer processes started together,
 * publishing as fast as they can, each counting what publish returned.
 * Every generation is handed out once (checked in a shared table: each
 * writer marks the generations it got), and the last is the total.
 */
static void
test_write_lock(void)
{
    enum { WRITERS = 3, PER = 30000 };
    test_slot t, table;
    pid_t pids[WRITERS];
    unsigned char *seen;
    uint64_t gen;
    int fds[2], i, k;
    char go = 'g';

    make_slot(&t, "lck", 64, SLOT_CELLS);
    /* A plain segment for the table: one byte per generation. */
    name_for(table.name, sizeof table.name, "lcktab");
    shm_segment_init(&table.seg);
    {
        shm_error err;
        CHECK(shm_segment_create(&table.seg, table.name, WRITERS * PER + 1, 0600, 0, &err) ==
              SHM_OK);
    }
    seen = (unsigned char *)table.seg.addr;
    CHECK(pipe(fds) == 0);
    for (i = 0; i < WRITERS; i++) {
        pids[i] = fork();
        CHECK(pids[i] >= 0);
        if (pids[i] == 0) {
            char c;
            close(fds[1]);
            reopen_slot(&t);
            CHECK(read(fds[0], &c, 1) == 1);    /* all start together */
            for (k = 0; k < PER; k++) {
                publish_ok(&t.sl, "x", 1, &gen);
                CHECK(gen >= 1 && gen <= WRITERS * PER);
                CHECK(__atomic_fetch_add(&seen[gen], 1, __ATOMIC_RELAXED) == 0);
            }
            _exit(0);
        }
    }
    close(fds[0]);
    for (i = 0; i < WRITERS; i++)
        CHECK(write(fds[1], &go, 1) == 1);
    close(fds[1]);
    for (i = 0; i < WRITERS; i++)
        CHECK(reap(pids[i]) == 0);
    CHECK(slot_generation(&t.sl) == (uint64_t)WRITERS * PER);
    for (k = 1; k <= WRITERS * PER; k++)
        CHECK(seen[k] == 1);
    shm_segment_close(&table.seg);
    {
        shm_error err;
        (void)shm_segment_unlink(table.name, &err);
    }
    drop_slot(&t);
    printf("%d writers at once: every generation handed out exactly once: ok\n", WRITERS);
}

/* Publishes for ever (until killed). */
static void
stream_forever(test_slot *t, uint64_t id)
{
    uint32_t state = (uint32_t)getpid();
    uint64_t gen;

    reopen_slot(t);
    for (;;)
        CHECK(publish_value(&t->sl, value_len(rnd(&state), (size_t)t->sl.value_size), id, 30,
                            &gen) == SHM_OK);
}

/* The newest value must be whole and not older than AFTER; its generation. */
static uint64_t
read_whole(test_slot *t, unsigned char *buf, uint64_t after)
{
    size_t len;
    uint64_t gen;
    shm_error err;

    CHECK(slot_read(&t->sl, buf, (size_t)t->sl.value_size, &len, &gen, &err) == SHM_OK);
    CHECK(gen >= after);
    CHECK(gen == 0 || value_ok(buf, len, gen, NULL));
    return gen;
}

static void
test_killed_writer(void)
{
    enum { SIZE = 60000 };
    static unsigned char buf[SIZE];
    test_slot t;
    uint64_t gen = 0;
    pid_t victim;
    int round, fds[2];
    slot_loan loan;
    shm_error err;
    shm_status st;
    char ch;

    make_slot(&t, "kil", SIZE, SLOT_CELLS);
    for (round = 0; round < 40; round++) {
        victim = fork();
        CHECK(victim >= 0);
        if (victim == 0)
            stream_forever(&t, 1);
        /* Let it publish a while (it may not even have attached yet). */
        sleep_us((long)(rnd(&rng_state) % 3000));
        kill(victim, SIGKILL);
        (void)reap(victim);
        /* The previous value at once, whole; then the next writer goes on
           (taking the lock over if the victim died holding it). */
        gen = read_whole(&t, buf, gen);
        CHECK(publish_value(&t.sl, value_len(rnd(&rng_state), SIZE), 7, 10, &gen) == SHM_OK);
        CHECK(read_whole(&t, buf, gen) == gen);
    }
    /* Killed for sure while holding the lock, half-way through a value. */
    for (round = 0; round < 3; round++) {
        CHECK(pipe(fds) == 0);
        victim = fork();
        CHECK(victim >= 0);
        if (victim == 0) {
            reopen_slot(&t);
            do {
                st = slot_reserve(&t.sl, slot_in_seconds(30), &loan, &err);
            } while (st == SHM_EINTR);
            CHECK(st == SHM_OK);
            memset(loan.data, 0xEE, SIZE / 2);
            CHECK(write(fds[1], "x", 1) == 1);
            for (;;)
                pause();
        }
        close(fds[1]);
        CHECK(read(fds[0], &ch, 1) == 1);
        close(fds[0]);
        kill(victim, SIGKILL);
        (void)reap(victim);
        CHECK(read_whole(&t, buf, gen) == gen);
        CHECK(publish_value(&t.sl, 4096, 8, 10, &gen) == SHM_OK);
        CHECK(read_whole(&t, buf, gen) == gen);
    }
    drop_slot(&t);
    printf("writers killed at random instants and holding the lock: ok\n");
}

static void
test_wait_wake(void)
{
    enum { WAITERS = 3 };
    test_slot t;
    pid_t pids[WAITERS];
    unsigned char buf[256];
    uint64_t gen;
    int fds[2], i;
    char ch;
    int64_t until;

    make_slot(&t, "wai", 256, SLOT_CELLS);
    CHECK(pipe(fds) == 0);
    for (i = 0; i < WAITERS; i++) {
        pids[i] = fork();
        CHECK(pids[i] >= 0);
        if (pids[i] == 0) {
            close(fds[0]);
            reopen_slot(&t);
            slot_set_spin(&t.sl, 0);        /* block at once */
            CHECK(write(fds[1], "r", 1) == 1);
            CHECK(wait_for(&t.sl, 0, 60, &gen) == SHM_OK);
            CHECK(gen >= 1 && read_whole(&t, buf, 1) >= 1);
            test_slot_close(&t);
            _exit(0);
        }
    }
    close(fds[1]);
    for (i = 0; i < WAITERS; i++)
        CHECK(read(fds[0], &ch, 1) == 1);
    close(fds[0]);
    if (sync_kind() == SYNC_KIND_LINUX) {
        /* They said "ready" just before waiting: wait until one registered
           (the waiter bit of the wait word), so the publish must wake it. */
        until = slot_in_seconds(60);
        while (!(t.sl.hdr->gen_seq & SYNC_WAITERS) && sync_now_ns() < until)
            sleep_us(1000);
        CHECK(t.sl.hdr->gen_seq & SYNC_WAITERS);
    }
    CHECK(publish_value(&t.sl, 128, 0, 10, &gen) == SHM_OK);
    for (i = 0; i < WAITERS; i++)
        CHECK(reap(pids[i]) == 0);
    drop_slot(&t);
    printf("waiters in other processes woken by a publish: ok\n");
}

/* ---- hostile bytes ------------------------------------------------------------ */

/* A value for a scribbled word: the edges, the plausible and the random. */
static uint64_t
garbage(const test_slot *t)
{
    uint64_t r = ((uint64_t)rnd(&rng_state) << 32) ^ rnd(&rng_state);

    switch (rnd(&rng_state) % 10) {
    case 0: return 0;
    case 1: return 1;
    case 2: return UINT64_MAX;
    case 3: return r & 0xff;
    case 4: return (uint64_t)1 << (rnd(&rng_state) % 64);
    case 5: return t->sl.value_size + (rnd(&rng_state) % 3) - 1;   /* lengths at the edge */
    case 6: return ((r % 50) << SLOT_GEN_SHIFT) | (rnd(&rng_state) % (t->sl.cells + 2));
    case 7: return SLOT_BUSY | (r % 50);
    case 8: return ((uint64_t)(r % 50) << 32) | (rnd(&rng_state) % 3);   /* marks */
    default: return r;
    }
}

/* Scribble one word (32 or 64 bits) somewhere in T's segment: a header
   field, a cell's state, length or marks, or any aligned place. */
static void
scribble(test_slot *t)
{
    unsigned char *base = (unsigned char *)t->sl.hdr;
    size_t total = (size_t)slot_segment_size(t->sl.value_size, t->sl.cells), off;
    uint64_t v = garbage(t);
    uint32_t cell = rnd(&rng_state) % t->sl.cells, v32 = (uint32_t)v;
    static const size_t fields32[] = {0, 4, 8, 12, 32, 36, 40, 72, 76, 128};
    static const size_t fields64[] = {16, 24, 64};

    switch (rnd(&rng_state) % 6) {
    case 0:
        memcpy(base + fields32[rnd(&rng_state) % 10], &v32, 4);
        return;
    case 1:
        memcpy(base + fields64[rnd(&rng_state) % 3], &v, 8);
        return;
    case 2: case 3:
        off = SLOT_HEADER_SIZE + (size_t)cell * (size_t)t->sl.cell_size +
              (size_t)(rnd(&rng_state) % 3 == 2 ? 64 : (rnd(&rng_state) % 2) * 8);
        memcpy(base + off, &v, 8);
        return;
    default:
        off = (rnd(&rng_state) % (total / 8)) * 8;
        memcpy(base + off, &v, 8);
        return;
    }
}

static int
known_status(shm_status st)
{
    return st == SHM_OK || st == SHM_ECORRUPT || st == SHM_ETIMEOUT || st == SHM_EVALUE ||
           st == SHM_EINTR;
}

/* Everything a user can do, on a slot that may be garbage: only the
   documented results, nothing written past a buffer, no crash, no hang. */
static void
use_hostile(test_slot *t)
{
    enum { GUARD = 64 };
    unsigned char *buf;
    size_t cap = (size_t)t->sl.value_size, len = 0, i;
    uint64_t gen = 0;
    slot_view view;
    slot_loan loan;
    slot_waiting w;
    shm_error err;
    shm_status st;

    buf = malloc(cap + GUARD);
    CHECK(buf != NULL);
    memset(buf + cap, 0x5A, GUARD);
    st = slot_read(&t->sl, buf, cap, &len, &gen, &err);
    CHECK(st == SHM_OK || st == SHM_ECORRUPT);
    CHECK(st != SHM_OK || len <= cap);
    for (i = 0; i < GUARD; i++)
        CHECK(buf[cap + i] == 0x5A);
    st = slot_read(&t->sl, buf, 8, &len, &gen, &err);
    CHECK(st == SHM_OK || st == SHM_ECORRUPT || st == SHM_EVALUE);
    st = slot_read_begin(&t->sl, &view, &err);
    CHECK(st == SHM_OK || st == SHM_ECORRUPT);
    if (st == SHM_OK) {
        CHECK(view.len <= cap);
        if (view.len > 0)
            memcpy(buf, view.data, view.len);   /* inside the mapping (ASan checks the rest) */
        (void)slot_read_end(&t->sl, &view);
    }
    (void)slot_generation(&t->sl);
    st = slot_publish(&t->sl, "hostile", 7, SLOT_NOWAIT, &gen, &err);
    CHECK(known_status(st));
    st = slot_reserve(&t->sl, SLOT_NOWAIT, &loan, &err);
    CHECK(known_status(st));
    if (st == SHM_OK) {
        CHECK(loan.cell < t->sl.cells);
        memset(loan.data, 0x11, cap);
        slot_abort(&t->sl, &loan);
    }
    w = slot_wait_until(slot_in_seconds(0.001));
    do {
        st = slot_wait(&t->sl, UINT64_MAX - 1, &w, &gen, &err);
    } while (st == SHM_EINTR);
    CHECK(st == SHM_ETIMEOUT || st == SHM_OK);
    free(buf);
}

static void
test_fuzz(void)
{
    enum { ROUNDS = 3000 };
    test_slot t, other;
    shm_error err;
    uint64_t gen;
    int round, k, n;

    make_slot(&t, "fuz", 200, SLOT_CELLS);
    snprintf(other.name, sizeof other.name, "%s", t.name);
    alarm(600);     /* a hang anywhere below ends the program with SIGALRM */
    for (round = 0; round < ROUNDS; round++) {
        /* A fresh, valid slot with some history, then a few scribbles. */
        CHECK(slot_format(t.sl.hdr, t.seg.size, 200, SLOT_CELLS, &err) == SHM_OK);
        n = (int)(rnd(&rng_state) % 6);
        for (k = 0; k < n; k++)
            CHECK(publish_value(&t.sl, value_len(rnd(&rng_state), 200), 0, 5, &gen) == SHM_OK);
        n = 1 + (int)(rnd(&rng_state) % 4);
        for (k = 0; k < n; k++)
            scribble(&t);
        /* The attached view (constant line cached at attach)... */
        use_hostile(&t);
        /* ...and a fresh opener, which checks the constant line. */
        if (test_slot_open(&other, &err) == SHM_OK)
            use_hostile(&other);
        else
            CHECK(err.status == SHM_ECORRUPT);
        test_slot_close(&other);
        /* A lock word left holding garbage would fail every later round. */
        t.sl.hdr->write_lock = 0;
    }
    alarm(0);
    drop_slot(&t);
    printf("fuzz: %d rounds of hostile bytes over header and cells: ok\n", ROUNDS);
}

/* A process scribbles on the cells while this one reads: every read ends,
   whole or ECORRUPT, within the read's patience. */
static void
test_scribbler(void)
{
    test_slot t;
    unsigned char buf[512];
    size_t len;
    uint64_t gen;
    shm_error err;
    shm_status st;
    pid_t pid;
    int64_t end;
    long ok = 0, corrupt = 0;

    make_slot(&t, "scr", 512, SLOT_CELLS);
    CHECK(publish_value(&t.sl, 256, 0, 5, &gen) == SHM_OK);
    pid = fork();
    CHECK(pid >= 0);
    if (pid == 0) {
        reopen_slot(&t);
        for (;;)
            scribble(&t);
    }
    alarm(120);
    end = slot_in_seconds(1);
    while (sync_now_ns() < end) {
        st = slot_read(&t.sl, buf, sizeof buf, &len, &gen, &err);
        CHECK(st == SHM_OK || st == SHM_ECORRUPT);
        if (st == SHM_OK)
            ok++;
        else
            corrupt++;
    }
    alarm(0);
    kill(pid, SIGKILL);
    (void)reap(pid);
    drop_slot(&t);
    printf("reads against a scribbling process: %ld ended, %ld of them ECORRUPT: ok\n",
           ok + corrupt, corrupt);
}

/* ---- the measurement ---------------------------------------------------------- */

/* Reads of the newest value for SECONDS, each checked whole: reads done,
   torn (should be none), and retries (copies a writer overwrote). */
static void
measure_reads(test_slot *t, double seconds, long *reads, long *torn, long *retries)
{
    unsigned char *buf = malloc((size_t)t->sl.value_size);
    slot_view view;
    shm_error err;
    int64_t end = slot_in_seconds(seconds);

    CHECK(buf != NULL);
    *reads = *torn = *retries = 0;
    while (sync_now_ns() < end) {
        CHECK(slot_read_begin(&t->sl, &view, &err) == SHM_OK);
        memcpy(buf, view.data, view.len);
        if (!slot_read_end(&t->sl, &view)) {
            (*retries)++;
            continue;
        }
        if (!value_ok(buf, view.len, view.generation, NULL))
            (*torn)++;
        (*reads)++;
    }
    free(buf);
}

static int
bench(double seconds)
{
    enum { SIZE = 65536 };
    static const uint32_t cells[] = {SLOT_CELLS, 2};
    test_slot t;
    uint64_t gen, before;
    long idle, busy, torn, retries, torn2, retries2;
    pid_t pid;
    int i;

    for (i = 0; i < 2; i++) {
        make_slot(&t, "bench", SIZE, cells[i]);
        CHECK(publish_value(&t.sl, SIZE, 0, 5, &gen) == SHM_OK);
        measure_reads(&t, seconds, &idle, &torn, &retries);
        pid = fork();
        CHECK(pid >= 0);
        if (pid == 0) {
            reopen_slot(&t);
            for (;;)
                CHECK(publish_value(&t.sl, SIZE, 1, 30, &gen) == SHM_OK);
        }
        while (slot_generation(&t.sl) < 2)
            sleep_us(100);
        before = slot_generation(&t.sl);
        measure_reads(&t, seconds, &busy, &torn2, &retries2);
        gen = slot_generation(&t.sl) - before;
        kill(pid, SIGKILL);
        (void)reap(pid);
        printf("bench: %u cells, 64 KiB value: idle writer %.0f reads/s; writer publishing "
               "flat out (%.0f publishes/s) %.0f reads/s, ratio %.2f; torn %ld, retries %ld "
               "(%.4f per read)\n", cells[i], idle / seconds, gen / seconds, busy / seconds,
               (double)busy / (double)(idle > 0 ? idle : 1), torn + torn2, retries + retries2,
               (double)(retries + retries2) / (double)(busy + idle > 0 ? busy + idle : 1));
        CHECK(torn + torn2 == 0);
        drop_slot(&t);
    }
    return 0;
}

int
main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IONBF, 0);
    printf("slot_test: wait scheme %s\n", sync_kind_name());
    if (argc >= 2 && strcmp(argv[1], "bench") == 0)
        return bench(argc >= 3 ? atof(argv[2]) : 2.0);
    test_basics();
    test_marks();
    test_refusals();
    test_write_lock();
    test_writers_and_readers(SLOT_CELLS, 4096);
    test_writers_and_readers(2, 1024);
    test_killed_writer();
    test_wait_wake();
    test_fuzz();
    test_scribbler();
    printf("all passed\n");
    return 0;
}
