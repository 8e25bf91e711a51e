/*
 * device.c -- a native program on the other end of a Python test harness:
 * a simulated positioning axis that publishes its state (a C struct)
 * through a pyshm slot and answers commands on pyshm channels.  The same
 * file builds on Linux, macOS and Windows, with one command from the folder
 * that `python -c "import pyshm; print(pyshm.get_include())"` prints ($INC):
 *
 *     cc device.c "$INC/pyshm.c" -I "$INC" -pthread -o device
 *     x86_64-w64-mingw32-gcc device.c "$INC/pyshm.c" -I "$INC" -o device.exe
 *
 * Run:  device NAME [PERIOD_MS]
 *
 *   NAME          a slot holding struct device_state, the latest state,
 *                 published once per step (every PERIOD_MS, default 10) and
 *                 after each command
 *   NAME-cmd      a channel of commands, one text command per message:
 *                   move X      go to position X (mm)
 *                   speed V     move at most V mm per step (V > 0)
 *                   label TEXT  name the axis (at most 15 bytes)
 *                   stop        stay where it is now
 *                   quit        answer "bye", remove the names, exit 0
 *   NAME-reply    a channel of answers, one per command, in order: "ok", or
 *                 "error " and why (the state's error field says which)
 *
 * The state is published before the answer is sent, so whoever receives
 * the answer and then reads the slot sees the command's effect.  A reader
 * never sees half a state: every read of the slot returns one whole
 * struct as some publish wrote it (see examples/README.md for what a raw
 * mapping would give instead).
 *
 * The program makes its names (or opens them, when a previous run left
 * them), prints one line when it is ready and runs until "quit".  Exit
 * status 0 after "quit", 1 when a pyshm call fails (its message on stderr),
 * 2 for a bad command line.
 */
#define _POSIX_C_SOURCE 200809L     /* clock_gettime under -std=c99 */

#include "pyshm.h"

#include <stdint.h>     /* uint64_t, int32_t */
#include <stdio.h>      /* printf, fprintf, snprintf */
#include <stdlib.h>     /* strtod, strtol, malloc, free */
#include <string.h>     /* memset, memcpy, strlen, strncmp */

#ifdef _WIN32
#  include <windows.h>  /* QueryPerformanceCounter: the step clock */
#else
#  include <time.h>     /* clock_gettime(CLOCK_MONOTONIC): the step clock */
#endif

/*
 * What the slot holds.  Fixed-width fields, each aligned to its size, so
 * the layout is the same with every compiler pyshm supports and a Python
 * ctypes.Structure with the same fields in the same order matches it
 * (examples/test_device.py).  64 bytes.
 */
typedef struct device_state {
    uint64_t step;          /* steps simulated so far */
    uint64_t commands;      /* commands answered so far */
    double position;        /* where the axis is, mm */
    double target;          /* where it is going, mm */
    double speed;           /* mm per step, > 0 */
    int32_t moving;         /* 1 while position != target, else 0 */
    int32_t error;          /* the ERR_* of the last command refused, 0 if none yet */
    char label[16];         /* set by "label", NUL-padded */
} device_state;

/* The layout promise above, checked by the compiler. */
typedef char device_state_is_64_bytes[sizeof(device_state) == 64 ? 1 : -1];

enum { ERR_UNKNOWN = 1, ERR_NUMBER = 2, ERR_SPEED = 3, ERR_LABEL = 4 };

#define SUFFIX_MAX 8        /* room for "-reply" and the NUL */

/* Seconds on a clock that only moves forward. */
static double
now(void)
{
#ifdef _WIN32
    LARGE_INTEGER t, f;

    QueryPerformanceCounter(&t);
    QueryPerformanceFrequency(&f);
    return (double)t.QuadPart / (double)f.QuadPart;
#else
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
#endif
}

/* One step of the simulation: the axis moves towards its target by at most
   speed. */
static void
step(device_state *st)
{
    double d = st->target - st->position;

    st->step++;
    if (d <= st->speed && d >= -st->speed)
        st->position = st->target;
    else
        st->position += d > 0 ? st->speed : -st->speed;
    st->moving = st->position != st->target;
}

/* A number that ends the command: X of "move X". */
static int
parse_number(const char *text, double *out)
{
    char *end;
    double x = strtod(text, &end);

    if (end == text || *end != '\0' || !(x == x) || x > 1e300 || x < -1e300)
        return 0;       /* empty, trailing junk, NaN or infinite */
    *out = x;
    return 1;
}

/* Refuse a command: ST's error is CODE, the answer "error " and WHY. */
static void
refuse(device_state *st, int code, char *answer, size_t size, const char *why,
       const char *what)
{
    st->error = code;
    snprintf(answer, size, "error %s%.60s", why, what);
}

/* Carry out one command (NUL-terminated) on ST; the answer goes to ANSWER.
   Returns 1 for "quit". */
static int
handle(device_state *st, const char *cmd, char *answer, size_t size)
{
    double x;

    st->commands++;
    snprintf(answer, size, "ok");
    if (strncmp(cmd, "move ", 5) == 0) {
        if (parse_number(cmd + 5, &x))
            st->target = x;
        else
            refuse(st, ERR_NUMBER, answer, size, "not a number: ", cmd + 5);
    } else if (strncmp(cmd, "speed ", 6) == 0) {
        if (!parse_number(cmd + 6, &x))
            refuse(st, ERR_NUMBER, answer, size, "not a number: ", cmd + 6);
        else if (!(x > 0))
            refuse(st, ERR_SPEED, answer, size, "speed must be positive", "");
        else
            st->speed = x;
    } else if (strncmp(cmd, "label ", 6) == 0) {
        if (strlen(cmd + 6) >= sizeof st->label) {
            refuse(st, ERR_LABEL, answer, size, "label longer than 15 bytes", "");
        } else {
            memset(st->label, 0, sizeof st->label);
            memcpy(st->label, cmd + 6, strlen(cmd + 6));
        }
    } else if (strcmp(cmd, "stop") == 0) {
        st->target = st->position;
    } else if (strcmp(cmd, "quit") == 0) {
        snprintf(answer, size, "bye");
        return 1;
    } else {
        refuse(st, ERR_UNKNOWN, answer, size, "unknown command: ", cmd);
    }
    st->moving = st->position != st->target;
    return 0;
}

static int
fail(const char *what, const pyshm_error *err)
{
    fprintf(stderr, "device: %s: %s\n", what, err->message);
    return 1;
}

int
main(int argc, char **argv)
{
    char cmd_name[PYSHM_NAME_MAX + SUFFIX_MAX], reply_name[PYSHM_NAME_MAX + SUFFIX_MAX];
    char answer[128], *msg;
    const char *name;
    double period = 0.010, next, left;
    pyshm_error err;
    pyshm_slot *slot;
    pyshm_channel *cmd, *reply;
    device_state st;
    long long n;
    size_t max;
    int quit = 0;

    if (argc < 2 || argc > 3 || strlen(argv[1]) > PYSHM_NAME_MAX - SUFFIX_MAX) {
        fprintf(stderr, "usage: device NAME [PERIOD_MS]  (NAME: at most %d bytes)\n",
                PYSHM_NAME_MAX - SUFFIX_MAX);
        return 2;
    }
    name = argv[1];
    if (argc == 3) {
        period = strtol(argv[2], NULL, 10) / 1000.0;
        if (period <= 0) {
            fprintf(stderr, "device: PERIOD_MS must be a positive number of milliseconds\n");
            return 2;
        }
    }
    snprintf(cmd_name, sizeof cmd_name, "%s-cmd", name);
    snprintf(reply_name, sizeof reply_name, "%s-reply", name);

    /* Either kind of open: a run killed earlier may have left the names,
       and a new run goes on with them (the slot keeps its last state
       until the first publish of this run replaces it). */
    slot = pyshm_slot_open(name, PYSHM_OPEN_OR_CREATE, sizeof st, &err);
    if (slot == NULL)
        return fail(name, &err);
    cmd = pyshm_channel_open(cmd_name, PYSHM_OPEN_OR_CREATE, 4096, &err);
    if (cmd == NULL)
        return fail(cmd_name, &err);
    reply = pyshm_channel_open(reply_name, PYSHM_OPEN_OR_CREATE, 4096, &err);
    if (reply == NULL)
        return fail(reply_name, &err);
    /* A command as long as the channel takes, so that none is ever too big
       to receive (a message too big for the buffer would stay queued). */
    max = pyshm_channel_max_message(cmd);
    msg = malloc(max + 1);
    if (msg == NULL) {
        fprintf(stderr, "device: out of memory\n");
        return 1;
    }

    memset(&st, 0, sizeof st);
    st.speed = 1.0;
    memcpy(st.label, "axis", 4);
    if (pyshm_slot_publish(slot, &st, sizeof st, &err) != 0)
        return fail(name, &err);
    printf("device %s: state in slot %s, commands on %s, answers on %s\n", name, name,
           cmd_name, reply_name);
    fflush(stdout);     /* a pipe is fully buffered (Windows, Wine) */

    next = now() + period;
    while (!quit) {
        left = next - now();
        if (left <= 0) {
            step(&st);
            if (pyshm_slot_publish(slot, &st, sizeof st, &err) != 0)
                return fail(name, &err);
            next += period;
            if (next < now())   /* fell behind (a stopped process): no burst */
                next = now() + period;
            continue;
        }
        /* Wait for a command until the next step is due. */
        n = pyshm_channel_recv(cmd, msg, max, left, &err);
        if (n < 0) {
            if (err.code == PYSHM_ETIMEDOUT)
                continue;
            return fail(cmd_name, &err);
        }
        msg[n] = '\0';
        quit = handle(&st, msg, answer, sizeof answer);
        /* The state first, then the answer: an answer received means the
           command's effect can be read. */
        if (pyshm_slot_publish(slot, &st, sizeof st, &err) != 0)
            return fail(name, &err);
        if (pyshm_channel_send(reply, answer, strlen(answer), 5.0, &err) != 0)
            fprintf(stderr, "device: answer to %.60s not sent: %s\n", msg, err.message);
    }

    free(msg);
    pyshm_slot_close(slot);
    pyshm_channel_close(cmd);
    pyshm_channel_close(reply);
    /* POSIX names stay until removed; a Windows name goes with its last
       handle (there pyshm_unlink only checks the name). */
    pyshm_unlink(name, NULL);
    pyshm_unlink(cmd_name, NULL);
    pyshm_unlink(reply_name, NULL);
    return 0;
}
