/*
 * Automatic virtio-balloon: control policy
 *
 * Aims at a target instead of stepping a fixed amount per event:
 *
 * - host pressure inflates in proportion to the level and to what the guest
 *   can spare (the lesser of its size above the floor and its available
 *   memory above the reserve),
 *   capped per decision, with a cooldown between inflations;
 * - guest pressure (available memory under the reserve, rising major
 *   faults, swap-in, OOM kills or allocation stalls, or the guest deflating
 *   by itself) deflates at once and wins over host pressure;
 * - a deflate right after a host inflate is ping-pong: the floor is raised
 *   to the memory the guest uses and its margin for a while instead of
 *   repeating;
 * - after a calm hold time the target walks back to the baseline in
 *   bounded steps;
 * - several VMs reacting to the same events shrink multiplicatively and
 *   grow back additively, which converges to fair shares (AIMD), and idle
 *   guests (much available memory) give first.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "hw/virtio/balloon-auto-policy.h"

#define MiB_BYTES (1024 * 1024ULL)
#define SEC_NS 1000000000LL

static const char *const level_names[BALLOON_POLICY_LEVEL__MAX] = {
    [BALLOON_POLICY_LEVEL_NONE] = "none",
    [BALLOON_POLICY_LEVEL_LOW] = "low",
    [BALLOON_POLICY_LEVEL_MEDIUM] = "medium",
    [BALLOON_POLICY_LEVEL_CRITICAL] = "critical",
};

static const char *const reason_names[BALLOON_POLICY_REASON__MAX] = {
    [BALLOON_POLICY_REASON_NONE] = "none",
    [BALLOON_POLICY_REASON_HOST_PRESSURE] = "host-pressure",
    [BALLOON_POLICY_REASON_GUEST_PRESSURE] = "guest-pressure",
    [BALLOON_POLICY_REASON_GUEST_DEFLATED] = "guest-deflated",
    [BALLOON_POLICY_REASON_HOST_CALM] = "host-calm",
    [BALLOON_POLICY_REASON_GUEST_IDLE] = "guest-idle",
    [BALLOON_POLICY_REASON_DRIVER_STUCK] = "driver-stuck",
};

static uint64_t round_down_to(uint64_t v, uint64_t g)
{
    return v - v % g;
}

/* @a * @b / @c, saturating: rates and horizons come from the guest. */
static uint64_t mul_div_sat(uint64_t a, uint64_t b, uint64_t c)
{
    if (b && a > UINT64_MAX / b) {
        return UINT64_MAX;
    }
    return a * b / c;
}

const char *balloon_policy_level_name(BalloonPolicyLevel level)
{
    return level < BALLOON_POLICY_LEVEL__MAX ? level_names[level] : "?";
}

const char *balloon_policy_reason_name(BalloonPolicyReason reason)
{
    return reason < BALLOON_POLICY_REASON__MAX ? reason_names[reason] : "?";
}

void balloon_policy_params_init(BalloonPolicyParams *p, uint64_t ram_size)
{
    uint64_t ram = round_down_to(ram_size, BALLOON_POLICY_PAGE);

    memset(p, 0, sizeof(*p));
    p->max = ram;
    /* Defaults scale down with small VMs, so every VM can use them. */
    p->granularity = MIN(4 * MiB_BYTES,
                         MAX(BALLOON_POLICY_PAGE,
                             round_down_to(ram / 16, BALLOON_POLICY_PAGE)));
    p->floor = MIN(ram, MAX(128 * MiB_BYTES, ram / 4));
    p->reserve = MIN(MAX(64 * MiB_BYTES, ram / 16),
                     round_down_to(ram / 2, BALLOON_POLICY_PAGE));
    p->step_pct[BALLOON_POLICY_LEVEL_LOW] = BALLOON_POLICY_INFLATE_LOW_PCT;
    p->step_pct[BALLOON_POLICY_LEVEL_MEDIUM] =
        BALLOON_POLICY_INFLATE_MEDIUM_PCT;
    p->step_pct[BALLOON_POLICY_LEVEL_CRITICAL] =
        BALLOON_POLICY_INFLATE_CRITICAL_PCT;
    p->max_step = MAX(p->granularity,
                      MIN(256 * MiB_BYTES,
                          round_down_to(ram / 4, p->granularity)));
    p->return_step = MAX(p->granularity,
                         MIN(64 * MiB_BYTES,
                             round_down_to(ram / 16, p->granularity)));
    p->return_interval = 2 * SEC_NS;
    p->cooldown = 1 * SEC_NS;
    p->hold = 10 * SEC_NS;
    p->level_decay = 5 * SEC_NS;
    p->stats_max_age = 10 * SEC_NS;
    p->stuck_timeout = 10 * SEC_NS;
    p->pingpong_window = 10 * SEC_NS;
    p->pingpong_hold = 60 * SEC_NS;
    p->host_max_age = 3 * SEC_NS;
    /* 75% of a cgroup's limit, 5% under its setpoint: the hysteresis */
    p->return_gap_permille = 50;
    /* 95%: room for what else grows before the next host reading */
    p->host_guard_permille = 50;
    p->lead = 1 * SEC_NS;
    p->lead_max = 5 * SEC_NS;
    p->inflate_rate_guess = 128 * MiB_BYTES;
    p->guest_fast_rate = 512 * MiB_BYTES;
}

const char *balloon_policy_params_check(const BalloonPolicyParams *p)
{
    int i;

    if (p->floor > p->max) {
        return "floor exceeds the VM's memory size";
    }
    if (p->reserve >= p->max) {
        return "reserve must be smaller than the VM's memory size";
    }
    for (i = BALLOON_POLICY_LEVEL_LOW; i < BALLOON_POLICY_LEVEL__MAX; i++) {
        if (p->step_pct[i] > 100) {
            return "inflate step percentages must be at most 100";
        }
    }
    if (!p->max_step || !p->return_step) {
        return "step sizes must be non-zero";
    }
    if (!p->granularity || p->granularity > p->max_step) {
        return "granularity must be non-zero and at most the maximum step";
    }
    return NULL;
}

/* What the guest's samples measured: its growth, and which were used. */
static void forget_guest_growth(BalloonPolicyState *s)
{
    s->prev_used = UINT64_MAX;
    s->prev_actual = UINT64_MAX;
    s->guest_rate = 0;
    s->burst_rate = 0;
    s->burst_time = BALLOON_POLICY_NEVER;
    s->stats_seen = BALLOON_POLICY_NEVER;
    s->stats_used = BALLOON_POLICY_NEVER;
}

void balloon_policy_state_init(BalloonPolicyState *s, uint64_t baseline)
{
    int l;

    memset(s, 0, sizeof(*s));
    s->baseline = baseline;
    s->target = baseline;
    s->last_actual = baseline;
    for (l = 0; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        s->level_time[l] = BALLOON_POLICY_NEVER;
    }
    s->last_pressure = BALLOON_POLICY_NEVER;
    s->last_inflate = BALLOON_POLICY_NEVER;
    s->last_guest_pressure = BALLOON_POLICY_NEVER;
    s->last_return = BALLOON_POLICY_NEVER;
    s->pingpong_until = BALLOON_POLICY_NEVER;
    s->prev.time = BALLOON_POLICY_NEVER;
    forget_guest_growth(s);
    s->host.time = BALLOON_POLICY_NEVER;
    s->host_from.time = BALLOON_POLICY_NEVER;
    s->inflate_from_time = BALLOON_POLICY_NEVER;
}

void balloon_policy_driver_reset(BalloonPolicyState *s, uint64_t actual,
                                 int64_t now)
{
    s->last_actual = actual;
    s->last_progress = now;
    s->driver_stuck = false;
    s->prev.time = BALLOON_POLICY_NEVER;
    forget_guest_growth(s);
    s->inflate_rate = 0;
    s->inflate_from_time = BALLOON_POLICY_NEVER;
}

uint64_t balloon_policy_device_reset(BalloonPolicyState *s,
                                     const BalloonPolicyParams *p,
                                     int64_t now)
{
    s->target = MIN(s->baseline, p->max);
    balloon_policy_driver_reset(s, p->max, now);
    return s->target;
}

void balloon_policy_forget_host_growth(BalloonPolicyState *s)
{
    s->host_from.time = BALLOON_POLICY_NEVER;
    s->host_rate = 0;
}

/* The calm clock (last_pressure) keeps running: memory is not rushed back. */
void balloon_policy_arrived(BalloonPolicyState *s)
{
    int l;

    for (l = 0; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        s->level_time[l] = BALLOON_POLICY_NEVER;
    }
    s->pending = BALLOON_POLICY_LEVEL_NONE;
    s->host.time = BALLOON_POLICY_NEVER;
    balloon_policy_forget_host_growth(s);
    forget_guest_growth(s);
}

void balloon_policy_set_max(BalloonPolicyState *s, BalloonPolicyParams *p,
                            uint64_t ram_size)
{
    p->max = round_down_to(ram_size, BALLOON_POLICY_PAGE);
    s->baseline = MIN(s->baseline, p->max);
    s->target = MIN(s->target, p->max);
    s->last_actual = MIN(s->last_actual, p->max);
    s->pingpong_floor = MIN(s->pingpong_floor, p->max);
}

/* Growth from @from to @to over @dt ns, in bytes/s (0 if it shrank). */
static uint64_t growth_rate(uint64_t from, uint64_t to, int64_t dt)
{
    return to > from && dt >= 1000000 ?
           mul_div_sat(to - from, 1000, dt / 1000000) : 0;
}

/*
 * A growth rate that follows a burst at once and decays by half per
 * sample once it is over.
 */
static uint64_t follow_rate(uint64_t old_rate, uint64_t from, uint64_t to,
                            int64_t dt)
{
    uint64_t now_rate = growth_rate(from, to, dt);

    if (dt < 1000000) {
        return old_rate;        /* too close together to tell */
    }
    return MAX(now_rate, old_rate / 2);
}

/*
 * Host usage grows in steps (an allocator faults in a chunk, then works on
 * it): two readings a few milliseconds apart across one step would read as
 * gigabytes per second.  The rate is measured over at least this long.
 */
#define HOST_RATE_WINDOW (SEC_NS / 2)

/*
 * The host's usage but this VM's: the growth foreseen is that of the
 * others.  This VM's own growth is its guest's, which the guest's
 * statistics follow and which its size bounds; foreseen as host growth,
 * a guest allocating fast had its own balloon inflated against it.
 */
static uint64_t others_usage(const BalloonPolicyHost *h)
{
    return h->usage - MIN(h->footprint, h->usage);
}

bool balloon_policy_note_host(BalloonPolicyState *s,
                              const BalloonPolicyHost *h)
{
    if (s->host.time != BALLOON_POLICY_NEVER && h->time <= s->host.time) {
        return false;
    }
    if (s->host_from.time == BALLOON_POLICY_NEVER ||
        h->read_time < s->host_from.read_time) {
        s->host_from = *h;
    } else if (h->read_time - s->host_from.read_time >= HOST_RATE_WINDOW) {
        s->host_rate = follow_rate(s->host_rate, others_usage(&s->host_from),
                                   others_usage(h),
                                   h->read_time - s->host_from.read_time);
        s->host_from = *h;
    }
    s->host = *h;
    return true;
}

/* A past event at @now: a time no later than @now, or NEVER. */
static bool past(int64_t t, int64_t now)
{
    return t >= BALLOON_POLICY_NEVER && t <= now;
}

const char *balloon_policy_state_check(const BalloonPolicyState *s,
                                       const BalloonPolicyParams *p,
                                       int64_t now)
{
    int r;

    if (s->pending >= BALLOON_POLICY_LEVEL__MAX) {
        return "pending pressure level out of range";
    }
    if (!past(s->last_pressure, now) || !past(s->last_inflate, now) ||
        !past(s->last_guest_pressure, now) || !past(s->last_return, now) ||
        !past(s->last_progress, now) || !past(s->prev.time, now) ||
        !past(s->burst_time, now)) {
        return "time of an event in the future";
    }
    if (s->pingpong_until < BALLOON_POLICY_NEVER ||
        s->pingpong_until > now + p->pingpong_hold) {
        return "raised floor beyond its hold time";
    }
    if (s->baseline > p->max || s->target > p->max ||
        s->last_actual > p->max || s->pingpong_floor > p->max) {
        return "size beyond the VM's memory";
    }
    for (r = 0; r < BALLOON_POLICY_REASON__MAX; r++) {
        if (s->counters.bytes[r] && !s->counters.decisions[r]) {
            return "byte counter without decisions";
        }
    }
    return NULL;
}

void balloon_policy_note_pressure(BalloonPolicyState *s,
                                  BalloonPolicyLevel level, int64_t now)
{
    if (level <= BALLOON_POLICY_LEVEL_NONE ||
        level >= BALLOON_POLICY_LEVEL__MAX) {
        return;
    }
    s->counters.events[level]++;
    s->level_time[level] = now;
    s->last_pressure = now;
    s->pending = MAX(s->pending, level);
}

/*
 * Each level decays on its own: a stream of "low" events does not keep
 * an old "critical" alive.
 */
BalloonPolicyLevel balloon_policy_level(const BalloonPolicyState *s,
                                        const BalloonPolicyParams *p,
                                        int64_t now)
{
    int l;

    for (l = BALLOON_POLICY_LEVEL__MAX - 1; l > BALLOON_POLICY_LEVEL_NONE;
         l--) {
        if (now - s->level_time[l] < p->level_decay) {
            return l;
        }
    }
    return BALLOON_POLICY_LEVEL_NONE;
}

void balloon_policy_set_baseline(BalloonPolicyState *s,
                                 const BalloonPolicyParams *p,
                                 uint64_t baseline, int64_t now)
{
    /* The driver balloons whole pages: an unaligned size is never reached. */
    s->baseline = MIN(QEMU_ALIGN_UP(MIN(baseline, p->max),
                                    BALLOON_POLICY_PAGE), p->max);
    s->target = s->baseline;
    /* a new request: the driver gets its full time to follow it */
    s->last_progress = now;
    s->driver_stuck = false;
}

uint64_t balloon_policy_floor(const BalloonPolicyState *s,
                              const BalloonPolicyParams *p, int64_t now)
{
    uint64_t floor = p->floor;

    if (now < s->pingpong_until) {
        floor = MAX(floor, s->pingpong_floor);
    }
    return MIN(floor, p->max);
}

static bool stat_known(uint64_t v)
{
    return v != UINT64_MAX;
}

/* Counter @cur rose against @prev (both reported, no guest reset). */
static bool rose(uint64_t cur, uint64_t prev)
{
    return stat_known(cur) && stat_known(prev) && cur > prev;
}

/* No statistics, or none usable now. */
static const BalloonPolicyGuestStats no_stats = {
    .time = BALLOON_POLICY_NEVER, .total = UINT64_MAX,
    .available = UINT64_MAX, .free = UINT64_MAX,
    .caches = UINT64_MAX, .major_faults = UINT64_MAX,
    .swap_in = UINT64_MAX, .oom_kills = UINT64_MAX,
    .alloc_stalls = UINT64_MAX, .direct_reclaim = UINT64_MAX,
};

static bool stats_fresh(const BalloonPolicyGuestStats *st,
                        const BalloonPolicyParams *p, int64_t now)
{
    return st && st->time != BALLOON_POLICY_NEVER &&
           now - st->time <= p->stats_max_age;
}

/*
 * Guest available memory, clamped to what makes sense: a guest can report
 * anything, and nonsense must not make the balloon grab memory.
 */
static bool guest_available(const BalloonPolicyGuestStats *st,
                            uint64_t actual, uint64_t *avail)
{
    if (!stat_known(st->available)) {
        return false;
    }
    *avail = MIN(st->available, actual);
    return true;
}

/*
 * Memory the guest uses, from one sample: its total memory minus its
 * available memory, both as the guest saw them at the same instant.  (The
 * driver's actual size lags behind an inflation in progress: the guest has
 * given pages it has not reported yet, which would read as growth.)  With
 * deflate-on-oom the guest counts balloon pages in its total: take them
 * out.  Without a total, the guest's size stands in for it.
 */
static uint64_t guest_used(const BalloonPolicyParams *p,
                           const BalloonPolicyInput *in,
                           const BalloonPolicyGuestStats *st,
                           uint64_t actual, uint64_t avail)
{
    uint64_t total;

    if (!stat_known(st->total)) {
        return actual - avail;
    }
    total = MIN(st->total, p->max);
    if (in->balloon_in_total) {
        total -= MIN(total, p->max - actual);
    }
    return total > avail ? total - avail : 0;
}

/*
 * Growth in use from @prev to @st that a page cache fill explains.  Linux
 * keeps back half of a small page cache (up to the low watermark) from
 * the available memory it reports, so a guest reading its disk seems to
 * use up to half of what it adds to its cache.  A burst that also grows
 * the cache (tmpfs) still counts at least half.
 */
static uint64_t cache_fill_use(const BalloonPolicyGuestStats *st,
                               const BalloonPolicyGuestStats *prev)
{
    if (!stat_known(st->caches) || !stat_known(prev->caches) ||
        st->caches <= prev->caches) {
        return 0;
    }
    return (st->caches - prev->caches) / 2;
}

/* Use grows by more than half a reserve a second: a burst. */
static bool grows_fast(const BalloonPolicyState *s,
                       const BalloonPolicyParams *p)
{
    return s->guest_rate > p->reserve / 2;
}

/*
 * Until the driver has acted on the sample after next, statistics coming
 * every @interval ns: two intervals and half a second for the driver.
 */
static uint64_t growth_horizon_ms(int64_t interval)
{
    return (2 * interval + SEC_NS / 2) / 1000000;
}

/*
 * What memory in use grows by until the driver has acted on the sample
 * after next, at the rate observed.  Statistics the device polls come
 * at the interval this sample sets (every 200 ms once the guest grows
 * fast), not at the one before it: counting a calm second's interval
 * would give a burst two seconds of growth it does not need, and a guest
 * given much more than it uses fragments its free memory for Linux's
 * proactive compaction to move, balloon pages one request at a time.
 */
static uint64_t guest_growth(const BalloonPolicyState *s,
                             const BalloonPolicyParams *p,
                             const BalloonPolicyInput *in)
{
    int64_t interval = in->stats_interval ?:
        balloon_policy_stats_interval_ms(s, p, in->now) * 1000000;

    /* more than the whole VM is no more than the whole VM */
    return MIN(mul_div_sat(s->guest_rate, growth_horizon_ms(interval), 1000),
               p->max);
}

/* The fastest burst the guest sustained lately, as it counts at @now. */
static uint64_t burst_rate(const BalloonPolicyState *s, int64_t now)
{
    int64_t halves;

    if (s->burst_time == BALLOON_POLICY_NEVER) {
        return 0;
    }
    halves = MAX(now - s->burst_time, 0) / BALLOON_POLICY_BURST_HALF_LIFE;
    return halves >= 64 ? 0 : s->burst_rate >> halves;
}

/*
 * What the guest's fastest burst lately allocates until the driver has
 * acted on the sample after next, at the interval a squeezed guest is
 * asked at; at most a quarter of the VM.
 */
uint64_t balloon_policy_burst_reserve(const BalloonPolicyState *s,
                                      const BalloonPolicyParams *p,
                                      int64_t now)
{
    uint64_t horizon_ms =
        growth_horizon_ms(BALLOON_POLICY_STATS_INTERVAL_FAST_MS * 1000000);

    return MIN(mul_div_sat(burst_rate(s, now), horizon_ms, 1000), p->max / 4);
}

/*
 * The available memory guest pressure gives a guest expecting @growth:
 * that growth and the reserve, and half a reserve more so that it does not
 * ask again at once.  Host pressure leaves it as much, or the guest would
 * take back at once what it gave (ping-pong).
 */
static uint64_t guest_margin(const BalloonPolicyParams *p, uint64_t growth)
{
    return growth + p->reserve + p->reserve / 2;
}

/*
 * The guest size guest pressure asks for, or 0 for none.  Stats are only
 * compared with the previous sample when both are fresh, so a long pause
 * does not read as a burst.  A sample acts once: re-evaluating it must not
 * deflate again.
 *
 * Beyond the level (available memory under the reserve) it anticipates:
 * memory in use (guest_used()) grows at some rate, and the guest must
 * still have its reserve when the sample after next arrives and the
 * driver has acted on it.
 */
static uint64_t guest_wants(BalloonPolicyState *s,
                            const BalloonPolicyParams *p,
                            const BalloonPolicyInput *in,
                            const BalloonPolicyGuestStats *st,
                            uint64_t actual)
{
    const BalloonPolicyGuestStats *prev = &s->prev;
    uint64_t avail = 0, before, used, used_after, growth, want = 0;
    bool unseen = st->time > prev->time;
    bool new_sample = prev->time != BALLOON_POLICY_NEVER && unseen;

    if (!unseen || !guest_available(st, actual, &avail)) {
        return 0;
    }
    /*
     * Without a total, or with the balloon in it, the guest's size stands
     * in for the one the sample saw: the size before or after what the
     * driver did since the last sample.  Growth is measured from the
     * larger reading of the last sample to the smaller of this one, so
     * that memory the driver gave or took meanwhile never reads as growth.
     */
    before = s->prev_actual == UINT64_MAX ? actual : s->prev_actual;
    used = guest_used(p, in, st, MIN(actual, before), avail);
    /*
     * Growth seen over a sampling interval may all have happened in its
     * last part (a burst that just started): count it over half of it.
     * A burst already seen grew through the whole interval: counted over
     * half, it would be foreseen at twice its rate at every sample.  Use
     * that shrank means the burst is over.
     */
    if (new_sample && s->prev_used != UINT64_MAX) {
        uint64_t grown = used > s->prev_used ? used - s->prev_used : 0;
        int64_t dt = st->time - prev->time;
        bool sustained = grows_fast(s, p);

        grown -= MIN(grown, cache_fill_use(st, prev));
        s->guest_rate = used < s->prev_used ? 0 :
                        follow_rate(s->guest_rate, 0, grown,
                                    sustained ? dt : dt / 2);
        /* a rate counted over the whole interval: the burst's own */
        if (sustained && s->guest_rate > burst_rate(s, in->now)) {
            s->burst_rate = s->guest_rate;
            s->burst_time = in->now;
        }
    }
    used_after = guest_used(p, in, st, MAX(actual, before), avail);
    /*
     * The guest freed more than a reserve (both readings taken after what
     * the driver did) and is well under its raised floor: what the floor
     * and the pressure window protected is gone, and its free memory may
     * go to the host or to another guest at once.
     */
    if (new_sample && s->prev_used != UINT64_MAX &&
        used_after + p->reserve < s->prev_used &&
        in->now < s->pingpong_until &&
        used_after + guest_margin(p, 0) < s->pingpong_floor) {
        s->pingpong_until = in->now;
        s->last_guest_pressure = MIN(s->last_guest_pressure,
                                     in->now - p->pingpong_window);
    }
    s->prev_used = used_after;
    s->prev_actual = actual;
    growth = guest_growth(s, p, in);
    /* short now, or will be before the driver acts on the sample after next */
    if (avail < growth + p->reserve) {
        want = actual - avail + guest_margin(p, growth);
    }
    if (new_sample &&
        (rose(st->oom_kills, prev->oom_kills) ||
         rose(st->alloc_stalls, prev->alloc_stalls) ||
         rose(st->direct_reclaim, prev->direct_reclaim) ||
         rose(st->swap_in, prev->swap_in))) {
        want = MAX(want, actual + p->reserve);
    }
    /* Major faults only mean pressure when memory is also getting short. */
    if (new_sample && rose(st->major_faults, prev->major_faults) &&
        avail < 2 * p->reserve) {
        want = MAX(want, actual + p->reserve / 2);
    }
    return want;
}

/*
 * Host headroom: how much this VM should give now, or 0.  Usage foreseen
 * past the setpoint (the usage plus what the observed growth adds before
 * the next decision) makes a deficit, measured down to the middle of the
 * band under the setpoint where neither inflation nor the return acts: a
 * host brought back exactly to its setpoint crosses it again with its next
 * MiB of growth, and each crossing is a decision and a pressure level
 * again.  Several VMs in the cgroup each take the part of the deficit
 * their footprint is of the usage, so that together they give it, not
 * each all of it.  What the driver still has to inflate counts as given.
 */
static bool host_known(const BalloonPolicyState *s,
                       const BalloonPolicyParams *p, int64_t now)
{
    return s->host.time != BALLOON_POLICY_NEVER && s->host.limit &&
           now - s->host.time <= p->host_max_age;
}

/*
 * How far ahead host growth is foreseen: the next second, and the time
 * the driver needs to give what a second of it takes (a driver slower
 * than the allocator has to start earlier), up to lead_max.
 */
static int64_t host_lead(const BalloonPolicyState *s,
                         const BalloonPolicyParams *p)
{
    uint64_t driver = s->inflate_rate ?: p->inflate_rate_guess;
    uint64_t second = mul_div_sat(s->host_rate, p->lead / 1000000, 1000);
    uint64_t catch_up_ms = mul_div_sat(second, 1000, MAX(driver, 1));

    return p->lead + MIN(catch_up_ms, (uint64_t)(p->lead_max - p->lead) /
                                      1000000) * 1000000;
}

/* The band under the setpoint where the host is left alone. */
static uint64_t host_gap(const BalloonPolicyState *s,
                         const BalloonPolicyParams *p)
{
    return MIN(s->host.setpoint,
               s->host.limit / 1000 * p->return_gap_permille);
}

/* The host's usage once the growth foreseen has come. */
static uint64_t host_foreseen(const BalloonPolicyState *s,
                              const BalloonPolicyParams *p)
{
    uint64_t growth = mul_div_sat(s->host_rate, host_lead(s, p) / 1000000,
                                  1000);

    return s->host.usage + MIN(growth, s->host.limit);
}

/*
 * The most the host should use: its limit less a guard for what else
 * grows before the next reading.
 */
static uint64_t host_ceiling(const BalloonPolicyState *s,
                             const BalloonPolicyParams *p)
{
    return s->host.limit - s->host.limit / 1000 * p->host_guard_permille;
}

static uint64_t host_deficit(const BalloonPolicyState *s,
                             const BalloonPolicyParams *p, uint64_t actual)
{
    uint64_t setpoint = s->host.setpoint;
    uint64_t foreseen = host_foreseen(s, p);
    uint64_t deficit, share, pending;

    if (foreseen <= setpoint) {
        return 0;
    }
    deficit = foreseen - (setpoint - host_gap(s, p) / 2);
    share = s->host.usage && s->host.footprint < s->host.usage ?
            deficit / 1024 * (s->host.footprint * 1024 / s->host.usage) :
            deficit;
    pending = actual > s->target ? actual - s->target : 0;
    return share > pending ? share - pending : 0;
}

/* What the host can take back now without making a deficit: 0 if nothing. */
static uint64_t host_room(const BalloonPolicyState *s,
                          const BalloonPolicyParams *p)
{
    uint64_t below = s->host.setpoint - host_gap(s, p);

    return s->host.usage < below ? below - s->host.usage : 0;
}

/* What one decision looks at, worked out once. */
typedef struct Context {
    BalloonPolicyState *s;
    const BalloonPolicyParams *p;
    const BalloonPolicyInput *in;
    const BalloonPolicyGuestStats *st;  /* fresh statistics, or none */
    uint64_t actual;                    /* clamped to the VM */
    uint64_t floor;                     /* in force now, once known */
    bool host;                          /* a recent host reading */
} Context;

/*
 * A step one reason takes: the new target, or reason NONE; and what the
 * guest asked for beyond it that the host could not give.
 */
typedef struct Step {
    BalloonPolicyReason reason;
    uint64_t target;
    uint64_t held;
} Step;

static const Step no_step = { BALLOON_POLICY_REASON_NONE, 0, 0 };

/*
 * The largest guest size guest pressure may give: the host is never
 * sacrificed for one guest.  With a recent host reading, the guest grows
 * only into the room under the limit less a guard (what else grows before
 * the next reading), where the guest's free memory counts as used: a
 * guest short of memory touches it, and the host has not seen that yet.
 * Memory the driver handed over since the statistics is free too; what it
 * still has to hand over is part of both the size and the free memory.
 * Never less than the target.  Where other VMs share the limit, their
 * inflations for the host make room for the next decision.
 */
static uint64_t host_allows(const Context *c)
{
    const BalloonPolicyState *s = c->s;
    const BalloonPolicyHost *h = &s->host;
    uint64_t ceiling, free, used;

    if (!c->host) {
        return c->p->max;
    }
    ceiling = host_ceiling(s, c->p);
    /* unknown (UINT64_MAX): all of it */
    free = MIN(stat_known(c->st->free) ? c->st->free : c->st->available,
               c->actual);
    if (c->actual > s->stats_actual) {
        free = MIN(free + (c->actual - s->stats_actual), c->actual);
    }
    used = h->usage + free;
    return MAX(s->target, ceiling > used ?
                          round_down_to(c->actual + ceiling - used,
                                        c->p->granularity) : 0);
}

/*
 * Guest pressure and the guest deflating by itself: both win over
 * everything else, guest pressure as far as the host has room.  A deflate
 * right after a host inflate is ping-pong: the floor is raised for a while
 * to the memory the guest uses and the margin guest pressure gives it, at
 * most to the new size.  What it holds beyond (page cache it filled, free
 * memory) is not protected: host pressure may still take it.
 */
static Step guest_needs(Context *c, uint64_t want, bool deflated)
{
    BalloonPolicyState *s = c->s;
    const BalloonPolicyParams *p = c->p;
    int64_t now = c->in->now;
    Step step = {
        deflated ? BALLOON_POLICY_REASON_GUEST_DEFLATED :
                   BALLOON_POLICY_REASON_GUEST_PRESSURE,
        MIN(p->max, QEMU_ALIGN_UP(MAX(want, s->target + p->granularity),
                                  p->granularity)),
        0,
    };
    /* what a guest deflating by itself took is taken already */
    uint64_t allowed = deflated ? p->max : host_allows(c);

    s->last_guest_pressure = now;
    s->pending = BALLOON_POLICY_LEVEL_NONE;     /* the guest wins */
    if (step.target > allowed) {
        step.held = step.target - allowed;
        step.target = allowed;
    }
    if (step.target <= s->target) {
        return (Step) { BALLOON_POLICY_REASON_NONE, 0, step.held };
    }
    if (now - s->last_inflate < p->pingpong_window) {
        s->counters.pingpongs++;
        s->pingpong_floor = step.target;
        if (s->prev_used != UINT64_MAX) {
            s->pingpong_floor = MIN(step.target,
                                    s->prev_used + guest_margin(p, 0));
        }
        s->pingpong_until = now + p->pingpong_hold;
    }
    return step;
}

/*
 * The driver has not followed for the stuck timeout: stop asking for more,
 * once per episode, and never below the floor (actual comes from the
 * guest).
 */
static bool driver_is_stuck(const Context *c)
{
    const BalloonPolicyState *s = c->s;

    return s->target != c->actual && !s->driver_stuck &&
           c->in->now - s->last_progress >= c->p->stuck_timeout;
}

static Step driver_stuck(Context *c)
{
    c->s->driver_stuck = true;
    return (Step) { BALLOON_POLICY_REASON_DRIVER_STUCK,
                    MAX(c->actual, c->floor) };
}

/*
 * What the guest can spare for the host: its size above the floor and its
 * available memory above the margin guest pressure would give it back,
 * the lesser; 0 while its state is unknown.  A guest short of memory
 * lately keeps twice the margin: what it holds beyond that (page cache,
 * memory freed after a burst) can still go to the host.  With
 * @keep_burst, a guest that burst lately keeps as much as its growth
 * foreseen for the next burst (balloon_policy_burst_reserve()) where that
 * is more.  The statistics predate what the balloon took since they came:
 * that is given already.
 */
static uint64_t guest_spare(const Context *c, bool keep_burst)
{
    const BalloonPolicyState *s = c->s;
    const BalloonPolicyParams *p = c->p;
    uint64_t avail, growth, margin;

    if (!guest_available(c->st, c->actual, &avail) ||
        s->target <= c->floor) {
        return 0;
    }
    /* available memory once the driver is at the target */
    avail += s->target;
    avail = avail > s->stats_actual ? avail - s->stats_actual : 0;
    growth = guest_growth(s, p, c->in);
    if (keep_burst) {
        growth = MAX(growth, balloon_policy_burst_reserve(s, p, c->in->now));
    }
    margin = guest_margin(p, growth);
    if (c->in->now - s->last_guest_pressure < p->pingpong_window) {
        margin *= 2;
    }
    return MIN(s->target - c->floor, avail > margin ? avail - margin : 0);
}

/* An inflation for the host: @step less, counted as host pressure. */
static Step host_inflate(Context *c, uint64_t step)
{
    step = round_down_to(step, c->p->granularity);
    if (!step) {
        return no_step;
    }
    c->s->last_inflate = c->in->now;
    c->s->pending = BALLOON_POLICY_LEVEL_NONE;
    return (Step) { BALLOON_POLICY_REASON_HOST_PRESSURE,
                    c->s->target - step };
}

/*
 * Host headroom known: aim at this VM's share of the deficit, as fast as
 * the driver follows; once per host reading (a newer one shows what the
 * last decision did).  A guest's burst reserve stands while the host is
 * foreseen under its ceiling: past it, the host comes first.
 */
static Step host_deficit_step(Context *c, uint64_t deficit)
{
    BalloonPolicyState *s = c->s;
    bool keep_burst = host_foreseen(s, c->p) <= host_ceiling(s, c->p);
    uint64_t step;

    if (s->last_inflate >= s->host.time) {
        return no_step;
    }
    step = MIN(QEMU_ALIGN_UP(deficit, c->p->granularity), c->p->max_step);
    return host_inflate(c, MIN(step, guest_spare(c, keep_burst)));
}

/*
 * Events without a known headroom (PSI, system-wide, a descriptor from
 * management): in proportion to the level and to what the guest can
 * spare, idle guests giving first; each event inflates at most once, with
 * a cooldown, and not while the driver is still busy with the last one.
 */
static Step host_level_step(Context *c, BalloonPolicyLevel level)
{
    const BalloonPolicyParams *p = c->p;
    /* at the critical level the host comes first: no burst reserve */
    uint64_t spare = guest_spare(c, level < BALLOON_POLICY_LEVEL_CRITICAL);
    uint64_t step;

    if (c->in->now - c->s->last_inflate < p->cooldown ||
        c->actual > c->s->target + p->granularity) {
        return no_step;
    }
    step = spare * p->step_pct[level] / 100;
    if (p->step_pct[level]) {
        /* near the floor, still make progress */
        step = MAX(step, p->granularity);
    }
    return host_inflate(c, MIN(MIN(step, spare), p->max_step));
}

/*
 * When memory may go back: the hold time after the last pressure on
 * either side, or after the last host inflation (growth foreseen inflates
 * with no pressure event), and the return interval after the last return.
 */
static int64_t calm_from(const BalloonPolicyState *s,
                         const BalloonPolicyParams *p)
{
    int64_t squeezed = MAX(MAX(s->last_pressure, s->last_guest_pressure),
                           s->last_inflate);

    return MAX(squeezed + p->hold, s->last_return + p->return_interval);
}

static bool calm(const Context *c)
{
    return c->in->now >= calm_from(c->s, c->p);
}

/*
 * Calm below the baseline: walk back to it at a bounded rate, where the
 * host is known no more than it has room for.
 */
static Step host_calm(Context *c)
{
    BalloonPolicyState *s = c->s;
    uint64_t step = MIN(c->p->return_step, s->baseline - s->target);

    if (c->host) {
        step = round_down_to(MIN(step, host_room(s, c->p)),
                             c->p->granularity);
    }
    if (!step) {
        return no_step;
    }
    s->last_return = c->in->now;
    return (Step) { BALLOON_POLICY_REASON_HOST_CALM, s->target + step };
}

/* Calm above the baseline: take back what the guest no longer needs. */
static Step guest_idle(Context *c)
{
    BalloonPolicyState *s = c->s;
    const BalloonPolicyParams *p = c->p;
    uint64_t avail, give;

    if (!guest_available(c->st, c->actual, &avail) ||
        avail <= p->reserve * 2) {
        return no_step;
    }
    give = MIN(avail - p->reserve * 2, p->return_step);
    give = MIN(round_down_to(give, p->granularity), s->target - s->baseline);
    s->last_return = c->in->now;
    return (Step) { BALLOON_POLICY_REASON_GUEST_IDLE, s->target - give };
}

/*
 * How fast the driver inflates, measured over at least INFLATE_WINDOW
 * while it moves towards a smaller target (not while it rests or
 * deflates).
 */
#define INFLATE_WINDOW (SEC_NS / 2)

static void note_inflation(BalloonPolicyState *s, uint64_t actual,
                           int64_t now)
{
    if (actual >= s->last_actual || s->target >= s->last_actual) {
        if (actual != s->last_actual || actual <= s->target) {
            s->inflate_from_time = BALLOON_POLICY_NEVER;
        }
        return;
    }
    if (s->inflate_from_time == BALLOON_POLICY_NEVER ||
        now - s->inflate_from_time > 4 * INFLATE_WINDOW) {
        /* a new start, or a long pause that says nothing of its speed */
        bool recent = now - s->last_progress <= INFLATE_WINDOW;

        s->inflate_from = recent ? s->last_actual : actual;
        s->inflate_from_time = recent ? s->last_progress : now;
    } else if (now - s->inflate_from_time >= INFLATE_WINDOW) {
        s->inflate_rate = growth_rate(actual, s->inflate_from,
                                      now - s->inflate_from_time);
        s->inflate_from = actual;
        s->inflate_from_time = now;
    }
}

/*
 * The step to take, by reason, in order of precedence: the guest's need,
 * then (unless only the guest may move the target) a stuck driver, host
 * pressure, and the way back to the baseline when everything is calm.
 */
static Step next_step(Context *c)
{
    BalloonPolicyState *s = c->s;
    const BalloonPolicyParams *p = c->p;
    BalloonPolicyLevel level = s->pending;
    /* the guest grew past the target by itself (deflate-on-oom) */
    bool deflated = c->actual > s->last_actual && c->actual > s->target;
    uint64_t want = guest_wants(s, p, c->in, c->st, c->actual);
    uint64_t deficit;

    /* after guest_wants(), which may end a raised floor */
    c->floor = balloon_policy_floor(s, p, c->in->now);
    if (deflated) {
        want = MAX(want, c->actual);
    }
    note_inflation(s, c->actual, c->in->now);
    /* driver progress: moving, or at the target */
    if (c->actual != s->last_actual || c->actual == s->target) {
        s->last_progress = c->in->now;
        s->last_actual = c->actual;
        s->driver_stuck = false;
    }
    if (want > s->target && s->target < p->max) {
        return guest_needs(c, want, deflated);
    }
    if (c->in->guest_only) {
        return no_step;
    }
    if (driver_is_stuck(c)) {
        return driver_stuck(c);
    }
    deficit = c->host ? host_deficit(s, p, c->actual) : 0;
    if (deficit) {
        return host_deficit_step(c, deficit);
    }
    if (!c->host && level != BALLOON_POLICY_LEVEL_NONE &&
        c->in->now - s->level_time[level] < p->level_decay) {
        return host_level_step(c, level);
    }
    if (!calm(c)) {
        return no_step;
    }
    if (s->target < s->baseline) {
        return host_calm(c);
    }
    return s->target > s->baseline ? guest_idle(c) : no_step;
}

/*
 * The decision a step makes: whole pages only (the driver could never
 * reach anything else), counted, and the new target unless it is a dry
 * run.
 */
static BalloonPolicyDecision commit(BalloonPolicyState *s,
                                    const BalloonPolicyParams *p, Step step,
                                    bool dry_run)
{
    BalloonPolicyDecision d = {
        .reason = BALLOON_POLICY_REASON_NONE,
        .old_target = s->target,
        .new_target = s->target,
        .held = step.held,
    };
    uint64_t target = MIN(QEMU_ALIGN_UP(step.target, BALLOON_POLICY_PAGE),
                          round_down_to(p->max, BALLOON_POLICY_PAGE));

    if (step.reason == BALLOON_POLICY_REASON_NONE || target == s->target) {
        return d;
    }
    d.reason = step.reason;
    d.new_target = target;
    s->counters.decisions[step.reason]++;
    s->counters.bytes[step.reason] += target > s->target ?
                                      target - s->target :
                                      s->target - target;
    if (!dry_run) {
        s->target = target;
    }
    return d;
}

/*
 * The statistics this decision may use: the latest, unless they came
 * closer after the last ones used than a guest that does not flood the
 * queue sends them (they are used once that time has passed).
 */
static const BalloonPolicyGuestStats *
usable_stats(BalloonPolicyState *s, const BalloonPolicyParams *p,
             const BalloonPolicyInput *in)
{
    const BalloonPolicyGuestStats *st = in->stats;

    if (!stats_fresh(st, p, in->now)) {
        return &no_stats;
    }
    s->stats_seen = MAX(s->stats_seen, st->time);
    if (st->time > s->stats_used) {
        if (!st->asked &&
            in->now - s->stats_used < BALLOON_POLICY_STATS_MIN_SPACING) {
            return &no_stats;
        }
        s->stats_used = st->time;
        s->stats_actual = MIN(in->actual, p->max);
    }
    return st;
}

BalloonPolicyDecision balloon_policy_decide(BalloonPolicyState *s,
                                            const BalloonPolicyParams *p,
                                            const BalloonPolicyInput *in)
{
    Context c = {
        .s = s, .p = p, .in = in,
        .actual = MIN(in->actual, p->max),
        .host = host_known(s, p, in->now),
    };
    Step step;

    c.st = usable_stats(s, p, in);
    step = next_step(&c);
    if (c.st != &no_stats) {
        s->prev = *c.st;
    }
    return commit(s, p, step, in->dry_run);
}

/* The earlier of two wake-up times, either of which may be NEVER. */
static int64_t earliest(int64_t t, int64_t u)
{
    if (t == BALLOON_POLICY_NEVER) {
        return u;
    }
    return u == BALLOON_POLICY_NEVER ? t : MIN(t, u);
}

/*
 * What an allocator at the fastest plausible rate eats in @ms: a guest
 * with less available memory above its reserve is asked for statistics
 * more often than that, or a burst could use it up unseen.  (A guest at
 * its full size only once a second: no deflate could help it, and an
 * idle small VM costs no more than before.)
 */
static uint64_t fast_eats(const BalloonPolicyParams *p, int64_t ms)
{
    return mul_div_sat(p->guest_fast_rate, ms, 1000);
}

int64_t balloon_policy_stats_interval_ms(const BalloonPolicyState *s,
                                         const BalloonPolicyParams *p,
                                         int64_t now)
{
    bool seen = s->prev.time != BALLOON_POLICY_NEVER;
    uint64_t avail = s->prev.available;     /* unreported: UINT64_MAX */
    uint64_t spare = avail > p->reserve ? avail - p->reserve : 0;

    if (now - s->last_guest_pressure < p->pingpong_window ||
        /* growth that would eat the reserve within two seconds */
        grows_fast(s, p) ||
        /* a host past its setpoint: this guest may be asked to give */
        (host_known(s, p, now) && s->host.usage > s->host.setpoint) ||
        /* a squeezed guest, which a deflate can help */
        (seen && s->target < p->max &&
         spare < fast_eats(p, BALLOON_POLICY_STATS_INTERVAL_WATCH_MS))) {
        return BALLOON_POLICY_STATS_INTERVAL_FAST_MS;
    }
    if (!seen || spare < fast_eats(p, BALLOON_POLICY_STATS_INTERVAL_MS)) {
        return BALLOON_POLICY_STATS_INTERVAL_WATCH_MS;
    }
    return BALLOON_POLICY_STATS_INTERVAL_MS;
}

bool balloon_policy_wants_host_reading(const BalloonPolicyState *s,
                                       const BalloonPolicyParams *p,
                                       uint64_t actual)
{
    return s->target < p->max || actual < p->max;
}

int64_t balloon_policy_next_wakeup(const BalloonPolicyState *s,
                                   const BalloonPolicyParams *p,
                                   uint64_t actual, int64_t now)
{
    int64_t next = BALLOON_POLICY_NEVER;
    BalloonPolicyLevel level = s->pending;

    actual = MIN(actual, p->max);
    /* Waiting for the driver: the stuck timeout. */
    if (s->target != actual && !s->driver_stuck) {
        next = earliest(next, MAX(now, s->last_progress + p->stuck_timeout));
    }
    /* Pressure not acted upon because of the cooldown. */
    if (level != BALLOON_POLICY_LEVEL_NONE &&
        now - s->level_time[level] < p->level_decay &&
        s->last_inflate + p->cooldown > now &&
        s->last_inflate + p->cooldown < s->level_time[level] +
                                        p->level_decay) {
        next = earliest(next, s->last_inflate + p->cooldown);
    }
    /*
     * Memory to give back once calm (above the baseline only guest
     * statistics can say whether the guest can do without: they come by
     * themselves).
     */
    if (s->target < s->baseline) {
        int64_t calm = calm_from(s, p);

        if (level != BALLOON_POLICY_LEVEL_NONE) {
            /* a pending level keeps the return path closed until it decays */
            calm = MAX(calm, s->level_time[level] + p->level_decay);
        }
        next = earliest(next, MAX(now, calm));
    }
    /* statistics held back by the flood limit */
    if (s->stats_seen > s->stats_used) {
        next = earliest(next,
                        s->stats_used + BALLOON_POLICY_STATS_MIN_SPACING);
    }
    return next;
}
