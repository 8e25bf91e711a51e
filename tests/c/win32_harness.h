/*
 * win32_harness.h -- small helpers for the C test programs built for Windows
 * (mingw-w64) and run under Wine or on Windows itself.  Test code only: the
 * library never includes this.
 *
 *   harness_install_crash_filter()  a crash ends the process with a non-zero
 *                                   code (Wine may otherwise report 0)
 *   peer_utf8(ws)                   a wide argv string as UTF-8 (leaked)
 *   CHECK(...), harness_finish()    count failures; print "all passed" last
 *   harness_spawn_self(), ...       start this program again as a child
 *   harness_main(...)               the whole wmain: parent or child role
 *
 * Every function is static inline so that a program pays only for what it
 * uses and -Wunused-function stays quiet.
 */
#ifndef PYSHM_WIN32_HARNESS_H
#define PYSHM_WIN32_HARNESS_H

#include <stdarg.h>     /* va_list for harness_say */
#include <stdio.h>      /* printf, setvbuf */
#include <stdlib.h>     /* malloc */
#include <string.h>     /* strlen, strchr */
#include <wchar.h>      /* wcslen, wcscmp, swprintf */
#include <windows.h>    /* SetUnhandledExceptionFilter, CreateProcessW, ... */

/* ---- crashes ------------------------------------------------------------ */

/*
 * The exit code of a crashed process: the exception code itself (so a parent
 * can tell an access violation, 0xC0000005, from anything else), unless its
 * low byte is 0 -- `wine prog.exe` returns the code modulo 256, and a crash
 * must never look like success there.
 */
static inline UINT
harness_crash_code(DWORD exception_code)
{
    return (exception_code & 0xFFu) != 0 ? exception_code : (exception_code | 0xFFu);
}

static inline LONG WINAPI
harness_crash_filter(EXCEPTION_POINTERS *info)
{
    static const char digits[] = "0123456789ABCDEF";
    char msg[] = "crash: unhandled exception 0x????????\r\n";
    char *hex = strchr(msg, '?');
    DWORD code = info->ExceptionRecord->ExceptionCode;
    DWORD written;
    int i;

    /* Avoid the CRT's stdio here: its locks may be held by the code that
       crashed.  Format by hand and use WriteFile, which takes none. */
    for (i = 0; i < 8; i++)
        hex[i] = digits[(code >> (28 - 4 * i)) & 0xFu];
    (void)WriteFile(GetStdHandle(STD_ERROR_HANDLE), msg, (DWORD)strlen(msg), &written, NULL);
    /* TerminateProcess rather than ExitProcess: no DLL detach code runs in a
       process whose state is unknown. */
    (void)TerminateProcess(GetCurrentProcess(), harness_crash_code(code));
    return EXCEPTION_EXECUTE_HANDLER;   /* not reached */
}

static inline void
harness_install_crash_filter(void)
{
    /* No "program has stopped working" dialog, no debugger start: a headless
       test run must end on its own ("SetErrorMode", "SetUnhandledExceptionFilter"). */
    (void)SetErrorMode(SEM_FAILCRITICALERRORS | SEM_NOGPFAULTERRORBOX);
    (void)SetUnhandledExceptionFilter(harness_crash_filter);
}

/* ---- arguments ---------------------------------------------------------- */

/* WS as UTF-8 in a buffer that is never freed (argv lives as long). */
static inline const char *
peer_utf8(const wchar_t *ws)
{
    int n = WideCharToMultiByte(CP_UTF8, 0, ws, -1, NULL, 0, NULL, NULL);
    char *s;

    if (n <= 0 || (s = malloc((size_t)n)) == NULL)
        return "";
    if (WideCharToMultiByte(CP_UTF8, 0, ws, -1, s, n, NULL, NULL) != n) {
        free(s);
        return "";
    }
    return s;
}

/* ---- checks and output -------------------------------------------------- */

static inline int *
harness_failures(void)
{
    static int failures;
    return &failures;
}

/* Call first in a test program: crash filter and unbuffered stdout, since
   Wine hands a pipe to stdout and the CRT buffers it fully (msvcrt has no
   line buffering); lines then appear in order with the child's lines. */
static inline void
harness_begin(void)
{
    harness_install_crash_filter();
    setvbuf(stdout, NULL, _IONBF, 0);
    setvbuf(stderr, NULL, _IONBF, 0);
}

static inline void
harness_say(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

static inline int
harness_check(int ok, const char *file, int line, const char *what)
{
    if (!ok) {
        ++*harness_failures();
        printf("FAIL %s:%d: %s\n", file, line, what);
        fflush(stdout);
    }
    return ok;
}

#define CHECK(cond) harness_check((cond) ? 1 : 0, __FILE__, __LINE__, #cond)

/* Compare two integers and show both values when they differ. */
#define CHECK_EQ(a, b) \
    harness_check_eq((unsigned long long)(a), (unsigned long long)(b), \
                     __FILE__, __LINE__, #a " == " #b)

static inline int
harness_check_eq(unsigned long long a, unsigned long long b, const char *file,
                 int line, const char *what)
{
    if (a != b) {
        ++*harness_failures();
        printf("FAIL %s:%d: %s (%llu != %llu, 0x%llx != 0x%llx)\n",
               file, line, what, a, b, a, b);
        fflush(stdout);
        return 0;
    }
    return 1;
}

/* The program's exit code; "all passed" is the last line only on success. */
static inline int
harness_finish(void)
{
    int failures = *harness_failures();

    if (failures == 0)
        printf("all passed\n");
    else
        printf("%d check(s) failed\n", failures);
    fflush(stdout);
    return failures == 0 ? 0 : 1;
}

/* ---- child processes ---------------------------------------------------- */

/*
 * Start this program again with ARGS after its own path.  The child shares
 * our stdout and stderr (inherited, so its lines land in the same log) and
 * gets no stdin.  Returns 1 with PI filled, or 0 after reporting why.
 * Arguments are plain words here (names and numbers without spaces or
 * quotes), so no command-line quoting is needed beyond the program path.
 */
static inline int
harness_spawn_self(const wchar_t *args, PROCESS_INFORMATION *pi)
{
    wchar_t exe[MAX_PATH];
    wchar_t cmd[2 * MAX_PATH + 512];
    STARTUPINFOW si;
    DWORD n = GetModuleFileNameW(NULL, exe, MAX_PATH);

    if (n == 0 || n >= MAX_PATH) {
        printf("spawn: GetModuleFileNameW failed (%lu)\n", (unsigned long)GetLastError());
        return 0;
    }
    if (wcslen(exe) + wcslen(args) + 4 >= sizeof cmd / sizeof cmd[0]) {
        printf("spawn: command line too long\n");
        return 0;
    }
    swprintf(cmd, sizeof cmd / sizeof cmd[0], L"\"%ls\" %ls", exe, args);

    ZeroMemory(&si, sizeof si);
    si.cb = sizeof si;
    si.dwFlags = STARTF_USESTDHANDLES;
    si.hStdInput = NULL;
    si.hStdOutput = GetStdHandle(STD_OUTPUT_HANDLE);
    si.hStdError = GetStdHandle(STD_ERROR_HANDLE);
    ZeroMemory(pi, sizeof *pi);
    /* bInheritHandles lets the child use our std handles; the test's own
       handles (mappings, events) are created non-inheritable, so a child
       sees a segment only by its name. */
    if (!CreateProcessW(exe, cmd, NULL, NULL, TRUE, 0, NULL, NULL, &si, pi)) {
        printf("spawn: CreateProcessW failed (%lu)\n", (unsigned long)GetLastError());
        return 0;
    }
    CloseHandle(pi->hThread);
    pi->hThread = NULL;
    return 1;
}

/*
 * Wait up to TIMEOUT_MS for the child to end and return its exit code.  A
 * child still running at the deadline is killed (and then waited for, so it
 * is always reaped); that returns 0xDEADBEEF, which no test expects.
 */
static inline DWORD
harness_reap(PROCESS_INFORMATION *pi, DWORD timeout_ms)
{
    DWORD code = 0xDEADBEEFu;

    if (pi->hProcess == NULL)
        return code;
    if (WaitForSingleObject(pi->hProcess, timeout_ms) != WAIT_OBJECT_0) {
        printf("reap: child %lu still running after %lu ms, killing it\n",
               (unsigned long)pi->dwProcessId, (unsigned long)timeout_ms);
        (void)TerminateProcess(pi->hProcess, 0xDEADBEEFu);
        (void)WaitForSingleObject(pi->hProcess, INFINITE);
    } else if (!GetExitCodeProcess(pi->hProcess, &code)) {
        code = 0xDEADBEEFu;
    }
    CloseHandle(pi->hProcess);
    pi->hProcess = NULL;
    return code;
}

/*
 * Wait up to TIMEOUT_MS for EVENT, but give up at once if the child PROC
 * ends first (it crashed or failed a check): no waiting out a deadline for a
 * signal that can no longer come.  Returns 1 when the event fired.
 */
static inline int
harness_wait_event(HANDLE event, HANDLE proc, DWORD timeout_ms, const char *what)
{
    HANDLE both[2];
    DWORD rc;

    both[0] = event;
    both[1] = proc;
    rc = WaitForMultipleObjects(proc != NULL ? 2 : 1, both, FALSE, timeout_ms);
    if (rc == WAIT_OBJECT_0)
        return 1;
    if (rc == WAIT_OBJECT_0 + 1)
        printf("wait for %s: the child ended first\n", what);
    else if (rc == WAIT_TIMEOUT)
        printf("wait for %s: no signal after %lu ms\n", what, (unsigned long)timeout_ms);
    else
        printf("wait for %s: WaitForMultipleObjects failed (%lu)\n", what,
               (unsigned long)GetLastError());
    fflush(stdout);
    return 0;
}

/* ---- the program's entry ----------------------------------------------- */

/* A child role: the word that follows the program path, how many arguments
   follow the word, and the function that runs with them (ARGS[0..]). */
typedef struct {
    const wchar_t *word;
    int nargs;
    int (*run)(wchar_t **args);
} harness_role;

/*
 * The wmain of a test program that starts itself again as its own children:
 * harness_begin(), then PARENT() without arguments, or the role of ROLES
 * (ended by a NULL word) that argv[1] names, with exactly its arguments.
 * Anything else prints USAGE and returns 2.
 */
static inline int
harness_main(int argc, wchar_t **argv, int (*parent)(void), const harness_role *roles,
             const char *usage)
{
    const harness_role *role;

    harness_begin();
    if (argc == 1)
        return parent();
    for (role = roles; role->word != NULL; role++) {
        if (argc == 2 + role->nargs && wcscmp(argv[1], role->word) == 0)
            return role->run(argv + 2);
    }
    printf("%s\n", usage);
    return 2;
}

#endif /* PYSHM_WIN32_HARNESS_H */
