/*
 * platform/segment.h -- the platform layer's contract for named
 * shared-memory segments.
 *
 * Owns: shm_segment and shm_segment_*, shm_page_size, the name type
 * shm_char and SHM_NAME_MAX.
 * May include: the C library and core/status.h.  No OS header (those are
 * in the implementation files), no Python.h.
 *
 * Never raises: every call returns a status and fills a shm_error record
 * (core/status.h) that the binding turns into a Python exception.  One
 * implementation file per OS family; the build groups of src/sources.txt
 * pick one:
 *
 *   segment_posix.c   shm_open / ftruncate / posix_fallocate / fstat / mmap
 *   segment_win32.c   CreateFileMappingW / OpenFileMappingW / MapViewOfFile
 *
 * Everything here is safe to call without the GIL: no allocation through the
 * Python allocators, no global state.
 */
#ifndef PYSHM_PLATFORM_SEGMENT_H
#define PYSHM_PLATFORM_SEGMENT_H

#include <stddef.h>     /* size_t */
#include <stdint.h>     /* intptr_t, int64_t */

#include "core/status.h"    /* shm_status, shm_error, shm_fail */

#ifdef _WIN32
#  include <wchar.h>    /* wchar_t names: the W family of the Win32 API */
typedef wchar_t shm_char;
#  define SHM_T(s) L##s
#else
typedef char shm_char;
#  define SHM_T(s) s
#endif

/*
 * A mapped segment.  Right after shm_segment_init() every field holds its
 * "invalid" sentinel, so shm_segment_close() is always safe to call.
 */
typedef struct {
    void *addr;         /* start of the view; NULL when not mapped */
    size_t size;        /* bytes usable through addr (see shm_segment_open) */
    intptr_t handle;    /* Windows: mapping HANDLE kept until close; POSIX: the
                           descriptor when keep_fd was set (else -1: it is
                           closed once mapped); whoever takes it over sets -1 */
    int readonly;       /* mapped without write access */
    int created;        /* this call created the name (vs. opened an existing one) */
    int keep_fd;        /* POSIX: set by the caller between shm_segment_init()
                           and create/open to keep the descriptor in handle
                           (channels: their lock liveness lives on the file) */
} shm_segment;

/* Flags for shm_segment_create(). */
#define SHM_EXIST_OK 0x1    /* open the existing segment instead of EEXIST */

/* Longest name accepted, in shm_char units, not counting the POSIX '/'. */
#define SHM_NAME_MAX 250

/*
 * What a caller may add to a create or an open (the _ex calls below).  Every
 * member may be NULL; the hooks are used only during the call.
 */
typedef struct {
    /* The contents of a new segment: called once on its fresh, zero-filled
       mapping (SIZE bytes at ADDR) before it is published, that is before
       anyone can open it where the OS allows (see shm_segment_appears_whole);
       a failure undoes the create. */
    shm_status (*format)(void *arg, void *addr, size_t size, shm_error *err);
    void *format_arg;
    /* A signal may have come: called when a system call was interrupted
       (EINTR), and between the pieces of a long one (posix_fallocate, which
       tmpfs no longer interrupts for signals that do not kill).  0 goes on
       (the interrupted call is made again); non-zero gives up -- the create
       or open then fails with SHM_EINTR and leaves nothing behind.  NULL:
       always go on.  The binding runs the Python signal handlers here (with
       the GIL), as CPython's own system call wrappers do. */
    int (*interrupted)(void *arg);
    void *interrupted_arg;
    /* POSIX opens: how long to wait, sleeping, while the segment has size 0
       (a creator that does not publish whole, between its shm_open and its
       ftruncate) before SHM_EVALUE; 0 (and no HOOKS): not at all. */
    int64_t empty_wait_ns;
} shm_hooks;

void shm_segment_init(shm_segment *seg);

/*
 * Create the segment NAME of exactly SIZE bytes (> 0), mapped read-write.
 * Exclusive unless SHM_EXIST_OK: then an existing segment is opened as with
 * shm_segment_open() and seg->created is 0.  Pages are reserved at create
 * time where the OS allows it (posix_fallocate; Windows commits page-file
 * backing by itself), so a full /dev/shm is an error here and never a SIGBUS
 * later.  HOOKS (may be NULL): see shm_hooks.  On failure nothing is left
 * behind: a name this call created is removed again.  MODE is the POSIX
 * permission set (ignored on Windows).
 */
shm_status shm_segment_create_ex(shm_segment *seg, const shm_char *name, size_t size,
                                 int mode, int flags, const shm_hooks *hooks, shm_error *err);

static inline shm_status
shm_segment_create(shm_segment *seg, const shm_char *name, size_t size, int mode, int flags,
                   shm_error *err)
{
    return shm_segment_create_ex(seg, name, size, mode, flags, NULL, err);
}

/*
 * Open the existing segment NAME.  seg->size is the OS's size: exact on
 * POSIX (fstat), page-rounded on Windows (VirtualQuery can see no more).
 * A POSIX segment of size 0 is SHM_EVALUE, after waiting for a size as
 * HOOKS says (empty_wait_ns).  HOOKS may be NULL; format is not used.
 */
shm_status shm_segment_open_ex(shm_segment *seg, const shm_char *name, int readonly,
                               const shm_hooks *hooks, shm_error *err);

static inline shm_status
shm_segment_open(shm_segment *seg, const shm_char *name, int readonly, shm_error *err)
{
    return shm_segment_open_ex(seg, name, readonly, NULL, err);
}

/*
 * Whether a new segment appears whole to openers: on Linux,
 * shm_segment_create_ex() publishes the name only once the segment is
 * sized, reserved and formatted (an O_TMPFILE file in /dev/shm, linked
 * into place), so an opener finds either no name or the finished segment.
 * Elsewhere (other POSIX systems, Windows) the name exists from the start:
 * an opener may see the segment with size 0 for a moment (POSIX;
 * shm_segment_open waits for it) or before its format hook has run (the
 * caller's to wait for, with shm_sleep_ns).
 */
int shm_segment_appears_whole(void);

/* Sleep about NS nanoseconds, for bounded waits on another process (a
   signal may end it early: ask the interrupted hook after it). */
void shm_sleep_ns(int64_t ns);

/* How long an opener waits for a creator that does not publish whole to
   size the segment (POSIX, empty_wait_ns) or to format it (a channel). */
#define SHM_CREATOR_WAIT_NS ((int64_t)1000000000)

/* Unmap and release every handle (a kept descriptor too).  Idempotent. */
void shm_segment_close(shm_segment *seg);

/*
 * Remove NAME so that no one else can open it; existing mappings stay valid.
 * Windows has no such call: a name lives until its last handle closes, so
 * this returns SHM_OK and does nothing there.
 */
shm_status shm_segment_unlink(const shm_char *name, shm_error *err);

/* The page size of this machine (mapping granularity for sizes). */
size_t shm_page_size(void);

#endif /* PYSHM_PLATFORM_SEGMENT_H */
