/*
 * capi_peer -- a native program on the C API alone (pyshm.h + pyshm.c from
 * pyshm.get_include()), built the way a user builds one:
 *
 *     cc capi_peer.c "$INC/pyshm.c" -I "$INC" -pthread -o capi_peer
 *     x86_64-w64-mingw32-gcc capi_peer.c "$INC/pyshm.c" -I "$INC" -o capi_peer.exe
 *
 * Roles (the Python tests in tests/capi/ start it; the last line of every
 * role that checks something is "all passed" on success):
 *
 *   checks                       every bad input of the API: an error code and
 *                                a message, never a crash; "all passed"
 *   open KIND HOW NAME SIZE      open a slot or channel (HOW: open, create,
 *                                either); prints "opened SIZE" or
 *                                "error CODE MESSAGE"
 *   echo REQ REP                 answer every message on channel REQ with
 *                                "echo:" + it on channel REP, until "stop"
 *   recv NAME                    print "ready", block in pyshm_channel_recv
 *                                (no timeout), print "got MESSAGE"
 *   publish NAME SIZE COUNT [hold]
 *                                open (or create) a slot of SIZE bytes and
 *                                publish COUNT self-describing values (0: for
 *                                ever) as fast as it can; "ready" after the
 *                                first (the values: see fill() below); with
 *                                "hold", keep the slot open until stdin ends
 *                                (on Windows a name lives only while a handle
 *                                does)
 *   read NAME                    read the slot once: "value GEN LEN whole"
 *   wait NAME AFTER TIMEOUT      print "ready", wait for a generation > AFTER:
 *                                "generation G" or "error CODE MESSAGE"
 *   selftest                     checks, then the roles above between this
 *                                process and children of itself (for a run
 *                                under Wine without Python): "all passed"
 *
 * Output is flushed line by line (Wine's pipes are fully buffered).
 */
#include "pyshm.h"

#include <math.h>       /* NAN */
#include <stdio.h>      /* printf, fflush, snprintf */
#include <stdlib.h>     /* malloc, free, strtoull, atof, getenv */
#include <string.h>     /* memcmp, memcpy, memset, strcmp, strstr, strlen */

#ifdef _WIN32
#  include <windows.h>  /* CreateProcessA, GetCurrentProcessId (selftest only) */
#else
#  include <sys/wait.h> /* waitpid */
#  include <unistd.h>   /* fork, execv, getpid, pipe */
#endif

static int failures;

static void
say(const char *fmt, const char *a, long long b, const char *c)
{
    printf(fmt, a, b, c);
    fflush(stdout);
}

/* One check of the API: OK says whether it held; ERR (may be NULL) is the
   record of the calls checked, shown when the check failed. */
static void
check(int ok, const char *what, const pyshm_error *err)
{
    if (ok) {
        printf("ok   %s\n", what);
        fflush(stdout);
    } else {
        failures++;
        say("FAIL %s (last error %lld: %s)\n", what, err != NULL ? err->code : 0,
            err != NULL ? err->message : "");
    }
}

/* A check that a call failed as it should: the error is shown either way. */
static void
check_err(int ok, const char *what, const pyshm_error *err)
{
    if (!ok)
        failures++;
    say(ok ? "ok   %s -> %lld: %s\n" : "FAIL %s -> %lld: %s\n", what, err->code, err->message);
}

/* A failure with CODE and a non-empty message naming the thing, if any. */
static int
failed_with(const pyshm_error *err, int code)
{
    return err->code == code && err->message[0] != '\0' &&
           strlen(err->message) < sizeof err->message;
}

static void
wipe(pyshm_error *err)
{
    memset(err, 0x7f, sizeof *err);
    err->message[sizeof err->message - 1] = '\0';
}

/* A name of this run: PYSHM_TEST_PREFIX (a name of the pytest session, whose
   leftover check then sees ours) or "capi_", TAG, the process id. */
static void
run_name(char *out, size_t size, const char *tag)
{
    const char *prefix = getenv("PYSHM_TEST_PREFIX");

    if (prefix == NULL)
        prefix = "capi_";
#ifdef _WIN32
    snprintf(out, size, "Local\\%s%s_%lu", prefix, tag, (unsigned long)GetCurrentProcessId());
#else
    snprintf(out, size, "%s%s_%ld", prefix, tag, (long)getpid());
#endif
}

/* ---- self-describing values ------------------------------------------------- */

/*
 * A value of LEN bytes (a multiple of 8, >= 16): word 0 its length, word 1
 * the writer's sequence number SEQ, word i >= 2 SEQ * K + i.  A torn read
 * (a mix of two values, or a length that is not the value's) fails
 * whole().  Python's test of this peer checks the same rule.
 */
#define K 0x9E3779B97F4A7C15ull

static void
fill(unsigned char *p, size_t len, unsigned long long seq)
{
    unsigned long long w;
    size_t i;

    w = (unsigned long long)len;
    memcpy(p, &w, 8);
    memcpy(p + 8, &seq, 8);
    for (i = 2; i < len / 8; i++) {
        w = seq * K + i;
        memcpy(p + 8 * i, &w, 8);
    }
}

static int
whole(const unsigned char *p, size_t len)
{
    unsigned long long w, seq;
    size_t i;

    if (len < 16 || len % 8 != 0)
        return 0;
    memcpy(&w, p, 8);
    memcpy(&seq, p + 8, 8);
    if (w != (unsigned long long)len)
        return 0;
    for (i = 2; i < len / 8; i++) {
        memcpy(&w, p + 8 * i, 8);
        if (w != seq * K + i)
            return 0;
    }
    return 1;
}

/* ---- checks: every bad input ------------------------------------------------ */

static void
checks(void)
{
    char name[64], other[64], longname[300], buf[64];
    unsigned char big[256];
    pyshm_error err = {0, {0}};
    pyshm_options opt;
    pyshm_slot *s, *s2;
    pyshm_channel *c, *c2;
    unsigned long long gen;
    long long n;
    int i;
    static const char *const bad_names[] = {
        "", "a/b", "/lead", ".", "..", "\xff", "\xc0\xaf", "\xed\xa0\x80", "ok\xe2\x82", NULL,
    };

    run_name(name, sizeof name, "chk");
    run_name(other, sizeof other, "chk2");
    check(pyshm_version_number() == PYSHM_VERSION_NUMBER, "version number", NULL);

    /* Names: NULL, empty, '/', dots, bad UTF-8 (overlong, surrogate, cut),
       too long -- refused before anything is made. */
    wipe(&err);
    check_err(pyshm_slot_open(NULL, PYSHM_CREATE, 64, &err) == NULL &&
          failed_with(&err, PYSHM_EINVAL), "NULL name", &err);
    for (i = 0; bad_names[i] != NULL; i++) {
        wipe(&err);
        check_err(pyshm_slot_open(bad_names[i], PYSHM_CREATE, 64, &err) == NULL &&
              failed_with(&err, PYSHM_EINVAL), "bad name (slot)", &err);
        wipe(&err);
        check_err(pyshm_channel_open(bad_names[i], PYSHM_CREATE, 64, &err) == NULL &&
              failed_with(&err, PYSHM_EINVAL), "bad name (channel)", &err);
        wipe(&err);
        check_err(pyshm_unlink(bad_names[i], &err) == -1 && failed_with(&err, PYSHM_EINVAL),
              "bad name (unlink)", &err);
    }
    memset(longname, 'n', sizeof longname);
    longname[PYSHM_NAME_MAX + 1] = '\0';
    wipe(&err);
    check_err(pyshm_slot_open(longname, PYSHM_CREATE, 64, &err) == NULL &&
          failed_with(&err, PYSHM_EINVAL) && strstr(err.message, "too long") != NULL,
          "name too long", &err);
    check(pyshm_slot_open(NULL, PYSHM_CREATE, 64, NULL) == NULL, "NULL error record", NULL);

    /* HOW, sizes, modes. */
    wipe(&err);
    check_err(pyshm_slot_open(name, 7, 64, &err) == NULL && failed_with(&err, PYSHM_EINVAL),
          "bad how", &err);
    wipe(&err);
    check_err(pyshm_slot_open(name, PYSHM_CREATE, 0, &err) == NULL &&
          failed_with(&err, PYSHM_EINVAL), "slot size 0 on create", &err);
    if (sizeof(size_t) > 4) {
        wipe(&err);
        check_err(pyshm_slot_open(name, PYSHM_CREATE, (size_t)((1ull << 40) + 1), &err) == NULL &&
              failed_with(&err, PYSHM_EINVAL), "slot size above 1 TiB", &err);
    }
    wipe(&err);
    check_err(pyshm_channel_open(name, PYSHM_CREATE, 8, &err) == NULL &&
          failed_with(&err, PYSHM_EINVAL), "channel capacity 8", &err);
    memset(&opt, 0, sizeof opt);
    opt.mode = -1;
    wipe(&err);
    check_err(pyshm_slot_open_ex(name, PYSHM_CREATE, 64, &opt, &err) == NULL &&
          failed_with(&err, PYSHM_EINVAL), "mode -1", &err);
    opt.mode = 010000;
    wipe(&err);
    check_err(pyshm_channel_open_ex(name, PYSHM_CREATE, 64, &opt, &err) == NULL &&
          failed_with(&err, PYSHM_EINVAL), "mode 0o10000", &err);
    wipe(&err);
    check_err(pyshm_slot_open(name, PYSHM_OPEN, 0, &err) == NULL && failed_with(&err, 2),
          "missing name (ENOENT / ERROR_FILE_NOT_FOUND)", &err);

    /* NULL handles. */
    wipe(&err);
    check_err(pyshm_slot_publish(NULL, "x", 1, &err) == -1 && failed_with(&err, PYSHM_EINVAL),
          "publish on NULL", &err);
    wipe(&err);
    check_err(pyshm_slot_read(NULL, buf, sizeof buf, &gen, &err) == -1 &&
          failed_with(&err, PYSHM_EINVAL), "read on NULL", &err);
    wipe(&err);
    check_err(pyshm_slot_wait(NULL, 0, 0, &gen, &err) == -1 && failed_with(&err, PYSHM_EINVAL),
          "wait on NULL", &err);
    wipe(&err);
    check_err(pyshm_channel_send(NULL, "x", 1, 0, &err) == -1 && failed_with(&err, PYSHM_EINVAL),
          "send on NULL", &err);
    wipe(&err);
    check_err(pyshm_channel_recv(NULL, buf, sizeof buf, 0, &err) == -1 &&
          failed_with(&err, PYSHM_EINVAL), "recv on NULL", &err);
    check(pyshm_slot_generation(NULL) == 0 && pyshm_slot_size(NULL) == 0 &&
          pyshm_channel_capacity(NULL) == 0 && pyshm_channel_max_message(NULL) == 0,
          "getters on NULL", NULL);
    pyshm_slot_close(NULL);
    pyshm_channel_close(NULL);
    check(1, "close(NULL)", NULL);

    /* A slot. */
    wipe(&err);
    s = pyshm_slot_open(name, PYSHM_CREATE, 64, &err);
    check(s != NULL && pyshm_slot_size(s) == 64, "slot created", &err);
    if (s == NULL)
        return;
    wipe(&err);
    check_err(pyshm_slot_open(name, PYSHM_CREATE, 64, &err) == NULL &&
          (failed_with(&err, 17) || failed_with(&err, 183)),
          "create of a taken name (EEXIST / ERROR_ALREADY_EXISTS)", &err);
    n = pyshm_slot_read(s, buf, sizeof buf, &gen, &err);
    check(n == 0 && gen == 0, "read before the first publish: 0, generation 0", NULL);
    wipe(&err);
    check_err(pyshm_slot_publish(s, NULL, 5, &err) == -1 && failed_with(&err, PYSHM_EINVAL),
          "publish of NULL data", &err);
    check(pyshm_slot_publish(s, NULL, 0, &err) == 0 && pyshm_slot_generation(s) == 1,
          "publish of nothing", &err);
    wipe(&err);
    check_err(pyshm_slot_publish(s, big, 65, &err) == -1 && failed_with(&err, PYSHM_ETOOBIG) &&
          pyshm_slot_generation(s) == 1, "publish of 65 bytes into 64: nothing published",
          &err);
    check(pyshm_slot_publish(s, "0123456789", 10, &err) == 0, "publish", &err);
    wipe(&err);
    check_err(pyshm_slot_read(s, NULL, 5, &gen, &err) == -1 && failed_with(&err, PYSHM_EINVAL),
          "read into NULL", &err);
    memset(buf, '#', sizeof buf);
    wipe(&err);
    gen = 0;
    check_err(pyshm_slot_read(s, buf, 9, &gen, &err) == -1 && failed_with(&err, PYSHM_ETOOBIG) &&
          gen == 2 && buf[0] == '#' && strstr(err.message, "10 bytes") != NULL,
          "read into 9 bytes: too big, nothing copied", &err);
    n = pyshm_slot_read(s, buf, 10, &gen, &err);
    check(n == 10 && gen == 2 && memcmp(buf, "0123456789", 10) == 0, "read", &err);
    n = pyshm_slot_read(s, buf, 10, NULL, &err);
    check(n == 10, "read without a generation", &err);
    wipe(&err);
    check_err(pyshm_slot_wait(s, 0, NAN, &gen, &err) == -1 && failed_with(&err, PYSHM_EINVAL),
          "wait with a NaN timeout", &err);
    wipe(&err);
    check_err(pyshm_slot_wait(s, 2, 0, &gen, &err) == -1 && failed_with(&err, PYSHM_ETIMEDOUT),
          "wait, timeout 0", &err);
    wipe(&err);
    check_err(pyshm_slot_wait(s, 2, 0.02, &gen, &err) == -1 && failed_with(&err, PYSHM_ETIMEDOUT),
          "wait, timeout 0.02", &err);
    check(pyshm_slot_wait(s, 1, -1, &gen, &err) == 0 && gen == 2, "wait for a newer one",
          &err);
    wipe(&err);
    check_err(pyshm_channel_open(name, PYSHM_OPEN, 0, &err) == NULL &&
          failed_with(&err, PYSHM_EPROTOCOL) &&
          strstr(err.message, "is a slot, not a channel") != NULL,
          "a slot opened as a channel", &err);
    wipe(&err);
    check_err(pyshm_slot_open(name, PYSHM_OPEN_OR_CREATE, 65, &err) == NULL &&
          failed_with(&err, PYSHM_EINVAL), "open-or-create of a smaller slot", &err);
    s2 = pyshm_slot_open(name, PYSHM_OPEN_OR_CREATE, 64, &err);
    check(s2 != NULL && pyshm_slot_generation(s2) == 2, "open-or-create of the same size",
          &err);
    pyshm_slot_close(s2);
    s2 = pyshm_slot_open(name, PYSHM_OPEN, 0, &err);
    check(s2 != NULL && pyshm_slot_size(s2) == 64, "open, size 0", &err);
    pyshm_slot_close(s2);
    pyshm_slot_close(s);
    check(pyshm_unlink(name, &err) == 0, "unlink", &err);
#ifndef _WIN32
    wipe(&err);
    check_err(pyshm_unlink(name, &err) == -1 && failed_with(&err, 2), "unlink twice (ENOENT)",
          &err);
#endif

    /* A channel. */
    c = pyshm_channel_open(other, PYSHM_CREATE, 64, &err);
    check(c != NULL && pyshm_channel_capacity(c) == 64 && pyshm_channel_max_message(c) == 56,
          "channel created", &err);
    if (c == NULL)
        return;
    wipe(&err);
    check_err(pyshm_slot_open(other, PYSHM_OPEN, 0, &err) == NULL &&
          failed_with(&err, PYSHM_EPROTOCOL) &&
          strstr(err.message, "is a channel, not a slot") != NULL,
          "a channel opened as a slot", &err);
    wipe(&err);
    check_err(pyshm_channel_open(other, PYSHM_OPEN_OR_CREATE, 128, &err) == NULL &&
          failed_with(&err, PYSHM_EINVAL), "open-or-create of a smaller channel", &err);
    wipe(&err);
    check_err(pyshm_channel_send(c, NULL, 3, 0, &err) == -1 && failed_with(&err, PYSHM_EINVAL),
          "send of NULL data", &err);
    wipe(&err);
    check_err(pyshm_channel_send(c, big, 57, 0, &err) == -1 && failed_with(&err, PYSHM_ETOOBIG),
          "send of 57 bytes into 56", &err);
    wipe(&err);
    check_err(pyshm_channel_send(c, "x", 1, NAN, &err) == -1 && failed_with(&err, PYSHM_EINVAL),
          "send with a NaN timeout", &err);
    wipe(&err);
    check_err(pyshm_channel_recv(c, buf, sizeof buf, 0, &err) == -1 &&
          failed_with(&err, PYSHM_ETIMEDOUT), "recv from an empty channel, timeout 0", &err);
    wipe(&err);
    check_err(pyshm_channel_recv(c, buf, sizeof buf, 0.02, &err) == -1 &&
          failed_with(&err, PYSHM_ETIMEDOUT), "recv from an empty channel, timeout 0.02",
          &err);
    check(pyshm_channel_send(c, "hello there", 11, 0, &err) == 0, "send", &err);
    wipe(&err);
    check_err(pyshm_channel_recv(c, NULL, 4, 0, &err) == -1 && failed_with(&err, PYSHM_EINVAL),
          "recv into NULL", &err);
    memset(buf, '#', sizeof buf);
    wipe(&err);
    check_err(pyshm_channel_recv(c, buf, 10, 0, &err) == -1 && failed_with(&err, PYSHM_ETOOBIG) &&
          buf[0] == '#' && strstr(err.message, "11 bytes") != NULL,
          "recv into 10 bytes: too big, stays queued", &err);
    n = pyshm_channel_recv(c, buf, 11, 0, &err);
    check(n == 11 && memcmp(buf, "hello there", 11) == 0, "recv of the message kept", &err);
    for (i = 0; pyshm_channel_send(c, big, 24, 0, &err) == 0; i++)
        ;
    check_err(i == 2 && failed_with(&err, PYSHM_ETIMEDOUT), "send into a full channel, timeout 0",
          &err);
    c2 = pyshm_channel_open(other, PYSHM_OPEN, 0, &err);
    check(c2 != NULL && pyshm_channel_recv(c2, big, sizeof big, 1, &err) == 24,
          "a second handle receives", &err);
    pyshm_channel_close(c2);
    pyshm_channel_close(c);
    check(pyshm_unlink(other, &err) == 0, "unlink the channel", &err);
}

/* ---- roles ------------------------------------------------------------------ */

static int
how_of(const char *word)
{
    if (strcmp(word, "create") == 0)
        return PYSHM_CREATE;
    if (strcmp(word, "either") == 0)
        return PYSHM_OPEN_OR_CREATE;
    if (strcmp(word, "open") == 0)
        return PYSHM_OPEN;
    return 99;
}

static int
role_open(const char *kind, const char *how, const char *name, const char *size)
{
    pyshm_error err = {0, {0}};
    size_t n = (size_t)strtoull(size, NULL, 10);

    if (strcmp(kind, "slot") == 0) {
        pyshm_slot *s = pyshm_slot_open(name, how_of(how), n, &err);
        if (s != NULL) {
            printf("opened %llu\n", (unsigned long long)pyshm_slot_size(s));
            pyshm_slot_close(s);
            return 0;
        }
    } else {
        pyshm_channel *c = pyshm_channel_open(name, how_of(how), n, &err);
        if (c != NULL) {
            printf("opened %llu\n", (unsigned long long)pyshm_channel_capacity(c));
            pyshm_channel_close(c);
            return 0;
        }
    }
    printf("error %d %s\n", err.code, err.message);
    return 1;
}

static int
role_echo(const char *req_name, const char *rep_name)
{
    pyshm_error err = {0, {0}};
    pyshm_channel *req = pyshm_channel_open(req_name, PYSHM_OPEN, 0, &err), *rep;
    unsigned char *buf, *out;
    size_t max;
    long long n;

    if (req == NULL) {
        printf("error %d %s\n", err.code, err.message);
        return 1;
    }
    rep = pyshm_channel_open(rep_name, PYSHM_OPEN, 0, &err);
    if (rep == NULL) {
        printf("error %d %s\n", err.code, err.message);
        return 1;
    }
    max = pyshm_channel_max_message(req);
    buf = malloc(max + 1);
    out = malloc(max + 6);
    if (buf == NULL || out == NULL)
        return 1;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        n = pyshm_channel_recv(req, buf, max, 60, &err);
        if (n < 0) {
            printf("error %d %s\n", err.code, err.message);
            return 1;
        }
        if (n == 4 && memcmp(buf, "stop", 4) == 0)
            break;
        memcpy(out, "echo:", 5);
        memcpy(out + 5, buf, (size_t)n);
        if (pyshm_channel_send(rep, out, (size_t)n + 5, 60, &err) != 0) {
            printf("error %d %s\n", err.code, err.message);
            return 1;
        }
    }
    free(buf);
    free(out);
    pyshm_channel_close(req);
    pyshm_channel_close(rep);
    printf("all passed\n");
    return 0;
}

static int
role_recv(const char *name)
{
    pyshm_error err = {0, {0}};
    pyshm_channel *c = pyshm_channel_open(name, PYSHM_OPEN, 0, &err);
    char buf[256];
    long long n;

    if (c == NULL) {
        printf("error %d %s\n", err.code, err.message);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    n = pyshm_channel_recv(c, buf, sizeof buf, -1, &err);     /* no timeout */
    if (n < 0) {
        printf("error %d %s\n", err.code, err.message);
        return 1;
    }
    printf("got %.*s\n", (int)n, buf);
    pyshm_channel_close(c);
    return 0;
}

static int
role_publish(const char *name, const char *size_word, const char *count_word, int hold)
{
    unsigned long long count = strtoull(count_word, NULL, 10), seq;
    pyshm_error err = {0, {0}};
    pyshm_slot *s = pyshm_slot_open(name, PYSHM_OPEN_OR_CREATE,
                                    (size_t)strtoull(size_word, NULL, 10), &err);
    unsigned char *buf;
    size_t size, len;
    unsigned state = 12345;

    if (s == NULL) {
        printf("error %d %s\n", err.code, err.message);
        return 1;
    }
    size = pyshm_slot_size(s) & ~(size_t)7;
    if (size < 16 || (buf = malloc(size)) == NULL)
        return 1;
    for (seq = 0; count == 0 || seq < count; seq++) {
        state = state * 1103515245u + 12345u;
        len = 16 + 8 * (size_t)((state >> 8) % ((size - 16) / 8 + 1));
        fill(buf, len, seq);
        if (pyshm_slot_publish(s, buf, len, &err) != 0) {
            printf("error %d %s\n", err.code, err.message);
            return 1;
        }
        if (seq == 0) {
            printf("ready\n");
            fflush(stdout);
        }
    }
    free(buf);
    printf("all passed\n");
    fflush(stdout);
    while (hold && getchar() != EOF)
        ;
    pyshm_slot_close(s);
    return 0;
}

static int
role_read(const char *name)
{
    pyshm_error err = {0, {0}};
    pyshm_slot *s = pyshm_slot_open(name, PYSHM_OPEN, 0, &err);
    unsigned long long gen;
    unsigned char *buf;
    long long n;

    if (s == NULL || (buf = malloc(pyshm_slot_size(s) + 1)) == NULL) {
        printf("error %d %s\n", err.code, err.message);
        return 1;
    }
    n = pyshm_slot_read(s, buf, pyshm_slot_size(s), &gen, &err);
    if (n < 0) {
        printf("error %d %s\n", err.code, err.message);
        return 1;
    }
    printf("value %llu %lld %s\n", gen, n, whole(buf, (size_t)n) ? "whole" : "torn");
    free(buf);
    pyshm_slot_close(s);
    return 0;
}

static int
role_wait(const char *name, const char *after, const char *timeout)
{
    pyshm_error err = {0, {0}};
    pyshm_slot *s = pyshm_slot_open(name, PYSHM_OPEN, 0, &err);
    unsigned long long gen;

    if (s == NULL) {
        printf("error %d %s\n", err.code, err.message);
        return 1;
    }
    printf("ready\n");
    fflush(stdout);
    if (pyshm_slot_wait(s, strtoull(after, NULL, 10), atof(timeout), &gen, &err) != 0) {
        printf("error %d %s\n", err.code, err.message);
        pyshm_slot_close(s);
        return 1;
    }
    printf("generation %llu\n", gen);
    pyshm_slot_close(s);
    return 0;
}

/* ---- selftest: the roles between processes, without Python ------------------ */

#ifdef _WIN32
typedef HANDLE child_t;

static int
spawn(const char *self, const char *args, child_t *child)
{
    char cmd[1024];
    STARTUPINFOA si;
    PROCESS_INFORMATION pi;

    snprintf(cmd, sizeof cmd, "\"%s\" %s", self, args);
    memset(&si, 0, sizeof si);
    si.cb = sizeof si;
    if (!CreateProcessA(NULL, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, &pi))
        return 0;
    CloseHandle(pi.hThread);
    *child = pi.hProcess;
    return 1;
}

static int
reap(child_t child)
{
    DWORD code = 99;

    if (WaitForSingleObject(child, 120000) != WAIT_OBJECT_0)
        TerminateProcess(child, 98);
    WaitForSingleObject(child, INFINITE);
    GetExitCodeProcess(child, &code);
    CloseHandle(child);
    return (int)code;
}
#else
typedef pid_t child_t;

static int
spawn(const char *self, const char *args, child_t *child)
{
    char copy[1024], *argv[8], *p;
    int n = 0;

    snprintf(copy, sizeof copy, "%s", args);
    argv[n++] = (char *)self;
    for (p = strtok(copy, " "); p != NULL && n < 7; p = strtok(NULL, " "))
        argv[n++] = p;
    argv[n] = NULL;
    fflush(stdout);
    *child = fork();
    if (*child < 0)
        return 0;
    if (*child == 0) {
        execv(self, argv);
        _exit(97);
    }
    return 1;
}

static int
reap(child_t child)
{
    int status = 0;

    if (waitpid(child, &status, 0) != child)
        return 99;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}
#endif

static void
selftest(const char *self)
{
    char req_name[64], rep_name[64], slot_name[64], args[256], msg[64], buf[128];
    pyshm_error err = {0, {0}};
    pyshm_channel *req, *rep;
    pyshm_slot *s;
    unsigned char *value;
    unsigned long long gen = 0, last = 0;
    child_t child;
    long long n;
    int i, ok = 1, reads = 0, torn = 0;

    checks();

    /* A native echo peer over two channels: messages in order. */
    run_name(req_name, sizeof req_name, "req");
    run_name(rep_name, sizeof rep_name, "rep");
    req = pyshm_channel_open(req_name, PYSHM_CREATE, 4096, &err);
    rep = pyshm_channel_open(rep_name, PYSHM_CREATE, 4096, &err);
    check(req != NULL && rep != NULL, "echo channels created", &err);
    if (req == NULL || rep == NULL)
        return;
    snprintf(args, sizeof args, "echo %s %s", req_name, rep_name);
    check(spawn(self, args, &child), "echo child started", NULL);
    for (i = 0; ok && i < 2000; i++) {
        snprintf(msg, sizeof msg, "message %d", i);
        ok = pyshm_channel_send(req, msg, strlen(msg), 60, &err) == 0;
        n = ok ? pyshm_channel_recv(rep, buf, sizeof buf, 60, &err) : -1;
        ok = n == (long long)strlen(msg) + 5 && memcmp(buf, "echo:", 5) == 0 &&
             memcmp(buf + 5, msg, strlen(msg)) == 0;
    }
    check(ok, "2000 messages echoed in order", &err);
    check(pyshm_channel_send(req, "stop", 4, 60, &err) == 0 && reap(child) == 0,
          "echo child ends", &err);

    /* A receiver blocked with no timeout, woken by a send. */
    snprintf(args, sizeof args, "recv %s", req_name);
    check(spawn(self, args, &child), "blocked receiver started", NULL);
    check(pyshm_channel_send(req, "wake up", 7, 60, &err) == 0 && reap(child) == 0,
          "blocked receiver woken", &err);
    pyshm_channel_close(req);
    pyshm_channel_close(rep);
    pyshm_unlink(req_name, &err);
    pyshm_unlink(rep_name, &err);

    /* A writer process publishing flat out, read here: nothing torn. */
    run_name(slot_name, sizeof slot_name, "slot");
    s = pyshm_slot_open(slot_name, PYSHM_CREATE, 4096, &err);
    check(s != NULL, "slot created", &err);
    if (s == NULL)
        return;
    value = malloc(4096);
    snprintf(args, sizeof args, "publish %s 4096 20000", slot_name);
    check(value != NULL && spawn(self, args, &child), "writer started", NULL);
    while (value != NULL && last < 20000) {
        n = pyshm_slot_read(s, value, 4096, &gen, &err);
        if (n < 0 || gen < last) {
            ok = 0;
            break;
        }
        if (gen > 0) {
            reads++;
            torn += !whole(value, (size_t)n);
        }
        last = gen;
    }
    check(ok && torn == 0 && reads > 0, "a writer process read while it publishes: none torn",
          &err);
    check(reap(child) == 0, "writer ends", NULL);
    check(pyshm_slot_wait(s, 19999, 5, &gen, &err) == 0 && gen == 20000, "wait returns at once",
          &err);
    free(value);
    pyshm_slot_close(s);
    pyshm_unlink(slot_name, &err);
}

int
main(int argc, char **argv)
{
    const char *role = argc >= 2 ? argv[1] : "";

    if (strcmp(role, "checks") == 0 && argc == 2) {
        checks();
    } else if (strcmp(role, "selftest") == 0 && argc == 2) {
        selftest(argv[0]);
    } else if (strcmp(role, "open") == 0 && argc == 6) {
        return role_open(argv[2], argv[3], argv[4], argv[5]);
    } else if (strcmp(role, "echo") == 0 && argc == 4) {
        return role_echo(argv[2], argv[3]);
    } else if (strcmp(role, "recv") == 0 && argc == 3) {
        return role_recv(argv[2]);
    } else if (strcmp(role, "publish") == 0 && (argc == 5 ||
                                                 (argc == 6 && strcmp(argv[5], "hold") == 0))) {
        return role_publish(argv[2], argv[3], argv[4], argc == 6);
    } else if (strcmp(role, "read") == 0 && argc == 3) {
        return role_read(argv[2]);
    } else if (strcmp(role, "wait") == 0 && argc == 5) {
        return role_wait(argv[2], argv[3], argv[4]);
    } else {
        printf("usage: capi_peer checks | selftest | open KIND HOW NAME SIZE | echo REQ REP | "
               "recv NAME | publish NAME SIZE COUNT [hold] | read NAME | wait NAME AFTER TIMEOUT\n");
        return 2;
    }
    if (failures == 0)
        printf("all passed\n");
    else
        printf("%d check(s) failed\n", failures);
    fflush(stdout);
    return failures == 0 ? 0 : 1;
}
