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

void qmp_balloon_auto_set(BalloonAutoSettings *set, Error **errp)
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
