/*
 * Automatic virtio-balloon: host memory usage against a limit
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qemu/cutils.h"
#include "hw/virtio/balloon-headroom.h"

const BalloonHeadroomScale balloon_headroom_cgroup = {
    .permille = {
        [BALLOON_POLICY_LEVEL_LOW] = BALLOON_HEADROOM_SETPOINT_PERMILLE,
        [BALLOON_POLICY_LEVEL_MEDIUM] = 900,
        [BALLOON_POLICY_LEVEL_CRITICAL] = 950,
    },
};

void balloon_headroom_host_scale(BalloonHeadroomScale *scale,
                                 uint32_t setpoint_pct)
{
    int l;

    for (l = BALLOON_POLICY_LEVEL_LOW; l < BALLOON_POLICY_LEVEL__MAX; l++) {
        scale->permille[l] = setpoint_pct * 10 +
                             (l - BALLOON_POLICY_LEVEL_LOW) *
                             BALLOON_HEADROOM_HOST_STEP_PERMILLE;
    }
}

uint64_t balloon_headroom_threshold(const BalloonHeadroomScale *scale,
                                    BalloonPolicyLevel level, uint64_t limit)
{
    if (level <= BALLOON_POLICY_LEVEL_NONE ||
        level >= BALLOON_POLICY_LEVEL__MAX) {
        return UINT64_MAX;
    }
    return limit / 1000 * scale->permille[level];
}

BalloonPolicyLevel balloon_headroom_level(const BalloonHeadroomScale *scale,
                                          uint64_t usage, uint64_t limit)
{
    BalloonPolicyLevel level = BALLOON_POLICY_LEVEL_NONE;
    int l;

    for (l = BALLOON_POLICY_LEVEL_LOW; limit && l < BALLOON_POLICY_LEVEL__MAX;
         l++) {
        if (usage >= balloon_headroom_threshold(scale, l, limit)) {
            level = l;
        }
    }
    return level;
}

int64_t balloon_headroom_interval_ms(const BalloonHeadroomScale *scale,
                                     uint64_t usage, uint64_t limit)
{
    uint64_t low = balloon_headroom_threshold(scale, BALLOON_POLICY_LEVEL_LOW,
                                              limit);
    uint64_t ms;

    if (usage >= low) {
        return BALLOON_HEADROOM_BUSY_MS;
    }
    /* how long the fastest plausible allocator takes to reach the first */
    ms = (low - usage) / (BALLOON_HEADROOM_FAST_RATE / 1000);
    return MIN(MAX(ms, BALLOON_HEADROOM_MIN_MS), BALLOON_HEADROOM_MAX_MS);
}

/* The value of "@key:  N kB" in @text, in bytes. */
static bool meminfo_value(const char *text, const char *key, uint64_t *val)
{
    size_t len = strlen(key);
    const char *line;
    const char *end;
    uint64_t kib;

    for (line = text; line; line = strchr(line, '\n')) {
        line += *line == '\n';
        if (!strncmp(line, key, len) && line[len] == ':') {
            if (qemu_strtou64(line + len + 1, &end, 10, &kib) < 0 ||
                kib > UINT64_MAX / 1024) {
                return false;
            }
            while (*end == ' ') {
                end++;
            }
            if (strncmp(end, "kB", 2)) {
                return false;
            }
            *val = kib * 1024;
            return true;
        }
    }
    return false;
}

bool balloon_headroom_parse_meminfo(const char *text, uint64_t *total,
                                    uint64_t *available)
{
    return meminfo_value(text, "MemTotal", total) && *total &&
           meminfo_value(text, "MemAvailable", available);
}
