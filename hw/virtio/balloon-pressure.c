/*
 * Automatic virtio-balloon: host memory-pressure sources
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include <sys/eventfd.h>
#include "qapi/error.h"
#include "qemu/error-report.h"
#include "qemu/main-loop.h"
#include "qemu/cutils.h"
#include "qemu/ctype.h"
#include "qemu/timer.h"
#include "qemu/units.h"
#include "monitor/monitor.h"
#include "hw/virtio/balloon-cgroup.h"
#include "hw/virtio/balloon-headroom.h"
#include "hw/virtio/balloon-pressure.h"


/*
 * PSI triggers, mildest first: stall time (us) per window.  "some" means
 * at least one task stalled on memory, "full" that all did.
 */
static const struct {
    BalloonPolicyLevel level;
    const char *type;
    uint32_t stall_permille;    /* of the window */
} psi_triggers[] = {
    { BALLOON_POLICY_LEVEL_LOW, "some", 50 },
    { BALLOON_POLICY_LEVEL_MEDIUM, "some", 150 },
    { BALLOON_POLICY_LEVEL_CRITICAL, "full", 150 },
};

static const char *const v1_levels[] = {
    [BALLOON_POLICY_LEVEL_LOW] = "low",
    [BALLOON_POLICY_LEVEL_MEDIUM] = "medium",
    [BALLOON_POLICY_LEVEL_CRITICAL] = "critical",
};

static const char *const kind_names[BALLOON_PRESSURE__MAX] = {
    [BALLOON_PRESSURE_AUTO] = "auto",
    [BALLOON_PRESSURE_CGROUP_V1] = "cgroup-v1",
    [BALLOON_PRESSURE_CGROUP_V2] = "cgroup-v2",
    [BALLOON_PRESSURE_SYSTEM] = "system",
    [BALLOON_PRESSURE_HOST] = "host",
    [BALLOON_PRESSURE_FD] = "fd",
    [BALLOON_PRESSURE_NONE] = "none",
};

typedef struct PressureWatch {
    BalloonPressure *bp;
    BalloonPolicyLevel level;
    int fd;                     /* eventfd or PSI trigger fd, or -1 */
    int level_fd;               /* v1: memory.pressure_level, else -1 */
    bool is_eventfd;
    guint source;               /* PSI: GSource id polling G_IO_PRI */
    char *name;                 /* handed over: how management named it */
} PressureWatch;

/*
 * Headroom: usage against the limit in force.  Without swap or page cache
 * to reclaim, the kernel OOM-kills before memory.pressure_level or PSI say
 * anything; usage close to the limit gives the warning instead.  v1
 * registers usage thresholds (an eventfd); v2 has no such thing, so it
 * polls memory.current, the sooner the nearer the limit, and watches
 * memory.events, which the kernel signals when the cgroup hits memory.high
 * or memory.max or OOMs.  The host's own memory (most hosts set no cgroup
 * limit: the limit is the host's RAM) is MemTotal - MemAvailable from
 * /proc/meminfo against MemTotal, polled the same way.  While usage stays
 * above the first threshold it is read every BALLOON_HEADROOM_BUSY_MS and
 * each reading is reported: the controller aims at the deficit it shows.
 */
/* limits along the path change rarely: read them again this often */
#define LIMITS_MAX_AGE_MS 10000

typedef enum HeadroomKind {
    HEADROOM_NONE,
    HEADROOM_V1,
    HEADROOM_V2,
    HEADROOM_HOST,
} HeadroomKind;

typedef struct Headroom {
    BalloonPressure *bp;
    HeadroomKind kind;
    BalloonHeadroomScale scale;
    /* v1 memory.usage_in_bytes, v2 memory.current, host /proc/meminfo */
    int usage_fd;
    int threshold_efd;          /* v1: the usage thresholds' eventfd */
    int events_fd;              /* v2: memory.events */
    guint events_source;
    BalloonCgroupEvents events; /* v2: the counters seen last */
    char *mnt;                  /* v2: the hierarchy's mount point */
    uint64_t limit;
    int64_t limit_time;         /* v2: when the limit was read */
    uint64_t usage;             /* the last reading */
    uint64_t footprint;         /* QEMU's resident memory then */
    int64_t usage_time;         /* when it was read, realtime ns */
    uint64_t readings;          /* how many so far */
    int garbled;                /* unreadable readings in a row */
    QEMUTimer *timer;           /* QEMU_CLOCK_REALTIME, milliseconds */
} Headroom;

struct BalloonPressure {
    BalloonPressureKind kind;
    char *path;
    char *detail;
    bool lost;
    bool running;               /* not stopped: watching */
    char *proc;                 /* where /proc is (tests) */
    uint64_t protection;        /* what QEMU's cgroups promise it */
    char *protection_origin;
    PressureWatch watch[BALLOON_POLICY_LEVEL__MAX];
    int nwatch;
    /* descriptors handed over by management, one per level */
    PressureWatch handed[BALLOON_POLICY_LEVEL__MAX];
    Headroom hr;                /* the cgroup's */
    Headroom host;              /* the host's own memory */
    BalloonPressureHandler *handler;
    void *opaque;
};

const char *balloon_pressure_kind_name(BalloonPressureKind kind)
{
    return kind < BALLOON_PRESSURE__MAX ? kind_names[kind] : "?";
}

int balloon_pressure_kind_parse(const char *name)
{
    int i;

    for (i = 0; i < BALLOON_PRESSURE__MAX; i++) {
        if (!strcmp(name, kind_names[i])) {
            return i;
        }
    }
    return -1;
}

static bool has_handed(const BalloonPressure *bp)
{
    int l;

    for (l = 0; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        if (bp->handed[l].fd >= 0) {
            return true;
        }
    }
    return false;
}

BalloonPressureKind balloon_pressure_kind(const BalloonPressure *bp)
{
    /* no source of its own: descriptors from management make it one */
    if (bp->kind == BALLOON_PRESSURE_NONE && has_handed(bp)) {
        return BALLOON_PRESSURE_FD;
    }
    return bp->kind;
}

/* "name (target) at level, ..." for the descriptors handed over. */
static char *handed_description(const BalloonPressure *bp, bool levels)
{
    g_autoptr(GString) s = g_string_new("");
    int l;

    for (l = BALLOON_POLICY_LEVEL__MAX - 1; l > BALLOON_POLICY_LEVEL_NONE;
         l--) {
        const PressureWatch *w = &bp->handed[l];

        if (w->fd < 0) {
            continue;
        }
        g_string_append_printf(s, "%s%s", s->len ? ", " : "", w->name);
        if (levels) {
            g_string_append_printf(s, " at level %s",
                                   balloon_policy_level_name(l));
        }
    }
    return g_string_free(g_steal_pointer(&s), false);
}

char *balloon_pressure_path(const BalloonPressure *bp)
{
    if (bp->path) {
        return g_strdup(bp->path);
    }
    return handed_description(bp, false);
}

char *balloon_pressure_detail(const BalloonPressure *bp)
{
    g_autofree char *handed = handed_description(bp, true);

    if (!handed[0]) {
        return g_strdup(bp->detail ? bp->detail : "");
    }
    if (bp->kind == BALLOON_PRESSURE_NONE) {
        return g_strdup_printf("descriptors handed over by management: %s",
                               handed);
    }
    return g_strdup_printf("%s; plus descriptors handed over by management:"
                           " %s", bp->detail, handed);
}

bool balloon_pressure_lost(const BalloonPressure *bp)
{
    return bp->lost;
}

void balloon_pressure_read_protection(BalloonPressure *bp)
{
    g_free(bp->protection_origin);
    bp->protection = balloon_cgroup_protection(bp->proc,
                                               &bp->protection_origin);
}

uint64_t balloon_pressure_protection(const BalloonPressure *bp,
                                     const char **origin)
{
    *origin = bp->protection_origin;
    return bp->protection;
}

static bool headroom_known(const Headroom *hr)
{
    return hr->kind != HEADROOM_NONE && hr->limit && hr->readings;
}

/* How far above its setpoint: the larger, the tighter. */
static int64_t headroom_excess(const Headroom *hr)
{
    return (int64_t)hr->usage -
           (int64_t)balloon_headroom_threshold(&hr->scale,
                                               BALLOON_POLICY_LEVEL_LOW,
                                               hr->limit);
}

bool balloon_pressure_headroom(const BalloonPressure *bp,
                               BalloonPressureReading *r)
{
    const Headroom *hr = &bp->hr;

    if (bp->lost || (!headroom_known(hr) && !headroom_known(&bp->host))) {
        return false;
    }
    /* where both count, the tighter one wins */
    if (!headroom_known(hr) ||
        (headroom_known(&bp->host) &&
         headroom_excess(&bp->host) > headroom_excess(hr))) {
        hr = &bp->host;
    }
    r->usage = hr->usage;
    r->footprint = hr->footprint;
    r->limit = hr->limit;
    r->setpoint = balloon_headroom_threshold(&hr->scale,
                                             BALLOON_POLICY_LEVEL_LOW,
                                             hr->limit);
    /* a new reading of either changes it */
    r->count = bp->hr.readings + bp->host.readings;
    r->time = hr->usage_time;
    return true;
}

/* Add "; <what>" to the detail. */
static void G_GNUC_PRINTF(2, 3) append_detail(BalloonPressure *bp,
                                              const char *fmt, ...)
{
    g_autofree char *what = NULL;
    char *old = bp->detail;
    va_list ap;

    va_start(ap, fmt);
    what = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    bp->detail = old ? g_strdup_printf("%s; %s", old, what) :
                       g_steal_pointer(&what);
    g_free(old);
}

static void notify(BalloonPressure *bp, BalloonPolicyLevel level)
{
    bp->handler(bp->opaque, level, balloon_pressure_kind_name(bp->kind));
}

static void stop_watch(PressureWatch *w)
{
    if (w->source) {
        g_source_remove(w->source);
        w->source = 0;
    }
    if (w->is_eventfd && w->fd >= 0) {
        qemu_set_fd_handler(w->fd, NULL, NULL, NULL);
    }
}

static void stop_headroom(Headroom *hr)
{
    if (hr->threshold_efd >= 0) {
        qemu_set_fd_handler(hr->threshold_efd, NULL, NULL, NULL);
    }
    if (hr->events_source) {
        g_source_remove(hr->events_source);
        hr->events_source = 0;
    }
    if (hr->timer) {
        timer_del(hr->timer);
    }
}

static void init_headroom(Headroom *hr, BalloonPressure *bp)
{
    memset(hr, 0, sizeof(*hr));
    hr->bp = bp;
    hr->usage_fd = hr->threshold_efd = hr->events_fd = -1;
}

static void close_headroom(Headroom *hr)
{
    stop_headroom(hr);
    if (hr->threshold_efd >= 0) {
        close(hr->threshold_efd);
        hr->threshold_efd = -1;
    }
    if (hr->usage_fd >= 0) {
        close(hr->usage_fd);
        hr->usage_fd = -1;
    }
    if (hr->events_fd >= 0) {
        close(hr->events_fd);
        hr->events_fd = -1;
    }
    g_clear_pointer(&hr->timer, timer_free);
    g_free(hr->mnt);
    init_headroom(hr, hr->bp);
}

/*
 * The watched cgroup is gone: stop what watches it.  Descriptors handed
 * over by management are management's business and keep working.
 */
static void pressure_lost(BalloonPressure *bp, const char *why)
{
    int i;

    if (bp->lost) {
        return;
    }
    bp->lost = true;
    warn_report("virtio-balloon: pressure source %s lost: %s; automatic "
                "ballooning continues on guest pressure only",
                bp->path, why);
    append_detail(bp, "lost: %s", why);
    for (i = 0; i < bp->nwatch; i++) {
        stop_watch(&bp->watch[i]);
    }
    stop_headroom(&bp->hr);
    stop_headroom(&bp->host);
    bp->handler(bp->opaque, BALLOON_POLICY_LEVEL_NONE, NULL);
}

/* cgroup v1 eventfds, and eventfds handed over by management. */
static void eventfd_read_cb(void *opaque)
{
    PressureWatch *w = opaque;
    uint64_t count;
    ssize_t r = read(w->fd, &count, sizeof(count));

    if (r != sizeof(count)) {
        return;     /* spurious wake-up: EAGAIN */
    }
    /* v1 also signals the eventfd when the cgroup is removed. */
    if (w->level_fd >= 0) {
        g_autofree char *f = g_build_filename(w->bp->path,
                                              "memory.pressure_level", NULL);
        if (access(f, F_OK) != 0) {
            pressure_lost(w->bp, "cgroup removed");
            return;
        }
    }
    notify(w->bp, w->level);
}

/*
 * PSI trigger fds signal POLLPRI and always poll readable: watch PRI.
 * POLLERR comes with the cgroup's removal (or a trigger never written).
 */
static gboolean psi_cb(gint fd, GIOCondition cond, gpointer opaque)
{
    PressureWatch *w = opaque;

    if (cond & (G_IO_ERR | G_IO_HUP | G_IO_NVAL)) {
        w->source = 0;
        if (w->name) {
            warn_report("virtio-balloon: the pressure descriptor %s from "
                        "management reported an error; no more events "
                        "from it", w->name);
        } else {
            pressure_lost(w->bp, "the pressure file reported an error "
                          "(cgroup removed?)");
        }
        return G_SOURCE_REMOVE;
    }
    notify(w->bp, w->level);
    return G_SOURCE_CONTINUE;
}

static void watch_psi_fd(PressureWatch *w)
{
    w->source = g_unix_fd_add_full(G_PRIORITY_HIGH, w->fd,
                                   G_IO_PRI | G_IO_ERR | G_IO_HUP,
                                   psi_cb, w, NULL);
}

/* Watch a descriptor handed over: an eventfd is read, PSI is polled. */
static void watch_handed(PressureWatch *w)
{
    if (w->is_eventfd) {
        qemu_set_fd_handler(w->fd, eventfd_read_cb, NULL, w);
    } else {
        watch_psi_fd(w);
    }
}

static void init_watch(PressureWatch *w, BalloonPressure *bp,
                       BalloonPolicyLevel level)
{
    memset(w, 0, sizeof(*w));
    w->bp = bp;
    w->level = level;
    w->fd = -1;
    w->level_fd = -1;
}

static PressureWatch *new_watch(BalloonPressure *bp, BalloonPolicyLevel level)
{
    PressureWatch *w = &bp->watch[bp->nwatch++];

    init_watch(w, bp, level);
    return w;
}

static void close_watch(PressureWatch *w)
{
    stop_watch(w);
    if (w->fd >= 0) {
        /* it may be a dup from an fdset, which must learn of it */
        qemu_close(w->fd);
        w->fd = -1;
    }
    if (w->level_fd >= 0) {
        close(w->level_fd);
        w->level_fd = -1;
    }
    g_clear_pointer(&w->name, g_free);
}

/* Read a small cgroup file from offset 0 of @fd. */
/* Enough for the files read whole: /proc/meminfo, memory.events */
#define HEADROOM_READ_SIZE 4096

static bool pread_text(int fd, char *buf, size_t size)
{
    ssize_t n = pread(fd, buf, size - 1, 0);

    if (n <= 0) {
        return false;
    }
    buf[n] = 0;
    return true;
}

/* QEMU's resident memory: this VM's part of the usage. */
static uint64_t own_rss(const char *proc)
{
    g_autofree char *path = g_build_filename(proc, "self", "statm", NULL);
    g_autofree char *statm = NULL;
    unsigned long size, resident;

    if (!g_file_get_contents(path, &statm, NULL, NULL) ||
        sscanf(statm, "%lu %lu", &size, &resident) != 2) {
        return 0;
    }
    return (uint64_t)resident * qemu_real_host_page_size();
}

static void headroom_schedule(Headroom *hr, int64_t delay_ms)
{
    timer_mod(hr->timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + delay_ms);
}

/*
 * The limit in force on the path, read again when it matters (usage
 * above the first threshold) or has not been read for a while: management
 * may change or remove a limit at any time.
 */
static void headroom_v2_limit(Headroom *hr, int64_t now)
{
    BalloonPressure *bp = hr->bp;
    g_autofree char *origin = NULL;
    uint64_t limit;

    if (hr->limit &&
        hr->usage < balloon_headroom_threshold(&hr->scale,
                                               BALLOON_POLICY_LEVEL_LOW,
                                               hr->limit) &&
        now - hr->limit_time < LIMITS_MAX_AGE_MS) {
        return;
    }
    hr->limit_time = now;
    if (!balloon_cgroup_v2_limit(hr->mnt, bp->path, &limit, &origin)) {
        limit = 0;
    }
    if (limit != hr->limit) {
        if (limit) {
            append_detail(bp, "limit now %" PRIu64 " MiB (%s)", limit / MiB,
                          origin);
        } else {
            append_detail(bp, "limit removed: no headroom until one is set");
        }
        hr->limit = limit;
    }
}

/* Unreadable usage this many times in a row: the source is unusable. */
#define HEADROOM_MAX_GARBLED 3

/*
 * Read usage (and, for the host, the limit: MemTotal) into *@usage and
 * *@limit: 1 read, 0 not a reading (*@what says what it was instead),
 * -1 the file is gone.
 */
static int headroom_read(Headroom *hr, uint64_t *usage, uint64_t *limit,
                         char **what)
{
    char buf[HEADROOM_READ_SIZE];

    if (!pread_text(hr->usage_fd, buf, sizeof(buf))) {
        return -1;
    }
    *limit = hr->limit;
    if (hr->kind == HEADROOM_HOST) {
        if (balloon_headroom_parse_meminfo(buf, limit, usage)) {
            *usage = *limit - MIN(*usage, *limit);
            return 1;
        }
        *what = g_strdup("/proc/meminfo has no MemTotal and MemAvailable "
                         "(or they are not numbers)");
        return 0;
    }
    if (qemu_strtou64(g_strstrip(buf), NULL, 10, usage) == 0) {
        return 1;
    }
    *what = g_strdup_printf("the cgroup's memory usage reads '%.16s', not a "
                            "number", buf);
    return 0;
}

/*
 * The next look at usage.  v1's thresholds say at once when usage crosses
 * them, but memory only goes back below the band under the setpoint: the
 * policy needs recent readings there too, so v1 is read like v2.
 */
static void headroom_next(Headroom *hr)
{
    if (!hr->limit) {
        headroom_schedule(hr, LIMITS_MAX_AGE_MS);   /* for a new limit */
    } else {
        headroom_schedule(hr, balloon_headroom_interval_ms(&hr->scale,
                                                           hr->usage,
                                                           hr->limit));
    }
}

static void headroom_check(Headroom *hr)
{
    BalloonPressure *bp = hr->bp;
    g_autofree char *what = NULL;
    uint64_t usage, limit;
    BalloonPolicyLevel level;
    int ret = headroom_read(hr, &usage, &limit, &what);

    if (ret < 0) {
        pressure_lost(bp, hr->kind == HEADROOM_HOST ?
                      "cannot read /proc/meminfo" :
                      "cannot read the cgroup's memory usage (cgroup "
                      "removed?)");
        return;
    }
    if (!ret) {
        if (++hr->garbled >= HEADROOM_MAX_GARBLED) {
            pressure_lost(bp, what);
            return;
        }
        /* look again as soon as a reading near the limit would */
        headroom_schedule(hr, BALLOON_HEADROOM_BUSY_MS);
        return;
    }
    hr->garbled = 0;
    hr->usage = usage;
    hr->limit = limit;
    hr->footprint = own_rss(bp->proc);
    hr->usage_time = qemu_clock_get_ns(QEMU_CLOCK_REALTIME);
    hr->readings++;
    if (hr->kind == HEADROOM_V2) {
        headroom_v2_limit(hr, qemu_clock_get_ms(QEMU_CLOCK_REALTIME));
    }
    level = balloon_headroom_level(&hr->scale, usage, hr->limit);
    if (level != BALLOON_POLICY_LEVEL_NONE) {
        /* each reading above a threshold: the deficit it shows counts */
        notify(bp, level);
    }
    headroom_next(hr);
}

static void headroom_timer_cb(void *opaque)
{
    headroom_check(opaque);
}

void balloon_pressure_refresh(BalloonPressure *bp)
{
    if (!bp->lost && headroom_known(&bp->hr)) {
        headroom_check(&bp->hr);
    }
    if (!bp->lost && headroom_known(&bp->host)) {
        headroom_check(&bp->host);
    }
}

static void threshold_event_cb(void *opaque)
{
    Headroom *hr = opaque;
    uint64_t count;

    if (read(hr->threshold_efd, &count, sizeof(count)) == sizeof(count)) {
        headroom_check(hr);
    }
}

/*
 * memory.events changed: the cgroup hit memory.high or memory.max, or
 * OOMed.  The kernel also signals POLLERR here, and when the cgroup goes:
 * reading tells them apart.
 */
static gboolean events_cb(gint fd, GIOCondition cond, gpointer opaque)
{
    Headroom *hr = opaque;
    BalloonCgroupEvents ev;
    char buf[256];

    if (!pread_text(fd, buf, sizeof(buf)) ||
        !balloon_cgroup_parse_events(buf, &ev)) {
        hr->events_source = 0;
        pressure_lost(hr->bp, "cannot read memory.events (cgroup removed?)");
        return G_SOURCE_REMOVE;
    }
    if (ev.high > hr->events.high || ev.max > hr->events.max ||
        ev.oom > hr->events.oom || ev.oom_kill > hr->events.oom_kill) {
        /* at the limit: as critical as it gets */
        notify(hr->bp, BALLOON_POLICY_LEVEL_CRITICAL);
    }
    hr->events = ev;
    /* and look at usage now, not at the next poll */
    headroom_check(hr);
    return hr->events_source ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

/* "80/90/95% of the 1024 MiB limit" */
static char *scale_text(const Headroom *hr)
{
    return g_strdup_printf("%u/%u/%u%% of the %" PRIu64 " MiB",
                           hr->scale.permille[BALLOON_POLICY_LEVEL_LOW] / 10,
                           hr->scale.permille[BALLOON_POLICY_LEVEL_MEDIUM] /
                           10,
                           hr->scale.permille[BALLOON_POLICY_LEVEL_CRITICAL] /
                           10, hr->limit / MiB);
}

/* Register usage thresholds below the cgroup's limit, if it has one. */
static bool open_v1_headroom(BalloonPressure *bp, const char *dir,
                             const char *control, Error **errp)
{
    Headroom *hr = &bp->hr;
    g_autofree char *usage = g_build_filename(dir, "memory.usage_in_bytes",
                                              NULL);
    g_autofree char *scale = NULL;
    int l;

    if (!balloon_cgroup_read_value(dir, "memory.limit_in_bytes",
                                   &hr->limit)) {
        append_detail(bp, "no memory limit, so no headroom thresholds");
        return true;
    }
    hr->kind = HEADROOM_V1;
    hr->scale = balloon_headroom_cgroup;
    hr->usage_fd = qemu_open_old(usage, O_RDONLY);
    hr->threshold_efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (hr->usage_fd < 0 || hr->threshold_efd < 0) {
        error_setg_errno(errp, errno, "cannot open %s", usage);
        return false;
    }
    for (l = BALLOON_POLICY_LEVEL_LOW; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        g_autofree char *reg = g_strdup_printf(
            "%d %d %" PRIu64, hr->threshold_efd, hr->usage_fd,
            balloon_headroom_threshold(&hr->scale, l, hr->limit));
        int cfd = qemu_open_old(control, O_WRONLY);

        if (cfd < 0 || write(cfd, reg, strlen(reg)) < 0) {
            error_setg_errno(errp, errno, "cannot register a usage threshold"
                             " in %s", control);
            if (cfd >= 0) {
                close(cfd);
            }
            return false;
        }
        close(cfd);
    }
    hr->timer = timer_new_ms(QEMU_CLOCK_REALTIME, headroom_timer_cb, hr);
    qemu_set_fd_handler(hr->threshold_efd, threshold_event_cb, NULL, hr);
    scale = scale_text(hr);
    append_detail(bp, "usage thresholds at %s limit", scale);
    /* Already above a threshold: report it now. */
    headroom_check(hr);
    return true;
}

static bool open_v1(BalloonPressure *bp, const char *dir, Error **errp)
{
    g_autofree char *level_path = g_build_filename(dir, "memory.pressure_level",
                                                   NULL);
    g_autofree char *control = g_build_filename(dir, "cgroup.event_control",
                                                NULL);
    int l;

    for (l = BALLOON_POLICY_LEVEL_LOW; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        PressureWatch *w = new_watch(bp, l);
        g_autofree char *reg = NULL;
        int cfd;

        w->is_eventfd = true;
        w->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
        w->level_fd = qemu_open_old(level_path, O_RDONLY);
        if (w->fd < 0 || w->level_fd < 0) {
            error_setg_errno(errp, errno, "cannot open %s", level_path);
            return false;
        }
        cfd = qemu_open_old(control, O_WRONLY);
        reg = g_strdup_printf("%d %d %s", w->fd, w->level_fd, v1_levels[l]);
        if (cfd < 0 || write(cfd, reg, strlen(reg)) < 0) {
            error_setg_errno(errp, errno, "cannot register for %s events "
                             "in %s", v1_levels[l], control);
            if (cfd >= 0) {
                close(cfd);
            }
            return false;
        }
        close(cfd);
        qemu_set_fd_handler(w->fd, eventfd_read_cb, NULL, w);
    }
    return open_v1_headroom(bp, dir, control, errp);
}

/*
 * Arm the PSI triggers on @file.  Linux >= 6.4 refuses windows that are
 * not a multiple of 2 s to unprivileged openers (EINVAL): fall back to a
 * 2 s window and say so in the detail.  An opener that may not write the
 * file at all gets -EACCES back (errno set), and nothing is armed.
 */
static int open_psi(BalloonPressure *bp, const char *file,
                    uint32_t window_ms, Error **errp)
{
    size_t i;
    uint32_t window = window_ms;

    for (i = 0; i < ARRAY_SIZE(psi_triggers); i++) {
        PressureWatch *w = new_watch(bp, psi_triggers[i].level);
        uint64_t win_us, stall_us;
        g_autofree char *trig = NULL;

        w->fd = qemu_open_old(file, O_RDWR | O_NONBLOCK);
        if (w->fd < 0) {
            int err = errno;

            error_setg_errno(errp, errno, "cannot open %s", file);
            return -err;
        }
        for (;;) {
            win_us = (uint64_t)window * 1000;
            stall_us = win_us * psi_triggers[i].stall_permille / 1000;
            g_free(trig);
            trig = g_strdup_printf("%s %" PRIu64 " %" PRIu64,
                                   psi_triggers[i].type, stall_us, win_us);
            if (write(w->fd, trig, strlen(trig) + 1) >= 0) {
                break;
            }
            if (errno != EINVAL || window % 2000 == 0) {
                int err = errno;

                error_setg_errno(errp, errno, "cannot arm PSI trigger '%s' "
                                 "on %s", trig, file);
                return -err;
            }
            /* at most once: the next multiple of 2 s is always allowed */
            window = QEMU_ALIGN_UP(window, 2000);
        }
        watch_psi_fd(w);
    }
    if (window != window_ms) {
        append_detail(bp, "PSI window %u ms (the kernel refused %u ms: "
                      "unprivileged windows must be multiples of 2 s)",
                      window, window_ms);
    }
    return 0;
}

/* v2 headroom: memory.current against the limit, and memory.events. */
static bool open_v2_headroom(BalloonPressure *bp, const char *mnt,
                             const char *dir, Error **errp)
{
    Headroom *hr = &bp->hr;
    g_autofree char *current = g_build_filename(dir, "memory.current", NULL);
    g_autofree char *events = g_build_filename(dir, "memory.events", NULL);
    g_autofree char *origin = NULL;
    char buf[256];

    if (!balloon_cgroup_v2_limit(mnt, dir, &hr->limit, &origin)) {
        append_detail(bp, "no memory.max or memory.high on the path, so no "
                      "headroom");
        return true;
    }
    hr->kind = HEADROOM_V2;
    hr->scale = balloon_headroom_cgroup;
    hr->mnt = g_strdup(mnt);
    hr->limit_time = qemu_clock_get_ms(QEMU_CLOCK_REALTIME);
    hr->usage_fd = qemu_open_old(current, O_RDONLY);
    if (hr->usage_fd < 0) {
        error_setg_errno(errp, errno, "cannot open %s", current);
        return false;
    }
    hr->events_fd = qemu_open_old(events, O_RDONLY);
    if (hr->events_fd < 0) {
        error_setg_errno(errp, errno, "cannot open %s", events);
        return false;
    }
    /* reading it arms the notification, and gives the counters so far */
    if (!pread_text(hr->events_fd, buf, sizeof(buf)) ||
        !balloon_cgroup_parse_events(buf, &hr->events)) {
        error_setg(errp, "%s is not a memory.events file", events);
        return false;
    }
    hr->events_source = g_unix_fd_add_full(G_PRIORITY_HIGH, hr->events_fd,
                                           G_IO_PRI | G_IO_ERR, events_cb,
                                           hr, NULL);
    hr->timer = timer_new_ms(QEMU_CLOCK_REALTIME, headroom_timer_cb, hr);
    append_detail(bp, "headroom against the %" PRIu64 " MiB limit of %s "
                  "(usage polled, nearer the limit more often; "
                  "memory.events watched)", hr->limit / MiB, origin);
    headroom_check(hr);
    return true;
}

/*
 * The host's own memory: in use (MemTotal - MemAvailable) against
 * MemTotal, with levels at the setpoint, +5% and +10%, polled.
 */
static bool open_host_headroom(BalloonPressure *bp, uint32_t setpoint_pct,
                               Error **errp)
{
    Headroom *hr = &bp->host;
    g_autofree char *meminfo = g_build_filename(bp->proc, "meminfo", NULL);
    g_autofree char *what = NULL;
    g_autofree char *scale = NULL;
    uint64_t usage;

    hr->kind = HEADROOM_HOST;
    balloon_headroom_host_scale(&hr->scale, setpoint_pct);
    hr->usage_fd = qemu_open_old(meminfo, O_RDONLY);
    if (hr->usage_fd < 0) {
        error_setg_errno(errp, errno, "cannot open %s", meminfo);
        return false;
    }
    if (headroom_read(hr, &usage, &hr->limit, &what) != 1) {
        error_setg(errp, "%s", what ?: "cannot read /proc/meminfo");
        return false;
    }
    hr->timer = timer_new_ms(QEMU_CLOCK_REALTIME, headroom_timer_cb, hr);
    scale = scale_text(hr);
    append_detail(bp, "host memory in use (MemTotal - MemAvailable) against "
                  "%s MemTotal (polled, nearer the setpoint more often)",
                  scale);
    headroom_check(hr);
    return true;
}

void balloon_pressure_set_host_setpoint(BalloonPressure *bp,
                                        uint32_t setpoint_pct)
{
    Headroom *hr = &bp->host;
    g_autofree char *scale = NULL;

    if (hr->kind != HEADROOM_HOST) {
        return;
    }
    balloon_headroom_host_scale(&hr->scale, setpoint_pct);
    scale = scale_text(hr);
    append_detail(bp, "host setpoint now %u%% (%s MemTotal)", setpoint_pct,
                  scale);
    if (bp->running && !bp->lost) {
        headroom_check(hr);
    }
}

static bool open_v2(BalloonPressure *bp, const char *mnt, const char *dir,
                    const char *file, uint32_t window_ms, Error **errp)
{
    Error *psi_err = NULL;
    int ret = open_psi(bp, file, window_ms, &psi_err);

    if (ret == -EACCES || ret == -EPERM) {
        /*
         * An unprivileged QEMU (libvirt's) cannot arm PSI on the VM's
         * cgroup; management can, and hand the triggers over.  The
         * headroom files are world-readable.
         */
        while (bp->nwatch) {
            close_watch(&bp->watch[--bp->nwatch]);
        }
        append_detail(bp, "no PSI triggers (%s): management can hand them "
                      "over with pressure-fd", error_get_pretty(psi_err));
        error_free(psi_err);
    } else if (ret < 0) {
        error_propagate(errp, psi_err);
        return false;
    }
    if (!open_v2_headroom(bp, mnt, dir, errp)) {
        return false;
    }
    if (!bp->nwatch && !bp->hr.limit) {
        error_setg(errp, "%s has neither usable PSI triggers nor a memory "
                   "limit on its path", dir);
        return false;
    }
    return true;
}

/*
 * A descriptor from management, by getfd name or fdset (or number, on the
 * command line): an eventfd, or a PSI trigger fd.
 */
static bool open_handed(PressureWatch *w, const char *name, Error **errp)
{
    Monitor *mon = monitor_cur();
    g_autofree char *link = NULL;
    g_autofree char *target = NULL;

    if (g_str_has_prefix(name, "/dev/fdset/")) {
        w->fd = qemu_open(name, O_RDWR, errp);
    } else if (mon && qemu_isdigit(name[0])) {
        /* QEMU would adopt (and one day close) a descriptor of its own */
        error_setg(errp, "a descriptor number is accepted on the command "
                   "line only; hand the descriptor over with getfd or "
                   "add-fd and give its name or /dev/fdset/N");
        return false;
    } else {
        w->fd = monitor_fd_param(mon, name, errp);
    }
    if (w->fd < 0) {
        return false;
    }
    link = g_strdup_printf("/proc/self/fd/%d", w->fd);
    target = g_file_read_link(link, NULL);
    w->name = g_strdup_printf("%s (%s)", name, target ? target : "?");
    /* exactly: a cgroup path may contain the word */
    w->is_eventfd = !g_strcmp0(target, "anon_inode:[eventfd]");
    return true;
}

bool balloon_pressure_take_fd(BalloonPressure *bp, const char *name,
                              BalloonPolicyLevel level, Error **errp)
{
    PressureWatch w;
    PressureWatch *slot = &bp->handed[level];

    assert(level > BALLOON_POLICY_LEVEL_NONE &&
           level < BALLOON_POLICY_LEVEL__MAX);
    init_watch(&w, bp, level);
    if (!open_handed(&w, name, errp)) {
        return false;
    }
    /* one per level: an earlier one is closed */
    close_watch(slot);
    *slot = w;
    if (slot->is_eventfd) {
        g_unix_set_fd_nonblocking(slot->fd, true, NULL);
    }
    if (bp->running) {
        watch_handed(slot);
    }
    return true;
}

/* A cgroup v1 or v2 source on the cgroup @cfg names, or QEMU's own. */
static bool open_cgroup(BalloonPressure *bp, BalloonPressureKind kind,
                        const BalloonPressureConfig *cfg, bool autodetect,
                        Error **errp)
{
    bool v1 = kind == BALLOON_PRESSURE_CGROUP_V1;
    g_autofree char *mnt = NULL;
    g_autofree char *file = NULL;
    bool is_root = false;
    char *dir = balloon_cgroup_dir(bp->proc, v1 ? "memory" : NULL,
                                   cfg->cgroup, &mnt, &is_root, errp);

    if (!dir) {
        return false;
    }
    bp->path = dir;
    if (autodetect && is_root) {
        error_setg(errp, "QEMU runs in the root %s cgroup",
                   balloon_pressure_kind_name(kind));
        return false;
    }
    /*
     * Without a memory limit there, a v2 cgroup's PSI stays quiet until a
     * v1 memcg OOM-kills: the v1 source has usage thresholds.
     */
    if (autodetect && !v1 && !balloon_cgroup_v2_has_memory(bp->proc)) {
        error_setg(errp, "the memory controller is on cgroup v1 here");
        return false;
    }
    file = g_build_filename(dir, v1 ? "memory.pressure_level" :
                            "memory.pressure", NULL);
    if (access(file, F_OK) != 0) {
        error_setg_errno(errp, errno, "cannot use %s", file);
        return false;
    }
    bp->detail = g_strdup(cfg->cgroup ? "cgroup given by property" :
                          "QEMU's own cgroup");
    return v1 ? open_v1(bp, dir, errp) :
                open_v2(bp, mnt, dir, file, cfg->psi_window_ms, errp);
}

/*
 * The host's own memory, and system-wide PSI as the early signal (PSI on
 * the VM's cgroup never sees a stall that belongs to another service's).
 */
static bool open_host(BalloonPressure *bp, const BalloonPressureConfig *cfg,
                      Error **errp)
{
    g_autofree char *psi = g_build_filename(bp->proc, "pressure", "memory",
                                            NULL);
    Error *psi_err = NULL;

    bp->path = g_build_filename(bp->proc, "meminfo", NULL);
    bp->detail = g_strdup("the host's own memory");
    if (!open_host_headroom(bp, cfg->host_setpoint_pct, errp)) {
        return false;
    }
    if (open_psi(bp, psi, cfg->psi_window_ms, &psi_err) < 0) {
        while (bp->nwatch) {
            close_watch(&bp->watch[--bp->nwatch]);
        }
        append_detail(bp, "no system-wide PSI triggers (%s)",
                      error_get_pretty(psi_err));
        error_free(psi_err);
    } else {
        append_detail(bp, "system-wide PSI triggers on %s", psi);
    }
    return true;
}

/*
 * Auto-detected cgroup source: the host's own memory counts too (with no
 * limit on the path it is the limit; with one, the tighter one wins).
 */
static void add_host(BalloonPressure *bp, const BalloonPressureConfig *cfg)
{
    Error *err = NULL;

    if (!open_host_headroom(bp, cfg->host_setpoint_pct, &err)) {
        close_headroom(&bp->host);
        append_detail(bp, "host memory does not count: %s",
                      error_get_pretty(err));
        error_free(err);
    }
}

static bool open_kind(BalloonPressure *bp, BalloonPressureKind kind,
                      const BalloonPressureConfig *cfg, bool autodetect,
                      Error **errp)
{
    bp->kind = kind;
    switch (kind) {
    case BALLOON_PRESSURE_CGROUP_V1:
    case BALLOON_PRESSURE_CGROUP_V2:
        return open_cgroup(bp, kind, cfg, autodetect, errp);
    case BALLOON_PRESSURE_SYSTEM:
        bp->path = g_build_filename(bp->proc, "pressure", "memory", NULL);
        bp->detail = g_strdup("system-wide PSI");
        return open_psi(bp, bp->path, cfg->psi_window_ms, errp) == 0;
    case BALLOON_PRESSURE_HOST:
        return open_host(bp, cfg, errp);
    case BALLOON_PRESSURE_FD:
        if (!cfg->fd && !has_handed(bp)) {
            error_setg(errp, "pressure-source=fd needs pressure-fd");
            return false;
        }
        bp->kind = BALLOON_PRESSURE_NONE;   /* only what is handed over */
        return true;
    case BALLOON_PRESSURE_NONE:
        bp->detail = g_strdup("no host pressure source: reacting to guest "
                              "pressure only");
        return true;
    default:
        g_assert_not_reached();
    }
}

/* Close what the source opened itself (not the descriptors handed over). */
static void close_own(BalloonPressure *bp)
{
    while (bp->nwatch) {
        close_watch(&bp->watch[--bp->nwatch]);
    }
    close_headroom(&bp->hr);
    close_headroom(&bp->host);
    g_clear_pointer(&bp->path, g_free);
    g_clear_pointer(&bp->detail, g_free);
}

/*
 * The kind the user named; with fall_back_to_none, a host where it cannot
 * be opened leaves guest pressure only, with a warning, instead of failing.
 */
static bool open_named(BalloonPressure *bp, const BalloonPressureConfig *cfg,
                       Error **errp)
{
    Error *err = NULL;

    if (open_kind(bp, cfg->kind, cfg, false, &err)) {
        return true;
    }
    close_own(bp);
    if (!cfg->fall_back_to_none) {
        error_propagate(errp, err);
        return false;
    }
    warn_report("virtio-balloon: cannot open the host memory-pressure "
                "source '%s' here (%s); automatic ballooning reacts to "
                "guest pressure only",
                balloon_pressure_kind_name(cfg->kind), error_get_pretty(err));
    bp->kind = BALLOON_PRESSURE_NONE;
    bp->detail = g_strdup_printf("could not open '%s' on this host: %s",
                                 balloon_pressure_kind_name(cfg->kind),
                                 error_get_pretty(err));
    error_free(err);
    return true;
}

/*
 * 'auto': the first of cgroup v2, cgroup v1 and the host's memory that
 * opens; next to a cgroup, the host's memory counts too.
 */
static void open_detected(BalloonPressure *bp, const BalloonPressureConfig *cfg)
{
    static const BalloonPressureKind order[] = {
        BALLOON_PRESSURE_CGROUP_V2, BALLOON_PRESSURE_CGROUP_V1,
        BALLOON_PRESSURE_HOST,
    };
    g_autoptr(GString) tried = g_string_new("");
    Error *err = NULL;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(order); i++) {
        if (open_kind(bp, order[i], cfg, true, &err)) {
            g_autofree char *old = NULL;

            if (order[i] != BALLOON_PRESSURE_HOST) {
                add_host(bp, cfg);
            }
            old = g_steal_pointer(&bp->detail);
            bp->detail = g_strdup_printf("auto-detected: %s%s%s", old,
                                         tried->len ? "; skipped: " : "",
                                         tried->str);
            return;
        }
        g_string_append_printf(tried, "%s%s (%s)", tried->len ? ", " : "",
                               balloon_pressure_kind_name(order[i]),
                               error_get_pretty(err));
        error_free(err);
        err = NULL;
        close_own(bp);
    }
    warn_report("virtio-balloon: no usable host memory-pressure source (%s);"
                " automatic ballooning reacts to guest pressure only",
                tried->str);
    bp->kind = BALLOON_PRESSURE_NONE;
    bp->detail = g_strdup_printf("auto-detection found no source: %s",
                                 tried->str);
}

/* Open the source's own part as @cfg says; false and @errp if it fails. */
static bool open_own(BalloonPressure *bp, const BalloonPressureConfig *cfg,
                     Error **errp)
{
    bp->lost = false;
    if (cfg->kind != BALLOON_PRESSURE_AUTO) {
        return open_named(bp, cfg, errp);
    }
    open_detected(bp, cfg);
    return true;
}

BalloonPressure *balloon_pressure_open(const BalloonPressureConfig *cfg,
                                       BalloonPressureHandler *handler,
                                       void *opaque, Error **errp)
{
    BalloonPressure *bp = g_new0(BalloonPressure, 1);
    int l;

    bp->handler = handler;
    bp->opaque = opaque;
    bp->running = true;
    bp->proc = g_strdup(cfg->proc ?: "/proc");
    balloon_pressure_read_protection(bp);
    init_headroom(&bp->hr, bp);
    init_headroom(&bp->host, bp);
    for (l = 0; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        init_watch(&bp->handed[l], bp, l);
    }
    /* a descriptor given with the source comes first: it may be all */
    if ((cfg->fd && !balloon_pressure_take_fd(bp, cfg->fd, cfg->fd_level,
                                              errp)) ||
        !open_own(bp, cfg, errp)) {
        balloon_pressure_close(bp);
        return NULL;
    }
    return bp;
}

void balloon_pressure_stop(BalloonPressure *bp)
{
    int l;

    close_own(bp);
    bp->kind = BALLOON_PRESSURE_NONE;
    bp->running = false;
    for (l = 0; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        stop_watch(&bp->handed[l]);
    }
}

bool balloon_pressure_restart(BalloonPressure *bp,
                              const BalloonPressureConfig *cfg, Error **errp)
{
    int l;

    assert(!cfg->fd && !bp->running);
    balloon_pressure_read_protection(bp);
    if (!open_own(bp, cfg, errp)) {
        return false;
    }
    bp->running = true;
    for (l = 0; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        if (bp->handed[l].fd >= 0) {
            watch_handed(&bp->handed[l]);
        }
    }
    return true;
}

void balloon_pressure_close(BalloonPressure *bp)
{
    int l;

    if (!bp) {
        return;
    }
    close_own(bp);
    for (l = 0; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        close_watch(&bp->handed[l]);
    }
    g_free(bp->proc);
    g_free(bp->protection_origin);
    g_free(bp);
}
