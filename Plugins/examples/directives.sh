#!/bin/sh
# Plugin protocol v1 example in POSIX shell: prints every directive once.
# Input: the operation JSON on stdin and in $SWITCHYARD_OPERATION_FILE; context in SWITCHYARD_* variables.
set -eu
op_id="$SWITCHYARD_OPERATION_ID"
echo "shell plugin: operation $op_id, phase $SWITCHYARD_PHASE, argument '${1:-}'"    # a log line
printf '{"switchyard":"progress","message":"starting %s"}\n' "$op_id"
printf '{"switchyard":"inventory","fragments":{"acme_ShellPlugin":{"lastOperation":"%s"}}}\n' "$op_id"
printf '{"switchyard":"event","type":"acme_ShellEvent","text":"shell plugin ran","fragments":{"acme_Operation":"%s"}}\n' "$op_id"
printf '{"switchyard":"measurement","type":"acme_ShellMeasurement","fragments":{"acme_Shell":{"runs":{"value":1,"unit":"count"}}}}\n'
printf '{"switchyard":"alarm","type":"acme_ShellAlarm","severity":"MINOR","text":"raised by the shell plugin"}\n'
printf '{"switchyard":"clear-alarm","type":"acme_ShellAlarm"}\n'
printf '{"switchyard":"nonsense","x":1}\n'                                        # unknown: logged, not fatal
printf '{"switchyard":"result","fragments":{"acme_ShellExample":{"argument":"%s"}}}\n' "${1:-}"
if [ "${2:-}" = "fail" ]; then
    printf '{"switchyard":"failure","reason":"the shell plugin was asked to fail"}\n'
    echo "this stderr line is not the reason, the failure directive is" >&2
    exit 4
fi
