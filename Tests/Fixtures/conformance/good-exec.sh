#!/bin/sh
# A conforming exec plugin: reads the operation (stdin, or the file when stdin is empty), ends on
# SIGTERM, prints only directives the agent knows, fails with a reason.
trap 'echo "stopped by SIGTERM" >&2; exit 143' TERM
operation=$(cat)
[ -n "$operation" ] || operation=$(cat "$SWITCHYARD_OPERATION_FILE")
printf '%s\n' '{"switchyard":"progress","message":"read the operation"}'
sleep 0.5 & wait $!   # some work, during which SIGTERM ends it at once
case "$operation" in
  *acme_Conformance*) printf '%s\n' '{"switchyard":"result","fragments":{"acme_Conformance":{"ok":true}}}' ;;
  *) printf '%s\n' '{"switchyard":"failure","reason":"no acme_Conformance fragment"}'; exit 1 ;;
esac
