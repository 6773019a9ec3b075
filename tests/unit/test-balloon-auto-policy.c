/*
 * Unit tests of the automatic virtio-balloon control policy
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "hw/virtio/balloon-auto-policy.h"
#include "hw/virtio/balloon-headroom.h"

#define MiB ((uint64_t)1 << 20)
#define GiB (1024 * MiB)
#define SEC 1000000000LL
#define MS 1000000LL

typedef struct Fixture {
    BalloonPolicyParams p;
    BalloonPolicyState s;
    BalloonPolicyGuestStats st;
    int64_t now;
    /* what the device says with each input: 0, it polls them */
    int64_t stats_interval;
    bool balloon_in_total;
    bool dry_run;
} Fixture;

static void fixture_init(Fixture *f, uint64_t ram, uint64_t baseline)
{
    balloon_policy_params_init(&f->p, ram);
    balloon_policy_state_init(&f->s, baseline);
    memset(&f->st, 0xff, sizeof(f->st));
    f->st.asked = false;
    f->now = 100 * SEC;
    f->stats_interval = BALLOON_POLICY_STATS_INTERVAL_MS * MS;
    f->balloon_in_total = false;
    f->dry_run = false;
}

static void set_stats(Fixture *f, uint64_t available)
{
    f->st.time = f->now;
    f->st.available = available;
}

static BalloonPolicyDecision decide_at(Fixture *f, uint64_t actual,
                                       int64_t now, bool guest_only)
{
    return balloon_policy_decide(&f->s, &f->p, &(BalloonPolicyInput) {
                                     .now = now, .actual = actual,
                                     .stats = &f->st,
                                     .stats_interval = f->stats_interval,
                                     .balloon_in_total = f->balloon_in_total,
                                     .guest_only = guest_only,
                                     .dry_run = f->dry_run,
                                 });
}

static BalloonPolicyDecision decide(Fixture *f, uint64_t actual)
{
    return decide_at(f, actual, f->now, false);
}

/*
 * A 2 GiB guest with 1500 MiB available meets a host pressure event of
 * @level: the first decision.
 */
static BalloonPolicyDecision host_event(Fixture *f, BalloonPolicyLevel level)
{
    fixture_init(f, 2 * GiB, 2 * GiB);
    balloon_policy_note_pressure(&f->s, level, f->now);
    set_stats(f, 1500 * MiB);
    return decide(f, 2 * GiB);
}

/* Table-driven single decisions from a fresh state. */
typedef struct Case {
    const char *name;
    BalloonPolicyLevel level;   /* event just before deciding */
    uint64_t available;         /* UINT64_MAX: not reported */
    int64_t stats_age;          /* seconds */
    BalloonPolicyReason reason;
    int64_t delta_mib;          /* expected new_target - old_target */
} Case;

static const Case cases[] = {
    { "calm", BALLOON_POLICY_LEVEL_NONE, 800 * MiB, 0,
      BALLOON_POLICY_REASON_NONE, 0 },
    /*
     * 2 GiB guest, floor 512 MiB, reserve 128 MiB, 1500 MiB available:
     * it can spare min(2048 - 512, 1500 - 1.5 * 128) = 1308 MiB.
     * low: 5% = 65.4 -> 64 MiB (multiples of 4 MiB)
     */
    { "low", BALLOON_POLICY_LEVEL_LOW, 1500 * MiB, 0,
      BALLOON_POLICY_REASON_HOST_PRESSURE, -64 },
    /* medium: 10% = 130.8 -> 128 MiB */
    { "medium", BALLOON_POLICY_LEVEL_MEDIUM, 1500 * MiB, 0,
      BALLOON_POLICY_REASON_HOST_PRESSURE, -128 },
    /* critical: 25% = 327 MiB, capped per decision at 256 MiB */
    { "critical-capped", BALLOON_POLICY_LEVEL_CRITICAL, 1500 * MiB, 0,
      BALLOON_POLICY_REASON_HOST_PRESSURE, -256 },
    /* it can spare only 300 - 192 = 108 MiB: 25% = 27 -> 24 MiB */
    { "limited-by-available", BALLOON_POLICY_LEVEL_CRITICAL, 300 * MiB, 0,
      BALLOON_POLICY_REASON_HOST_PRESSURE, -24 },
    /* 200 - 192 = 8 MiB: one step of 4 MiB, to make progress */
    { "near-the-margin", BALLOON_POLICY_LEVEL_CRITICAL, 200 * MiB, 0,
      BALLOON_POLICY_REASON_HOST_PRESSURE, -4 },
    /* under the margin guest pressure would restore: nothing */
    { "at-the-margin", BALLOON_POLICY_LEVEL_CRITICAL, 192 * MiB, 0,
      BALLOON_POLICY_REASON_NONE, 0 },
    { "unknown-stats-no-inflate", BALLOON_POLICY_LEVEL_CRITICAL, UINT64_MAX,
      0, BALLOON_POLICY_REASON_NONE, 0 },
    { "stale-stats-no-inflate", BALLOON_POLICY_LEVEL_CRITICAL, 1500 * MiB,
      60, BALLOON_POLICY_REASON_NONE, 0 },
    /* under the reserve: 128 - 100 + 64 = 92 -> 92 MiB up */
    { "guest-pressure-wins", BALLOON_POLICY_LEVEL_CRITICAL, 100 * MiB, 0,
      BALLOON_POLICY_REASON_GUEST_PRESSURE, 92 },
    /* available above the guest size is clamped: spare 1536, 10% -> 152 */
    { "nonsense-available-clamped", BALLOON_POLICY_LEVEL_MEDIUM, 64 * GiB, 0,
      BALLOON_POLICY_REASON_HOST_PRESSURE, -152 },
};

static void test_cases(void)
{
    size_t i;

    for (i = 0; i < ARRAY_SIZE(cases); i++) {
        const Case *c = &cases[i];
        Fixture f;
        BalloonPolicyDecision d;
        uint64_t baseline = 2 * GiB;

        fixture_init(&f, 4 * GiB, baseline);
        f.p.floor = 512 * MiB;
        f.p.reserve = 128 * MiB;
        if (c->level != BALLOON_POLICY_LEVEL_NONE) {
            balloon_policy_note_pressure(&f.s, c->level, f.now);
        }
        set_stats(&f, c->available);
        f.st.time = f.now - c->stats_age * SEC;
        d = decide(&f, baseline);
        g_test_message("%s: %s %" PRId64 " MiB", c->name,
                       balloon_policy_reason_name(d.reason),
                       (int64_t)(d.new_target - d.old_target) / (int64_t)MiB);
        g_assert_cmpstr(balloon_policy_reason_name(d.reason), ==,
                        balloon_policy_reason_name(c->reason));
        g_assert_cmpint((int64_t)(d.new_target - d.old_target), ==,
                        c->delta_mib * (int64_t)MiB);
        g_assert_cmpuint(d.new_target % f.p.granularity, ==, 0);
    }
}

static void test_params_check(void)
{
    BalloonPolicyParams p;

    balloon_policy_params_init(&p, GiB);
    g_assert_null(balloon_policy_params_check(&p));
    g_assert_cmpuint(p.floor, ==, 256 * MiB);
    g_assert_cmpuint(p.reserve, ==, 64 * MiB);
    p.floor = 2 * GiB;
    g_assert_nonnull(balloon_policy_params_check(&p));
    balloon_policy_params_init(&p, GiB);
    p.step_pct[BALLOON_POLICY_LEVEL_LOW] = 101;
    g_assert_nonnull(balloon_policy_params_check(&p));
    balloon_policy_params_init(&p, GiB);
    p.reserve = GiB;
    g_assert_nonnull(balloon_policy_params_check(&p));
    balloon_policy_params_init(&p, GiB);
    p.granularity = 0;
    g_assert_nonnull(balloon_policy_params_check(&p));
}

/* Repeated critical pressure: never below the floor, cooldown respected. */
static void test_floor_and_cooldown(void)
{
    Fixture f;
    uint64_t actual = 2 * GiB;
    int decisions = 0, i;

    fixture_init(&f, 2 * GiB, 2 * GiB);
    for (i = 0; i < 200; i++) {
        BalloonPolicyDecision d;

        f.now += SEC / 4;
        balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_CRITICAL,
                                     f.now);
        set_stats(&f, actual - 100 * MiB);
        d = decide(&f, actual);
        if (d.reason != BALLOON_POLICY_REASON_NONE) {
            decisions++;
            g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_PRESSURE);
        }
        g_assert_cmpuint(f.s.target, >=, f.p.floor);
        actual = f.s.target;            /* an instant driver */
    }
    g_assert_cmpuint(f.s.target, ==, f.p.floor);
    /* 50 s of events at 4 Hz with a 1 s cooldown: at most 50 inflations */
    g_assert_cmpint(decisions, <=, 50);
    g_assert_cmpuint(f.s.counters.events[BALLOON_POLICY_LEVEL_CRITICAL], ==,
                     200);
}

/* The driver has not caught up: no new inflate on top. */
static void test_waits_for_driver(void)
{
    Fixture f;
    BalloonPolicyDecision d;

    d = host_event(&f, BALLOON_POLICY_LEVEL_MEDIUM);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_PRESSURE);
    f.now += 2 * SEC;
    balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_MEDIUM, f.now);
    set_stats(&f, 1500 * MiB);
    d = decide(&f, 2 * GiB - 8 * MiB);   /* driver still moving */
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);
}

/* A driver that does not follow: the target gives up after the timeout. */
static void test_stuck_driver(void)
{
    Fixture f;
    BalloonPolicyDecision d;
    int i;

    d = host_event(&f, BALLOON_POLICY_LEVEL_CRITICAL);
    g_assert_cmpuint(d.new_target, <, 2 * GiB);
    for (i = 0; i < 20; i++) {
        f.now += SEC;
        d = decide(&f, 2 * GiB);
        if (d.reason == BALLOON_POLICY_REASON_DRIVER_STUCK) {
            break;
        }
    }
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_DRIVER_STUCK);
    g_assert_cmpuint(d.new_target, ==, 2 * GiB);
    g_assert_true(f.s.driver_stuck);
    g_assert_cmpint(i + 1, ==, f.p.stuck_timeout / SEC);
}

/*
 * A stuck driver is reported once per episode (a dry run keeps the old
 * target, so the condition persists), and the target it falls back to
 * respects the floor: the driver's actual comes from the guest.
 */
static void test_stuck_once_and_floor(void)
{
    Fixture f;
    BalloonPolicyDecision d;
    int decisions = 0, i;

    fixture_init(&f, 2 * GiB, GiB);
    f.dry_run = true;
    balloon_policy_driver_reset(&f.s, 2 * GiB, f.now);
    for (i = 0; i < 120; i++) {
        f.now += SEC;
        d = decide(&f, 2 * GiB);
        if (d.reason != BALLOON_POLICY_REASON_NONE) {
            g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_DRIVER_STUCK);
            g_assert_cmpuint(f.s.target, ==, d.old_target);
            decisions++;
        }
    }
    g_assert_cmpint(decisions, ==, 1);

    /* progress ends the episode; a guest claiming size 0 meets the floor */
    fixture_init(&f, 2 * GiB, GiB);
    f.now += f.p.stuck_timeout;
    d = decide(&f, 0);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);
    f.now += f.p.stuck_timeout;
    d = decide(&f, 0);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_DRIVER_STUCK);
    g_assert_cmpuint(d.new_target, ==, f.p.floor);
}

/* The timer is armed exactly when something can happen without input. */
static void test_next_wakeup(void)
{
    Fixture f;
    BalloonPolicyDecision d;
    int64_t t;

    fixture_init(&f, 2 * GiB, 2 * GiB);
    g_assert_cmpint(balloon_policy_next_wakeup(&f.s, &f.p, 2 * GiB, f.now),
                    ==, BALLOON_POLICY_NEVER);

    /* inflated, the driver not there yet: the stuck timeout */
    balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_CRITICAL, f.now);
    set_stats(&f, 1500 * MiB);
    d = decide(&f, 2 * GiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_PRESSURE);
    t = balloon_policy_next_wakeup(&f.s, &f.p, 2 * GiB, f.now);
    g_assert_cmpint(t, ==, f.now + f.p.stuck_timeout);

    /* reached: the calm return after the hold time */
    f.now += SEC;
    d = decide(&f, f.s.target);
    t = balloon_policy_next_wakeup(&f.s, &f.p, f.s.target, f.now);
    g_assert_cmpint(t, ==, f.s.level_time[BALLOON_POLICY_LEVEL_CRITICAL] +
                    f.p.hold);

    /* a new event within the cooldown: when the cooldown ends */
    balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_MEDIUM,
                                 f.s.last_inflate + f.p.cooldown / 2);
    t = balloon_policy_next_wakeup(&f.s, &f.p, f.s.target,
                                   f.s.last_inflate + f.p.cooldown / 2);
    g_assert_cmpint(t, ==, f.s.last_inflate + f.p.cooldown);

    /* overdue after days of uptime: due now, never in the past */
    f.now += 5 * 24 * 3600 * SEC;
    t = balloon_policy_next_wakeup(&f.s, &f.p, f.s.target, f.now);
    g_assert_cmpint(t, ==, f.now);
    d = decide(&f, f.s.target);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_CALM);
    t = balloon_policy_next_wakeup(&f.s, &f.p, f.s.target, f.now);
    g_assert_cmpint(t, ==, f.now + f.p.return_interval);
}

/* Targets are whole pages, whatever the baseline and the steps say. */
static void test_page_aligned(void)
{
    Fixture f;
    uint64_t actual;
    int i, decisions = 0;

    fixture_init(&f, 2 * GiB, 2 * GiB);
    f.p.return_step = 64 * MiB + 1000;
    balloon_policy_set_baseline(&f.s, &f.p, GiB + 1000, f.now);
    g_assert_cmpuint(f.s.baseline % BALLOON_POLICY_PAGE, ==, 0);
    g_assert_cmpuint(f.s.baseline, >=, GiB + 1000);
    g_assert_cmpuint(f.s.target, ==, f.s.baseline);
    actual = f.s.target;
    /* an instant driver reaches every target; nothing cycles */
    for (i = 0; i < 600; i++) {
        BalloonPolicyDecision d;

        f.now += SEC;
        if (i == 10) {
            balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_CRITICAL,
                                         f.now);
        }
        set_stats(&f, actual / 2);
        d = decide(&f, actual);
        if (d.reason != BALLOON_POLICY_REASON_NONE) {
            g_assert_cmpuint(d.new_target % BALLOON_POLICY_PAGE, ==, 0);
            decisions++;
        }
        actual = f.s.target;
    }
    g_assert_cmpuint(f.s.target, ==, f.s.baseline);
    /* one inflate, then back in unaligned-step-sized increments */
    g_assert_cmpint(decisions, <=, 1 + 256 / 64 + 1);
    g_assert_cmpint(f.s.counters.decisions[BALLOON_POLICY_REASON_DRIVER_STUCK],
                    ==, 0);
}

/* A guest-pressure sample deflates once, not at every evaluation. */
static void test_sample_acts_once(void)
{
    Fixture f;
    BalloonPolicyDecision d;
    int i;

    fixture_init(&f, 2 * GiB, GiB);
    set_stats(&f, 10 * MiB);
    d = decide(&f, GiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
    for (i = 0; i < 50; i++) {
        f.now += SEC / 10;              /* actual changes, events, ticks */
        d = decide(&f, GiB + i * MiB);
        g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);
    }
}

/* Defaults fit every VM size; the smallest still validate. */
static void test_small_vms(void)
{
    static const uint64_t sizes[] = {
        16 * MiB, 64 * MiB, 128 * MiB, 256 * MiB, 512 * MiB, 4 * GiB,
        1024 * GiB,
    };
    size_t i;

    for (i = 0; i < ARRAY_SIZE(sizes); i++) {
        BalloonPolicyParams p;

        balloon_policy_params_init(&p, sizes[i]);
        g_test_message("%" PRIu64 " MiB: floor %" PRIu64 " reserve %" PRIu64
                       " max-step %" PRIu64 " return-step %" PRIu64,
                       sizes[i] / MiB, p.floor / MiB, p.reserve / MiB,
                       p.max_step / MiB, p.return_step / MiB);
        g_assert_null(balloon_policy_params_check(&p));
        g_assert_cmpuint(p.max_step, <=, sizes[i]);
        g_assert_cmpuint(p.return_step, <=, sizes[i]);
    }
}

/* What a migration stream may carry is checked against the VM. */
static void test_state_check(void)
{
    Fixture f;

    fixture_init(&f, 2 * GiB, GiB);
    g_assert_null(balloon_policy_state_check(&f.s, &f.p, f.now));
    f.s.pending = BALLOON_POLICY_LEVEL__MAX;
    g_assert_nonnull(balloon_policy_state_check(&f.s, &f.p, f.now));
    fixture_init(&f, 2 * GiB, GiB);
    f.s.target = 3 * GiB;
    g_assert_nonnull(balloon_policy_state_check(&f.s, &f.p, f.now));
    fixture_init(&f, 2 * GiB, GiB);
    f.s.baseline = UINT64_MAX;
    g_assert_nonnull(balloon_policy_state_check(&f.s, &f.p, f.now));

    /* times are past events on the VM's clock */
    fixture_init(&f, 2 * GiB, GiB);
    f.s.prev.time = f.now + 1;
    g_assert_nonnull(balloon_policy_state_check(&f.s, &f.p, f.now));
    f.s.prev.time = INT64_MIN;
    g_assert_nonnull(balloon_policy_state_check(&f.s, &f.p, f.now));
    fixture_init(&f, 2 * GiB, GiB);
    f.s.last_inflate = INT64_MAX;
    g_assert_nonnull(balloon_policy_state_check(&f.s, &f.p, f.now));
    /* a raised floor ends within its hold time */
    fixture_init(&f, 2 * GiB, GiB);
    f.s.pingpong_until = f.now + f.p.pingpong_hold;
    g_assert_null(balloon_policy_state_check(&f.s, &f.p, f.now));
    f.s.pingpong_until = f.now + f.p.pingpong_hold + 1;
    g_assert_nonnull(balloon_policy_state_check(&f.s, &f.p, f.now));

    /* and pressure from another host is forgotten */
    fixture_init(&f, 2 * GiB, GiB);
    balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_CRITICAL, f.now);
    balloon_policy_arrived(&f.s);
    g_assert_cmpint(f.s.pending, ==, BALLOON_POLICY_LEVEL_NONE);
    g_assert_cmpint(balloon_policy_level(&f.s, &f.p, f.now), ==,
                    BALLOON_POLICY_LEVEL_NONE);
}

/*
 * deflate-on-oom: the guest takes pages back; the target follows.  It did
 * so in a burst: at 1793 MiB it uses 1700.  Right after an inflate that is
 * ping-pong, and the floor is raised to what it uses and the margin.
 */
static void test_guest_deflated_and_pingpong(void)
{
    Fixture f;
    BalloonPolicyDecision d;
    uint64_t raised;
    int i;

    d = host_event(&f, BALLOON_POLICY_LEVEL_CRITICAL);
    raised = 1700 * MiB + f.p.reserve + f.p.reserve / 2;
    g_assert_cmpuint(d.new_target, ==, 2 * GiB - 256 * MiB);
    f.now += SEC / 2;                 /* within the cooldown */
    set_stats(&f, 1244 * MiB);
    d = decide(&f, d.new_target);     /* driver reached the target */
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);

    f.now += SEC;
    set_stats(&f, 93 * MiB);
    d = decide(&f, 2 * GiB - 255 * MiB);   /* guest deflated 1 MiB */
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_DEFLATED);
    g_assert_cmpuint(d.new_target, >=, 2 * GiB - 255 * MiB);
    /* within the ping-pong window of the inflate: the floor is raised */
    g_assert_cmpuint(f.s.counters.pingpongs, ==, 1);
    g_assert_cmpuint(balloon_policy_floor(&f.s, &f.p, f.now), ==, raised);

    /*
     * More host pressure cannot push below the raised floor, though the
     * guest now uses 50 MiB less (less than a reserve: its burst goes
     * on)...
     */
    for (i = 0; i < 40; i++) {
        f.now += SEC;
        balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_CRITICAL,
                                     f.now);
        set_stats(&f, f.s.target - 1650 * MiB);
        decide(&f, f.s.target);
        g_assert_cmpuint(f.s.target, >=, raised);
    }
    g_assert_cmpuint(f.s.target, ==, raised);
    /* ...until the raised floor expires. */
    f.now += f.p.pingpong_hold;
    balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_CRITICAL, f.now);
    set_stats(&f, f.s.target - 1650 * MiB);
    d = decide(&f, f.s.target);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_PRESSURE);
}

/*
 * A guest using 400 MiB holds 1.2 GiB of page cache.  Host pressure takes
 * some of it, and the guest's reclaim makes its direct reclaim counter
 * rise (Linux >= 6.12): guest pressure, right after an inflate.  Its
 * raised floor protects what it uses, not its page cache: host pressure
 * takes the cache within the pressure window already (the guest keeps
 * twice the margin then), and then down to the floor, never below.
 */
static void test_pingpong_spares_page_cache(void)
{
    Fixture f;
    BalloonPolicyDecision d;
    const uint64_t used = 400 * MiB;
    uint64_t raised, reclaim = 100, window_low = UINT64_MAX;
    int64_t pressure;
    int i;

    fixture_init(&f, 2 * GiB, 2 * GiB);
    raised = used + f.p.reserve + f.p.reserve / 2;
    f.st.direct_reclaim = reclaim;
    balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_CRITICAL, f.now);
    set_stats(&f, 2 * GiB - used);
    d = decide(&f, 2 * GiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_PRESSURE);

    /* the guest reports its total: it saw the inflation */
    f.now += SEC;
    f.st.direct_reclaim = reclaim += 50;
    f.st.total = d.new_target;
    set_stats(&f, d.new_target - used);
    d = decide(&f, d.new_target);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
    g_assert_cmpuint(f.s.counters.pingpongs, ==, 1);
    g_assert_cmpuint(balloon_policy_floor(&f.s, &f.p, f.now), ==, raised);
    pressure = f.now;

    for (i = 0; i < 40; i++) {
        f.now += SEC;
        balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_CRITICAL,
                                     f.now);
        f.st.total = f.s.target;
        set_stats(&f, f.s.target - used);
        d = decide(&f, f.s.target);
        g_assert_cmpint(d.reason, !=, BALLOON_POLICY_REASON_GUEST_PRESSURE);
        if (f.now - pressure < f.p.pingpong_window) {
            window_low = f.s.target;
            /* twice the margin: nothing taken from it */
            g_assert_cmpuint(f.s.target - used, >=,
                             2 * (f.p.reserve + f.p.reserve / 2));
        }
        g_assert_cmpuint(f.s.target, >=, raised);
    }
    g_test_message("page cache left: %" PRIu64 " MiB after the window, "
                   "%" PRIu64 " MiB at the end",
                   (window_low - used) / MiB, (f.s.target - used) / MiB);
    g_assert_cmpuint(window_low, <, 2 * GiB - 4 * f.p.reserve);
    g_assert_cmpuint(f.s.target, ==, raised);
    g_assert_cmpuint(f.s.counters.pingpongs, ==, 1);
}

/*
 * A squeezed guest reading its disk: Linux reports half of a small page
 * cache as available, so use (total - available) rises by half of what
 * the cache gains.  That is no burst; the same rise with the cache flat
 * is, and so is a rise the cache shares (tmpfs), counted at least half.
 */
static void test_cache_fill_not_growth(void)
{
    Fixture f;
    BalloonPolicyDecision d;
    const uint64_t size = 312 * MiB;

    fixture_init(&f, GiB, size);
    f.stats_interval = 200 * MS;
    f.st.asked = true;              /* the device asks every 200 ms */
    f.st.caches = 15 * MiB;
    set_stats(&f, 98 * MiB);
    d = decide(&f, size);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);

    /* +58 MiB of cache, 29 MiB less available: still above the reserve */
    f.now += 200 * MS;
    f.st.caches = 73 * MiB;
    set_stats(&f, 69 * MiB);
    d = decide(&f, size);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);
    g_assert_cmpuint(f.s.guest_rate, ==, 0);

    /* a cache that grows by less explains only half of it */
    f.now += 200 * MS;
    f.st.caches = 93 * MiB;
    set_stats(&f, 39 * MiB);
    d = decide(&f, size);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
    g_assert_cmpuint(f.s.guest_rate, ==, 200 * MiB);

    /* the same fall with the cache flat: a burst at 290 MiB/s */
    fixture_init(&f, GiB, size);
    f.stats_interval = 200 * MS;
    f.st.asked = true;              /* the device asks every 200 ms */
    f.st.caches = 15 * MiB;
    set_stats(&f, 98 * MiB);
    decide(&f, size);
    f.now += 200 * MS;
    set_stats(&f, 69 * MiB);
    d = decide(&f, size);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
    g_assert_cmpuint(f.s.guest_rate, ==, 290 * MiB);

    /* tmpfs: 70 MiB more in use and in the cache, 350 MiB/s counted */
    fixture_init(&f, GiB, 512 * MiB);
    f.stats_interval = 200 * MS;
    f.st.asked = true;              /* the device asks every 200 ms */
    f.st.caches = 100 * MiB;
    set_stats(&f, 300 * MiB);
    decide(&f, 512 * MiB);
    f.now += 200 * MS;
    f.st.caches = 170 * MiB;
    set_stats(&f, 230 * MiB);
    d = decide(&f, 512 * MiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
    g_assert_cmpuint(f.s.guest_rate, ==, 350 * MiB);
}

/*
 * A calm ballooned guest, asked for statistics every second, starts a
 * burst (the seed's figures: 1 GiB of 3 GiB, 709 MiB available, then
 * 356 MiB a second later: 706 MiB/s over half the interval).  Statistics
 * the device polls come every 200 ms from then on, so the deflate gives
 * the growth of two such intervals and half a second, and the margin;
 * counting the calm second gave it 2.5 s of growth, 1.1 GiB more than
 * it needed.  At an interval the user fixed, that interval counts.
 */
static void test_burst_horizon(void)
{
    const int64_t horizon_ms[] = {
        2 * BALLOON_POLICY_STATS_INTERVAL_FAST_MS + 500,    /* device's */
        2 * 1000 + 500,                                     /* user's */
    };
    int i;

    for (i = 0; i < ARRAY_SIZE(horizon_ms); i++) {
        Fixture f;
        BalloonPolicyDecision d;
        uint64_t want;

        fixture_init(&f, 3 * GiB, GiB);
        /* the device's polling, or the user's every second */
        f.stats_interval = i == 0 ? 0 : SEC;
        set_stats(&f, 709 * MiB);
        d = decide(&f, GiB);
        g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);

        f.now += SEC;
        set_stats(&f, 356 * MiB);
        d = decide(&f, GiB);
        g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
        g_assert_cmpuint(f.s.guest_rate, ==, 706 * MiB);
        want = GiB - 356 * MiB + 706 * MiB * horizon_ms[i] / 1000 +
               f.p.reserve + f.p.reserve / 2;
        g_assert_cmpuint(d.new_target, ==,
                         QEMU_ALIGN_UP(want, f.p.granularity));
    }
}

/*
 * A sustained burst, 80 MiB more in use at every 200 ms sample
 * (400 MiB/s): the first sample may have seen it only in its last part,
 * and counts it at 800 MiB/s; the later ones saw it grow throughout and
 * count 400 MiB/s, so that the growth foreseen is the burst's, not twice
 * it.
 */
static void test_sustained_burst_rate(void)
{
    Fixture f;
    const uint64_t actual = 3 * GiB / 2;
    uint64_t used = 300 * MiB;
    int i;

    fixture_init(&f, 3 * GiB, actual);
    f.stats_interval = 0;
    f.st.asked = true;              /* the device asks every 200 ms */
    set_stats(&f, actual - used);
    decide(&f, actual);
    for (i = 1; i <= 4; i++) {
        f.now += 200 * MS;
        used += 80 * MiB;
        set_stats(&f, actual - used);
        decide(&f, actual);
        g_assert_cmpuint(f.s.guest_rate, ==,
                         i == 1 ? 800 * MiB : 400 * MiB);
    }
}

/*
 * A 1 GiB guest sustains a burst of @burst_mib MiB/s for a second, up to
 * 600 MiB in use, asked for statistics every 200 ms; 32 s later (its
 * growth rate long decayed) and @later more it meets a host in a 2000 MiB
 * limit using @usage_mib.  The host
 * asks for memory at each reading (every 250 ms) and the driver follows
 * at once; returns the guest's available memory once it gives no more.
 */
static uint64_t burst_then_host(Fixture *f, uint64_t burst_mib,
                                uint64_t usage_mib, int64_t later,
                                bool new_driver)
{
    const uint64_t limit = 2000 * MiB, used = 600 * MiB;
    uint64_t actual = GiB, in_use = used - burst_mib * MiB;
    uint64_t given = 0;
    int i;

    fixture_init(f, GiB, GiB);
    f->stats_interval = 0;
    f->st.asked = true;
    set_stats(f, actual - in_use);
    decide(f, actual);
    for (i = 0; i < 5 && burst_mib; i++) {
        f->now += 200 * MS;
        in_use += burst_mib / 5 * MiB;
        set_stats(f, actual - in_use);
        decide(f, actual);
    }
    /* calm: the growth rate decays by half at each sample */
    for (i = 0; i < 16; i++) {
        f->now += 2 * SEC;
        set_stats(f, actual - used);
        decide(f, actual);
    }
    g_assert_cmpuint(f->s.guest_rate, <, MiB);
    f->now += later;
    if (new_driver) {
        balloon_policy_driver_reset(&f->s, actual, f->now);
    }
    for (i = 0; i < 20; i++) {
        BalloonPolicyHost h = {
            .time = f->now, .read_time = f->now,
            .usage = usage_mib * MiB - given, .limit = limit,
            .setpoint = limit / 1000 * 800,
            .footprint = usage_mib * MiB - given,    /* the only VM */
        };
        BalloonPolicyDecision d;

        balloon_policy_note_host(&f->s, &h);
        set_stats(f, actual - used);
        d = decide(f, actual);
        if (d.new_target < d.old_target) {
            given += d.old_target - d.new_target;
        }
        actual = f->s.target;
        f->now += SEC / 4;
    }
    return actual - used;
}

/*
 * What host inflation leaves a guest that burst lately: the growth its
 * burst foresees (0.9 s of it, the interval a squeezed guest is asked at
 * twice and half a second for the driver) beyond the margin guest
 * pressure gives, while the host stays under its ceiling (95 % of the
 * limit); the host first beyond it.  It halves every 5 minutes, and a
 * new driver forgets it.  The host here wants 340 MiB (down to 1550).
 */
static void test_burst_reserve(void)
{
    Fixture f;
    const uint64_t margin = 96 * MiB;       /* 1.5 reserves of 64 MiB */
    uint64_t avail;

    /* never burst: it gives down to the margin */
    avail = burst_then_host(&f, 0, 1890, SEC, false);
    g_assert_cmpuint(avail, >=, margin);
    g_assert_cmpuint(avail, <, margin + 4 * MiB);

    /*
     * 200 MiB/s: the first sample, counted over half its interval, read
     * 400 and is not learnt; 180 MiB kept beyond the margin
     */
    avail = burst_then_host(&f, 200, 1890, SEC, false);
    g_assert_cmpuint(f.s.burst_rate, ==, 200 * MiB);
    g_assert_cmpuint(avail, >=, margin + 180 * MiB);
    g_assert_cmpuint(avail, <, margin + 184 * MiB);

    /* at most a quarter of the VM */
    avail = burst_then_host(&f, 600, 1890, SEC, false);
    g_assert_cmpuint(avail, >=, margin + 256 * MiB);
    g_assert_cmpuint(avail, <, margin + 260 * MiB);

    /* foreseen past the ceiling the host comes first */
    avail = burst_then_host(&f, 200, 2100, SEC, false);
    g_assert_cmpuint(avail, <, margin + 180 * MiB);

    /* five minutes later half of it, five hours later none */
    avail = burst_then_host(&f, 200, 1890, 5 * 60 * SEC, false);
    g_assert_cmpuint(avail, >=, margin + 90 * MiB);
    g_assert_cmpuint(avail, <, margin + 94 * MiB);
    avail = burst_then_host(&f, 200, 1890, 5 * 3600 * SEC, false);
    g_assert_cmpuint(avail, <=, margin + 4 * MiB);

    /* a new driver (a reboot) forgets it */
    avail = burst_then_host(&f, 200, 1890, SEC, true);
    g_assert_cmpuint(f.s.burst_rate, ==, 0);
    g_assert_cmpuint(avail, <=, margin + 4 * MiB);
}

/* Rising stall counters (Linux >= 6.12 guests) mean guest pressure. */
static void test_stall_counters(void)
{
    Fixture f;
    BalloonPolicyDecision d;

    fixture_init(&f, 2 * GiB, GiB);
    set_stats(&f, 500 * MiB);
    f.st.oom_kills = 0;
    f.st.alloc_stalls = 10;
    d = decide(&f, GiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);
    f.now += SEC;
    set_stats(&f, 500 * MiB);
    f.st.alloc_stalls = 12;
    d = decide(&f, GiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
    g_assert_cmpuint(d.new_target, >, GiB);
}

/* After a calm hold time the target walks back to the baseline. */
static void test_return_to_baseline(void)
{
    Fixture f;
    int steps = 0;
    int64_t last_step = BALLOON_POLICY_NEVER;

    host_event(&f, BALLOON_POLICY_LEVEL_CRITICAL);
    g_assert_cmpuint(f.s.target, ==, 2 * GiB - 256 * MiB);

    while (f.s.target < 2 * GiB && steps < 400) {
        BalloonPolicyDecision d;

        f.now += SEC / 4;
        /* the guest uses what it used: 548 MiB */
        set_stats(&f, f.s.target - 548 * MiB);
        d = decide(&f, f.s.target);
        if (d.reason != BALLOON_POLICY_REASON_NONE) {
            g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_CALM);
            g_assert_cmpuint(d.new_target - d.old_target, <=,
                             f.p.return_step);
            /* at a bounded rate, even when asked more often */
            g_assert_cmpint(f.now - last_step, >=, f.p.return_interval);
            last_step = f.now;
            /* not before the hold time */
            g_assert_cmpint(f.now - f.s.level_time[
                                BALLOON_POLICY_LEVEL_CRITICAL], >=, f.p.hold);
        }
        steps++;
    }
    g_assert_cmpuint(f.s.target, ==, 2 * GiB);
    /* at rest: nothing to wake up for */
    g_assert_cmpint(balloon_policy_next_wakeup(&f.s, &f.p, 2 * GiB, f.now),
                    ==, BALLOON_POLICY_NEVER);
}

/*
 * Seed experiment 2: a guest at 1 GiB of 3 GiB allocates 1.5 GiB; the
 * balloon deflates ahead of its demand, then takes memory back once the
 * guest has freed it.
 */
static void test_seed_grow_beyond_baseline(void)
{
    Fixture f;
    uint64_t actual = GiB, used = 200 * MiB, peak = 0;
    int t;

    fixture_init(&f, 3 * GiB, GiB);
    for (t = 0; t < 600; t++) {
        uint64_t want = t < 300 ? MIN(200 * MiB + t * 20 * MiB,
                                      1736 * MiB) : 200 * MiB;

        f.now += SEC;
        /* the guest only gets what fits: no swap, OOM otherwise */
        used = MIN(want, actual - 32 * MiB);
        g_assert_cmpuint(want, <=, actual - 32 * MiB + 20 * MiB);
        set_stats(&f, actual - used);
        decide(&f, actual);
        actual = f.s.target;
        peak = MAX(peak, actual);
    }
    g_assert_cmpuint(peak, >=, 1736 * MiB);
    g_assert_cmpuint(peak, <=, 3 * GiB);
    /* calm again: back at the baseline */
    g_assert_cmpuint(f.s.target, ==, GiB);
}

/*
 * Oscillation: steady mild host pressure while the guest holds a steady
 * working set must settle, not flip between inflate and deflate.
 */
static void test_no_oscillation(void)
{
    Fixture f;
    uint64_t actual = 2 * GiB, working_set = 900 * MiB;
    int t, flips = 0, last_dir = 0, late_changes = 0;

    fixture_init(&f, 2 * GiB, 2 * GiB);
    for (t = 0; t < 1200; t++) {
        BalloonPolicyDecision d;

        f.now += SEC;
        if (t % 2 == 0) {
            balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_MEDIUM,
                                         f.now);
        }
        set_stats(&f, actual - MIN(working_set, actual));
        d = decide(&f, actual);
        if (d.reason != BALLOON_POLICY_REASON_NONE) {
            int dir = d.new_target > d.old_target ? 1 : -1;

            flips += last_dir && dir != last_dir;
            last_dir = dir;
            late_changes += t > 600;
        }
        actual = f.s.target;
    }
    g_test_message("flips %d, changes in the last 10 min %d, target %"
                   PRIu64 " MiB", flips, late_changes, f.s.target / MiB);
    g_assert_cmpint(flips, <=, 2);
    g_assert_cmpint(late_changes, ==, 0);
    g_assert_cmpuint(f.s.target, >=, working_set + f.p.reserve);
}

/*
 * N VMs in one host cgroup, each with its own controller and no
 * coordinator.  The host signals pressure to all of them while the sum of
 * their sizes exceeds its budget.  They must fit the budget and converge
 * to fair shares: equal guests equal sizes, idle guests giving more.
 */
#define NVMS 4

static void test_fairness(void)
{
    Fixture vm[NVMS];
    uint64_t actual[NVMS];
    /* two busy guests, two idle ones */
    const uint64_t working_set[NVMS] = {
        1200 * MiB, 1200 * MiB, 300 * MiB, 300 * MiB
    };
    const uint64_t budget = 5 * GiB;
    int i, t;
    uint64_t sum = 0;

    for (i = 0; i < NVMS; i++) {
        fixture_init(&vm[i], 2 * GiB, 2 * GiB);
        actual[i] = 2 * GiB;
    }
    for (t = 0; t < 900; t++) {
        sum = 0;
        for (i = 0; i < NVMS; i++) {
            sum += actual[i];
        }
        for (i = 0; i < NVMS; i++) {
            Fixture *f = &vm[i];
            uint64_t used = MIN(working_set[i], actual[i]);

            f->now += SEC;
            if (sum > budget) {
                balloon_policy_note_pressure(&f->s,
                                             BALLOON_POLICY_LEVEL_MEDIUM,
                                             f->now);
            }
            set_stats(f, actual[i] - used);
            decide(f, actual[i]);
        }
        for (i = 0; i < NVMS; i++) {
            actual[i] = vm[i].s.target;
        }
    }
    for (i = 0; i < NVMS; i++) {
        g_test_message("vm%d: working set %" PRIu64 " MiB, size %" PRIu64
                       " MiB", i, working_set[i] / MiB, actual[i] / MiB);
        g_assert_cmpuint(actual[i], >=, working_set[i]);
    }
    g_assert_cmpuint(sum, <=, budget + 256 * MiB);
    /* equal guests get equal shares (within 10%) */
    g_assert_cmpuint(MAX(actual[0], actual[1]) - MIN(actual[0], actual[1]),
                     <=, actual[0] / 10);
    g_assert_cmpuint(MAX(actual[2], actual[3]) - MIN(actual[2], actual[3]),
                     <=, actual[2] / 10);
    /* idle guests gave at least twice as much */
    g_assert_cmpuint(2 * GiB - actual[2], >, 2 * (2 * GiB - actual[0]));
}

/*
 * The seed experiment at full speed: a guest at 1 GiB of 3 GiB allocates
 * 1.5 GiB at 150 MiB/s (what the bundled guest does under TCG) with no
 * deflate-on-oom.  Statistics come at the interval the policy asks for, a
 * second after they are asked; the driver deflates at 350 MiB/s.  The
 * guest must never run out (its OOM killer would run below 32 MiB).
 */
static void test_guest_fast_allocation(void)
{
    Fixture f;
    const uint64_t base_used = 100 * MiB, goal = 1536 * MiB;
    uint64_t actual = GiB, used = base_used, min_avail = UINT64_MAX;
    int64_t next_stats = 0, t;
    const int64_t tick = SEC / 20;

    fixture_init(&f, 3 * GiB, GiB);
    f.stats_interval = 0;           /* the device polls them */
    for (t = 0; t < 60 * SEC && used < base_used + goal; t += tick) {
        f.now += tick;
        used = MIN(used + 150 * MiB / 20, base_used + goal);
        g_assert_cmpuint(used + 32 * MiB, <=, actual);
        min_avail = MIN(min_avail, actual - used);
        if (t >= next_stats) {
            next_stats = t +
                balloon_policy_stats_interval_ms(&f.s, &f.p, f.now) * MS;
            set_stats(&f, actual - used);
            decide(&f, actual);
        }
        /* the driver follows at 350 MiB/s */
        if (actual < f.s.target) {
            actual = MIN(f.s.target, actual + 350 * MiB / 20);
        }
    }
    g_test_message("allocated in %.1f s, lowest available %" PRIu64
                   " MiB, final size %" PRIu64 " MiB", (double)t / SEC,
                   min_avail / MiB, actual / MiB);
    g_assert_cmpuint(used, ==, base_used + goal);
    /* no slower than the allocation itself: 1536 MiB at 150 MiB/s */
    g_assert_cmpint(t, <=, 11 * SEC);
}

/*
 * Host headroom: a host process allocates 700 MiB next to a 1 GiB guest
 * holding 850 MiB of page cache, in a 1400 MiB cgroup, nominally at
 * 1000 MiB/s (the kernel holds an allocator in reclaim near the limit:
 * 50 MiB/s above 95%).  The source reads usage every 250 ms; the driver
 * inflates at 350 MiB/s.  Aiming at the deficit, usage never reaches the
 * limit.
 */
static uint64_t run_host_allocator(bool headroom, uint64_t *peak)
{
    Fixture f;
    const uint64_t limit = 1400 * MiB, cache = 850 * MiB, app = 100 * MiB;
    uint64_t actual = GiB, hog = 0, usage = 0;
    int64_t t;
    const int64_t tick = SEC / 100;

    fixture_init(&f, GiB, GiB);
    *peak = 0;
    for (t = 0; t < 60 * SEC && hog < 700 * MiB; t += tick) {
        f.now += tick;
        usage = actual + hog + 32 * MiB;
        hog += usage < limit / 100 * 95 ? 1000 * MiB / 100 : 50 * MiB / 100;
        usage = actual + hog + 32 * MiB;
        *peak = MAX(*peak, usage);
        if (usage > limit) {
            return t;               /* the memcg OOM-kills */
        }
        if (t % (SEC / 4) == 0) {
            BalloonPolicyHost h = {
                .time = f.now, .read_time = f.now, .usage = usage,
                .limit = limit, .setpoint = limit / 1000 * 800,
                .footprint = actual,
            };

            if (headroom) {
                balloon_policy_note_host(&f.s, &h);
            }
            if (usage >= limit / 100 * 80) {
                balloon_policy_note_pressure(
                    &f.s, balloon_headroom_level(&balloon_headroom_cgroup,
                                                 usage, limit), f.now);
            }
            /* the guest drops cache to fill the balloon */
            set_stats(&f, actual > app ? actual - app - MIN(0, cache) : 0);
            decide(&f, actual);
        }
        if (actual > f.s.target) {
            actual = MAX(f.s.target, actual - 350 * MiB / 100);
        }
    }
    return 0;
}

static void test_host_fast_allocation(void)
{
    uint64_t peak_deficit, peak_levels;
    int64_t died_deficit = run_host_allocator(true, &peak_deficit);
    int64_t died_levels = run_host_allocator(false, &peak_levels);

    g_test_message("aiming at the deficit: %s, peak %" PRIu64 " MiB; "
                   "steps per level only: %s at %.2f s, peak %" PRIu64
                   " MiB", died_deficit ? "OOM" : "survived",
                   peak_deficit / MiB, died_levels ? "OOM" : "survived",
                   (double)died_levels / SEC, peak_levels / MiB);
    g_assert_cmpint(died_deficit, ==, 0);
    g_assert_cmpuint(peak_deficit, <, 1400 * MiB);
}

/*
 * Several VMs in one cgroup each take their footprint's part of the
 * deficit: together they give it once, not each all of it.  (What is left
 * of it, the part of other processes, is shared again at the next
 * decision, 250 ms later.)
 */
static void test_deficit_shares(void)
{
    static const uint64_t sizes[] = { 2 * GiB, GiB, GiB };
    const uint64_t limit = 4 * GiB, usage = 4 * GiB + 100 * MiB;
    /* down to the middle of the band under the setpoint: 77.5% */
    uint64_t given = 0, deficit = usage - limit / 1000 * 775;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(sizes); i++) {
        Fixture f;
        BalloonPolicyDecision d;
        BalloonPolicyHost h;

        fixture_init(&f, sizes[i], sizes[i]);
        f.p.max_step = sizes[i];        /* the shares, not the cap */
        h = (BalloonPolicyHost) {
            .time = f.now, .read_time = f.now, .usage = usage,
            .limit = limit, .setpoint = limit / 1000 * 800,
            .footprint = sizes[i],
        };
        balloon_policy_note_host(&f.s, &h);
        set_stats(&f, sizes[i] * 3 / 4);
        d = decide(&f, sizes[i]);
        g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_PRESSURE);
        g_test_message("vm%zu (%" PRIu64 " MiB): gives %" PRIu64 " MiB",
                       i, sizes[i] / MiB, (d.old_target - d.new_target) / MiB);
        given += d.old_target - d.new_target;
        /* in proportion to its footprint (whole 4 MiB steps) */
        g_assert_cmpuint(d.old_target - d.new_target, <=,
                         (double)deficit * sizes[i] / usage + 4 * MiB);
        g_assert_cmpuint(d.old_target - d.new_target + 4 * MiB, >=,
                         (double)deficit * sizes[i] / usage);
    }
    /*
     * The VMs are 4 GiB of the usage; the rest is not theirs to give, and
     * what stays of the deficit is shared again at the next decision.
     */
    g_assert_cmpuint(given + 3 * 4 * MiB, >=,
                     (double)deficit * (4 * GiB) / usage);
    g_assert_cmpuint(given, <=, deficit + 3 * 4 * MiB);
}

/*
 * Memory goes back only while the host has room for it (below 75% of the
 * limit), so giving back does not create the next deficit.
 */
static void test_return_hysteresis(void)
{
    Fixture f;
    BalloonPolicyHost h;
    BalloonPolicyDecision d;
    const uint64_t limit = 2 * GiB;

    fixture_init(&f, GiB, GiB);
    f.s.target = 600 * MiB;
    balloon_policy_driver_reset(&f.s, 600 * MiB, f.now);
    h = (BalloonPolicyHost) {
        .time = f.now, .read_time = f.now, .usage = limit / 100 * 78,
        .limit = limit, .setpoint = limit / 1000 * 800,
        .footprint = 600 * MiB,
    };
    balloon_policy_note_host(&f.s, &h);
    set_stats(&f, 300 * MiB);
    d = decide(&f, 600 * MiB);
    /* between 75 and 80%: no deficit, no room */
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);
    f.now += SEC;
    h.time = h.read_time = f.now;
    h.usage = limit / 100 * 74;
    balloon_policy_note_host(&f.s, &h);
    set_stats(&f, 300 * MiB);
    d = decide(&f, 600 * MiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_CALM);
    /* no more than the room below 75% */
    g_assert_cmpuint(d.new_target - d.old_target, <=, limit / 100);
}

/*
 * Growth foreseen inflates before usage reaches the setpoint, with no
 * pressure event.  The inflation then takes usage below the band under
 * the setpoint: memory goes back only once the host has been calm for the
 * hold time, counted from the inflation, or a host allocating in steps
 * gets each step's memory back before the next (seen with a hog taking
 * 64 MiB every 4 s: the balloon went 1024 -> 936 -> 1024 MiB).
 */
static void test_calm_after_foreseen_inflation(void)
{
    Fixture f;
    const uint64_t limit = 1400 * MiB;
    uint64_t actual = GiB, others = 300 * MiB;
    int64_t start, inflated = 0, returned = 0;

    fixture_init(&f, GiB, GiB);
    start = f.now;
    for (; f.now < start + 20 * SEC; f.now += SEC / 4) {
        uint64_t footprint = actual - 324 * MiB;
        BalloonPolicyHost h = {
            .time = f.now, .read_time = f.now, .limit = limit,
            .setpoint = limit / 1000 * 800, .footprint = footprint,
        };
        BalloonPolicyDecision d;

        /* the others take 80 MiB in half a second, then hold it */
        if (f.now - start == SEC / 4 || f.now - start == SEC / 2) {
            others += 40 * MiB;
        }
        h.usage = others + footprint;
        balloon_policy_note_host(&f.s, &h);
        if ((f.now - start) % SEC == 0) {
            set_stats(&f, 600 * MiB - (GiB - actual));
        }
        d = decide(&f, actual);
        if (d.reason == BALLOON_POLICY_REASON_HOST_PRESSURE) {
            /* before the setpoint, and never again once memory went back */
            g_assert_cmpuint(h.usage, <, h.setpoint);
            g_assert_cmpint(returned, ==, 0);
            inflated = f.now;
        } else if (d.reason == BALLOON_POLICY_REASON_HOST_CALM &&
                   !returned) {
            returned = f.now;
            g_test_message("%" PRIu64 " MiB in use, back %" PRId64
                           " ms after the inflation", h.usage / MiB,
                           (returned - inflated) / 1000000);
        }
        actual = f.s.target;            /* the driver follows at once */
    }
    g_assert_cmpint(inflated, >, 0);
    g_assert_cmpint(returned, >=, inflated + f.p.hold);
}

/*
 * During an inflation the guest computes its statistics, then gives more
 * pages before the device reads its size: the size is behind the sample,
 * by more or less each time.  Memory in use is read from the sample alone
 * (its total minus its available memory), so this does not read as growth
 * and the balloon does not turn back.  With deflate-on-oom the guest keeps
 * balloon pages in its total, and the sample does not say how many there
 * were: growth is measured between the readings the driver's sizes before
 * and after allow that make it smallest.
 */
static void run_inflation_skew(bool balloon_in_total, uint64_t skew)
{
    Fixture f;
    const uint64_t used = 200 * MiB;
    uint64_t balloon = 0;
    int i;

    fixture_init(&f, GiB, GiB);
    f.balloon_in_total = balloon_in_total;
    for (i = 0; i < 6; i++) {
        BalloonPolicyHost h = {
            .time = f.now, .read_time = f.now, .usage = 3 * GiB,
            .limit = 3 * GiB, .setpoint = 3 * GiB / 1000 * 800,
            .footprint = GiB,
        };
        /* every other sample, the driver went on after it */
        uint64_t actual = GiB - balloon - (i % 2 ? skew : 0);
        BalloonPolicyDecision d;

        balloon_policy_note_host(&f.s, &h);
        set_stats(&f, GiB - balloon - used);
        f.st.total = balloon_in_total ? GiB : GiB - balloon;
        d = decide(&f, actual);
        g_test_message("guest %" PRIu64 " MiB, driver says %" PRIu64
                       " MiB: %s to %" PRIu64 " MiB", (GiB - balloon) / MiB,
                       actual / MiB, balloon_policy_reason_name(d.reason),
                       d.new_target / MiB);
        g_assert_cmpint(d.reason, !=, BALLOON_POLICY_REASON_GUEST_PRESSURE);
        /* the driver gives 100 MiB a second towards the target */
        balloon = MIN(balloon + 100 * MiB, GiB - f.s.target);
        f.now += SEC;
    }
    g_assert_cmpuint(f.s.target, <, GiB / 2);
}

static void test_inflation_skew(void)
{
    run_inflation_skew(false, 60 * MiB);
    run_inflation_skew(true, 60 * MiB);
}

/*
 * With deflate-on-oom, memory given back reaches the driver's size before
 * the guest's statistics do: a sample taken before the driver deflated,
 * read with its new size, counted the pages given back as memory the
 * guest took, and at a rate that asked for them and more again (a
 * migration test saw 628 -> 808 MiB with 301 MiB available).
 */
static void test_return_skew(void)
{
    Fixture f;
    const uint64_t start = 564 * MiB;
    uint64_t actual = start, seen = start;
    BalloonPolicyDecision d;
    int i;

    fixture_init(&f, GiB, GiB);
    f.balloon_in_total = true;
    f.s.target = start;
    f.s.last_actual = start;
    for (i = 0; i < 8; i++) {
        /* 300 MiB available at the start, and what came back since */
        set_stats(&f, 300 * MiB + seen - start);
        f.st.total = GiB;
        d = decide(&f, actual);
        g_test_message("guest %" PRIu64 " MiB, sample from %" PRIu64
                       " MiB: %s to %" PRIu64 " MiB", actual / MiB,
                       seen / MiB, balloon_policy_reason_name(d.reason),
                       d.new_target / MiB);
        g_assert_cmpint(d.reason, !=, BALLOON_POLICY_REASON_GUEST_PRESSURE);
        /* the driver follows at once, the guest's next sample lags */
        seen = actual;
        actual = f.s.target;
        f.now += SEC;
    }
    g_assert_cmpuint(f.s.target, >, start);
}

/*
 * A host process that faults in 20 MiB a second in one go, read every
 * 250 ms and, around each step, twice within 5 ms (memory.events and the
 * poll): the growth it foresees is that of 20 MiB a second, not of a
 * step over 5 ms, so a 1 GiB guest is not asked for a quarter of itself.
 */
static void test_host_steps(void)
{
    Fixture f;
    const uint64_t limit = 1000 * MiB;
    uint64_t hog = 0, given = 0;
    int64_t t;

    fixture_init(&f, GiB, GiB);
    for (t = 0; t < 5 * SEC; t += SEC / 4) {
        /* the guest's pages given to the balloon leave the host at once */
        BalloonPolicyHost h = {
            .time = f.now + t, .read_time = f.now + t, .limit = limit,
            .setpoint = limit / 1000 * 800, .footprint = 700 * MiB - given,
        };
        BalloonPolicyDecision d;

        if (t % SEC == 0) {
            h.usage = 780 * MiB + hog - given;
            balloon_policy_note_host(&f.s, &h);
            hog += 20 * MiB;
            h.time += 5 * 1000000;
            h.read_time = h.time;
        }
        h.usage = 780 * MiB + hog - given;
        balloon_policy_note_host(&f.s, &h);
        set_stats(&f, 500 * MiB - given);
        f.st.time = h.time;
        d = decide_at(&f, GiB - given, h.time, false);
        given += d.old_target > d.new_target ? d.old_target - d.new_target : 0;
        g_assert_cmpuint(f.s.host_rate, <=, 40 * MiB);
    }
    g_test_message("host grew 100 MiB in 5 s: rate %" PRIu64 " MiB/s, the "
                   "guest gave %" PRIu64 " MiB", f.s.host_rate / MiB,
                   given / MiB);
    /*
     * the usage above 80% and the half band under it (25 MiB), and a
     * second of growth, not more
     */
    g_assert_cmpuint(given, <=, (100 + 25 + 40 + 8) * MiB);
}

/*
 * A guest allocating fast grows its QEMU's footprint, and the host's usage
 * with it, towards the setpoint: that is this VM's own growth, which its
 * size bounds and its statistics follow, not a host allocator to get
 * ahead of.  Foreseen as host growth, the balloon inflated against the
 * guest's own allocation (a 1 GiB guest went to 304 MiB during a 700 MiB
 * allocation that never took the cgroup past its setpoint).
 */
static void test_own_growth_not_foreseen(void)
{
    Fixture f;
    const uint64_t limit = 1400 * MiB;
    uint64_t touched = 300 * MiB;
    int64_t t;

    fixture_init(&f, GiB, GiB);
    for (t = 0; t < 3 * SEC; t += SEC / 4) {
        BalloonPolicyHost h = {
            .time = f.now + t, .read_time = f.now + t, .limit = limit,
            .setpoint = limit / 1000 * 800, .usage = 100 * MiB + touched,
            .footprint = 100 * MiB + touched,
        };
        BalloonPolicyDecision d;

        balloon_policy_note_host(&f.s, &h);
        if (t % SEC == 0) {
            /* statistics every second, the host every 250 ms */
            set_stats(&f, GiB - touched + 200 * MiB);
            f.st.time = h.time;
        }
        d = decide_at(&f, GiB, h.time, false);
        g_test_message("%" PRIu64 " MiB in use: %s", h.usage / MiB,
                       balloon_policy_reason_name(d.reason));
        g_assert_cmpint(d.reason, !=, BALLOON_POLICY_REASON_HOST_PRESSURE);
        /* 300 MiB/s, up to 1000 MiB of the 1119 MiB setpoint */
        touched = MIN(touched + 75 * MiB, 900 * MiB);
    }
    g_assert_cmpuint(f.s.target, ==, GiB);
}

/*
 * A DIMM goes: the maximum follows the memory the VM has now, and the
 * baseline and every size beyond it are clamped to it; a reset then
 * rests at that, not at a size the VM no longer has.
 */
static void test_memory_shrinks(void)
{
    Fixture f;

    fixture_init(&f, 1536 * MiB, 1280 * MiB);
    f.s.pingpong_floor = 1400 * MiB;
    balloon_policy_set_max(&f.s, &f.p, GiB);
    g_assert_cmpuint(f.p.max, ==, GiB);
    g_assert_cmpuint(f.s.baseline, ==, GiB);
    g_assert_cmpuint(f.s.target, ==, GiB);
    g_assert_cmpuint(f.s.pingpong_floor, ==, GiB);
    g_assert_null(balloon_policy_state_check(&f.s, &f.p, f.now));
    g_assert_cmpuint(balloon_policy_device_reset(&f.s, &f.p, f.now), ==,
                     GiB);
    /* grown again: the baseline stays where it was clamped */
    balloon_policy_set_max(&f.s, &f.p, 1536 * MiB);
    g_assert_cmpuint(f.s.baseline, ==, GiB);
    g_assert_cmpuint(balloon_policy_device_reset(&f.s, &f.p, f.now), ==,
                     GiB);
}

/*
 * On a migration destination the state arrives without the growth
 * measured at the source (the stream does not carry it): the first sample
 * there is not compared with a use of 0, which read everything in use as
 * growth and deflated the guest to its maximum.
 */
static void test_arrived_growth(void)
{
    Fixture f;
    BalloonPolicyDecision d;

    fixture_init(&f, 2 * GiB, GiB);
    balloon_policy_set_baseline(&f.s, &f.p, GiB, f.now);
    set_stats(&f, 700 * MiB);
    f.st.total = GiB;
    decide(&f, GiB);
    /* what the destination had before: zeroes where the stream is silent */
    f.s.prev_used = 0;
    f.s.guest_rate = 0;
    balloon_policy_arrived(&f.s);
    f.now += 3 * SEC;
    set_stats(&f, 700 * MiB);
    f.st.total = GiB;
    d = decide(&f, GiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);
    g_assert_cmpuint(f.s.guest_rate, ==, 0);
    g_assert_cmpuint(f.s.counters.pingpongs, ==, 0);
}

/*
 * Host growth is timed on the clock the readings were taken on: the
 * policy's clock stops with the VM (and only steps under qtest), the
 * host's memory use goes on.  100 MiB over 2 s of the source's clock is
 * 50 MiB/s, however little the policy's clock moved.
 */
static void test_host_growth_clock(void)
{
    Fixture f;
    BalloonPolicyHost h = {
        .time = 0, .read_time = 0, .usage = 500 * MiB, .limit = GiB,
        .setpoint = GiB / 1000 * 800, .footprint = 200 * MiB,
    };

    fixture_init(&f, GiB, GiB);
    h.time = f.now;
    h.read_time = 7 * SEC;
    balloon_policy_note_host(&f.s, &h);
    h.time = f.now + SEC / 2;
    h.read_time = 9 * SEC;
    h.usage += 100 * MiB;
    balloon_policy_note_host(&f.s, &h);
    g_assert_cmpuint(f.s.host_rate, ==, 50 * MiB);

    /* a stop: what grew before it says nothing about what comes after */
    balloon_policy_forget_host_growth(&f.s);
    g_assert_cmpuint(f.s.host_rate, ==, 0);
    h.time += SEC / 4;
    h.read_time += 600 * SEC;
    h.usage += 500 * MiB;
    balloon_policy_note_host(&f.s, &h);
    g_assert_cmpuint(f.s.host_rate, ==, 0);
}

/*
 * Only the guest's own need moves the target while a migration runs:
 * host pressure waits, a guest short of memory gets it.
 */
static void test_guest_only(void)
{
    Fixture f;
    BalloonPolicyDecision d;

    fixture_init(&f, 2 * GiB, 2 * GiB);
    balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_CRITICAL, f.now);
    set_stats(&f, 1500 * MiB);
    d = decide_at(&f, 2 * GiB, f.now, true);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);
    d = decide(&f, 2 * GiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_PRESSURE);
    f.now += SEC;
    set_stats(&f, 10 * MiB);
    d = decide_at(&f, f.s.target, f.now, true);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
}

/*
 * A guest's growth times a long statistics interval (the user's polling
 * interval, up to 2^32 s) does not wrap: 4 GiB/s over a horizon of 2^32
 * ms is more than the VM, not 0.
 */
static void test_growth_no_wrap(void)
{
    Fixture f;
    BalloonPolicyDecision d;
    const uint64_t ram = 16ULL << 40;

    fixture_init(&f, ram, ram / 2);
    /* 2 intervals and half a second: 2^32 ms */
    f.stats_interval = ((1LL << 32) * 1000000 - SEC / 2) / 2;
    set_stats(&f, 6ULL << 40);
    f.st.total = ram / 2;
    decide(&f, ram / 2);
    /* 4 GiB more in use 2 s later: counted over half of it, 4 GiB/s */
    f.now += 2 * SEC;
    set_stats(&f, (6ULL << 40) - 4 * GiB);
    f.st.total = ram / 2;
    d = decide(&f, ram / 2);
    g_test_message("guest rate %" PRIu64 " B/s: %s to %" PRIu64 " GiB",
                   f.s.guest_rate, balloon_policy_reason_name(d.reason),
                   d.new_target / GiB);
    g_assert_cmpuint(f.s.guest_rate, ==, 4 * GiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
    g_assert_cmpuint(d.new_target, ==, ram);
}

/*
 * A guest that floods the stats queue: statistics closer together than
 * the spacing wait (the policy says when to look again) and are used once
 * it has passed.
 */
static void test_stats_flood(void)
{
    Fixture f;
    BalloonPolicyDecision d;

    fixture_init(&f, 2 * GiB, GiB);
    set_stats(&f, 1500 * MiB);
    decide(&f, GiB);
    g_assert_cmpint(f.s.stats_used, ==, f.now);
    /* 100 ms later the guest says it is short: held back */
    f.now += BALLOON_POLICY_STATS_MIN_SPACING / 5;
    set_stats(&f, 10 * MiB);
    d = decide(&f, GiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);
    g_assert_cmpint(balloon_policy_next_wakeup(&f.s, &f.p, GiB, f.now), ==,
                    f.s.stats_used + BALLOON_POLICY_STATS_MIN_SPACING);
    /* and acted upon once the spacing has passed */
    f.now = f.s.stats_used + BALLOON_POLICY_STATS_MIN_SPACING;
    d = decide(&f, GiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
    g_assert_cmpint(balloon_policy_next_wakeup(&f.s, &f.p, GiB, f.now), !=,
                    f.s.stats_used + BALLOON_POLICY_STATS_MIN_SPACING);
}

/*
 * Statistics the device asked for come at its pace: 200 ms after the
 * last ones used, they are acted upon at once, where the same statistics
 * unasked are held back by the flood limit.
 */
static void test_stats_asked(void)
{
    Fixture f;
    BalloonPolicyDecision d;
    int asked;

    for (asked = 0; asked < 2; asked++) {
        fixture_init(&f, 2 * GiB, GiB);
        set_stats(&f, 1500 * MiB);
        decide(&f, GiB);
        f.now += BALLOON_POLICY_STATS_INTERVAL_FAST_MS * MS;
        set_stats(&f, 10 * MiB);
        f.st.asked = asked;
        d = decide(&f, GiB);
        g_assert_cmpint(d.reason, ==,
                        asked ? BALLOON_POLICY_REASON_GUEST_PRESSURE :
                                BALLOON_POLICY_REASON_NONE);
    }
}

/*
 * How often statistics should come: every 2 s for a calm guest, every
 * second while an allocator at the fastest plausible rate could eat its
 * available memory within two seconds (and before any), every 200 ms while
 * its use grows fast, after guest pressure, or while its host is past the
 * setpoint.
 */
static int64_t interval_after_stats(Fixture *f, uint64_t available,
                                    uint64_t actual)
{
    set_stats(f, available);
    decide(f, actual);
    return balloon_policy_stats_interval_ms(&f->s, &f->p, f->now);
}

static void test_stats_interval(void)
{
    const uint64_t limit = 8 * GiB;
    Fixture f;
    BalloonPolicyHost h;

    fixture_init(&f, 4 * GiB, 4 * GiB);
    g_assert_cmpint(balloon_policy_stats_interval_ms(&f.s, &f.p, f.now), ==,
                    BALLOON_POLICY_STATS_INTERVAL_WATCH_MS);
    g_assert_cmpint(interval_after_stats(&f, 3 * GiB, 4 * GiB), ==,
                    BALLOON_POLICY_STATS_INTERVAL_MS);
    f.now += 2 * SEC;
    g_assert_cmpint(interval_after_stats(&f, 2 * f.p.guest_fast_rate,
                                         4 * GiB), ==,
                    BALLOON_POLICY_STATS_INTERVAL_FAST_MS);
    /* the same available memory, not falling: every second */
    fixture_init(&f, 4 * GiB, 4 * GiB);
    g_assert_cmpint(interval_after_stats(&f, 2 * f.p.guest_fast_rate,
                                         4 * GiB), ==,
                    BALLOON_POLICY_STATS_INTERVAL_WATCH_MS);
    f.now += SEC;
    g_assert_cmpint(interval_after_stats(&f, 2 * f.p.guest_fast_rate,
                                         4 * GiB), ==,
                    BALLOON_POLICY_STATS_INTERVAL_WATCH_MS);

    /* short of memory, and deflated: fast for the ping-pong window */
    fixture_init(&f, 4 * GiB, 2 * GiB);
    g_assert_cmpint(interval_after_stats(&f, f.p.reserve / 2, 2 * GiB), ==,
                    BALLOON_POLICY_STATS_INTERVAL_FAST_MS);
    /*
     * and after it, while an allocator at the fastest plausible rate would
     * use up what it has above the reserve within the watch interval
     */
    f.now += f.p.pingpong_window;
    g_assert_cmpint(balloon_policy_stats_interval_ms(&f.s, &f.p, f.now), ==,
                    BALLOON_POLICY_STATS_INTERVAL_FAST_MS);
    g_assert_cmpint(interval_after_stats(&f, f.p.reserve +
                                         f.p.guest_fast_rate, 2 * GiB), ==,
                    BALLOON_POLICY_STATS_INTERVAL_WATCH_MS);
    f.now += SEC;
    g_assert_cmpint(interval_after_stats(&f, f.p.reserve +
                                         f.p.guest_fast_rate - 4 * MiB,
                                         2 * GiB), ==,
                    BALLOON_POLICY_STATS_INTERVAL_FAST_MS);
    /* not at its full size: no deflate could help */
    fixture_init(&f, 4 * GiB, 4 * GiB);
    g_assert_cmpint(interval_after_stats(&f, f.p.reserve +
                                         f.p.guest_fast_rate - 4 * MiB,
                                         4 * GiB), ==,
                    BALLOON_POLICY_STATS_INTERVAL_WATCH_MS);

    /* a calm guest, its host past the setpoint */
    fixture_init(&f, 4 * GiB, 4 * GiB);
    h = (BalloonPolicyHost) {
        .time = f.now, .read_time = f.now, .usage = limit / 100 * 79,
        .limit = limit, .setpoint = limit / 1000 * 800,
        .footprint = 4 * GiB,
    };
    balloon_policy_note_host(&f.s, &h);
    g_assert_cmpint(interval_after_stats(&f, 3 * GiB, 4 * GiB), ==,
                    BALLOON_POLICY_STATS_INTERVAL_MS);
    f.now += 2 * SEC;
    h.time = h.read_time = f.now;
    h.usage = limit / 100 * 81;
    balloon_policy_note_host(&f.s, &h);
    g_assert_cmpint(balloon_policy_stats_interval_ms(&f.s, &f.p, f.now), ==,
                    BALLOON_POLICY_STATS_INTERVAL_FAST_MS);
}

/*
 * Statistics want a fresh host reading only where guest pressure could
 * give the guest something: not from a guest at its full size.
 */
static void test_host_reading_wanted(void)
{
    Fixture f;

    fixture_init(&f, 4 * GiB, 4 * GiB);
    g_assert_false(balloon_policy_wants_host_reading(&f.s, &f.p, 4 * GiB));
    /* a balloon the driver has not inflated yet */
    balloon_policy_set_baseline(&f.s, &f.p, 3 * GiB, f.now);
    g_assert_true(balloon_policy_wants_host_reading(&f.s, &f.p, 4 * GiB));
    g_assert_true(balloon_policy_wants_host_reading(&f.s, &f.p, 3 * GiB));
    /* the target back at full size, the driver still to deflate */
    balloon_policy_set_baseline(&f.s, &f.p, 4 * GiB, f.now);
    g_assert_true(balloon_policy_wants_host_reading(&f.s, &f.p, 3 * GiB));
    g_assert_false(balloon_policy_wants_host_reading(&f.s, &f.p, 4 * GiB));
}

/* A dry run decides and counts, and leaves the target where it is. */
static void test_dry_run(void)
{
    Fixture f;
    BalloonPolicyDecision d;

    fixture_init(&f, 2 * GiB, 2 * GiB);
    f.dry_run = true;
    balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_CRITICAL, f.now);
    set_stats(&f, 1500 * MiB);
    d = decide(&f, 2 * GiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_PRESSURE);
    g_assert_cmpuint(d.new_target, <, d.old_target);
    g_assert_cmpuint(f.s.target, ==, 2 * GiB);
    g_assert_cmpuint(
        f.s.counters.decisions[BALLOON_POLICY_REASON_HOST_PRESSURE], ==, 1);
}

/*
 * A driver slower than the host's allocator has to start earlier: with
 * the host 100 MiB below its setpoint and growing 70 MiB/s, a driver
 * seen inflating 28 MiB/s needs 2.5 s for each second of growth, so the
 * balloon inflates now; a driver at 350 MiB/s can wait.
 */
static void test_slow_driver_starts_early(void)
{
    static const struct {
        uint64_t driver_mib;
        BalloonPolicyReason reason;
    } drivers[] = {
        { 28, BALLOON_POLICY_REASON_HOST_PRESSURE },
        { 350, BALLOON_POLICY_REASON_NONE },
    };
    const uint64_t limit = 1000 * MiB, setpoint = 800 * MiB;
    size_t i;

    for (i = 0; i < ARRAY_SIZE(drivers); i++) {
        Fixture f;
        BalloonPolicyDecision d;
        int64_t t;

        fixture_init(&f, 448 * MiB, 448 * MiB);
        /* the driver inflated at its speed a while ago */
        balloon_policy_set_baseline(&f.s, &f.p, 200 * MiB, f.now);
        for (t = 0; t <= SEC; t += SEC / 10) {
            uint64_t gone = drivers[i].driver_mib * MiB * t / SEC;

            decide_at(&f, MAX(448 * MiB - MIN(gone, 448 * MiB), 200 * MiB),
                      f.now + t, false);
        }
        f.now += 30 * SEC;
        /* the host 100 MiB below its setpoint, 70 MiB/s more */
        for (t = 0; t <= SEC; t += SEC / 2) {
            BalloonPolicyHost h = {
                .time = f.now + t, .read_time = f.now + t,
                .usage = setpoint - 170 * MiB + 70 * MiB * t / SEC,
                .limit = limit, .setpoint = setpoint, .footprint = 500 * MiB,
            };

            balloon_policy_note_host(&f.s, &h);
        }
        f.now += SEC;
        set_stats(&f, 300 * MiB);
        d = decide(&f, 200 * MiB);
        g_test_message("driver %" PRIu64 " MiB/s (seen %" PRIu64 "): %s",
                       drivers[i].driver_mib, f.s.inflate_rate / MiB,
                       balloon_policy_reason_name(d.reason));
        g_assert_cmpuint(f.s.host_rate, ==, 70 * MiB);
        g_assert_cmpuint(f.s.inflate_rate / MiB, >=,
                         drivers[i].driver_mib * 9 / 10);
        g_assert_cmpint(d.reason, ==, drivers[i].reason);
    }
}

/*
 * A host short of more than a 1 GiB guest can spare, read every 250 ms;
 * the guest's statistics come every second, its working set of 600 MiB
 * grows 2 MiB/s, and the driver follows each target at once.  The guest
 * gives what it can spare, counting what it gave since its statistics,
 * and keeps the margin guest pressure would restore: no deflate follows
 * within the ping-pong window, and its available memory never falls under
 * the reserve.
 */
static void test_host_leaves_margin(void)
{
    Fixture f;
    const uint64_t limit = 1000 * MiB;
    uint64_t actual = GiB, used = 600 * MiB, avail, min_avail = UINT64_MAX;
    int64_t t;

    fixture_init(&f, GiB, GiB);
    f.stats_interval = SEC;
    for (t = 0; t < 20 * SEC; t += SEC / 4) {
        uint64_t usage = limit - (GiB - actual);
        BalloonPolicyHost h = {
            .time = f.now + t, .read_time = f.now + t, .usage = usage,
            .limit = limit, .setpoint = limit / 2, .footprint = usage,
        };

        used = 600 * MiB + 2 * MiB * t / SEC;
        avail = actual > used ? actual - used : 0;
        min_avail = MIN(min_avail, avail);
        balloon_policy_note_host(&f.s, &h);
        if (t % SEC == 0) {
            set_stats(&f, avail);
            f.st.time = h.time;
        }
        decide_at(&f, actual, h.time, false);
        actual = f.s.target;
    }
    g_test_message("guest at %" PRIu64 " MiB with %" PRIu64 " MiB in use, "
                   "%" PRIu64 " MiB available at least", actual / MiB,
                   used / MiB, min_avail / MiB);
    g_assert_cmpuint(f.s.counters.pingpongs, ==, 0);
    g_assert_cmpuint(min_avail, >=, f.p.reserve);
    /* it gave down to the margin (1.5 reserves and some growth) */
    g_assert_cmpuint(avail, <=, 2 * f.p.reserve);
}

/*
 * A host held past its setpoint by a service, its own use going up 8 MiB
 * every 8 s (a guest's page cache, QEMU's own allocations), read every
 * 250 ms (each reading past the setpoint is a "low"
 * event, as the source sends it); a 1 GiB guest with plenty to spare and
 * a driver that follows at once.  Once the first deficit is given, the
 * host rests under its setpoint: a decision now and then, not one per
 * step of growth, and the pressure level at none most of the time.
 */
static void test_host_settles_below_setpoint(void)
{
    Fixture f;
    const uint64_t limit = 1400 * MiB, setpoint = limit / 1000 * 800;
    const uint64_t service = 500 * MiB, overhead = 50 * MiB;
    const uint64_t used = 150 * MiB;
    uint64_t actual = GiB;
    int decisions = 0;
    int64_t t;

    fixture_init(&f, GiB, GiB);
    f.stats_interval = SEC;
    for (t = 0; t < 80 * SEC; t += SEC / 4) {
        int64_t now = f.now + t;
        uint64_t usage = service + 8 * MiB * (t / (8 * SEC)) + overhead +
                         actual;
        BalloonPolicyHost h = {
            .time = now, .read_time = now, .usage = usage,
            .limit = limit, .setpoint = setpoint,
            .footprint = overhead + actual,
        };
        BalloonPolicyDecision d;

        balloon_policy_note_host(&f.s, &h);
        if (t % SEC == 0) {
            set_stats(&f, actual - used);
            f.st.time = now;
        }
        d = decide_at(&f, actual, now, false);
        actual = f.s.target;
        /* after the first deficit is given */
        decisions += t >= 20 * SEC &&
                     d.reason == BALLOON_POLICY_REASON_HOST_PRESSURE;
    }
    g_test_message("60 s of growth: %d host-pressure decisions, guest at "
                   "%" PRIu64 " MiB", decisions, actual / MiB);
    g_assert_cmpuint(actual, >, f.p.floor);
    g_assert_cmpint(decisions, <=, 4);
}

static void set_host_usage(Fixture *f, uint64_t usage)
{
    const uint64_t limit = 2000 * MiB;
    BalloonPolicyHost h = {
        .time = f->now, .read_time = f->now, .usage = usage,
        .limit = limit, .setpoint = limit / 1000 * 800,
        .footprint = 400 * MiB,
    };

    g_assert_true(balloon_policy_note_host(&f->s, &h));
}

/*
 * The host is never sacrificed for one guest: a 1 GiB guest at 312 MiB,
 * short of memory and growing fast, in a 2000 MiB cgroup used to 1742
 * MiB.  Guest pressure gives it what fits under 95% of the limit, its
 * free memory counted as used, nothing while the host is past that, and
 * more once other VMs made room.  A guest that deflated by itself
 * (deflate-on-oom) is followed all the same.
 */
static void test_host_not_sacrificed(void)
{
    Fixture f;
    BalloonPolicyDecision d;

    fixture_init(&f, GiB, GiB);
    f.stats_interval = SEC;
    f.s.target = 312 * MiB;
    f.s.guest_rate = 400 * MiB;         /* wants all of the VM */
    set_host_usage(&f, 1742 * MiB);
    set_stats(&f, 40 * MiB);
    f.st.free = 20 * MiB;
    d = decide(&f, 312 * MiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
    /* 312 + 1900 - 1742 - 20 = 450 MiB, in whole 4 MiB steps */
    g_assert_cmpuint(d.new_target, ==, 448 * MiB);
    g_assert_cmpuint(d.held, ==, GiB - 448 * MiB);

    /*
     * Before the host saw the guest use the 136 MiB (they are free in
     * it), and once it has: the host is at 95%, no more.
     */
    f.now += SEC;
    set_host_usage(&f, 1744 * MiB);
    set_stats(&f, 40 * MiB);
    f.st.free = 156 * MiB;
    d = decide(&f, 448 * MiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);
    g_assert_cmpuint(d.held, >, 0);
    f.now += SEC;
    set_host_usage(&f, 1878 * MiB);
    set_stats(&f, 40 * MiB);
    f.st.free = 20 * MiB;
    d = decide(&f, 448 * MiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_NONE);
    g_assert_cmpuint(f.s.target, ==, 448 * MiB);
    g_assert_cmpuint(d.held, >, 0);

    /* another VM gave 200 MiB */
    f.now += SEC;
    set_host_usage(&f, 1678 * MiB);
    set_stats(&f, 40 * MiB);
    d = decide(&f, 448 * MiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
    /* up to 448 + 1900 - 1678 - 20 = 650 MiB: all it asks for now */
    g_assert_cmpuint(d.new_target, >, 448 * MiB);
    g_assert_cmpuint(d.new_target, <=, 648 * MiB);

    /* deflate-on-oom: what the guest took is taken, past 95% or not */
    f.now += SEC;
    set_host_usage(&f, 1990 * MiB);
    d = decide(&f, 700 * MiB);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_DEFLATED);
    g_assert_cmpuint(d.new_target, >=, 700 * MiB);

    /* without a host reading, guest pressure alone decides */
    fixture_init(&f, GiB, GiB);
    f.stats_interval = SEC;
    f.s.target = 312 * MiB;
    f.s.guest_rate = 400 * MiB;
    set_stats(&f, 40 * MiB);
    d = decide(&f, 312 * MiB);
    g_assert_cmpuint(d.new_target, ==, GiB);
    g_assert_cmpuint(d.held, ==, 0);
}

/*
 * A guest inflated, then short at once (ping-pong: its floor is raised to
 * what it uses and the margin), then done with its burst: it freed
 * 1.5 GiB.  The raised floor and the pressure window end, and host
 * pressure takes from it again at once, where it would have waited a
 * minute.
 */
static void test_pingpong_ends_when_freed(void)
{
    Fixture f;
    BalloonPolicyDecision d;

    d = host_event(&f, BALLOON_POLICY_LEVEL_CRITICAL);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_PRESSURE);

    f.now += SEC;
    set_stats(&f, 50 * MiB);
    d = decide(&f, d.new_target);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_GUEST_PRESSURE);
    g_assert_cmpuint(f.s.counters.pingpongs, ==, 1);
    /*
     * what it uses and the margin: all of it (the sample may predate the
     * inflation: at 2 GiB it uses 1998 MiB)
     */
    g_assert_cmpuint(balloon_policy_floor(&f.s, &f.p, f.now), ==, 2 * GiB);

    /* a burst that has not ended keeps the floor */
    f.now += SEC;
    set_stats(&f, 40 * MiB);
    d = decide(&f, 2 * GiB);
    g_assert_cmpuint(balloon_policy_floor(&f.s, &f.p, f.now), ==, 2 * GiB);

    f.now += SEC;
    set_stats(&f, 1800 * MiB);
    balloon_policy_note_pressure(&f.s, BALLOON_POLICY_LEVEL_CRITICAL, f.now);
    d = decide(&f, 2 * GiB);
    g_assert_cmpuint(balloon_policy_floor(&f.s, &f.p, f.now), ==, f.p.floor);
    g_assert_cmpint(d.reason, ==, BALLOON_POLICY_REASON_HOST_PRESSURE);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/balloon-auto-policy/cases", test_cases);
    g_test_add_func("/balloon-auto-policy/params-check", test_params_check);
    g_test_add_func("/balloon-auto-policy/floor-and-cooldown",
                    test_floor_and_cooldown);
    g_test_add_func("/balloon-auto-policy/waits-for-driver",
                    test_waits_for_driver);
    g_test_add_func("/balloon-auto-policy/stuck-driver", test_stuck_driver);
    g_test_add_func("/balloon-auto-policy/stuck-once-and-floor",
                    test_stuck_once_and_floor);
    g_test_add_func("/balloon-auto-policy/next-wakeup", test_next_wakeup);
    g_test_add_func("/balloon-auto-policy/page-aligned", test_page_aligned);
    g_test_add_func("/balloon-auto-policy/sample-acts-once",
                    test_sample_acts_once);
    g_test_add_func("/balloon-auto-policy/small-vms", test_small_vms);
    g_test_add_func("/balloon-auto-policy/state-check", test_state_check);
    g_test_add_func("/balloon-auto-policy/guest-fast-allocation",
                    test_guest_fast_allocation);
    g_test_add_func("/balloon-auto-policy/host-fast-allocation",
                    test_host_fast_allocation);
    g_test_add_func("/balloon-auto-policy/deficit-shares",
                    test_deficit_shares);
    g_test_add_func("/balloon-auto-policy/return-hysteresis",
                    test_return_hysteresis);
    g_test_add_func("/balloon-auto-policy/calm-after-foreseen-inflation",
                    test_calm_after_foreseen_inflation);
    g_test_add_func("/balloon-auto-policy/inflation-skew", test_inflation_skew);
    g_test_add_func("/balloon-auto-policy/host-steps", test_host_steps);
    g_test_add_func("/balloon-auto-policy/own-growth-not-foreseen",
                    test_own_growth_not_foreseen);
    g_test_add_func("/balloon-auto-policy/return-skew", test_return_skew);
    g_test_add_func("/balloon-auto-policy/guest-deflated-pingpong",
                    test_guest_deflated_and_pingpong);
    g_test_add_func("/balloon-auto-policy/cache-fill-not-growth",
                    test_cache_fill_not_growth);
    g_test_add_func("/balloon-auto-policy/burst-horizon",
                    test_burst_horizon);
    g_test_add_func("/balloon-auto-policy/sustained-burst-rate",
                    test_sustained_burst_rate);
    g_test_add_func("/balloon-auto-policy/burst-reserve", test_burst_reserve);
    g_test_add_func("/balloon-auto-policy/stall-counters",
                    test_stall_counters);
    g_test_add_func("/balloon-auto-policy/return-to-baseline",
                    test_return_to_baseline);
    g_test_add_func("/balloon-auto-policy/seed-grow-beyond-baseline",
                    test_seed_grow_beyond_baseline);
    g_test_add_func("/balloon-auto-policy/no-oscillation",
                    test_no_oscillation);
    g_test_add_func("/balloon-auto-policy/fairness", test_fairness);
    g_test_add_func("/balloon-auto-policy/memory-shrinks",
                    test_memory_shrinks);
    g_test_add_func("/balloon-auto-policy/arrived-growth",
                    test_arrived_growth);
    g_test_add_func("/balloon-auto-policy/host-growth-clock",
                    test_host_growth_clock);
    g_test_add_func("/balloon-auto-policy/guest-only", test_guest_only);
    g_test_add_func("/balloon-auto-policy/stats-flood", test_stats_flood);
    g_test_add_func("/balloon-auto-policy/stats-asked", test_stats_asked);
    g_test_add_func("/balloon-auto-policy/stats-interval",
                    test_stats_interval);
    g_test_add_func("/balloon-auto-policy/host-reading-wanted",
                    test_host_reading_wanted);
    g_test_add_func("/balloon-auto-policy/dry-run", test_dry_run);
    g_test_add_func("/balloon-auto-policy/pingpong-ends-when-freed",
                    test_pingpong_ends_when_freed);
    g_test_add_func("/balloon-auto-policy/pingpong-spares-page-cache",
                    test_pingpong_spares_page_cache);
    g_test_add_func("/balloon-auto-policy/host-not-sacrificed",
                    test_host_not_sacrificed);
    g_test_add_func("/balloon-auto-policy/host-settles-below-setpoint",
                    test_host_settles_below_setpoint);
    g_test_add_func("/balloon-auto-policy/host-leaves-margin",
                    test_host_leaves_margin);
    g_test_add_func("/balloon-auto-policy/slow-driver-starts-early",
                    test_slow_driver_starts_early);
    g_test_add_func("/balloon-auto-policy/growth-no-wrap",
                    test_growth_no_wrap);
    return g_test_run();
}
