#!/bin/sh
# A plugin breaking the protocol: unknown and malformed directives, SIGTERM ignored, a process left
# behind holding nothing, an exit code without a reason.
trap '' TERM
printf '%s\n' '{"switchyard":"progres","message":"typo"}'
printf '%s\n' '{"switchyard":"result","fragments":"not an object"}'
sleep 30 </dev/null >/dev/null 2>&1 &
sleep 2
exit 3
