/*
 * shmpeer -- a C peer for the interop tests, built on the platform layer
 * alone (src/platform/segment.h with the "posix" or "win32" group of
 * src/sources.txt; no Python).
 *
 *   shmpeer serve NAME SIZE TEXT   create NAME with SIZE bytes, write TEXT and
 *                                  a NUL at offset 0, print "ready", wait for
 *                                  one line on stdin, close, remove the name
 *                                  (where the OS has names to remove), exit 0
 *   shmpeer read NAME [REPLY]      open NAME, print the NUL-terminated text at
 *                                  offset 0; with REPLY, write REPLY and a NUL
 *                                  at offset 128
 *
 * Exit codes: 0 done, 1 an OS or value error (reported on stderr), 2 usage.
 */
#include "platform/segment.h"

#include <stdio.h>      /* printf, fgets, fprintf */
#include <stdlib.h>     /* strtoull */
#include <string.h>     /* memcpy, strlen */

#define REPLY_OFFSET 128

#ifdef _WIN32
#  include <windows.h>  /* WideCharToMultiByte */
#  include "win32_harness.h"  /* crash filter, wide argv helpers */
#  define ARGSTR(s) peer_utf8(s)
#  define ENTRY int wmain(int argc, wchar_t **argv)
#else
#  define ARGSTR(s) (s)
#  define ENTRY int main(int argc, char **argv)
#endif

static int
report(const char *what, const shm_error *err)
{
    if (err->status == SHM_EOS)
        fprintf(stderr, "shmpeer: %s: %s failed (OS error %d)\n", what,
                err->call ? err->call : "?", err->os_code);
    else
        fprintf(stderr, "shmpeer: %s: %s\n", what, err->detail ? err->detail : "error");
    return 1;
}

/* Copy TEXT and a NUL to OFFSET if they fit. */
static int
put_text(shm_segment *seg, size_t offset, const char *text)
{
    size_t len = strlen(text);

    if (offset > seg->size || len + 1 > seg->size - offset) {
        fprintf(stderr, "shmpeer: text of %zu bytes does not fit at offset %zu of %zu\n",
                len, offset, seg->size);
        return 1;
    }
    memcpy((char *)seg->addr + offset, text, len + 1);
    return 0;
}

static int
serve(const shm_char *name, const char *size_arg, const char *text)
{
    shm_segment seg;
    shm_error err;
    char line[256];
    char *end;
    unsigned long long size = strtoull(size_arg, &end, 0);
    int rc;

    if (*size_arg == '\0' || *end != '\0' || size == 0) {
        fprintf(stderr, "shmpeer: bad SIZE '%s'\n", size_arg);
        return 2;
    }
    shm_segment_init(&seg);
    if (shm_segment_create(&seg, name, (size_t)size, 0600, 0, &err) != SHM_OK)
        return report("create", &err);
    rc = put_text(&seg, 0, text);
    if (rc == 0) {
        printf("ready\n");
        fflush(stdout);
        (void)fgets(line, sizeof line, stdin);    /* EOF counts as the line */
    }
    shm_segment_close(&seg);
    if (shm_segment_unlink(name, &err) != SHM_OK && rc == 0)
        rc = report("unlink", &err);
    return rc;
}

static int
read_text(const shm_char *name, const char *reply)
{
    shm_segment seg;
    shm_error err;
    const char *base;
    size_t len = 0;
    int rc = 0;

    shm_segment_init(&seg);
    if (shm_segment_open(&seg, name, reply == NULL, &err) != SHM_OK)
        return report("open", &err);
    base = (const char *)seg.addr;
    while (len < seg.size && base[len] != '\0')   /* bounded: never past the mapping */
        len++;
    fwrite(base, 1, len, stdout);
    printf("\n");
    fflush(stdout);
    if (reply != NULL)
        rc = put_text(&seg, REPLY_OFFSET, reply);
    shm_segment_close(&seg);
    return rc;
}

ENTRY
{
#ifdef _WIN32
    harness_install_crash_filter();
#endif
    if (argc == 5 && strcmp(ARGSTR(argv[1]), "serve") == 0)
        return serve(argv[2], ARGSTR(argv[3]), ARGSTR(argv[4]));
    if ((argc == 3 || argc == 4) && strcmp(ARGSTR(argv[1]), "read") == 0)
        return read_text(argv[2], argc == 4 ? ARGSTR(argv[3]) : NULL);
    fprintf(stderr, "usage: shmpeer serve NAME SIZE TEXT | shmpeer read NAME [REPLY]\n");
    return 2;
}
