#!/usr/bin/env python3
"""Plugin protocol v1 example in Python: prints every directive once.

Input: the operation JSON on stdin (also in $SWITCHYARD_OPERATION_FILE); context in SWITCHYARD_* variables.
Output: one JSON object per line with a "switchyard" member is a directive; anything else is log.
"""
import json
import os
import sys


def directive(name, **members):
    print(json.dumps({"switchyard": name, **members}), flush=True)


operation = json.load(sys.stdin)
op_id = os.environ["SWITCHYARD_OPERATION_ID"]
payload = operation.get("acme_PythonExample", {})
print(f"python plugin: operation {op_id}, phase {os.environ['SWITCHYARD_PHASE']}")  # a log line

directive("progress", message=f"starting {op_id}")
directive("inventory", fragments={"acme_PythonPlugin": {"lastOperation": op_id}})
directive("event", type="acme_PythonEvent", text="python plugin ran", fragments={"acme_Operation": op_id})
directive("measurement", type="acme_PythonMeasurement",
          fragments={"acme_Python": {"runs": {"value": 1, "unit": "count"}}})
directive("alarm", type="acme_PythonAlarm", severity="WARNING", text="raised by the python plugin")
if payload.get("clear", True):
    directive("clear-alarm", type="acme_PythonAlarm")
directive("result", fragments={"acme_PythonExample": {"echo": payload.get("echo"), "argv": sys.argv[1:]}})
if payload.get("fail"):
    directive("failure", reason="the python plugin was asked to fail")
    sys.exit(2)
