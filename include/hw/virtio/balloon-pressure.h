/*
 * Automatic virtio-balloon: host memory-pressure sources
 *
 * Event-driven sources on QEMU's main loop: cgroup v1 memory.pressure_level
 * (eventfd + cgroup.event_control), cgroup v2 PSI triggers on
 * <cgroup>/memory.pressure, system-wide /proc/pressure/memory, and a
 * descriptor armed by management and handed over (fd passing).
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
    BALLOON_PRESSURE__MAX,
} BalloonPressureKind;

typedef struct BalloonPressure BalloonPressure;

/* A pressure event; BALLOON_POLICY_LEVEL_NONE means the source is gone. */
typedef void BalloonPressureHandler(void *opaque, BalloonPolicyLevel level);

typedef struct BalloonPressureConfig {
    BalloonPressureKind kind;
    const char *cgroup;         /* cgroup path, or NULL for QEMU's own */
    const char *fd;             /* fd name/number or /dev/fdset/N */
    BalloonPolicyLevel fd_level;
    uint32_t psi_window_ms;
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

BalloonPressureKind balloon_pressure_kind(const BalloonPressure *bp);
/* The cgroup directory or file watched, or the fd description. */
const char *balloon_pressure_path(const BalloonPressure *bp);
/* Why this source was chosen, and anything the kernel changed. */
const char *balloon_pressure_detail(const BalloonPressure *bp);
/* The watched cgroup was removed: the source is inactive. */
bool balloon_pressure_lost(const BalloonPressure *bp);

/*
 * The memory protection QEMU's own cgroups declare (v2 memory.min or
 * memory.low, v1 memory.soft_limit_in_bytes as libvirt's <memtune> sets
 * it), or 0.  *origin names the file it came from.
 */
uint64_t balloon_cgroup_protection(char **origin);

const char *balloon_pressure_kind_name(BalloonPressureKind kind);
int balloon_pressure_kind_parse(const char *name);

#endif
