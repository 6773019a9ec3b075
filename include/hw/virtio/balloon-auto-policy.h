/*
 * Automatic virtio-balloon: control policy
 *
 * A pure, deterministic controller: it sees host pressure levels, guest
 * statistics and the balloon's actual size, and answers with the next
 * target guest size and the reason.  It has no QEMU main-loop or device
 * dependencies so that unit tests and simulations can drive it directly.
 *
 * All sizes are guest memory sizes in bytes (RAM minus balloon), all times
 * are nanoseconds on a monotonic clock chosen by the caller.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VIRTIO_BALLOON_AUTO_POLICY_H
#define HW_VIRTIO_BALLOON_AUTO_POLICY_H

/* A time that is long past: "never happened". */
#define BALLOON_POLICY_NEVER (INT64_MIN / 2)

/* The guest balloons 4 KiB pages: every target is a multiple of this. */
#define BALLOON_POLICY_PAGE 4096

/*
 * How long a guest's fastest burst is remembered: it counts half as much
 * after each of these, in nanoseconds.
 */
#define BALLOON_POLICY_BURST_HALF_LIFE (5 * 60 * 1000000000LL)

/* Inflate steps per host pressure level without a known headroom, %. */
#define BALLOON_POLICY_INFLATE_LOW_PCT 5
#define BALLOON_POLICY_INFLATE_MEDIUM_PCT 10
#define BALLOON_POLICY_INFLATE_CRITICAL_PCT 25

/*
 * How often guest statistics should come, in milliseconds: every 2 s when
 * calm, every second while the guest could run short within two, and
 * five times a second while it could within one, its use grows fast or
 * memory is being moved (the device asks for them itself below QEMU's
 * one-second polling).
 */
#define BALLOON_POLICY_STATS_INTERVAL_MS 2000
#define BALLOON_POLICY_STATS_INTERVAL_WATCH_MS 1000
#define BALLOON_POLICY_STATS_INTERVAL_FAST_MS 200

/*
 * Statistics the device did not ask for, closer together than this, are
 * a guest flooding the stats queue: kept, but not acted upon before this
 * much time has passed.  Those it asked for come at its own pace.
 */
#define BALLOON_POLICY_STATS_MIN_SPACING (500 * 1000 * 1000LL)

typedef enum BalloonPolicyLevel {
    BALLOON_POLICY_LEVEL_NONE,
    BALLOON_POLICY_LEVEL_LOW,
    BALLOON_POLICY_LEVEL_MEDIUM,
    BALLOON_POLICY_LEVEL_CRITICAL,
    BALLOON_POLICY_LEVEL__MAX,
} BalloonPolicyLevel;

typedef enum BalloonPolicyReason {
    BALLOON_POLICY_REASON_NONE,
    BALLOON_POLICY_REASON_HOST_PRESSURE,    /* inflate */
    BALLOON_POLICY_REASON_GUEST_PRESSURE,   /* deflate: low available, stall */
    BALLOON_POLICY_REASON_GUEST_DEFLATED,   /* deflate: guest took pages */
    BALLOON_POLICY_REASON_HOST_CALM,        /* deflate towards the baseline */
    BALLOON_POLICY_REASON_GUEST_IDLE,       /* inflate back to the baseline */
    BALLOON_POLICY_REASON_DRIVER_STUCK,     /* target follows actual */
    BALLOON_POLICY_REASON__MAX,
} BalloonPolicyReason;

/* Guest statistics; UINT64_MAX means "not reported". */
typedef struct BalloonPolicyGuestStats {
    int64_t time;               /* when received, or NEVER */
    uint64_t total;
    uint64_t available;
    uint64_t free;
    uint64_t caches;
    uint64_t major_faults;
    uint64_t swap_in;
    uint64_t oom_kills;
    uint64_t alloc_stalls;
    uint64_t direct_reclaim;
    bool asked;                 /* the answer to the device's request */
} BalloonPolicyGuestStats;

/*
 * The host side, from the pressure source: the watched cgroup's memory
 * usage and the limit in force, and how much of the usage is this VM's.
 */
typedef struct BalloonPolicyHost {
    int64_t time;               /* when noted (policy's clock), or NEVER */
    /*
     * When read, on the source's own clock: host growth is timed on it,
     * since the policy's clock stops while the VM does and the host's
     * memory use goes on.
     */
    int64_t read_time;
    uint64_t usage;
    uint64_t limit;
    uint64_t setpoint;          /* usage above this is a deficit */
    uint64_t footprint;         /* this VM's part of @usage (QEMU's RSS) */
} BalloonPolicyHost;

typedef struct BalloonPolicyParams {
    uint64_t max;               /* VM RAM size: hard maximum */
    uint64_t floor;             /* never inflate the guest below this */
    uint64_t reserve;           /* guest available memory to leave alone */
    uint32_t step_pct[BALLOON_POLICY_LEVEL__MAX]; /* inflate per level, % */
    uint64_t max_step;          /* cap of one inflate decision */
    uint64_t return_step;       /* memory given back per decision */
    int64_t return_interval;    /* min time between two such decisions */
    uint64_t granularity;       /* targets are multiples of this */
    int64_t cooldown;           /* min time between two inflations */
    int64_t hold;               /* calm time before giving memory back */
    int64_t level_decay;        /* a pressure event counts this long */
    int64_t stats_max_age;      /* older guest stats are unknown */
    int64_t stuck_timeout;      /* driver without progress this long */
    int64_t pingpong_window;    /* deflate this soon after inflate */
    int64_t pingpong_hold;      /* how long a raised floor lasts */
    int64_t host_max_age;       /* older host readings are unknown */
    /* give memory back only this far below the setpoint, of the limit */
    uint32_t return_gap_permille;
    /* guest pressure leaves the host this far under its limit, of it */
    uint32_t host_guard_permille;
    int64_t lead;               /* host growth foreseen, time, at least */
    int64_t lead_max;           /* ... and at most */
    uint64_t inflate_rate_guess; /* the driver's, before it was seen, B/s */
    uint64_t guest_fast_rate;   /* fastest plausible guest allocation, B/s */
} BalloonPolicyParams;

typedef struct BalloonPolicyCounters {
    uint64_t events[BALLOON_POLICY_LEVEL__MAX];
    uint64_t decisions[BALLOON_POLICY_REASON__MAX];
    uint64_t bytes[BALLOON_POLICY_REASON__MAX];
    uint64_t pingpongs;
} BalloonPolicyCounters;

typedef struct BalloonPolicyState {
    uint64_t baseline;          /* where the balloon rests when calm */
    uint64_t target;            /* current target guest size */
    /* When each host pressure level was last signalled. */
    int64_t level_time[BALLOON_POLICY_LEVEL__MAX];
    BalloonPolicyLevel pending; /* highest level not acted upon yet */
    int64_t last_pressure;      /* the latest of level_time */
    int64_t last_inflate;       /* time of the last host inflate */
    int64_t last_guest_pressure;
    int64_t last_return;        /* time of the last step to the baseline */
    int64_t last_progress;      /* actual last moved or reached target */
    uint64_t last_actual;
    uint64_t pingpong_floor;    /* raised floor after ping-pong */
    int64_t pingpong_until;
    BalloonPolicyGuestStats prev; /* stats the last decision used */
    uint64_t prev_used;         /* guest memory in use at @prev */
    uint64_t prev_actual;       /* guest size at @prev */
    uint64_t guest_rate;        /* growth of guest memory in use, bytes/s */
    /*
     * The fastest growth sustained lately (bytes/s) and when: what host
     * inflation leaves the guest for its next burst follows from it.
     */
    uint64_t burst_rate;
    int64_t burst_time;
    BalloonPolicyHost host;     /* the last host reading */
    BalloonPolicyHost host_from; /* the reading host_rate is measured from */
    uint64_t host_rate;         /* growth of host usage, bytes/s */
    bool driver_stuck;
    uint64_t inflate_rate;      /* how fast the driver inflated lately, B/s */
    uint64_t inflate_from;      /* ... measured from this size */
    int64_t inflate_from_time;  /* ... at this time, or NEVER */
    int64_t stats_seen;         /* the latest statistics offered */
    int64_t stats_used;         /* the latest statistics acted upon */
    uint64_t stats_actual;      /* guest size when they were first used */
    BalloonPolicyCounters counters;
} BalloonPolicyState;

/* What one decision looks at. */
typedef struct BalloonPolicyInput {
    int64_t now;
    uint64_t actual;            /* guest size the driver has reached */
    /* the latest guest statistics (may be stale or missing) */
    const BalloonPolicyGuestStats *stats;
    /*
     * How often they come: the user's polling interval, or 0 where the
     * device polls them at the one balloon_policy_stats_interval_ms()
     * asks for.
     */
    int64_t stats_interval;
    /* deflate-on-oom: the guest's total keeps the balloon's pages */
    bool balloon_in_total;
    /*
     * Only the guest's own need may move the target (an outgoing
     * migration runs: giving the guest memory only adds pages to send).
     */
    bool guest_only;
    /* decide and count, but leave the target where it is */
    bool dry_run;
} BalloonPolicyInput;

typedef struct BalloonPolicyDecision {
    BalloonPolicyReason reason;   /* NONE: target unchanged */
    uint64_t old_target;
    uint64_t new_target;
    /* what the guest asked for beyond new_target, held back for the host */
    uint64_t held;
} BalloonPolicyDecision;

void balloon_policy_params_init(BalloonPolicyParams *p, uint64_t ram_size);
const char *balloon_policy_params_check(const BalloonPolicyParams *p);
void balloon_policy_state_init(BalloonPolicyState *s, uint64_t baseline);

/*
 * A host reading (usage against the limit) at @h->time; false if it is
 * not newer than the last one on the policy's clock (it is ignored).
 */
bool balloon_policy_note_host(BalloonPolicyState *s,
                              const BalloonPolicyHost *h);

/*
 * The VM stopped and runs again: host growth measured before the stop
 * says nothing about what comes next.
 */
void balloon_policy_forget_host_growth(BalloonPolicyState *s);

/*
 * The memory the balloon works on is now @ram_size (a DIMM came or
 * went): the maximum follows it, and sizes beyond it (the baseline
 * among them) are clamped to it.
 */
void balloon_policy_set_max(BalloonPolicyState *s, BalloonPolicyParams *p,
                            uint64_t ram_size);

/*
 * How often guest statistics should come, in milliseconds: the fast
 * interval while the guest's use grows fast, it was under pressure lately,
 * its host is past the setpoint (it may be asked to give), or an
 * allocator at the fastest plausible rate could eat its available memory
 * above the reserve within the watch interval; the watch interval while
 * it could within the calm one (and before any statistics); the calm one
 * otherwise.  (The device asks for them; an input with no
 * @stats_interval of its own says so.)
 */
int64_t balloon_policy_stats_interval_ms(const BalloonPolicyState *s,
                                         const BalloonPolicyParams *p,
                                         int64_t now);

/*
 * Whether guest statistics arriving now want a fresh host reading with
 * them: guest pressure gives only the room the host has, and only a guest
 * whose balloon holds memory (@actual or the target under its size) can
 * be given any.  At its full size the source's own readings, the sooner
 * the nearer the limit, are recent enough.
 */
bool balloon_policy_wants_host_reading(const BalloonPolicyState *s,
                                       const BalloonPolicyParams *p,
                                       uint64_t actual);

/*
 * What host pressure leaves a guest that burst lately for its next burst,
 * beyond the margin guest pressure gives it, at @now: what its fastest
 * burst lately (counting half after each BALLOON_POLICY_BURST_HALF_LIFE)
 * allocates before the driver can act on it, bounded.  Given up while the
 * host is foreseen past its ceiling, or at the critical level.
 */
uint64_t balloon_policy_burst_reserve(const BalloonPolicyState *s,
                                      const BalloonPolicyParams *p,
                                      int64_t now);

/* A host pressure event of @level at @now. */
void balloon_policy_note_pressure(BalloonPolicyState *s,
                                  BalloonPolicyLevel level, int64_t now);

/* Host pressure level in force at @now, after decay. */
BalloonPolicyLevel balloon_policy_level(const BalloonPolicyState *s,
                                    const BalloonPolicyParams *p, int64_t now);

/*
 * A manual balloon request at @now sets the baseline and the target
 * (clamped to [0, max], rounded up to whole pages).
 */
void balloon_policy_set_baseline(BalloonPolicyState *s,
                                 const BalloonPolicyParams *p,
                                 uint64_t baseline, int64_t now);

/* The floor in force at @now (configured or raised after ping-pong). */
uint64_t balloon_policy_floor(const BalloonPolicyState *s,
                            const BalloonPolicyParams *p, int64_t now);

/* Decide the next target. */
BalloonPolicyDecision balloon_policy_decide(BalloonPolicyState *s,
                                            const BalloonPolicyParams *p,
                                            const BalloonPolicyInput *in);

/*
 * When balloon_policy_decide() may next decide something without new
 * input (an event, statistics, a change of @actual), or
 * BALLOON_POLICY_NEVER: nothing to do until then, no wake-up needed.
 */
int64_t balloon_policy_next_wakeup(const BalloonPolicyState *s,
                                   const BalloonPolicyParams *p,
                                   uint64_t actual, int64_t now);

/*
 * A new guest driver (after a reset, or when it becomes ready): its
 * progress is measured from @now and its earlier statistics are forgotten.
 */
void balloon_policy_driver_reset(BalloonPolicyState *s, uint64_t actual,
                                 int64_t now);

/*
 * The device was reset (the guest reboots): the balloon is empty and
 * rests at the baseline, which is returned; the new driver's progress is
 * measured from @now.
 */
uint64_t balloon_policy_device_reset(BalloonPolicyState *s,
                                     const BalloonPolicyParams *p,
                                     int64_t now);

/*
 * The state arrived from a migration source: forget what belongs to the
 * other host (its pressure levels and readings) and the guest growth
 * measured there (the first sample here would read everything in use as
 * growth); the time of the last pressure still delays giving memory back.
 */
void balloon_policy_arrived(BalloonPolicyState *s);

/*
 * NULL if @s is consistent with @p at @now (its times are past events,
 * a raised floor ends within its hold), else what is wrong with it.
 */
const char *balloon_policy_state_check(const BalloonPolicyState *s,
                                       const BalloonPolicyParams *p,
                                       int64_t now);

const char *balloon_policy_level_name(BalloonPolicyLevel level);
const char *balloon_policy_reason_name(BalloonPolicyReason reason);

#endif
