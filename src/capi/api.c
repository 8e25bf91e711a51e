/*
 * capi/api.c -- the public C API (pyshm.h) over the slot and channel cores
 * and the platform layer.
 *
 * Owns: every pyshm_* function of pyshm.h: checking the caller's
 * arguments, UTF-8 names (converted to shm_char), opening and formatting
 * segments, the blocking loops around the cores' slices, and turning a
 * shm_error into a pyshm_error with a sentence.
 * May include: pyshm.h, the core/ and platform/ headers, the C library;
 * <windows.h> on Windows (UTF-8 to UTF-16 names, system error texts).  No
 * Python.h.
 *
 * Compiled only inside the amalgamation pyshm.c (tools/amalgamate.py),
 * next to the generated pyshm.h that it includes; the Python extension
 * never builds it.
 *
 * Each handle is one allocation holding the mapping, the core's view and
 * the name (for messages); nothing changes in it after open, so any number
 * of threads may use it at once (the cores are written for that: the
 * binding shares them between threads too), until close.
 */
#include "pyshm.h"

#include <errno.h>      /* ENOMEM */
#include <stdarg.h>     /* va_list for messages */
#include <stdio.h>      /* vsnprintf, snprintf */
#include <stdlib.h>     /* malloc, free */
#include <string.h>     /* strlen, memcpy, strerror_r */

#ifdef _WIN32
#  include <windows.h>  /* MultiByteToWideChar, FormatMessageA */
#endif

#include "core/atomics.h"       /* at_load32: peeking at a header's magic */
#include "core/ring.h"          /* ring_*: channels */
#include "core/slot.h"          /* slot_*: slots */
#include "platform/segment.h"   /* shm_segment_*, shm_char, SHM_NAME_MAX */
#include "platform/sync.h"      /* sync_now_ns, SYNC_FOREVER */

/* The header's numbers are the cores': the generator copies them from
   there, and this refuses to compile if they ever differ. */
typedef char api_check_channel_format[PYSHM_CHANNEL_FORMAT == RING_VERSION ? 1 : -1];
typedef char api_check_slot_format[PYSHM_SLOT_FORMAT == SLOT_VERSION ? 1 : -1];
typedef char api_check_name_max[PYSHM_NAME_MAX == SHM_NAME_MAX ? 1 : -1];

struct pyshm_slot {
    slot_t sl;              /* must not move while attached (sync_handles) */
    shm_segment seg;
    char name[];            /* the UTF-8 name, for messages */
};

struct pyshm_channel {
    ring_t ch;              /* must not move while attached (sync_handles) */
    shm_segment seg;
    char name[];
};

unsigned long
pyshm_version_number(void)
{
    return PYSHM_VERSION_NUMBER;
}

/* ---- errors ---------------------------------------------------------------- */

/* The longest name prefix of a message, in bytes: the sentence must fit. */
#define API_NAME_SHOWN 64

/* Fill ERR (may be NULL) with CODE and "NAME: " + FMT.  A long name is cut
   (at a UTF-8 character boundary) and marked with "...". */
static void
api_set(pyshm_error *err, int code, const char *name, const char *fmt, ...)
{
    va_list ap;
    size_t n = 0, len;
    int w;

    if (err == NULL)
        return;
    err->code = code;
    err->message[0] = '\0';
    if (name != NULL) {
        len = strlen(name);
        if (len > API_NAME_SHOWN) {
            len = API_NAME_SHOWN;
            while (len > 0 && ((unsigned char)name[len] & 0xC0) == 0x80)
                len--;      /* not inside a character */
        }
        w = snprintf(err->message, sizeof err->message, "%.*s%s: ", (int)len, name,
                     len < strlen(name) ? "..." : "");
        n = w < 0 ? 0 : ((size_t)w < sizeof err->message ? (size_t)w : sizeof err->message - 1);
    }
    va_start(ap, fmt);
    (void)vsnprintf(err->message + n, sizeof err->message - n, fmt, ap);
    va_end(ap);
}

/* The OS's text for CODE into BUF (N bytes). */
static void
api_os_text(int code, char *buf, size_t n)
{
#ifdef _WIN32
    DWORD len = FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL,
                               (DWORD)code, 0, buf, (DWORD)n, NULL);

    /* The system's sentences end with ".\r\n". */
    while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' || buf[len - 1] == '.'))
        buf[--len] = '\0';
    if (len == 0)
        (void)snprintf(buf, n, "Windows error");
#elif defined(__GLIBC__) && defined(_GNU_SOURCE)
    /* glibc with _GNU_SOURCE has the GNU strerror_r: it returns the text,
       which may be a static string rather than BUF. */
    const char *text = strerror_r(code, buf, n);

    if (text != buf)
        (void)snprintf(buf, n, "%s", text);
#else
    /* The POSIX strerror_r (musl, macOS, the BSDs): 0 on success. */
    if (strerror_r(code, buf, n) != 0)
        (void)snprintf(buf, n, "OS error");
#endif
}

/* A core or platform failure as a pyshm_error about NAME. */
static void
api_fail(pyshm_error *err, const char *name, const shm_error *e)
{
    char text[160];

    switch (e->status) {
    case SHM_EOS:
        api_os_text(e->os_code, text, sizeof text);
        api_set(err, e->os_code, name, "%s: %s (error %d)", e->call != NULL ? e->call : "the OS",
                text, e->os_code);
        return;
    case SHM_ETIMEOUT:
        api_set(err, PYSHM_ETIMEDOUT, name, "%s", e->detail != NULL ? e->detail : "timed out");
        return;
    case SHM_ECORRUPT:
        api_set(err, PYSHM_EPROTOCOL, name, "%s",
                e->detail != NULL ? e->detail : "the shared memory breaks the protocol");
        return;
    default:    /* SHM_EVALUE; SHM_EINTR never leaves the loops below */
        api_set(err, PYSHM_EINVAL, name, "%s", e->detail != NULL ? e->detail : "bad argument");
        return;
    }
}

/* ---- names ------------------------------------------------------------------ */

/* 1 when the NUL-terminated S is valid UTF-8 (no overlong forms, no
   surrogates, nothing above U+10FFFF). */
static int
api_utf8_valid(const unsigned char *s)
{
    unsigned long cp;
    int more, i;

    while (*s != 0) {
        if (*s < 0x80) {
            s++;
            continue;
        }
        if (*s >= 0xC2 && *s <= 0xDF) {
            more = 1;
            cp = *s & 0x1Fu;
        } else if (*s >= 0xE0 && *s <= 0xEF) {
            more = 2;
            cp = *s & 0x0Fu;
        } else if (*s >= 0xF0 && *s <= 0xF4) {
            more = 3;
            cp = *s & 0x07u;
        } else {
            return 0;
        }
        for (i = 1; i <= more; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return 0;       /* a NUL ends up here too */
            cp = (cp << 6) | (s[i] & 0x3Fu);
        }
        if ((more == 2 && cp < 0x800) || (more == 3 && cp < 0x10000) || cp > 0x10FFFF ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        s += more + 1;
    }
    return 1;
}

/*
 * NAME as the platform layer wants it, into OUT (SHM_NAME_MAX + 1 units),
 * checked by the Python rules (binding/module.c, pyshm_name_from_object).
 * 0, or -1 with ERR filled.
 */
static int
api_name(const char *name, shm_char *out, pyshm_error *err)
{
    size_t len;

    if (name == NULL) {
        api_set(err, PYSHM_EINVAL, NULL, "name is NULL");
        return -1;
    }
    len = strlen(name);
    if (len == 0) {
        api_set(err, PYSHM_EINVAL, NULL, "name must not be empty");
        return -1;
    }
    if (!api_utf8_valid((const unsigned char *)name)) {
        api_set(err, PYSHM_EINVAL, NULL, "name is not valid UTF-8");
        return -1;
    }
    if (strchr(name, '/') != NULL) {
        api_set(err, PYSHM_EINVAL, name, "name must not contain '/' (give it without the "
                "leading '/': pyshm adds it on POSIX)");
        return -1;
    }
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) {
        api_set(err, PYSHM_EINVAL, name, "name must not be '.' or '..'");
        return -1;
    }
#ifdef _WIN32
    {
        /* Counts the NUL; valid UTF-8 was checked above. */
        int n = MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, name, -1, NULL, 0);
        if (n <= 0 || n - 1 > SHM_NAME_MAX) {
            api_set(err, PYSHM_EINVAL, name, "name is too long (at most %d characters)",
                    SHM_NAME_MAX);
            return -1;
        }
        if (MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, name, -1, out,
                                SHM_NAME_MAX + 1) != n) {
            api_set(err, (int)GetLastError(), name, "MultiByteToWideChar failed");
            return -1;
        }
    }
#else
    if (len > SHM_NAME_MAX) {
        api_set(err, PYSHM_EINVAL, name, "name is too long (at most %d bytes)", SHM_NAME_MAX);
        return -1;
    }
    memcpy(out, name, len + 1);
#endif
    return 0;
}

/* ---- timeouts ----------------------------------------------------------------- */

/* TIMEOUT in seconds as a deadline: SYNC_FOREVER when negative, 0 (one
   try) when 0.  0, or -1 with ERR for a NaN. */
static int
api_deadline(double timeout, const char *name, int64_t *deadline, pyshm_error *err)
{
    int64_t now;
    double ns;

    if (timeout != timeout) {
        api_set(err, PYSHM_EINVAL, name, "timeout is NaN");
        return -1;
    }
    if (timeout < 0) {
        *deadline = SYNC_FOREVER;
        return 0;
    }
    if (timeout == 0) {
        *deadline = 0;
        return 0;
    }
    now = sync_now_ns();
    ns = timeout * 1e9;
    *deadline = ns >= (double)(SYNC_FOREVER - now) ? SYNC_FOREVER : now + (int64_t)ns + 1;
    return 0;
}

/* ---- opening --------------------------------------------------------------------- */

/* What a new segment is formatted as (the format hook's argument). */
typedef struct {
    int is_slot;
    uint64_t size;          /* value size (slot) or capacity (channel), checked */
} api_kind;

static shm_status
api_format(void *arg, void *addr, size_t size, shm_error *e)
{
    const api_kind *k = (const api_kind *)arg;

    if (k->is_slot)
        return slot_format(addr, size, k->size, SLOT_CELLS, e);
    return ring_format(addr, size, k->size, e);
}

/* Magic and version of the header at SEG (0s when too small). */
static void
api_peek(const shm_segment *seg, uint32_t *magic, uint32_t *version)
{
    const uint32_t *words = (const uint32_t *)seg->addr;

    *magic = *version = 0;
    if (seg->size >= 8) {
        /* Acquire: the version was written before the magic. */
        *magic = at_load32(&words[0]);
        *version = at_load32_relaxed(&words[1]);
    }
}

/*
 * Map NAME (CNAME for the OS) for HOW, creating a segment of SEG_SIZE
 * formatted as KIND says; an existing one is waited for while its creator
 * may still be formatting it (where segments do not appear whole).  Then
 * check that it is of KIND's format version.  0, or -1 with ERR filled and
 * nothing left mapped or created.
 */
static int
api_map(shm_segment *seg, const shm_char *cname, const char *name, int how, uint64_t seg_size,
        api_kind *kind, int mode, pyshm_error *err)
{
    shm_hooks hooks;
    shm_error e;
    shm_status st;
    uint32_t magic, version, want_magic, want_version;
    int64_t give_up, pause = 10000;

    memset(&hooks, 0, sizeof hooks);
    hooks.format = api_format;
    hooks.format_arg = kind;
    /* Only pyshm makes slots and channels: where it publishes them whole,
       a size of 0 is final; elsewhere the creator may not have sized it. */
    hooks.empty_wait_ns = shm_segment_appears_whole() ? 0 : SHM_CREATOR_WAIT_NS;
    shm_segment_init(seg);
    seg->keep_fd = 1;       /* the lock liveness lives on the segment's file (Linux) */
    if (how == PYSHM_OPEN)
        st = shm_segment_open_ex(seg, cname, 0, &hooks, &e);
    else
        st = shm_segment_create_ex(seg, cname, (size_t)seg_size, mode,
                                   how == PYSHM_OPEN_OR_CREATE ? SHM_EXIST_OK : 0, &hooks, &e);
    if (st != SHM_OK) {
        api_fail(err, name, &e);
        return -1;
    }
    if (!seg->created && !shm_segment_appears_whole()) {
        give_up = sync_now_ns() + SHM_CREATOR_WAIT_NS;
        while (!slot_formatted(seg->addr, seg->size) && !ring_formatted(seg->addr, seg->size) &&
               sync_now_ns() < give_up) {
            shm_sleep_ns(pause);
            pause = pause * 2 > 10000000 ? 10000000 : pause * 2;
        }
    }
    /* A version mismatch names both versions (the cores' messages are
       static strings and name only their own). */
    api_peek(seg, &magic, &version);
    want_magic = kind->is_slot ? SLOT_MAGIC : RING_MAGIC;
    want_version = kind->is_slot ? SLOT_VERSION : RING_VERSION;
    if (magic == want_magic && version != want_version) {
        api_set(err, PYSHM_EPROTOCOL, name, "a pyshm %s of format version %lu; this library "
                "(pyshm %s) speaks version %lu", kind->is_slot ? "slot" : "channel",
                (unsigned long)version, PYSHM_VERSION, (unsigned long)want_version);
        return -1;      /* the caller unmaps (and removes what it created) */
    }
    return 0;
}

/* After a failed attach or check: unmap, and remove a name this call made. */
static void
api_unmap(shm_segment *seg, const shm_char *cname)
{
    int created = seg->created;
    shm_error ignored;

    shm_segment_close(seg);
    if (created)
        (void)shm_segment_unlink(cname, &ignored);
}

static int
api_mode(const pyshm_options *options, const char *name, int *mode, pyshm_error *err)
{
    *mode = 0600;
    if (options == NULL || options->mode == 0)
        return 0;
    if (options->mode < 0 || options->mode > 07777) {
        api_set(err, PYSHM_EINVAL, name, "mode must be permission bits (0 to 0o7777), not %d",
                options->mode);
        return -1;
    }
    *mode = options->mode;
    return 0;
}

static int
api_how(int how, const char *name, pyshm_error *err)
{
    if (how == PYSHM_OPEN || how == PYSHM_CREATE || how == PYSHM_OPEN_OR_CREATE)
        return 0;
    api_set(err, PYSHM_EINVAL, name, "how must be PYSHM_OPEN, PYSHM_CREATE or "
            "PYSHM_OPEN_OR_CREATE, not %d", how);
    return -1;
}

/* A handle: a struct of SIZE bytes whose flexible member at OFFSET (<=
   SIZE) holds NAME. */
static void *
api_alloc(size_t size, size_t offset, const char *name, pyshm_error *err)
{
    size_t len = strlen(name);
    char *p = (char *)malloc(size + len + 1);

    if (p == NULL) {
#ifdef _WIN32
        api_set(err, ERROR_NOT_ENOUGH_MEMORY, name, "out of memory");
#else
        api_set(err, ENOMEM, name, "out of memory");
#endif
        return NULL;
    }
    memset(p, 0, size);
    memcpy(p + offset, name, len + 1);
    return p;
}

pyshm_slot *
pyshm_slot_open_ex(const char *name, int how, size_t size, const pyshm_options *options,
                   pyshm_error *err)
{
    shm_char cname[SHM_NAME_MAX + 1];
    pyshm_slot *s;
    api_kind kind;
    shm_error e;
    int mode;

    if (api_name(name, cname, err) < 0 || api_how(how, name, err) < 0 ||
        api_mode(options, name, &mode, err) < 0)
        return NULL;
    kind.is_slot = 1;
    kind.size = (uint64_t)size;
    if (how != PYSHM_OPEN && slot_value_size(kind.size, &e) != SHM_OK) {
        api_set(err, PYSHM_EINVAL, name, "%s (got %llu)", e.detail, (unsigned long long)size);
        return NULL;
    }
    s = (pyshm_slot *)api_alloc(sizeof *s, offsetof(pyshm_slot, name), name, err);
    if (s == NULL)
        return NULL;
    slot_init(&s->sl);
    if (api_map(&s->seg, cname, name, how, slot_segment_size(kind.size, SLOT_CELLS), &kind,
                mode, err) < 0) {
        api_unmap(&s->seg, cname);
        free(s);
        return NULL;
    }
    if (slot_attach(&s->sl, &s->seg, cname, &e) != SHM_OK) {
        api_fail(err, name, &e);
        api_unmap(&s->seg, cname);
        free(s);
        return NULL;
    }
    if (how == PYSHM_OPEN_OR_CREATE && !s->seg.created && s->sl.value_size < kind.size) {
        api_set(err, PYSHM_EINVAL, name, "the slot that exists holds values of at most %llu "
                "bytes, less than the %llu asked for", (unsigned long long)s->sl.value_size,
                (unsigned long long)kind.size);
        pyshm_slot_close(s);
        return NULL;
    }
    return s;
}

pyshm_slot *
pyshm_slot_open(const char *name, int how, size_t size, pyshm_error *err)
{
    return pyshm_slot_open_ex(name, how, size, NULL, err);
}

pyshm_channel *
pyshm_channel_open_ex(const char *name, int how, size_t capacity, const pyshm_options *options,
                      pyshm_error *err)
{
    shm_char cname[SHM_NAME_MAX + 1];
    pyshm_channel *c;
    api_kind kind;
    shm_error e;
    uint64_t cap = 0;
    int mode;

    if (api_name(name, cname, err) < 0 || api_how(how, name, err) < 0 ||
        api_mode(options, name, &mode, err) < 0)
        return NULL;
    if (how != PYSHM_OPEN && ring_capacity((uint64_t)capacity, &cap, &e) != SHM_OK) {
        api_set(err, PYSHM_EINVAL, name, "%s (got %llu)", e.detail,
                (unsigned long long)capacity);
        return NULL;
    }
    kind.is_slot = 0;
    kind.size = cap;
    c = (pyshm_channel *)api_alloc(sizeof *c, offsetof(pyshm_channel, name), name, err);
    if (c == NULL)
        return NULL;
    ring_init(&c->ch);
    if (api_map(&c->seg, cname, name, how, ring_segment_size(cap), &kind, mode, err) < 0) {
        api_unmap(&c->seg, cname);
        free(c);
        return NULL;
    }
    if (ring_attach(&c->ch, &c->seg, cname, &e) != SHM_OK) {
        api_fail(err, name, &e);
        api_unmap(&c->seg, cname);
        free(c);
        return NULL;
    }
    if (how == PYSHM_OPEN_OR_CREATE && !c->seg.created && c->ch.capacity < cap) {
        api_set(err, PYSHM_EINVAL, name, "the channel that exists has a capacity of %llu "
                "bytes, less than the %llu asked for", (unsigned long long)c->ch.capacity,
                (unsigned long long)cap);
        pyshm_channel_close(c);
        return NULL;
    }
    return c;
}

pyshm_channel *
pyshm_channel_open(const char *name, int how, size_t capacity, pyshm_error *err)
{
    return pyshm_channel_open_ex(name, how, capacity, NULL, err);
}

int
pyshm_unlink(const char *name, pyshm_error *err)
{
    shm_char cname[SHM_NAME_MAX + 1];
    shm_error e;

    if (api_name(name, cname, err) < 0)
        return -1;
    if (shm_segment_unlink(cname, &e) != SHM_OK) {
        api_fail(err, name, &e);
        return -1;
    }
    return 0;
}

/* ---- slots ---------------------------------------------------------------------- */

static int
api_no_slot(const pyshm_slot *s, pyshm_error *err)
{
    if (s != NULL)
        return 0;
    api_set(err, PYSHM_EINVAL, NULL, "the slot handle is NULL");
    return -1;
}

int
pyshm_slot_publish(pyshm_slot *s, const void *data, size_t len, pyshm_error *err)
{
    uint64_t generation;
    shm_error e;
    shm_status st;

    if (api_no_slot(s, err) < 0)
        return -1;
    if (data == NULL && len > 0) {
        api_set(err, PYSHM_EINVAL, s->name, "data is NULL");
        return -1;
    }
    if ((uint64_t)len > s->sl.value_size) {
        api_set(err, PYSHM_ETOOBIG, s->name, "a value of %llu bytes is larger than the "
                "slot's size, %llu bytes: nothing published", (unsigned long long)len,
                (unsigned long long)s->sl.value_size);
        return -1;
    }
    /* Writers hold the lock only for a copy, and a dead holder's lock is
       taken over: waiting for it has an end. */
    do {
        st = slot_publish(&s->sl, data, len, SLOT_FOREVER, &generation, &e);
    } while (st == SHM_EINTR);
    if (st != SHM_OK) {
        api_fail(err, s->name, &e);
        return -1;
    }
    return 0;
}

long long
pyshm_slot_read(pyshm_slot *s, void *buf, size_t cap, unsigned long long *generation,
                pyshm_error *err)
{
    size_t len = 0;
    uint64_t gen = 0;
    shm_error e;
    shm_status st;

    if (api_no_slot(s, err) < 0)
        return -1;
    if (buf == NULL && cap > 0) {
        api_set(err, PYSHM_EINVAL, s->name, "buffer is NULL");
        return -1;
    }
    st = slot_read(&s->sl, buf, cap, &len, &gen, &e);
    if (st == SHM_EVALUE) {
        if (generation != NULL)
            *generation = gen;
        api_set(err, PYSHM_ETOOBIG, s->name, "the value is %llu bytes (generation %llu), the "
                "buffer holds %llu: nothing copied", (unsigned long long)len,
                (unsigned long long)gen, (unsigned long long)cap);
        return -1;
    }
    if (st != SHM_OK) {
        api_fail(err, s->name, &e);
        return -1;
    }
    if (generation != NULL)
        *generation = gen;
    return (long long)len;
}

unsigned long long
pyshm_slot_generation(pyshm_slot *s)
{
    return s == NULL ? 0 : (unsigned long long)slot_generation(&s->sl);
}

int
pyshm_slot_wait(pyshm_slot *s, unsigned long long after, double timeout,
                unsigned long long *generation, pyshm_error *err)
{
    slot_waiting w;
    uint64_t gen = 0;
    int64_t deadline;
    shm_error e;
    shm_status st;

    if (api_no_slot(s, err) < 0 || api_deadline(timeout, s->name, &deadline, err) < 0)
        return -1;
    w = slot_wait_until(deadline);
    do {
        st = slot_wait(&s->sl, (uint64_t)after, &w, &gen, &e);
    } while (st == SHM_EINTR);
    if (st != SHM_OK) {
        api_fail(err, s->name, &e);
        return -1;
    }
    if (generation != NULL)
        *generation = gen;
    return 0;
}

size_t
pyshm_slot_size(const pyshm_slot *s)
{
    return s == NULL ? 0 : (size_t)s->sl.value_size;
}

void
pyshm_slot_close(pyshm_slot *s)
{
    if (s == NULL)
        return;
    slot_detach(&s->sl);
    shm_segment_close(&s->seg);
    free(s);
}

/* ---- channels ------------------------------------------------------------------- */

static int
api_no_channel(const pyshm_channel *c, pyshm_error *err)
{
    if (c != NULL)
        return 0;
    api_set(err, PYSHM_EINVAL, NULL, "the channel handle is NULL");
    return -1;
}

int
pyshm_channel_send(pyshm_channel *c, const void *data, size_t len, double timeout,
                   pyshm_error *err)
{
    int64_t deadline;
    ring_wait w;
    shm_error e;
    shm_status st;

    if (api_no_channel(c, err) < 0)
        return -1;
    if (data == NULL && len > 0) {
        api_set(err, PYSHM_EINVAL, c->name, "data is NULL");
        return -1;
    }
    if ((uint64_t)len > ring_max_message(c->ch.capacity)) {
        api_set(err, PYSHM_ETOOBIG, c->name, "a message of %llu bytes is larger than the "
                "channel takes (at most %llu): nothing sent", (unsigned long long)len,
                (unsigned long long)ring_max_message(c->ch.capacity));
        return -1;
    }
    if (api_deadline(timeout, c->name, &deadline, err) < 0)
        return -1;
    if (deadline == 0) {
        st = ring_send(&c->ch, data, len, NULL, &e);
    } else {
        w = ring_wait_until(deadline);
        do {
            st = ring_send(&c->ch, data, len, &w, &e);
        } while (st == SHM_EINTR);
    }
    if (st != SHM_OK) {
        api_fail(err, c->name, &e);
        return -1;
    }
    return 0;
}

long long
pyshm_channel_recv(pyshm_channel *c, void *buf, size_t cap, double timeout, pyshm_error *err)
{
    int64_t deadline;
    ring_wait w;
    ring_msg msg;
    shm_error e;
    shm_status st;

    if (api_no_channel(c, err) < 0)
        return -1;
    if (buf == NULL && cap > 0) {
        api_set(err, PYSHM_EINVAL, c->name, "buffer is NULL");
        return -1;
    }
    if (api_deadline(timeout, c->name, &deadline, err) < 0)
        return -1;
    if (deadline == 0) {
        st = ring_recv_begin(&c->ch, NULL, &msg, &e);
    } else {
        w = ring_wait_until(deadline);
        do {
            st = ring_recv_begin(&c->ch, &w, &msg, &e);
        } while (st == SHM_EINTR);
    }
    if (st != SHM_OK) {
        api_fail(err, c->name, &e);
        return -1;
    }
    if (msg.len > cap) {
        ring_recv_abort(&c->ch);
        api_set(err, PYSHM_ETOOBIG, c->name, "the next message is %llu bytes, the buffer "
                "holds %llu: it stays queued", (unsigned long long)msg.len,
                (unsigned long long)cap);
        return -1;
    }
    ring_recv_commit(&c->ch, &msg, buf);
    return (long long)msg.len;
}

size_t
pyshm_channel_capacity(const pyshm_channel *c)
{
    return c == NULL ? 0 : (size_t)c->ch.capacity;
}

size_t
pyshm_channel_max_message(const pyshm_channel *c)
{
    return c == NULL ? 0 : (size_t)ring_max_message(c->ch.capacity);
}

void
pyshm_channel_close(pyshm_channel *c)
{
    if (c == NULL)
        return;
    ring_detach(&c->ch);
    shm_segment_close(&c->seg);
    free(c);
}
