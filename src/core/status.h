/*
 * core/status.h -- the status and error record that every C call of pyshm
 * returns and fills: platform (segments, sync), core (ring) and the binding,
 * which alone turns them into Python exceptions (binding/module.c,
 * pyshm_raise).
 *
 * Owns: shm_status, shm_error and the shm_fail / shm_fail_os /
 * shm_fail_os_detail helpers.
 * May include: the C library only.  Every other header of src/ may include
 * this one.
 */
#ifndef PYSHM_CORE_STATUS_H
#define PYSHM_CORE_STATUS_H

#include <stddef.h>     /* NULL */

/* Status of every platform and core call. */
typedef enum {
    SHM_OK = 0,
    SHM_EOS,        /* the OS refused: os_code holds errno / GetLastError() */
    SHM_EVALUE,     /* a bad argument; detail says which */
    SHM_ETIMEOUT,   /* a wait ran out */
    SHM_EINTR,      /* a wait was interrupted by a signal; the caller decides */
    SHM_ECORRUPT,   /* shared contents break the protocol (untrusted peer) */
} shm_status;

/*
 * What went wrong, filled by the failing call.  os_code is captured right at
 * the failing system call, before any cleanup can overwrite errno or the
 * thread's last-error value.  call and detail point to static strings.
 */
typedef struct {
    shm_status status;
    int os_code;            /* errno (POSIX) or GetLastError() (Windows); 0 if none */
    const char *call;       /* the failing system call, e.g. "shm_open"; or NULL */
    const char *detail;     /* human-readable reason for EVALUE/ECORRUPT; for EOS
                               (POSIX) the text to show instead of the OS's
                               strerror, when it says more; or NULL */
} shm_error;

/* Helpers for filling an shm_error; they return the status they set. */
static inline shm_status
shm_fail_os(shm_error *err, const char *call, int code)
{
    err->status = SHM_EOS;
    err->os_code = code;
    err->call = call;
    err->detail = NULL;
    return SHM_EOS;
}

/* The OS code CODE (the errno that fits best, which picks the Python
   exception) with DETAIL, a static text saying more than strerror would:
   "a FIFO (named pipe), not a shared-memory segment". */
static inline shm_status
shm_fail_os_detail(shm_error *err, const char *call, int code, const char *detail)
{
    shm_fail_os(err, call, code);
    err->detail = detail;
    return SHM_EOS;
}

static inline shm_status
shm_fail(shm_error *err, shm_status status, const char *detail)
{
    err->status = status;
    err->os_code = 0;
    err->call = NULL;
    err->detail = detail;
    return status;
}

#endif /* PYSHM_CORE_STATUS_H */
