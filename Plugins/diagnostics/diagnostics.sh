#!/bin/sh
# Executable handler for switchyard_Diagnostics: collects a short health report into the
# operation's log (stdout), and fails if the state directory's file system is nearly full.
set -eu
echo "operation ${SWITCHYARD_OPERATION_ID} (${SWITCHYARD_PHASE}) on device ${SWITCHYARD_DEVICE_ID}"
echo "kernel: $(uname -srm)"
if [ -r /proc/uptime ]; then
    echo "uptime: $(cut -d' ' -f1 /proc/uptime) s"
fi
if [ -r /proc/loadavg ]; then
    echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
used=$(df -P "${SWITCHYARD_STATE_DIR}" | awk 'NR==2 { sub("%", "", $5); print $5 }')
echo "state directory file system: ${used}% used"
threshold=$(jq -r '.switchyard_Diagnostics.maxDiskPercent // 95' "${SWITCHYARD_OPERATION_FILE}" 2>/dev/null || echo 95)
if [ "${used}" -gt "${threshold}" ]; then
    echo "disk usage ${used}% is above ${threshold}%" >&2
    exit 1
fi
