/*
 * Automatic virtio-balloon: host memory usage against a limit
 *
 * What usage near a limit means (pressure levels at fractions of it, the
 * first being the setpoint the controller keeps usage below) and how
 * often a source that has to poll usage looks at it: the nearer the first
 * level, the more often, so that an allocator at the fastest plausible
 * rate cannot eat the headroom between two looks, and no more than once
 * in BALLOON_HEADROOM_MAX_MS when it is far.  Pure functions, shared by
 * the pressure sources and their tests.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#ifndef HW_VIRTIO_BALLOON_HEADROOM_H
#define HW_VIRTIO_BALLOON_HEADROOM_H

#include "hw/virtio/balloon-auto-policy.h"

/* Where usage means low, medium and critical pressure, of the limit. */
typedef struct BalloonHeadroomScale {
    uint32_t permille[BALLOON_POLICY_LEVEL__MAX];  /* [NONE] unused */
} BalloonHeadroomScale;

/* A cgroup's limit: 80, 90 and 95%.  Usage above the first is a deficit. */
extern const BalloonHeadroomScale balloon_headroom_cgroup;
#define BALLOON_HEADROOM_SETPOINT_PERMILLE 800

/*
 * The host's own memory: the setpoint (like Proxmox's ballooning-target,
 * 80% by default), +5% and +10%: nearer the end, since the host's own
 * reclaim and OOM killer act at the very end of its memory.
 */
#define BALLOON_HEADROOM_HOST_STEP_PERMILLE 50
#define BALLOON_HEADROOM_HOST_SETPOINT_MIN 10       /* percent */
#define BALLOON_HEADROOM_HOST_SETPOINT_MAX 90
void balloon_headroom_host_scale(BalloonHeadroomScale *scale,
                                 uint32_t setpoint_pct);

#define BALLOON_HEADROOM_FAST_RATE (1024 * 1024 * 1024ULL)   /* bytes/s */
#define BALLOON_HEADROOM_MIN_MS 100
#define BALLOON_HEADROOM_MAX_MS 10000
#define BALLOON_HEADROOM_BUSY_MS 250        /* above the first level */

BalloonPolicyLevel balloon_headroom_level(const BalloonHeadroomScale *scale,
                                          uint64_t usage, uint64_t limit);
/* The usage at which @level starts, for @limit. */
uint64_t balloon_headroom_threshold(const BalloonHeadroomScale *scale,
                                    BalloonPolicyLevel level, uint64_t limit);
/*
 * MemTotal and MemAvailable, in bytes, from /proc/meminfo's @text; false
 * if either is missing or not a number of kB.
 */
bool balloon_headroom_parse_meminfo(const char *text, uint64_t *total,
                                    uint64_t *available);

/* How long until usage should be read again. */
int64_t balloon_headroom_interval_ms(const BalloonHeadroomScale *scale,
                                     uint64_t usage, uint64_t limit);

#endif
