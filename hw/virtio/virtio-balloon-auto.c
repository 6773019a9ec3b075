/*
 * Automatic virtio-balloon: device glue
 *
 * Feeds the pure policy (balloon-auto-policy.c) with host pressure events,
 * guest statistics and the driver's actual size, applies its decisions to
 * the balloon's num_pages, and exposes everything through QMP and HMP.
 * Policy time is QEMU_CLOCK_VIRTUAL: it stops while the VM is paused and
 * qtest can step it.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/units.h"
#include "qemu/error-report.h"
#include "qemu/log.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-balloon-auto.h"
#include "qapi/qapi-events-balloon-auto.h"
#include "qobject/qdict.h"
#include "monitor/monitor.h"
#include "monitor/hmp.h"
#include "migration/vmstate.h"
#include "migration/misc.h"
#include "system/runstate.h"
#include "system/system.h"
#include "exec/cpu-common.h"
#include "system/hostmem.h"
#include "exec/memory.h"
#include "hw/boards.h"
#include "hw/virtio/virtio.h"
#include "hw/virtio/virtio-balloon.h"
#include "hw/virtio/virtio-balloon-auto.h"
#include "virtio-balloon-auto-internal.h"
#include "hw/virtio/balloon-headroom.h"
#include "trace.h"

/* While a migration or snapshot blocks decisions: look again this often. */
#define BLOCKED_POLL_NS (1000 * SCALE_MS)
/* Never wake more often than this, whatever the policy asks. */
#define MIN_WAKEUP_NS (100 * SCALE_MS)

QEMU_BUILD_BUG_ON((int)BALLOON_PRESSURE_LEVEL__MAX !=
                  (int)BALLOON_POLICY_LEVEL__MAX);
QEMU_BUILD_BUG_ON((int)BALLOON_AUTO_REASON__MAX !=
                  (int)BALLOON_POLICY_REASON__MAX);
QEMU_BUILD_BUG_ON((int)BALLOON_PRESSURE_SOURCE_KIND__MAX !=
                  (int)BALLOON_PRESSURE__MAX);

static int64_t now_ns(void)
{
    return qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL);
}

int64_t virtio_balloon_auto_now(void)
{
    return now_ns();
}

uint64_t virtio_balloon_auto_actual(VirtIOBalloon *s)
{
    uint64_t ballooned = (uint64_t)s->actual << VIRTIO_BALLOON_PFN_SHIFT;
    uint64_t ram = virtio_balloon_ram_size();

    /* The guest writes actual: never trust it beyond RAM. */
    return ram - MIN(ballooned, ram);
}

void virtio_balloon_auto_set_target(VirtIOBalloon *s, uint64_t target)
{
    uint64_t ram = virtio_balloon_ram_size();

    target = MIN(target, ram);
    s->num_pages = (ram - target) >> VIRTIO_BALLOON_PFN_SHIFT;
    virtio_notify_config(VIRTIO_DEVICE(s));
}

static bool driver_ready(VirtIOBalloon *s)
{
    return VIRTIO_DEVICE(s)->status & VIRTIO_CONFIG_S_DRIVER_OK;
}

/*
 * Why no decisions can be made now, if anything blocks them.  The first
 * three are the conditions under which virtio-balloon ignores the guest's
 * inflations; they are told apart here so the query can say which.
 */
static bool auto_blocked(BalloonAutoBlocker *blocker)
{
    if (ram_block_discard_is_disabled()) {
        *blocker = BALLOON_AUTO_BLOCKER_DISCARD_DISABLED;
    } else if (migration_in_incoming_postcopy()) {
        *blocker = BALLOON_AUTO_BLOCKER_POSTCOPY;
    } else if (migration_in_bg_snapshot()) {
        *blocker = BALLOON_AUTO_BLOCKER_BACKGROUND_SNAPSHOT;
    } else if (!runstate_is_running()) {
        *blocker = BALLOON_AUTO_BLOCKER_VM_STOPPED;
    } else if (migration_is_running()) {
        *blocker = BALLOON_AUTO_BLOCKER_MIGRATION;
    } else {
        return false;
    }
    return true;
}

BalloonAutoStatus virtio_balloon_auto_status(VirtIOBalloon *s,
                                     BalloonAutoBlocker *blocker)
{
    VirtIOBalloonAuto *a = &s->autob;
    BalloonAutoBlocker why;

    if (!a->enabled) {
        return BALLOON_AUTO_STATUS_DISABLED;
    }
    if (auto_blocked(&why)) {
        if (blocker) {
            *blocker = why;
        }
        return why < BALLOON_AUTO_BLOCKER_VM_STOPPED ?
               BALLOON_AUTO_STATUS_INHIBITED : BALLOON_AUTO_STATUS_PAUSED;
    }
    if (now_ns() < a->hold_until) {
        return BALLOON_AUTO_STATUS_HELD;
    }
    if (!driver_ready(s)) {
        if (blocker) {
            *blocker = BALLOON_AUTO_BLOCKER_GUEST_DRIVER;
        }
        return BALLOON_AUTO_STATUS_PAUSED;
    }
    return a->dry_run ? BALLOON_AUTO_STATUS_DRY_RUN :
                        BALLOON_AUTO_STATUS_ACTIVE;
}

/* Each tunable as a property, and as a balloon-auto-set argument. */
typedef enum TunableName {
    TUNABLE_FLOOR,
    TUNABLE_RESERVE,
    TUNABLE_INFLATE_LOW,
    TUNABLE_INFLATE_MEDIUM,
    TUNABLE_INFLATE_CRITICAL,
    TUNABLE_MAX_STEP,
    TUNABLE_RETURN_STEP,
    TUNABLE_CALM_TIME,
    TUNABLE_COOLDOWN,
    TUNABLE__MAX,
} TunableName;

static const char *const tunable_names[TUNABLE__MAX][2] = {
    [TUNABLE_FLOOR] = { "auto-floor", "floor" },
    [TUNABLE_RESERVE] = { "auto-reserve", "reserve" },
    [TUNABLE_INFLATE_LOW] = { "inflate-low", "inflate-low" },
    [TUNABLE_INFLATE_MEDIUM] = { "inflate-medium", "inflate-medium" },
    [TUNABLE_INFLATE_CRITICAL] = { "inflate-critical", "inflate-critical" },
    [TUNABLE_MAX_STEP] = { "auto-max-step", "max-step" },
    [TUNABLE_RETURN_STEP] = { "auto-return-step", "return-step" },
    [TUNABLE_CALM_TIME] = { "auto-calm-time-ms", "calm-time-ms" },
    [TUNABLE_COOLDOWN] = { "auto-cooldown-ms", "cooldown-ms" },
};

#define MAX_CALM_TIME_MS (24 * 3600 * 1000)
#define MAX_COOLDOWN_MS (3600 * 1000)

/*
 * A step size: 0 for the default, else between the granularity and the
 * VM's memory size; rounded up to whole pages.
 */
static bool tunable_step(uint64_t value, const char *name,
                         const BalloonPolicyParams *p, uint64_t *step,
                         Error **errp)
{
    if (!value) {
        return true;
    }
    if (value < p->granularity || value > p->max) {
        error_setg(errp, "'%s' must be 0 (default) or between %" PRIu64
                   " and the VM's memory size (%" PRIu64 ")", name,
                   p->granularity, p->max);
        return false;
    }
    *step = QEMU_ALIGN_UP(value, BALLOON_POLICY_PAGE);
    return true;
}

/*
 * The floor: the one given, else what the host promised the VM's cgroup
 * (QEMU included), else the policy's default; where it comes from.
 */
static char *tunables_floor(uint64_t floor, const char *name, uint64_t ram,
                            const BalloonPressure *bp, BalloonPolicyParams *p)
{
    const char *origin = NULL;
    uint64_t protection = bp ? balloon_pressure_protection(bp, &origin) : 0;

    if (floor) {
        p->floor = floor;
        return g_strdup_printf("'%s'", name);
    }
    if (protection) {
        p->floor = MIN(protection, ram);
        return g_strdup_printf("cgroup protection %s", origin);
    }
    return g_strdup("default: 25% of the VM's memory, at least 128 MiB");
}

/*
 * Validate @t and turn it into policy parameters for a VM of @ram bytes.
 * Errors name the property, or with @as_arguments the balloon-auto-set
 * argument.  *@floor_origin says where the floor comes from.
 */
bool virtio_balloon_auto_tunables_apply(const BalloonAutoTunables *t,
                                        bool as_arguments, uint64_t ram,
                                        const BalloonPressure *bp,
                                        BalloonPolicyParams *p,
                                        char **floor_origin, Error **errp)
{
#define NAME(n) tunable_names[n][as_arguments]
    int l;

    balloon_policy_params_init(p, ram);
    for (l = BALLOON_POLICY_LEVEL_LOW; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        if (t->inflate_pct[l] > 100) {
            error_setg(errp, "'%s' must be a percentage from 0 to 100, "
                       "not %u", NAME(TUNABLE_INFLATE_LOW + l - 1),
                       t->inflate_pct[l]);
            return false;
        }
        p->step_pct[l] = t->inflate_pct[l];
    }
    if (t->floor > ram) {
        error_setg(errp, "'%s' (%" PRIu64 ") exceeds the VM's memory size "
                   "(%" PRIu64 ")", NAME(TUNABLE_FLOOR), t->floor, ram);
        return false;
    }
    if (t->reserve >= ram) {
        error_setg(errp, "'%s' (%" PRIu64 ") must be smaller than the VM's "
                   "memory size (%" PRIu64 ")", NAME(TUNABLE_RESERVE),
                   t->reserve, ram);
        return false;
    }
    if (t->reserve) {
        p->reserve = t->reserve;
    }
    if (!tunable_step(t->max_step, NAME(TUNABLE_MAX_STEP), p, &p->max_step,
                      errp) ||
        !tunable_step(t->return_step, NAME(TUNABLE_RETURN_STEP), p,
                      &p->return_step, errp)) {
        return false;
    }
    if (t->calm_time_ms > MAX_CALM_TIME_MS) {
        error_setg(errp, "'%s' must be at most one day (%d)",
                   NAME(TUNABLE_CALM_TIME), MAX_CALM_TIME_MS);
        return false;
    }
    p->hold = (int64_t)t->calm_time_ms * SCALE_MS;
    if (t->cooldown_ms > MAX_COOLDOWN_MS) {
        error_setg(errp, "'%s' must be at most one hour (%d)",
                   NAME(TUNABLE_COOLDOWN), MAX_COOLDOWN_MS);
        return false;
    }
    p->cooldown = (int64_t)t->cooldown_ms * SCALE_MS;
    *floor_origin = tunables_floor(t->floor, NAME(TUNABLE_FLOOR), ram, bp,
                                   p);
    return true;
#undef NAME
}

/* The same for this VM, as the properties name them. */
static bool tunables_for_vm(const BalloonAutoTunables *t,
                            const BalloonPressure *bp, BalloonPolicyParams *p,
                            char **floor_origin, Error **errp)
{
    return virtio_balloon_auto_tunables_apply(t, false,
                                              virtio_balloon_ram_size(), bp,
                                              p, floor_origin, errp);
}

#define PSI_WINDOW_MIN_MS 500
#define PSI_WINDOW_MAX_MS 10000

bool virtio_balloon_auto_host_setpoint_check(uint8_t pct, Error **errp)
{
    if (pct < BALLOON_HEADROOM_HOST_SETPOINT_MIN ||
        pct > BALLOON_HEADROOM_HOST_SETPOINT_MAX) {
        error_setg(errp, "'host-setpoint' must be a percentage of the host's "
                   "memory from %d to %d, not %u",
                   BALLOON_HEADROOM_HOST_SETPOINT_MIN,
                   BALLOON_HEADROOM_HOST_SETPOINT_MAX, pct);
        return false;
    }
    return true;
}

/*
 * The source the properties describe; a property that names none of the
 * choices is an error naming it.
 */
static bool source_config(VirtIOBalloonAuto *a, BalloonPressureConfig *cfg,
                          Error **errp)
{
    *cfg = (BalloonPressureConfig) {
        .kind = BALLOON_PRESSURE_AUTO,
        .cgroup = a->cgroup,
        .fd = a->fd_taken ? NULL : a->fd,
        .fd_level = BALLOON_POLICY_LEVEL_MEDIUM,
        .psi_window_ms = a->psi_window_ms,
        .host_setpoint_pct = a->host_setpoint,
    };
    if (a->source) {
        int kind = balloon_pressure_kind_parse(a->source);

        if (kind < 0) {
            error_setg(errp, "'pressure-source' must be one of auto, "
                       "cgroup-v1, cgroup-v2, host, system, fd, none; not "
                       "'%s'", a->source);
            return false;
        }
        cfg->kind = kind;
    } else if (a->fd) {
        cfg->kind = BALLOON_PRESSURE_FD;
    }
    if (a->fd_level) {
        int l = qapi_enum_parse(&BalloonPressureLevel_lookup, a->fd_level, -1,
                                NULL);

        if (l <= BALLOON_POLICY_LEVEL_NONE) {
            error_setg(errp, "'pressure-fd-level' must be low, medium or "
                       "critical; not '%s'", a->fd_level);
            return false;
        }
        cfg->fd_level = l;
    }
    if (!virtio_balloon_auto_host_setpoint_check(a->host_setpoint, errp)) {
        return false;
    }
    if (a->psi_window_ms < PSI_WINDOW_MIN_MS ||
        a->psi_window_ms > PSI_WINDOW_MAX_MS) {
        error_setg(errp, "'psi-window-ms' must be from %d to %d (the "
                   "kernel's PSI window range), not %u", PSI_WINDOW_MIN_MS,
                   PSI_WINDOW_MAX_MS, a->psi_window_ms);
        return false;
    }
    return true;
}

/*
 * Arm the timer for the next time something can happen without new
 * input: no periodic wake-ups at rest.
 */
static void auto_schedule(VirtIOBalloon *s)
{
    VirtIOBalloonAuto *a = &s->autob;
    int64_t now = now_ns();
    BalloonAutoBlocker why = BALLOON_AUTO_BLOCKER_VM_STOPPED;
    BalloonAutoStatus status = virtio_balloon_auto_status(s, &why);
    int64_t next = BALLOON_POLICY_NEVER;

    if (!a->realized) {
        return;
    }
    switch (status) {
    case BALLOON_AUTO_STATUS_HELD:
        next = a->hold_until;
        break;
    case BALLOON_AUTO_STATUS_PAUSED:
    case BALLOON_AUTO_STATUS_INHIBITED:
        /*
         * A migration or snapshot passes: look again soon; the side that
         * ends up running the VM resumes (a stopped VM's virtual clock
         * waits).  A new driver and discard being enabled again come with
         * events of their own.
         */
        if (why != BALLOON_AUTO_BLOCKER_DISCARD_DISABLED &&
            why != BALLOON_AUTO_BLOCKER_GUEST_DRIVER) {
            next = now + BLOCKED_POLL_NS;
        }
        break;
    default:
        next = balloon_policy_next_wakeup(&a->state, &a->params,
                                          virtio_balloon_auto_actual(s), now);
        break;
    }
    if (next == BALLOON_POLICY_NEVER) {
        timer_del(a->timer);
    } else {
        /* the timer is in nanoseconds, like the policy's clock */
        timer_mod(a->timer, MAX(next, now + MIN_WAKEUP_NS));
    }
}

/* Hand the policy a new reading of the host's headroom, once. */
static void auto_note_host(VirtIOBalloon *s, int64_t now)
{
    VirtIOBalloonAuto *a = &s->autob;
    BalloonPressureReading r;

    if (a->pressure && balloon_pressure_headroom(a->pressure, &r) &&
        r.count != a->host_reading) {
        BalloonPolicyHost h = {
            .time = now, .read_time = r.time, .usage = r.usage,
            .limit = r.limit, .setpoint = r.setpoint,
            .footprint = r.footprint,
        };

        /* taken once the policy's clock has moved on */
        if (balloon_policy_note_host(&a->state, &h)) {
            a->host_reading = r.count;
        }
    }
}

/*
 * Statistics polling for the policy (unless the user set an interval):
 * on while a driver can answer, off while there is none, so that a
 * device waiting for its driver has no timer running.  QEMU polls in
 * whole seconds: below a second the device asks by itself, an interval
 * after the last answer, with QEMU's poll behind it.
 */
static void auto_poll_stats(VirtIOBalloon *s, int64_t ms)
{
    VirtIOBalloonAuto *a = &s->autob;
    int64_t secs = DIV_ROUND_UP(ms, 1000);

    if (!a->polls_stats) {
        return;
    }
    if (s->stats_poll_interval != secs) {
        a->polls_every = secs;
        object_property_set_int(OBJECT(s), "guest-stats-polling-interval",
                                secs, &error_abort);
    }
    if (ms && ms < 1000) {
        int64_t due = a->stats.time == BALLOON_POLICY_NEVER ? now_ns() :
                      a->stats.time + ms * SCALE_MS;

        timer_mod(a->stats_timer, MAX(due, now_ns()));
    } else {
        timer_del(a->stats_timer);
    }
}

static void auto_stats_timer_cb(void *opaque)
{
    /* none held: the guest has not answered yet, and its answer re-arms */
    virtio_balloon_request_stats(opaque);
}

void virtio_balloon_auto_stats_requested(VirtIOBalloon *s)
{
    s->autob.stats_asked = true;
}

/*
 * Statistics come faster while the guest is short of memory or its use
 * grows fast, slower when calm; only if the automatic balloon turned
 * polling on, not if the user did.
 */
static void auto_adapt_stats_polling(VirtIOBalloon *s, int64_t now)
{
    VirtIOBalloonAuto *a = &s->autob;

    if (!a->polls_stats) {
        return;
    }
    if (s->stats_poll_interval != a->polls_every) {
        /* the user set an interval since: theirs from now on */
        a->polls_stats = false;
        timer_del(a->stats_timer);
        return;
    }
    auto_poll_stats(s, balloon_policy_stats_interval_ms(&a->state,
                                                        &a->params, now));
}

/* A decision made: record it, apply it unless it is a dry run, say it. */
static void auto_apply(VirtIOBalloon *s, BalloonPolicyDecision d,
                       uint64_t actual, int64_t now)
{
    VirtIOBalloonAuto *a = &s->autob;
    bool apply = !a->dry_run;

    a->last = d;
    a->last_level = balloon_policy_level(&a->state, &a->params, now);
    a->last_time = now;
    a->last_actual = actual;
    a->last_applied = apply;
    trace_virtio_balloon_auto_decision(balloon_policy_reason_name(d.reason),
                                       d.old_target, d.new_target, actual,
                                       apply);
    trace_virtio_balloon_auto_inputs(a->stats.available, a->state.guest_rate,
                                     a->state.host.usage, a->state.host.limit,
                                     a->state.host_rate);
    if (apply) {
        virtio_balloon_auto_set_target(s, d.new_target);
    }
    qapi_event_send_balloon_auto_decision(
        (BalloonAutoReason)d.reason, (BalloonPressureLevel)a->last_level,
        d.old_target, d.new_target, actual, apply);
}

/*
 * Hand the policy what the device and the source know now, and apply
 * what it decides.  @guest_only: only the guest's own need may move the
 * target.
 */
static void auto_decide(VirtIOBalloon *s, int64_t now, bool guest_only)
{
    VirtIOBalloonAuto *a = &s->autob;
    uint64_t actual = virtio_balloon_auto_actual(s);
    BalloonPolicyDecision d;

    /* DIMMs come and go: the maximum is what the balloon works on now. */
    balloon_policy_set_max(&a->state, &a->params, virtio_balloon_ram_size());
    auto_note_host(s, now);
    d = balloon_policy_decide(&a->state, &a->params, &(BalloonPolicyInput) {
        .now = now,
        .actual = actual,
        .stats = &a->stats,
        .stats_interval = a->polls_stats ? 0 :
                          s->stats_poll_interval * NANOSECONDS_PER_SECOND,
        /* with deflate-on-oom a Linux guest counts balloon pages in */
        .balloon_in_total = virtio_vdev_has_feature(
            VIRTIO_DEVICE(s), VIRTIO_BALLOON_F_DEFLATE_ON_OOM),
        .guest_only = guest_only,
        .dry_run = a->dry_run,
    });
    if (d.held) {
        trace_virtio_balloon_auto_held(d.held, d.new_target,
                                       a->state.host.usage,
                                       a->state.host.limit);
    }
    if (d.reason != BALLOON_POLICY_REASON_NONE) {
        auto_apply(s, d, actual, now);
    }
}

void virtio_balloon_auto_evaluate(VirtIOBalloon *s)
{
    VirtIOBalloonAuto *a = &s->autob;
    BalloonAutoBlocker why = BALLOON_AUTO_BLOCKER_VM_STOPPED;
    BalloonAutoStatus status;
    int64_t now = now_ns();
    bool guest_only;

    if (!a->realized || !a->enabled) {
        return;
    }
    status = virtio_balloon_auto_status(s, &why);
    if (why == BALLOON_AUTO_BLOCKER_DISCARD_DISABLED &&
        status == BALLOON_AUTO_STATUS_INHIBITED && !a->inhibit_warned) {
        warn_report("virtio-balloon: ballooning is inhibited (discard "
                    "disabled); automatic ballooning makes no decisions");
        a->inhibit_warned = true;
    }
    /*
     * An outgoing migration: the guest's own need still counts (memory
     * given to it only adds pages to send), nothing else does.
     */
    guest_only = status == BALLOON_AUTO_STATUS_PAUSED &&
                 why == BALLOON_AUTO_BLOCKER_MIGRATION &&
                 now >= a->hold_until && driver_ready(s);
    if (guest_only || status == BALLOON_AUTO_STATUS_ACTIVE ||
        status == BALLOON_AUTO_STATUS_DRY_RUN) {
        auto_decide(s, now, guest_only);
        auto_adapt_stats_polling(s, now);
    }
    auto_schedule(s);
}

static void auto_timer_cb(void *opaque)
{
    virtio_balloon_auto_evaluate(opaque);
}

static void auto_pressure_cb(void *opaque, BalloonPolicyLevel level,
                             const char *source)
{
    VirtIOBalloon *s = opaque;

    if (level != BALLOON_POLICY_LEVEL_NONE) {
        trace_balloon_pressure_event(source ? source : "fd",
                                     balloon_policy_level_name(level));
        balloon_policy_note_pressure(&s->autob.state, level, now_ns());
    }
    virtio_balloon_auto_evaluate(s);
}


void virtio_balloon_auto_stats_received(VirtIOBalloon *s)
{
    VirtIOBalloonAuto *a = &s->autob;
    BalloonPolicyGuestStats *st = &a->stats;
    bool asked = a->stats_asked;

    a->stats_asked = false;
    if (!a->enabled) {
        return;
    }
    /* the host as it is now: guest pressure gives only what it has room for */
    if (a->pressure &&
        balloon_policy_wants_host_reading(&a->state, &a->params,
                                          virtio_balloon_auto_actual(s))) {
        balloon_pressure_refresh(a->pressure);
    }
    /* The device keeps unreported tags at UINT64_MAX, the policy's unknown. */
    st->time = now_ns();
    st->asked = asked;
    st->total = s->stats[VIRTIO_BALLOON_S_MEMTOT];
    st->available = s->stats[VIRTIO_BALLOON_S_AVAIL];
    st->free = s->stats[VIRTIO_BALLOON_S_MEMFREE];
    st->caches = s->stats[VIRTIO_BALLOON_S_CACHES];
    st->major_faults = s->stats[VIRTIO_BALLOON_S_MAJFLT];
    st->swap_in = s->stats[VIRTIO_BALLOON_S_SWAP_IN];
    st->oom_kills = s->stats[VIRTIO_BALLOON_S_OOM_KILL];
    st->alloc_stalls = s->stats[VIRTIO_BALLOON_S_ALLOC_STALL];
    st->direct_reclaim = s->stats[VIRTIO_BALLOON_S_DIRECT_RECLAIM];
    trace_virtio_balloon_auto_stats(st->total, st->available,
                                    virtio_balloon_auto_actual(s));
    virtio_balloon_auto_evaluate(s);
}

void virtio_balloon_auto_actual_changed(VirtIOBalloon *s)
{
    uint64_t ram = virtio_balloon_ram_size();

    if (!s->autob.enabled) {
        return;
    }
    if (((uint64_t)s->actual << VIRTIO_BALLOON_PFN_SHIFT) > ram) {
        qemu_log_mask(LOG_GUEST_ERROR, "virtio-balloon: the guest reports %"
                      PRIu32 " pages in the balloon, more than the VM's %"
                      PRIu64 "\n", s->actual,
                      ram >> VIRTIO_BALLOON_PFN_SHIFT);
    }
    virtio_balloon_auto_evaluate(s);
}

/*
 * A driver that becomes ready starts with a clean slate; without one,
 * nothing polls.
 */
void virtio_balloon_auto_set_status(VirtIOBalloon *s, uint8_t status)
{
    VirtIOBalloonAuto *a = &s->autob;
    bool ready = status & VIRTIO_CONFIG_S_DRIVER_OK;

    if (!a->realized || ready == a->driver_was_ready) {
        return;
    }
    a->driver_was_ready = ready;
    auto_poll_stats(s, ready ? BALLOON_POLICY_STATS_INTERVAL_MS : 0);
    if (ready) {
        balloon_policy_driver_reset(&a->state, virtio_balloon_auto_actual(s),
                                    now_ns());
        /* the device's status changes after this hook: evaluate after it */
        timer_mod(a->timer, now_ns());
    }
}

bool virtio_balloon_auto_manual_target(VirtIOBalloon *s, uint64_t target)
{
    VirtIOBalloonAuto *a = &s->autob;

    if (!a->enabled || !a->realized) {
        return false;
    }
    balloon_policy_set_baseline(&a->state, &a->params, target, now_ns());
    virtio_balloon_auto_set_target(s, a->state.baseline);
    auto_schedule(s);
    return true;
}

uint64_t virtio_balloon_auto_target(VirtIOBalloon *s)
{
    uint64_t ram = virtio_balloon_ram_size();

    /* A DIMM unplugged after the target was set: no underflow. */
    return ram - MIN((uint64_t)s->num_pages << VIRTIO_BALLOON_PFN_SHIFT, ram);
}

/*
 * Memory the balloon cannot return makes automatic ballooning a silent
 * no-op (or a flood of failed discards): refuse it up front.
 */
static int check_ram_block(RAMBlock *rb, void *opaque)
{
    Error **errp = opaque;

    if (qemu_ram_pagesize(rb) > qemu_real_host_page_size()) {
        error_setg(errp, "'automatic': RAM block '%s' is backed by %zu KiB "
                   "pages; a Linux guest balloons 4 KiB pages, which cannot "
                   "free them", qemu_ram_get_idstr(rb),
                   qemu_ram_pagesize(rb) / KiB);
        return 1;
    }
    if (qemu_ram_get_fd(rb) >= 0 && !qemu_ram_is_shared(rb)) {
        error_setg(errp, "'automatic': RAM block '%s' is a private (share=off)"
                   " file mapping; discarding its pages returns no memory",
                   qemu_ram_get_idstr(rb));
        return 1;
    }
    return 0;
}

static bool auto_check_backing(Error **errp)
{
    if (should_mlock(mlock_state)) {
        error_setg(errp, "'automatic' cannot work with -overcommit "
                   "mem-lock=on: locked memory cannot be discarded");
        return false;
    }
    return !qemu_ram_foreach_block(check_ram_block, errp);
}

/* The VM runs again after a stop: host growth is measured afresh. */
static void auto_vm_state_change(void *opaque, bool running, RunState state)
{
    VirtIOBalloonAuto *a = &((VirtIOBalloon *)opaque)->autob;

    if (running) {
        balloon_policy_forget_host_growth(&a->state);
    }
}

/*
 * Open the pressure source the properties describe, or open it again
 * after a stop (the descriptors handed over before are still there).
 * @incoming: on a migration destination, where a source that cannot be
 * opened must not cost the VM.
 */
static bool auto_open_source(VirtIOBalloon *s, bool incoming, Error **errp)
{
    VirtIOBalloonAuto *a = &s->autob;
    BalloonPressureConfig cfg;
    bool ok;

    if (!source_config(a, &cfg, errp)) {
        return false;
    }
    cfg.fall_back_to_none = incoming;
    if (a->pressure) {
        ok = balloon_pressure_restart(a->pressure, &cfg, errp);
    } else {
        a->pressure = balloon_pressure_open(&cfg, auto_pressure_cb, s, errp);
        ok = a->pressure;
    }
    if (!ok) {
        error_prepend(errp, "'pressure-source=%s': ",
                      balloon_pressure_kind_name(cfg.kind));
        return false;
    }
    a->fd_taken |= !!cfg.fd;
    return true;
}

static bool auto_start(VirtIOBalloon *s, bool incoming, Error **errp)
{
    VirtIOBalloonAuto *a = &s->autob;
    g_autofree char *floor_origin = NULL;

    if (!auto_check_backing(errp) ||
        !tunables_for_vm(&a->tunables, NULL, &a->params, &floor_origin,
                         errp)) {
        return false;
    }
    /* Ready before the source opens: it may report pressure at once. */
    balloon_policy_state_init(&a->state, virtio_balloon_auto_target(s));
    balloon_policy_driver_reset(&a->state, virtio_balloon_auto_actual(s),
                                now_ns());
    a->stats.time = BALLOON_POLICY_NEVER;
    a->driver_was_ready = driver_ready(s);
    a->host_reading = 0;
    if (!auto_open_source(s, incoming, errp)) {
        return false;
    }
    /* again, with the floor the source's cgroups promise */
    g_free(a->floor_origin);
    tunables_for_vm(&a->tunables, a->pressure, &a->params, &a->floor_origin,
                    &error_abort);
    a->timer = timer_new_ns(QEMU_CLOCK_VIRTUAL, auto_timer_cb, s);
    a->stats_timer = timer_new_ns(QEMU_CLOCK_VIRTUAL, auto_stats_timer_cb, s);
    a->vm_state = qemu_add_vm_change_state_handler(auto_vm_state_change, s);
    a->realized = true;

    /* The policy needs guest statistics: poll them unless the user does. */
    if (!s->stats_poll_interval) {
        a->polls_stats = true;
        a->polls_every = 0;
        auto_poll_stats(s, a->driver_was_ready ?
                           BALLOON_POLICY_STATS_INTERVAL_MS : 0);
    }
    auto_schedule(s);
    return true;
}

bool virtio_balloon_auto_start(VirtIOBalloon *s, Error **errp)
{
    return auto_start(s, false, errp);
}

void virtio_balloon_auto_stop(VirtIOBalloon *s)
{
    VirtIOBalloonAuto *a = &s->autob;

    if (!a->realized) {
        return;
    }
    /* Descriptors handed over stay open for the next start. */
    balloon_pressure_stop(a->pressure);
    timer_free(a->timer);
    a->timer = NULL;
    qemu_del_vm_change_state_handler(a->vm_state);
    a->vm_state = NULL;
    g_clear_pointer(&a->floor_origin, g_free);
    a->realized = false;
    /*
     * Stop the polling that was turned on for us; on a failed realize its
     * timer would otherwise outlive the device.
     */
    auto_poll_stats(s, 0);
    a->polls_stats = false;
    timer_free(a->stats_timer);
    a->stats_timer = NULL;
}

bool virtio_balloon_auto_realize(VirtIOBalloon *s, Error **errp)
{
    VirtIOBalloonAuto *a = &s->autob;
    BalloonPolicyParams params;
    BalloonPressureConfig cfg;
    g_autofree char *floor_origin = NULL;

    /* A bad property is an error now, not at the first balloon-auto-set. */
    if (!tunables_for_vm(&a->tunables, NULL, &params, &floor_origin, errp) ||
        !source_config(a, &cfg, errp)) {
        return false;
    }
    if (!a->enabled) {
        return true;
    }
    a->enabled_at_start = true;
    return auto_start(s, false, errp);
}

void virtio_balloon_auto_unrealize(VirtIOBalloon *s)
{
    virtio_balloon_auto_stop(s);
    g_clear_pointer(&s->autob.pressure, balloon_pressure_close);
}

void virtio_balloon_auto_reset(VirtIOBalloon *s)
{
    VirtIOBalloonAuto *a = &s->autob;
    uint64_t target;

    if (!a->realized) {
        return;
    }
    /*
     * num_pages and actual survive a reset upstream: a rebooting guest
     * would inflate to an old automatic target before it has booted, and
     * a stale actual reads as a stuck driver.  Go back to the baseline
     * with an empty balloon and wait for a ready driver and fresh
     * statistics.  A DIMM may have gone since: no size beyond RAM.
     */
    s->actual = 0;
    balloon_policy_set_max(&a->state, &a->params, virtio_balloon_ram_size());
    target = balloon_policy_device_reset(&a->state, &a->params, now_ns());
    a->stats.time = BALLOON_POLICY_NEVER;
    a->stats_asked = false;
    s->num_pages = (virtio_balloon_ram_size() - target) >>
                   VIRTIO_BALLOON_PFN_SHIFT;
    auto_schedule(s);
}

/*
 * Migration.  The subsection is sent when automatic ballooning is on, or
 * was on at start (so that turning it off at run time is not undone by
 * the destination's command line); a VM without it migrates to and from
 * upstream QEMU as before.  Pressure sources are host-local: the
 * destination opens its own, and the source host's pressure stays behind.
 *
 * The stream is loaded into a->wire, checked, and only then applied:
 * nothing from it reaches the live state unvalidated.
 */
static bool auto_needed(void *opaque)
{
    VirtIOBalloon *s = opaque;

    return s->autob.enabled || s->autob.enabled_at_start;
}

static int auto_pre_save(void *opaque)
{
    VirtIOBalloonAuto *a = &((VirtIOBalloon *)opaque)->autob;
    BalloonAutoWire *w = &a->wire;

    w->state = a->state;
    w->stats = a->stats;
    w->enabled = a->enabled;
    w->enabled_at_start = a->enabled_at_start;
    w->dry_run = a->dry_run;
    w->hold_until = a->hold_until;
    w->last_reason = a->last.reason;
    w->last_level = a->last_level;
    w->last_old_target = a->last.old_target;
    w->last_new_target = a->last.new_target;
    w->last_actual = a->last_actual;
    w->last_time = a->last_time;
    w->last_applied = a->last_applied;
    w->tunables = a->tunables;
    return 0;
}

static int auto_subsection_post_load(void *opaque, int version_id)
{
    VirtIOBalloon *s = opaque;
    BalloonAutoWire *w = &s->autob.wire;

    /* Enums index tables and QAPI lookups: range-check them here. */
    if (w->last_reason >= BALLOON_POLICY_REASON__MAX ||
        w->last_level >= BALLOON_POLICY_LEVEL__MAX) {
        error_report("virtio-balloon: automatic state: invalid last "
                     "decision (reason %" PRIu32 ", level %" PRIu32 ")",
                     w->last_reason, w->last_level);
        return -EINVAL;
    }
    s->autob.state_migrated = true;
    return 0;
}

/*
 * Tunables and state from the stream, checked against this VM and its
 * clock (the virtual clock travels with the VM: every time in the stream
 * is a past event, or a hold or raised floor that ends within its length).
 */
static bool auto_take_wire(VirtIOBalloon *s, Error **errp)
{
    VirtIOBalloonAuto *a = &s->autob;
    BalloonAutoWire *w = &a->wire;
    BalloonPolicyParams params;
    g_autofree char *floor_origin = NULL;
    int64_t now = now_ns();
    const char *bad;

    if (!tunables_for_vm(&w->tunables, a->pressure, &params, &floor_origin,
                         errp)) {
        return false;
    }
    bad = balloon_policy_state_check(&w->state, &params, now);
    if (bad) {
        error_setg(errp, "policy state: %s", bad);
        return false;
    }
    if (w->hold_until > now + (int64_t)BALLOON_AUTO_MAX_HOLD_MS * SCALE_MS) {
        error_setg(errp, "hold of more than a day");
        return false;
    }
    if (w->stats.time < BALLOON_POLICY_NEVER || w->stats.time > now ||
        w->last_time < BALLOON_POLICY_NEVER || w->last_time > now) {
        error_setg(errp, "statistics or decision from the future");
        return false;
    }
    a->tunables = w->tunables;
    a->dry_run = w->dry_run;
    a->hold_until = w->hold_until;
    a->last.reason = w->last_reason;
    a->last_level = w->last_level;
    a->last.old_target = MIN(w->last_old_target, params.max);
    a->last.new_target = MIN(w->last_new_target, params.max);
    a->last_actual = MIN(w->last_actual, params.max);
    a->last_time = w->last_time;
    a->last_applied = w->last_applied;
    if (a->realized) {
        a->params = params;
        g_free(a->floor_origin);
        a->floor_origin = g_steal_pointer(&floor_origin);
    }
    return true;
}

int virtio_balloon_auto_post_load_device(VirtIOBalloon *s)
{
    VirtIOBalloonAuto *a = &s->autob;
    BalloonAutoWire *w = &a->wire;
    Error *err = NULL;

    /*
     * Only what belongs to the VM: the source host's pressure and the
     * growth measured there stay behind.
     */
    balloon_policy_arrived(&w->state);
    if (!a->state_migrated) {
        if (a->realized) {
            /* On here only: rest where the source left the balloon. */
            balloon_policy_state_init(&a->state,
                                      virtio_balloon_auto_target(s));
            balloon_policy_driver_reset(&a->state,
                                        virtio_balloon_auto_actual(s),
                                        now_ns());
            auto_schedule(s);
        }
        return 0;
    }
    a->state_migrated = false;
    a->enabled_at_start = w->enabled_at_start;
    if (!w->enabled) {
        /* Turned off on the source at run time. */
        virtio_balloon_auto_stop(s);
        a->enabled = false;
        return 0;
    }
    if (!auto_take_wire(s, &err)) {
        error_reportf_err(err, "virtio-balloon: migrated automatic state: ");
        return -EINVAL;
    }
    a->enabled = true;
    if (!a->realized && !auto_start(s, true, &err)) {
        error_reportf_err(err, "virtio-balloon: automatic ballooning "
                          "cannot continue here: ");
        return -EINVAL;
    }
    a->state = w->state;
    a->stats = w->stats;
    /* not sent: the answer to a request made on the source, if any */
    a->stats.asked = false;
    auto_schedule(s);
    return 0;
}

static const VMStateDescription vmstate_balloon_auto_tunables = {
    .name = "virtio-balloon-auto-tunables",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT64(floor, BalloonAutoTunables),
        VMSTATE_UINT64(reserve, BalloonAutoTunables),
        VMSTATE_UINT8_ARRAY(inflate_pct, BalloonAutoTunables,
                            BALLOON_POLICY_LEVEL__MAX),
        VMSTATE_UINT64(max_step, BalloonAutoTunables),
        VMSTATE_UINT64(return_step, BalloonAutoTunables),
        VMSTATE_UINT32(calm_time_ms, BalloonAutoTunables),
        VMSTATE_UINT32(cooldown_ms, BalloonAutoTunables),
        VMSTATE_END_OF_LIST()
    },
};

static const VMStateDescription vmstate_balloon_auto_stats = {
    .name = "virtio-balloon-auto-stats",
    .version_id = 1,
    .minimum_version_id = 1,
    .fields = (const VMStateField[]) {
        VMSTATE_INT64(time, BalloonPolicyGuestStats),
        VMSTATE_UINT64(total, BalloonPolicyGuestStats),
        VMSTATE_UINT64(available, BalloonPolicyGuestStats),
        VMSTATE_UINT64(free, BalloonPolicyGuestStats),
        VMSTATE_UINT64(caches, BalloonPolicyGuestStats),
        VMSTATE_UINT64(major_faults, BalloonPolicyGuestStats),
        VMSTATE_UINT64(swap_in, BalloonPolicyGuestStats),
        VMSTATE_UINT64(oom_kills, BalloonPolicyGuestStats),
        VMSTATE_UINT64(alloc_stalls, BalloonPolicyGuestStats),
        VMSTATE_UINT64(direct_reclaim, BalloonPolicyGuestStats),
        VMSTATE_END_OF_LIST()
    },
};

/*
 * The policy continues on the destination where it stopped, apart from
 * what belongs to the source host (pressure levels, their times, the
 * pending level, host readings) and the guest's growth rate, which the
 * destination measures afresh.
 */
static const VMStateDescription vmstate_balloon_auto_state = {
    .name = "virtio-balloon-auto-policy",
    .version_id = 2,
    .minimum_version_id = 2,
    .fields = (const VMStateField[]) {
        VMSTATE_UINT64(baseline, BalloonPolicyState),
        VMSTATE_UINT64(target, BalloonPolicyState),
        VMSTATE_INT64(last_pressure, BalloonPolicyState),
        VMSTATE_INT64(last_inflate, BalloonPolicyState),
        VMSTATE_INT64(last_guest_pressure, BalloonPolicyState),
        VMSTATE_INT64(last_return, BalloonPolicyState),
        VMSTATE_INT64(last_progress, BalloonPolicyState),
        VMSTATE_UINT64(last_actual, BalloonPolicyState),
        VMSTATE_UINT64(pingpong_floor, BalloonPolicyState),
        VMSTATE_INT64(pingpong_until, BalloonPolicyState),
        VMSTATE_STRUCT(prev, BalloonPolicyState, 1,
                       vmstate_balloon_auto_stats, BalloonPolicyGuestStats),
        VMSTATE_BOOL(driver_stuck, BalloonPolicyState),
        VMSTATE_UINT64_ARRAY(counters.events, BalloonPolicyState,
                             BALLOON_POLICY_LEVEL__MAX),
        VMSTATE_UINT64_ARRAY(counters.decisions, BalloonPolicyState,
                             BALLOON_POLICY_REASON__MAX),
        VMSTATE_UINT64_ARRAY(counters.bytes, BalloonPolicyState,
                             BALLOON_POLICY_REASON__MAX),
        VMSTATE_UINT64(counters.pingpongs, BalloonPolicyState),
        VMSTATE_END_OF_LIST()
    },
};

const VMStateDescription vmstate_virtio_balloon_auto = {
    .name = "virtio-balloon-device/auto",
    .version_id = 2,
    .minimum_version_id = 2,
    .needed = auto_needed,
    .pre_save = auto_pre_save,
    .post_load = auto_subsection_post_load,
    .fields = (const VMStateField[]) {
        VMSTATE_STRUCT(autob.wire.state, VirtIOBalloon, 2,
                       vmstate_balloon_auto_state, BalloonPolicyState),
        VMSTATE_STRUCT(autob.wire.stats, VirtIOBalloon, 1,
                       vmstate_balloon_auto_stats, BalloonPolicyGuestStats),
        VMSTATE_BOOL(autob.wire.enabled, VirtIOBalloon),
        VMSTATE_BOOL(autob.wire.enabled_at_start, VirtIOBalloon),
        VMSTATE_INT64(autob.wire.hold_until, VirtIOBalloon),
        VMSTATE_BOOL(autob.wire.dry_run, VirtIOBalloon),
        /* the last decision, as the query reports it */
        VMSTATE_UINT32(autob.wire.last_reason, VirtIOBalloon),
        VMSTATE_UINT64(autob.wire.last_old_target, VirtIOBalloon),
        VMSTATE_UINT64(autob.wire.last_new_target, VirtIOBalloon),
        VMSTATE_UINT32(autob.wire.last_level, VirtIOBalloon),
        VMSTATE_UINT64(autob.wire.last_actual, VirtIOBalloon),
        VMSTATE_INT64(autob.wire.last_time, VirtIOBalloon),
        VMSTATE_BOOL(autob.wire.last_applied, VirtIOBalloon),
        /* what balloon-auto-set may have changed */
        VMSTATE_STRUCT(autob.wire.tunables, VirtIOBalloon, 1,
                       vmstate_balloon_auto_tunables, BalloonAutoTunables),
        VMSTATE_END_OF_LIST()
    },
};
