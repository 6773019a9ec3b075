/*
 * SPDX-License-Identifier: GPL-2.0-or-later
 *
 * bgt: balloon guest tool, the workload driver of the bundled test guest.
 *
 * Runs inside the test guest's initramfs (linked statically) and makes memory
 * pressure the host can observe:
 *
 *   bgt alloc MIB [--hold SECS] [--step MIB] [--delay-ms MS]
 *   bgt cache DEV MIB [--hold SECS]
 *   bgt meminfo
 *   bgt vmstat KEY...
 *   bgt qmp SOCKET COMMAND-JSON...
 *   bgt console SOCKET LINE [TIMEOUT-SECS]
 *   bgt as UID COMMAND [ARG...]
 *
 * qmp and console drive a QEMU running inside this guest (a nested guest,
 * for tests on a cgroup v2 host): qmp connects to a QMP unix socket,
 * negotiates, sends each command and prints each reply on a line of its own
 * (events are skipped); console sends LINE to the bundled guest's command
 * loop on a serial unix socket, prints what comes back until the loop's
 * "@@DONE <rc>@@" and exits with that rc (LINE runs after an echo of a
 * marker of its own, so a late answer to an earlier LINE is skipped).  as runs COMMAND with user and
 * group UID and no supplementary groups (busybox's setpriv cannot).
 *
 * Output is one "key value" pair or status line per line, meant to be parsed
 * by the host-side test harness.  Exit status: 0 success, 1 failure, 2 usage.
 */

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024UL * 1024UL)

static volatile sig_atomic_t stop_requested;

static void usage(void)
{
    fprintf(stderr,
            "usage: bgt alloc MIB [--hold SECS] [--step MIB] [--delay-ms MS]\n"
            "       bgt cache DEV MIB [--hold SECS]\n"
            "       bgt meminfo\n"
            "       bgt qmp SOCKET COMMAND-JSON...\n"
            "       bgt console SOCKET LINE [TIMEOUT-SECS]\n"
            "       bgt as UID COMMAND [ARG...]\n"
            "       bgt vmstat KEY...\n");
    exit(2);
}

/* Parse a decimal number in [min, max] or exit with a usage error. */
static long parse_num(const char *what, const char *s, long min, long max)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, "bgt: bad %s '%s'\n", what, s);
        exit(2);
    }
    return v;
}

static void on_signal(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* SIGTERM and SIGINT end a hold early instead of killing the process. */
static void catch_stop_signals(void)
{
    struct sigaction sa;

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
}

/* Sleep for @ms milliseconds; returns early when a stop was requested. */
static void sleep_ms(long ms)
{
    struct timespec ts = { .tv_sec = ms / 1000,
                           .tv_nsec = (ms % 1000) * 1000000L };

    while (!stop_requested && nanosleep(&ts, &ts) < 0 && errno == EINTR) {
        /* resume with the remaining time */
    }
}

static void hold(long secs)
{
    if (secs < 0) {
        while (!stop_requested) {
            sleep_ms(1000);
        }
        return;
    }
    sleep_ms(secs * 1000L);
}

/*
 * Map @len bytes and write to every page of it, so that each page is backed
 * by its own, non-zero frame.  Returns NULL if the mapping failed.
 */
static char *map_and_touch(size_t len, size_t page)
{
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    size_t off;

    if (p == MAP_FAILED) {
        return NULL;
    }
    for (off = 0; off < len; off += page) {
        *(volatile unsigned long *)(p + off) = 0x5a5a5a5a00000000UL | off;
    }
    return p;
}

static int cmd_alloc(int argc, char **argv)
{
    long mib, hold_secs = 0, step, delay_ms = 0;
    long done = 0, nchunks, n = 0, i;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char **chunks;
    long *sizes;

    if (argc < 2) {
        usage();
    }
    mib = parse_num("MIB", argv[1], 1, LONG_MAX / (long)MIB);
    step = mib;
    for (i = 2; i < argc; i++) {
        if (i + 1 >= argc) {
            usage();
        }
        if (!strcmp(argv[i], "--hold")) {
            hold_secs = parse_num("--hold", argv[++i], -1, LONG_MAX / 1000);
        } else if (!strcmp(argv[i], "--step")) {
            step = parse_num("--step", argv[++i], 1, LONG_MAX / (long)MIB);
        } else if (!strcmp(argv[i], "--delay-ms")) {
            delay_ms = parse_num("--delay-ms", argv[++i], 0, LONG_MAX);
        } else {
            usage();
        }
    }
    if (step > mib) {
        step = mib;
    }

    /* A stop request ends the ramp-up or the hold: free and exit. */
    catch_stop_signals();

    nchunks = (mib + step - 1) / step;
    chunks = calloc(nchunks, sizeof(*chunks));
    sizes = calloc(nchunks, sizeof(*sizes));
    if (!chunks || !sizes) {
        printf("alloc failed at 0 MiB\n");
        return 1;
    }

    while (done < mib && !stop_requested) {
        long this = mib - done < step ? mib - done : step;

        chunks[n] = map_and_touch((size_t)this * MIB, page);
        if (!chunks[n]) {
            printf("alloc failed at %ld MiB\n", done);
            return 1;
        }
        sizes[n++] = this;
        done += this;
        if (done < mib && delay_ms) {
            sleep_ms(delay_ms);
        }
    }
    if (done == mib) {
        printf("alloc ok %ld\n", mib);
        hold(hold_secs);
    } else {
        printf("alloc stopped at %ld MiB\n", done);
    }

    for (i = 0; i < n; i++) {
        munmap(chunks[i], (size_t)sizes[i] * MIB);
    }
    free(chunks);
    free(sizes);
    printf("free ok\n");
    return done == mib ? 0 : 1;
}

/*
 * Read @MIB MiB of a file or block device through the page cache.  The last
 * close of a block device drops its page cache, so --hold keeps it open.
 */
static int cmd_cache(int argc, char **argv)
{
    long mib, hold_secs = 0, done = 0;
    size_t got = 0;
    char *buf;
    int fd;

    if (argc != 3 && !(argc == 5 && !strcmp(argv[3], "--hold"))) {
        usage();
    }
    mib = parse_num("MIB", argv[2], 1, LONG_MAX / (long)MIB);
    if (argc == 5) {
        hold_secs = parse_num("--hold", argv[4], -1, LONG_MAX / 1000);
    }
    fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        printf("cache failed: %s: %s\n", argv[1], strerror(errno));
        return 1;
    }
    buf = malloc(MIB);
    if (!buf) {
        printf("cache failed: out of memory\n");
        return 1;
    }
    while (done < mib) {
        ssize_t r = read(fd, buf + got, MIB - got);

        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            printf("cache failed at %ld MiB: %s\n", done, strerror(errno));
            return 1;
        }
        if (r == 0) {
            printf("cache eof at %ld MiB\n", done);
            return 1;
        }
        got += r;
        if (got == MIB) {
            got = 0;
            done++;
        }
    }
    free(buf);

    catch_stop_signals();
    printf("cache ok %ld\n", mib);
    hold(hold_secs);
    close(fd);
    return 0;
}

/*
 * Look @key up in a file of "key value" (/proc/vmstat) or "key: value kB"
 * (/proc/meminfo) lines; copy the value into @val.  Returns false if absent.
 */
static bool lookup(FILE *f, const char *key, char *val, size_t vlen)
{
    char line[256], k[128], v[128];

    rewind(f);
    while (fgets(line, sizeof(line), f)) {
        size_t kl;

        if (sscanf(line, "%127s %127s", k, v) != 2) {
            continue;
        }
        kl = strlen(k);
        if (kl && k[kl - 1] == ':') {
            k[kl - 1] = '\0';
        }
        if (!strcmp(k, key)) {
            snprintf(val, vlen, "%s", v);
            return true;
        }
    }
    return false;
}

static int print_keys(const char *path, const char *const *keys, int nkeys)
{
    FILE *f = fopen(path, "r");
    char val[128];
    int i;

    if (!f) {
        printf("bgt: %s: %s\n", path, strerror(errno));
        return 1;
    }
    for (i = 0; i < nkeys; i++) {
        if (lookup(f, keys[i], val, sizeof(val))) {
            printf("%s %s\n", keys[i], val);
        } else {
            printf("%s -\n", keys[i]);
        }
    }
    fclose(f);
    return 0;
}

static int cmd_meminfo(int argc, char **argv)
{
    static const char *const keys[] = {
        "MemTotal", "MemFree", "MemAvailable", "Cached", "Buffers",
        "AnonPages",
    };

    (void)argv;
    if (argc != 1) {
        usage();
    }
    return print_keys("/proc/meminfo", keys, sizeof(keys) / sizeof(keys[0]));
}

static int cmd_vmstat(int argc, char **argv)
{
    if (argc < 2) {
        usage();
    }
    return print_keys("/proc/vmstat", (const char *const *)argv + 1,
                      argc - 1);
}

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0 || strlen(path) >= sizeof(sa.sun_path)) {
        fprintf(stderr, "bgt: bad socket path %s\n", path);
        exit(1);
    }
    strcpy(sa.sun_path, path);
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        fprintf(stderr, "bgt: connect %s: %s\n", path, strerror(errno));
        exit(1);
    }
    return fd;
}

/* Read one '\n'-terminated line into buf (without it); false at EOF or
 * timeout.  Bytes after the line stay in the per-fd buffer. */
static char rbuf[65536];
static size_t rlen;

static bool read_line(int fd, char *buf, size_t size, int timeout_ms)
{
    for (;;) {
        char *nl = memchr(rbuf, '\n', rlen);
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t n;

        if (nl) {
            size_t len = nl - rbuf;

            if (len >= size) {
                len = size - 1;
            }
            memcpy(buf, rbuf, len);
            buf[len] = 0;
            if (len && buf[len - 1] == '\r') {
                buf[len - 1] = 0;
            }
            memmove(rbuf, nl + 1, rlen - (nl + 1 - rbuf));
            rlen -= nl + 1 - rbuf;
            return true;
        }
        if (rlen == sizeof(rbuf)) {
            rlen = 0;           /* a line longer than the buffer: drop it */
        }
        if (poll(&p, 1, timeout_ms) <= 0) {
            return false;
        }
        n = read(fd, rbuf + rlen, sizeof(rbuf) - rlen);
        if (n <= 0) {
            return false;
        }
        rlen += n;
    }
}

static void write_all(int fd, const char *s)
{
    size_t len = strlen(s);

    while (len) {
        ssize_t n = write(fd, s, len);

        if (n <= 0) {
            fprintf(stderr, "bgt: write: %s\n", strerror(errno));
            exit(1);
        }
        s += n;
        len -= n;
    }
}

/* The next reply, skipping events; false on EOF or 60 s of silence. */
static bool qmp_reply(int fd, char *buf, size_t size)
{
    while (read_line(fd, buf, size, 60000)) {
        if (!strstr(buf, "\"event\"")) {
            return true;
        }
    }
    return false;
}

static int cmd_qmp(int argc, char **argv)
{
    static char line[65536];
    int fd, i;

    if (argc < 3) {
        usage();
    }
    fd = connect_unix(argv[1]);
    if (!read_line(fd, line, sizeof(line), 60000)) {     /* greeting */
        fprintf(stderr, "bgt: no QMP greeting\n");
        return 1;
    }
    write_all(fd, "{\"execute\": \"qmp_capabilities\"}\n");
    if (!qmp_reply(fd, line, sizeof(line))) {
        return 1;
    }
    for (i = 2; i < argc; i++) {
        write_all(fd, argv[i]);
        write_all(fd, "\n");
        if (!qmp_reply(fd, line, sizeof(line))) {
            fprintf(stderr, "bgt: no reply to %s\n", argv[i]);
            return 1;
        }
        printf("%s\n", line);
    }
    close(fd);
    return 0;
}

static int cmd_console(int argc, char **argv)
{
    static char line[4096];
    char begin[64];
    long timeout = 600;
    bool begun = false;
    time_t end;
    int fd;

    if (argc < 3) {
        usage();
    }
    if (argc > 3) {
        timeout = parse_num("TIMEOUT-SECS", argv[3], 1, 86400);
    }
    end = time(NULL) + timeout;
    fd = connect_unix(argv[1]);
    /*
     * A command an earlier caller gave up on may still answer: its
     * "@@DONE" is not ours.  Ours comes after our own marker.
     */
    snprintf(begin, sizeof(begin), "@@BEGIN %ld.%ld@@", (long)getpid(),
             (long)time(NULL));
    write_all(fd, "echo '");
    write_all(fd, begin);
    write_all(fd, "'; ");
    write_all(fd, argv[2]);
    write_all(fd, "\n");
    while (time(NULL) < end) {
        int rc;

        if (!read_line(fd, line, sizeof(line), 1000)) {
            continue;
        }
        if (!begun) {
            begun = !strcmp(line, begin);
            continue;
        }
        if (sscanf(line, "@@DONE %d@@", &rc) == 1) {
            return rc;
        }
        printf("%s\n", line);
    }
    fprintf(stderr, "bgt: no @@DONE within %ld s\n", timeout);
    return 1;
}

static int cmd_as(int argc, char **argv)
{
    long id;

    if (argc < 3) {
        usage();
    }
    id = parse_num("UID", argv[1], 1, 65535);
    if (setgroups(0, NULL) || setgid(id) || setuid(id)) {
        perror("bgt: dropping privileges");
        return 1;
    }
    execvp(argv[2], argv + 2);
    perror(argv[2]);
    return 1;
}

int main(int argc, char **argv)
{
    /* Lines must reach the console as they happen, even through a pipe. */
    setvbuf(stdout, NULL, _IOLBF, 0);

    if (argc < 2) {
        usage();
    }
    if (!strcmp(argv[1], "alloc")) {
        return cmd_alloc(argc - 1, argv + 1);
    } else if (!strcmp(argv[1], "cache")) {
        return cmd_cache(argc - 1, argv + 1);
    } else if (!strcmp(argv[1], "meminfo")) {
        return cmd_meminfo(argc - 1, argv + 1);
    } else if (!strcmp(argv[1], "vmstat")) {
        return cmd_vmstat(argc - 1, argv + 1);
    } else if (!strcmp(argv[1], "qmp")) {
        return cmd_qmp(argc - 1, argv + 1);
    } else if (!strcmp(argv[1], "console")) {
        return cmd_console(argc - 1, argv + 1);
    } else if (!strcmp(argv[1], "as")) {
        return cmd_as(argc - 1, argv + 1);
    }
    usage();
    return 2;
}
