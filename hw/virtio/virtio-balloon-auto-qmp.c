/*
 * Automatic virtio-balloon: QMP and HMP
 *
 * query-balloon-auto, balloon-auto-set, "info balloon" and "balloon_auto":
 * what the automatic balloon shows and how it is steered.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/units.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-balloon-auto.h"
#include "qobject/qdict.h"
#include "monitor/monitor.h"
#include "monitor/hmp.h"
#include "hw/virtio/virtio-balloon.h"
#include "virtio-balloon-auto-internal.h"

static VirtIOBalloon *find_balloon(Error **errp)
{
    Object *obj = object_resolve_path_type("", TYPE_VIRTIO_BALLOON, NULL);

    if (!obj) {
        error_set(errp, ERROR_CLASS_DEVICE_NOT_ACTIVE,
                  "No balloon device has been activated");
        return NULL;
    }
    return VIRTIO_BALLOON(obj);
}

static int64_t ns_to_ms(int64_t ns)
{
    return ns / SCALE_MS;
}

static BalloonAutoGuestStats *guest_stats_info(const BalloonPolicyGuestStats
                                               *st, int64_t now)
{
    BalloonAutoGuestStats *g = g_new0(BalloonAutoGuestStats, 1);

    g->age_ms = ns_to_ms(now - st->time);
#define OPT(m, v) \
    do { g->has_##m = (v) != UINT64_MAX; g->m = (v); } while (0)
    OPT(available, st->available);
    OPT(free, st->free);
    OPT(total, st->total);
    OPT(caches, st->caches);
    OPT(major_faults, st->major_faults);
    OPT(swap_in, st->swap_in);
    OPT(oom_kills, st->oom_kills);
    OPT(alloc_stalls, st->alloc_stalls);
#undef OPT
    return g;
}

static BalloonPressureSource *source_info(const VirtIOBalloonAuto *a)
{
    BalloonPressureSource *src = g_new0(BalloonPressureSource, 1);

    if (a->pressure && a->realized) {
        src->kind = (BalloonPressureSourceKind)
                    balloon_pressure_kind(a->pressure);
        src->path = balloon_pressure_path(a->pressure);
        src->detail = balloon_pressure_detail(a->pressure);
        src->lost = balloon_pressure_lost(a->pressure);
    } else {
        src->kind = BALLOON_PRESSURE_SOURCE_KIND_NONE;
        src->path = g_strdup("");
        src->detail = g_strdup(a->enabled ? "" :
                               "automatic ballooning is off");
    }
    return src;
}

/* The host's memory as the policy last saw it, if it knows a limit. */
static BalloonAutoHost *host_info(const VirtIOBalloonAuto *a, int64_t now)
{
    BalloonAutoHost *h;

    if (!a->realized || a->state.host.time == BALLOON_POLICY_NEVER ||
        !a->state.host.limit) {
        return NULL;
    }
    h = g_new0(BalloonAutoHost, 1);
    h->usage = a->state.host.usage;
    h->limit = a->state.host.limit;
    h->setpoint = a->state.host.setpoint;
    h->growth_rate = a->state.host_rate;
    h->age_ms = ns_to_ms(now - a->state.host.time);
    return h;
}

static void counters_info(BalloonAutoInfo *info,
                          const BalloonPolicyCounters *counters)
{
    BalloonAutoLevelCountList **events_tail = &info->events;
    BalloonAutoReasonCountList **decisions_tail = &info->decisions;
    int i;

    for (i = BALLOON_POLICY_LEVEL_LOW; i < BALLOON_POLICY_LEVEL__MAX; i++) {
        BalloonAutoLevelCount *c = g_new0(BalloonAutoLevelCount, 1);

        c->level = i;
        c->events = counters->events[i];
        QAPI_LIST_APPEND(events_tail, c);
    }
    for (i = BALLOON_POLICY_REASON_NONE + 1; i < BALLOON_POLICY_REASON__MAX;
         i++) {
        BalloonAutoReasonCount *c = g_new0(BalloonAutoReasonCount, 1);

        c->reason = i;
        c->count = counters->decisions[i];
        c->bytes = counters->bytes[i];
        QAPI_LIST_APPEND(decisions_tail, c);
    }
    info->pingpongs = counters->pingpongs;
}

static BalloonAutoDecision *last_decision_info(const VirtIOBalloonAuto *a,
                                               int64_t now)
{
    BalloonAutoDecision *d;

    if (a->last.reason == BALLOON_POLICY_REASON_NONE) {
        return NULL;
    }
    d = g_new0(BalloonAutoDecision, 1);
    d->reason = (BalloonAutoReason)a->last.reason;
    d->level = (BalloonPressureLevel)a->last_level;
    d->old_target = a->last.old_target;
    d->new_target = a->last.new_target;
    d->actual = a->last_actual;
    d->applied = a->last_applied;
    d->age_ms = ns_to_ms(now - a->last_time);
    return d;
}

BalloonAutoInfo *qmp_query_balloon_auto(Error **errp)
{
    VirtIOBalloon *s = find_balloon(errp);
    VirtIOBalloonAuto *a;
    BalloonAutoInfo *info;
    BalloonPolicyParams params;
    g_autofree char *floor_origin = NULL;
    int64_t now = virtio_balloon_auto_now();

    if (!s) {
        return NULL;
    }
    a = &s->autob;
    if (a->realized) {
        params = a->params;
    } else {
        /* What turning it on would use; checked when they were set. */
        virtio_balloon_auto_tunables_apply(&a->tunables, false,
                                           virtio_balloon_ram_size(), NULL,
                                           &params, &floor_origin,
                                           &error_abort);
    }
    info = g_new0(BalloonAutoInfo, 1);
    info->enabled = a->enabled;
    info->dry_run = a->dry_run;
    info->blocked_by = BALLOON_AUTO_BLOCKER_VM_STOPPED;
    info->status = virtio_balloon_auto_status(s, &info->blocked_by);
    info->has_blocked_by = info->status == BALLOON_AUTO_STATUS_INHIBITED ||
                           info->status == BALLOON_AUTO_STATUS_PAUSED;
    info->source = source_info(a);
    info->level = a->realized ?
        (BalloonPressureLevel)balloon_policy_level(&a->state, &params, now) :
        BALLOON_PRESSURE_LEVEL_NONE;
    info->has_level_age_ms = a->realized &&
                             a->state.last_pressure != BALLOON_POLICY_NEVER;
    info->level_age_ms = ns_to_ms(now - a->state.last_pressure);
    info->actual = virtio_balloon_auto_actual(s);
    info->target = virtio_balloon_auto_target(s);
    info->baseline = a->realized ? a->state.baseline : info->target;
    info->floor = a->realized ? balloon_policy_floor(&a->state, &params, now)
                              : params.floor;
    info->floor_origin = g_strdup(a->realized ? a->floor_origin
                                              : floor_origin);
    info->max = virtio_balloon_ram_size();
    info->reserve = params.reserve;
    info->burst_reserve = a->realized ?
        balloon_policy_burst_reserve(&a->state, &params, now) : 0;
    if (a->realized && a->stats.time != BALLOON_POLICY_NEVER) {
        info->guest_stats = guest_stats_info(&a->stats, now);
    }
    info->host = host_info(a, now);
    counters_info(info, &a->state.counters);
    info->last_decision = last_decision_info(a, now);
    info->driver_responding = !a->state.driver_stuck;
    info->hold_remaining_ms = MAX(0, ns_to_ms(a->hold_until - now));
    return info;
}

/* The tunables @set asks for: the device's, with its arguments applied. */
static BalloonAutoTunables settings_tunables(const VirtIOBalloonAuto *a,
                                             const BalloonAutoSettings *set)
{
    BalloonAutoTunables t = a->tunables;

#define SET(field, arg) \
    do { if (set->has_##arg) { t.field = set->arg; } } while (0)
    SET(floor, floor);
    SET(reserve, reserve);
    SET(inflate_pct[BALLOON_POLICY_LEVEL_LOW], inflate_low);
    SET(inflate_pct[BALLOON_POLICY_LEVEL_MEDIUM], inflate_medium);
    SET(inflate_pct[BALLOON_POLICY_LEVEL_CRITICAL], inflate_critical);
    SET(max_step, max_step);
    SET(return_step, return_step);
    SET(calm_time_ms, calm_time_ms);
    SET(cooldown_ms, cooldown_ms);
#undef SET
    return t;
}

/* The arguments that go together, and the level of a descriptor. */
static bool settings_check(const VirtIOBalloonAuto *a,
                           const BalloonAutoSettings *set, bool enabling,
                           BalloonPolicyLevel *fd_level, Error **errp)
{
    *fd_level = BALLOON_POLICY_LEVEL_MEDIUM;
    if (set->has_hold_ms && set->hold_ms > BALLOON_AUTO_MAX_HOLD_MS) {
        error_setg(errp, "'hold-ms' must be at most one day (%d)",
                   BALLOON_AUTO_MAX_HOLD_MS);
        return false;
    }
    if (set->has_pressure_fd_level) {
        if (!set->pressure_fd) {
            error_setg(errp, "'pressure-fd-level' needs 'pressure-fd'");
            return false;
        }
        if (set->pressure_fd_level == BALLOON_PRESSURE_LEVEL_NONE) {
            error_setg(errp, "'pressure-fd-level' must be low, medium or "
                       "critical");
            return false;
        }
        *fd_level = (BalloonPolicyLevel)set->pressure_fd_level;
    }
    if (set->pressure_fd && set->has_enabled && !set->enabled) {
        error_setg(errp, "'pressure-fd' cannot be given with 'enabled': "
                   "false");
        return false;
    }
    if (set->pressure_fd && !a->realized && !enabling) {
        error_setg(errp, "'pressure-fd' needs automatic ballooning on "
                   "(or 'enabled': true in the same command)");
        return false;
    }
    return !set->has_host_setpoint ||
           virtio_balloon_auto_host_setpoint_check(set->host_setpoint, errp);
}

/*
 * The steps that can fail, each undone if a later one does: turning
 * automatic ballooning on (with @t), then taking the descriptor, last, so
 * that a failure leaves it with the monitor.
 */
static bool settings_act(VirtIOBalloon *s, const BalloonAutoSettings *set,
                         const BalloonAutoTunables *t, bool enabling,
                         BalloonPolicyLevel fd_level, Error **errp)
{
    VirtIOBalloonAuto *a = &s->autob;
    BalloonAutoTunables saved = a->tunables;

    if (enabling) {
        a->tunables = *t;
        a->enabled = true;
        if (!virtio_balloon_auto_start(s, errp)) {
            a->tunables = saved;
            a->enabled = false;
            return false;
        }
    }
    if (set->pressure_fd &&
        !balloon_pressure_take_fd(a->pressure, set->pressure_fd, fd_level,
                                  errp)) {
        error_prepend(errp, "'pressure-fd': ");
        if (enabling) {
            virtio_balloon_auto_stop(s);
            a->tunables = saved;
            a->enabled = false;
        }
        return false;
    }
    return true;
}

/*
 * All or nothing: every argument is validated, and the steps that can
 * fail happen before anything is committed.
 */
void qmp_balloon_auto_set(BalloonAutoSettings *set, Error **errp)
{
    VirtIOBalloon *s = find_balloon(errp);
    VirtIOBalloonAuto *a;
    BalloonAutoTunables t;
    BalloonPolicyParams params;
    BalloonPolicyLevel fd_level;
    g_autofree char *floor_origin = NULL;
    bool enabling, disabling;

    if (!s) {
        return;
    }
    a = &s->autob;
    t = settings_tunables(a, set);
    enabling = set->has_enabled && set->enabled && !a->enabled;
    disabling = set->has_enabled && !set->enabled && a->enabled;
    if (a->realized) {
        /* the floor follows a protection management set since */
        balloon_pressure_read_protection(a->pressure);
    }
    if (!virtio_balloon_auto_tunables_apply(&t, true,
                                            virtio_balloon_ram_size(),
                                            a->pressure, &params,
                                            &floor_origin, errp) ||
        !settings_check(a, set, enabling, &fd_level, errp) ||
        !settings_act(s, set, &t, enabling, fd_level, errp)) {
        return;
    }

    /* Validated, and nothing can fail any more: commit. */
    a->tunables = t;
    if (set->has_host_setpoint) {
        a->host_setpoint = set->host_setpoint;
        if (a->realized) {
            balloon_pressure_set_host_setpoint(a->pressure, a->host_setpoint);
        }
    }
    if (set->has_dry_run) {
        a->dry_run = set->dry_run;
    }
    if (set->has_hold_ms) {
        a->hold_until = set->hold_ms ? virtio_balloon_auto_now() +
                                       (int64_t)set->hold_ms * SCALE_MS : 0;
    }
    if (a->realized && !enabling) {
        a->params = params;
        g_free(a->floor_origin);
        a->floor_origin = g_steal_pointer(&floor_origin);
    }
    if (disabling) {
        uint64_t baseline = a->state.baseline;

        virtio_balloon_auto_stop(s);
        a->enabled = false;
        /* Plain manual ballooning at the baseline. */
        virtio_balloon_auto_set_target(s, baseline);
    }
    virtio_balloon_auto_evaluate(s);
}

/* The pressure events and the decisions by reason, in one line each. */
static void hmp_print_counts(Monitor *mon, BalloonAutoInfo *info)
{
    BalloonAutoReasonCount *rc;
    BalloonAutoLevelCount *lc;

    monitor_printf(mon, "  events:");
    for (BalloonAutoLevelCountList *l = info->events; l; l = l->next) {
        lc = l->value;
        monitor_printf(mon, " %s=%" PRIu64, BalloonPressureLevel_str(lc->level),
                       lc->events);
    }
    monitor_printf(mon, "\n  decisions:");
    for (BalloonAutoReasonCountList *l = info->decisions; l; l = l->next) {
        rc = l->value;
        if (rc->count) {
            monitor_printf(mon, " %s=%" PRIu64 "/%" PRIu64 "MiB",
                           BalloonAutoReason_str(rc->reason), rc->count,
                           rc->bytes / MiB);
        }
    }
    monitor_printf(mon, "\n");
}

void hmp_info_balloon_auto(Monitor *mon)
{
    g_autoptr(BalloonAutoInfo) info = qmp_query_balloon_auto(NULL);

    if (!info || !info->enabled) {
        return;
    }
    monitor_printf(mon, "automatic: %s%s%s, source %s%s%s (%s)\n",
                   BalloonAutoStatus_str(info->status),
                   info->has_blocked_by ? " by " : "",
                   info->has_blocked_by ?
                   BalloonAutoBlocker_str(info->blocked_by) : "",
                   BalloonPressureSourceKind_str(info->source->kind),
                   info->source->path[0] ? " " : "", info->source->path,
                   info->source->lost ? "LOST" : info->source->detail);
    monitor_printf(mon, "  level %s, target %" PRId64 " MiB, baseline %"
                   PRId64 " MiB, floor %" PRId64 " MiB, max %" PRId64
                   " MiB\n", BalloonPressureLevel_str(info->level),
                   info->target / MiB, info->baseline / MiB,
                   info->floor / MiB, info->max / MiB);
    if (info->guest_stats && info->guest_stats->has_available) {
        monitor_printf(mon, "  guest available %" PRIu64 " MiB (%" PRId64
                       " ms ago), reserve %" PRId64 " MiB, burst reserve %"
                       PRId64 " MiB\n",
                       info->guest_stats->available / MiB,
                       info->guest_stats->age_ms, info->reserve / MiB,
                       info->burst_reserve / MiB);
    }
    if (info->host) {
        monitor_printf(mon, "  host: %" PRIu64 " of %" PRIu64
                       " MiB in use, setpoint %" PRIu64 " MiB, growing %"
                       PRIu64 " MiB/s\n", info->host->usage / MiB,
                       info->host->limit / MiB, info->host->setpoint / MiB,
                       info->host->growth_rate / MiB);
    }
    hmp_print_counts(mon, info);
    if (info->last_decision) {
        monitor_printf(mon, "  last: %s %" PRId64 " -> %" PRId64 " MiB, %"
                       PRId64 " ms ago%s\n",
                       BalloonAutoReason_str(info->last_decision->reason),
                       info->last_decision->old_target / MiB,
                       info->last_decision->new_target / MiB,
                       info->last_decision->age_ms,
                       info->last_decision->applied ? "" : " (dry run)");
    }
    if (!info->driver_responding) {
        monitor_printf(mon, "  guest driver is not responding\n");
    }
}

void hmp_balloon_auto(Monitor *mon, const QDict *qdict)
{
    const char *arg = qdict_get_str(qdict, "state");
    bool dry_run = !strcmp(arg, "dry-run");
    bool on = dry_run || !strcmp(arg, "on");
    BalloonAutoSettings set = {
        .has_enabled = true, .enabled = on,
        .has_dry_run = on, .dry_run = dry_run,
    };
    Error *err = NULL;

    if (!on && strcmp(arg, "off")) {
        monitor_printf(mon, "balloon_auto: expected on, off or dry-run\n");
        return;
    }
    qmp_balloon_auto_set(&set, &err);
    hmp_handle_error(mon, err);
}
