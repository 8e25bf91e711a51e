/*
 * seed.c -- the other side of the interop tests: shared memory done the
 * classic Win32 way, as countless programs already in the field do it, with
 * no pyshm code at all.  A fixed 0x100-byte page-file mapping, a name,
 * FILE_MAP_ALL_ACCESS views, sprintf into the view, printf out of it.
 *
 *   seed create NAME TEXT   CreateFileMapping NAME, sprintf TEXT at offset 0,
 *                           print "ready", wait for a line on stdin, then
 *                           print "reply: " and the text at offset 128
 *   seed read NAME          OpenFileMapping NAME, print "text: " and the text
 *                           at offset 0
 *
 * Exit codes: 0 done, 1 a Win32 call failed (code on stderr), 2 usage.
 * The one thing added to the recipe is the crash filter, so that a crash is
 * a failure and never a silent exit code 0 under Wine.
 */
#include <stdio.h>      /* printf, sprintf, fgets */
#include <string.h>     /* strcmp */
#include <windows.h>    /* CreateFileMappingA, OpenFileMappingA, MapViewOfFile */

#include "win32_harness.h"  /* harness_install_crash_filter */

#define BUF_SIZE 0x100
#define REPLY_OFFSET 128

/* Map the whole BUF_SIZE bytes of hMapFile read-write, the usual way; on
   failure say so, close hMapFile and return NULL. */
static char *
map_view(HANDLE hMapFile)
{
    char *pBuf = (char *)MapViewOfFile(hMapFile, FILE_MAP_ALL_ACCESS, 0, 0, BUF_SIZE);

    if (pBuf == NULL) {
        fprintf(stderr, "seed: MapViewOfFile failed (%lu)\n", GetLastError());
        CloseHandle(hMapFile);
    }
    return pBuf;
}

static int
create(const char *name, const char *text)
{
    HANDLE hMapFile;
    char *pBuf;
    char line[64];

    hMapFile = CreateFileMappingA(
        INVALID_HANDLE_VALUE,   /* backed by the paging file */
        NULL,                   /* default security */
        PAGE_READWRITE,
        0,                      /* size, high DWORD */
        BUF_SIZE,               /* size, low DWORD */
        name);
    if (hMapFile == NULL) {
        fprintf(stderr, "seed: CreateFileMapping failed (%lu)\n", GetLastError());
        return 1;
    }
    pBuf = map_view(hMapFile);
    if (pBuf == NULL)
        return 1;

    sprintf(pBuf, "%.100s", text);      /* stays below the reply at 128 */
    printf("ready\n");
    fflush(stdout);
    (void)fgets(line, sizeof line, stdin);  /* EOF counts as the line */

    printf("reply: %.*s\n", (int)strnlen(pBuf + REPLY_OFFSET, BUF_SIZE - REPLY_OFFSET),
           pBuf + REPLY_OFFSET);
    fflush(stdout);

    UnmapViewOfFile(pBuf);
    CloseHandle(hMapFile);
    return 0;
}

static int
read_text(const char *name)
{
    HANDLE hMapFile;
    char *pBuf;

    hMapFile = OpenFileMappingA(FILE_MAP_ALL_ACCESS, FALSE, name);
    if (hMapFile == NULL) {
        fprintf(stderr, "seed: OpenFileMapping failed (%lu)\n", GetLastError());
        return 1;
    }
    pBuf = map_view(hMapFile);
    if (pBuf == NULL)
        return 1;

    printf("text: %.*s\n", (int)strnlen(pBuf, BUF_SIZE), pBuf);
    fflush(stdout);

    UnmapViewOfFile(pBuf);
    CloseHandle(hMapFile);
    return 0;
}

int
main(int argc, char **argv)
{
    harness_install_crash_filter();
    if (argc == 4 && strcmp(argv[1], "create") == 0)
        return create(argv[2], argv[3]);
    if (argc == 3 && strcmp(argv[1], "read") == 0)
        return read_text(argv[2]);
    fprintf(stderr, "usage: seed create NAME TEXT | seed read NAME\n");
    return 2;
}
