/*
 * Automatic virtio-balloon: host memory-pressure sources
 *
 * Sources on QEMU's main loop: cgroup v1 (memory.pressure_level events and
 * usage thresholds near memory.limit_in_bytes, through eventfds and
 * cgroup.event_control), cgroup v2 (PSI triggers on memory.pressure, and
 * memory.current against the lowest memory.max/memory.high on the path,
 * polled adaptively, plus memory.events), system-wide PSI, and
 * descriptors armed by management and handed over (fd passing).
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VIRTIO_BALLOON_PRESSURE_H
#define HW_VIRTIO_BALLOON_PRESSURE_H

#include "hw/virtio/balloon-auto-policy.h"

typedef enum BalloonPressureKind {
    BALLOON_PRESSURE_AUTO,
    BALLOON_PRESSURE_CGROUP_V1,
    BALLOON_PRESSURE_CGROUP_V2,
    BALLOON_PRESSURE_SYSTEM,
    BALLOON_PRESSURE_FD,
    BALLOON_PRESSURE_NONE,
    BALLOON_PRESSURE_HOST,
    BALLOON_PRESSURE__MAX,
} BalloonPressureKind;

typedef struct BalloonPressure BalloonPressure;

/*
 * A pressure event of @level from @source (a kind name, for tracing);
 * BALLOON_POLICY_LEVEL_NONE means the watched cgroup is gone.
 */
typedef void BalloonPressureHandler(void *opaque, BalloonPolicyLevel level,
                                    const char *source);

typedef struct BalloonPressureConfig {
    BalloonPressureKind kind;
    const char *cgroup;         /* cgroup path, or NULL for QEMU's own */
    const char *fd;             /* descriptor from management, or NULL */
    BalloonPolicyLevel fd_level;
    uint32_t psi_window_ms;
    /* the host's own memory: usage above this, % of MemTotal, is a deficit */
    uint32_t host_setpoint_pct;
    /* tests: a directory standing for /proc (NULL: /proc) */
    const char *proc;
    /*
     * If the source cannot be opened, warn and carry on without one
     * instead of failing (a migration destination must keep the VM).
     */
    bool fall_back_to_none;
} BalloonPressureConfig;

/*
 * Open the source described by @cfg.  An explicit kind that cannot be used
 * is an error; with BALLOON_PRESSURE_AUTO the first usable source is taken
 * and, if none is, a NONE source is returned with a warning.
 */
BalloonPressure *balloon_pressure_open(const BalloonPressureConfig *cfg,
                                       BalloonPressureHandler *handler,
                                       void *opaque, Error **errp);
void balloon_pressure_close(BalloonPressure *bp);

/*
 * Automatic ballooning is turned off: close what the source opened
 * itself and stop watching the descriptors handed over, which stay open
 * for balloon_pressure_restart() (@cfg without a descriptor: those given
 * before are still there).
 */
void balloon_pressure_stop(BalloonPressure *bp);
bool balloon_pressure_restart(BalloonPressure *bp,
                              const BalloonPressureConfig *cfg, Error **errp);

/*
 * The kind of source: FD when management's descriptors are all there is
 * (pressure-source=fd or none, and pressure-fd).
 */
BalloonPressureKind balloon_pressure_kind(const BalloonPressure *bp);
/* The cgroup directory or file watched, or the descriptors; g_free it. */
char *balloon_pressure_path(const BalloonPressure *bp);
/* Why this source was chosen, and anything the kernel changed; g_free it. */
char *balloon_pressure_detail(const BalloonPressure *bp);
/* The watched cgroup was removed: the source is inactive. */
bool balloon_pressure_lost(const BalloonPressure *bp);
/*
 * The memory QEMU's own cgroups promise it (see balloon_cgroup_protection()),
 * or 0, as last read: when the source was opened or restarted, or by
 * balloon_pressure_read_protection(); *@origin names the file.
 */
uint64_t balloon_pressure_protection(const BalloonPressure *bp,
                                     const char **origin);
/*
 * Read the protection again: management (libvirt's <soft_limit>, or a
 * memory.low written by hand) may set it after QEMU started.
 */
void balloon_pressure_read_protection(BalloonPressure *bp);
/* A reading of the memory usage against the limit in force. */
typedef struct BalloonPressureReading {
    uint64_t usage;
    uint64_t footprint;         /* QEMU's resident memory then: its part */
    uint64_t limit;
    uint64_t setpoint;          /* usage above this is a deficit */
    uint64_t count;             /* readings so far: a new one changes it */
    int64_t time;               /* when read, QEMU_CLOCK_REALTIME ns */
} BalloonPressureReading;

/*
 * The last reading of memory usage against the limit in force (the
 * watched cgroup's, or the host's own memory; where both count, the one
 * further above its setpoint); false if the source knows no limit.
 */
bool balloon_pressure_headroom(const BalloonPressure *bp,
                               BalloonPressureReading *r);

/*
 * Read memory usage now, not at the next poll, while the source runs: a
 * reading to go with what just arrived from the guest.
 */
void balloon_pressure_refresh(BalloonPressure *bp);

/*
 * A descriptor from management (a getfd name, /dev/fdset/N, or a number
 * on the command line): an eventfd or an armed PSI trigger whose events
 * count as @level.  It adds to the source (PSI triggers management armed
 * on the VM's cgroup, which an unprivileged QEMU cannot arm), stays open
 * until the source is closed, and replaces an earlier descriptor for the
 * same level, which is closed.
 */
bool balloon_pressure_take_fd(BalloonPressure *bp, const char *name,
                              BalloonPolicyLevel level, Error **errp);

/* The host's own memory: usage above @setpoint_pct of MemTotal is a deficit. */
void balloon_pressure_set_host_setpoint(BalloonPressure *bp,
                                        uint32_t setpoint_pct);

const char *balloon_pressure_kind_name(BalloonPressureKind kind);
int balloon_pressure_kind_parse(const char *name);

#endif
