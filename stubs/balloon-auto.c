/*
 * Stubs of the automatic virtio-balloon's QMP and HMP commands for
 * emulators built without virtio-balloon.
 *
 * Copyright (c) 2026 The qemu-balloon-auto authors
 *
 * SPDX-License-Identifier: GPL-2.0-or-later
 */

#include "qemu/osdep.h"
#include "qapi/error.h"
#include "qapi/qapi-commands-balloon-auto.h"
#include "monitor/hmp.h"
#include "monitor/monitor.h"

BalloonAutoInfo *qmp_query_balloon_auto(Error **errp)
{
    error_set(errp, ERROR_CLASS_DEVICE_NOT_ACTIVE,
              "No balloon device has been activated");
    return NULL;
}

void qmp_balloon_auto_set(bool has_enabled, bool enabled,
                          bool has_dry_run, bool dry_run,
                          bool has_hold_ms, uint32_t hold_ms,
                          bool has_floor, uint64_t floor,
                          bool has_reserve, uint64_t reserve,
                          bool has_inflate_low, uint8_t inflate_low,
                          bool has_inflate_medium, uint8_t inflate_medium,
                          bool has_inflate_critical, uint8_t inflate_critical,
                          bool has_max_step, uint64_t max_step,
                          bool has_return_step, uint64_t return_step,
                          bool has_hold_time_ms, uint32_t hold_time_ms,
                          bool has_cooldown_ms, uint32_t cooldown_ms,
                          Error **errp)
{
    error_set(errp, ERROR_CLASS_DEVICE_NOT_ACTIVE,
              "No balloon device has been activated");
}

void hmp_info_balloon_auto(Monitor *mon)
{
}

void hmp_balloon_auto(Monitor *mon, const QDict *qdict)
{
    monitor_printf(mon, "No balloon device has been activated\n");
}
