"""The sandbox driven by the vendor's official Python client, c8y-api, as a platform user.

Starts `switchyard-sandbox demo --keep` (sandbox + agent + the repository's handlers.d), then runs
each test against it with `CumulocityApi` and stops it. Every call must succeed and return what the
platform's API describes (issue 12, section 2).

    Tests/Clients/run             # makes the virtual environment, builds the sandbox, runs this
"""
import argparse
import datetime
import io
import os
import re
import signal
import subprocess
import sys
import time
import unittest

from c8y_api import CumulocityApi
from c8y_api.model import Alarm, Binary, Device, Event, Measurement, Operation

SANDBOX = None  # set in main(): url, device id, credentials


class KeptSandbox:
    """`switchyard-sandbox demo --keep`: the demo's round of operations, then sandbox and agent stay up."""

    def __init__(self, binary, handlers):
        self.binary = binary
        self.process = subprocess.Popen(
            [binary, "demo", "--keep", "--handlers", handlers, "--firmware-mi-b", "1"],
            stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
        deadline = time.monotonic() + 300
        self.output = []
        for line in self.process.stdout:
            self.output.append(line)
            found = re.search(r"kept running \(--keep\): sandbox tenant at (\S+)\s+device (\S+)\s+platform user (\S+)/(\S+), password (\S+);", line)
            if found:
                self.url, self.device, self.tenant, self.user, self.password = found.groups()
                return
            if time.monotonic() > deadline:
                break
        self.stop()
        raise RuntimeError("the kept demo did not start:\n" + "".join(self.output))

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                raise RuntimeError("the kept demo did not stop within 30 s of SIGTERM")


def wait_for(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class PlatformUserTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c8y = CumulocityApi(base_url=SANDBOX.url, tenant_id=SANDBOX.tenant, username=SANDBOX.user,
                                password=SANDBOX.password)
        cls.device_id = SANDBOX.device

    def test_devices_and_the_agents_managed_object(self):
        devices = self.c8y.device_inventory.get_all()
        self.assertIn(self.device_id, [device.id for device in devices])
        self.assertGreaterEqual(self.c8y.device_inventory.get_count(), 1)
        agent = self.c8y.inventory.get(self.device_id)
        supported = agent.c8y_SupportedOperations
        for fragment in ("c8y_Restart", "c8y_Message", "switchyard_Diagnostics"):
            self.assertIn(fragment, supported)
        self.assertIn("c8y_IsDevice", agent.fragments)
        # By name: c8y-api turns this into q=$filter=(has(c8y_IsDevice) and name eq '…').
        self.assertEqual([d.id for d in self.c8y.device_inventory.get_all(name="Switchyard demo*")], [self.device_id])
        self.assertEqual(self.c8y.device_inventory.get_count(name="no such device"), 0)

    def operation_ends(self, fragments, expected="SUCCESSFUL"):
        operation = Operation(self.c8y, self.device_id, **fragments).create()
        self.assertTrue(operation.id)
        ended = wait_for(lambda: (lambda o: o if o.status in ("SUCCESSFUL", "FAILED") else None)(self.c8y.operations.get(operation.id)),
                         f"operation {operation.id} {list(fragments)} to end", timeout=90)
        self.assertEqual(ended.status, expected, getattr(ended, "failureReason", ""))
        return ended

    def test_restart_message_and_a_custom_operation_succeed(self):
        self.operation_ends({"c8y_Message": {"text": "hello from c8y-api"}})
        self.operation_ends({"switchyard_Diagnostics": {}})
        self.operation_ends({"c8y_Restart": {}, "description": "restart from c8y-api"})
        successful = self.c8y.operations.get_all(device_id=self.device_id, status="SUCCESSFUL", fragment="c8y_Message")
        self.assertTrue(any(getattr(o, "c8y_Message", {}).get("text") == "hello from c8y-api" for o in successful))

    def test_the_logs_and_configuration_tabs(self):
        # What the device-management UI does: read the advertised types, request a log excerpt and a
        # configuration snapshot, and fetch the files from the events the device created.
        agent = self.c8y.inventory.get(self.device_id)
        self.assertEqual(list(agent.c8y_SupportedLogs), ["demo"])
        self.assertEqual(list(agent.c8y_SupportedConfigurations), ["demo-app"])
        now = datetime.datetime.now(datetime.timezone.utc)
        ended = self.operation_ends({"c8y_LogfileRequest": {
            "logFile": "demo", "searchText": "ERROR", "maximumLines": 10,
            "dateFrom": (now - datetime.timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S+0000"),
            "dateTo": (now + datetime.timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S+0000")}})
        url = ended.c8y_LogfileRequest["file"]
        event_id = url.rstrip("/").split("/")[-2]
        excerpt = self.c8y.events.get(event_id).download_attachment().decode()
        self.assertEqual([line.split(" demo: ")[1] for line in excerpt.splitlines()], ["ERROR sensor timeout", "ERROR disk almost full"])
        self.operation_ends({"c8y_UploadConfigFile": {"type": "demo-app"}})
        snapshot = self.c8y.events.get_last(source=self.device_id, type="demo-app")
        self.assertTrue(snapshot.download_attachment().decode().startswith("# "))

    def test_a_pending_operation_is_cancelled(self):
        # For a device that is not connected, so it stays PENDING until cancelled.
        idle = Device(self.c8y, type="acme_Idle", name="idle device").create()
        operation = Operation(self.c8y, idle.id, c8y_Message={"text": "never delivered"}).create()
        self.assertEqual(operation.status, "PENDING")
        operation.status = "FAILED"
        operation["failureReason"] = "cancelled by the operator"  # as a fragment: c8y-api sends only changed fields
        operation.update()
        cancelled = self.c8y.operations.get(operation.id)
        self.assertEqual(cancelled.status, "FAILED")
        self.assertEqual(cancelled.failureReason, "cancelled by the operator")
        # Operations deleted by filter.
        Operation(self.c8y, idle.id, c8y_Message={"text": "to delete"}).create()
        self.assertEqual(self.c8y.operations.get_count(device_id=idle.id, status="PENDING"), 1)
        self.c8y.operations.delete_by(device_id=idle.id, status="PENDING")
        self.assertEqual(self.c8y.operations.get_count(device_id=idle.id, status="PENDING"), 0)
        self.assertEqual(self.c8y.operations.get_count(device_id=idle.id), 1)
        idle.delete()

    def test_measurements_events_and_alarms_read_back_with_paging_and_totals(self):
        now = datetime.datetime.now(datetime.timezone.utc)
        for index in range(12):
            Measurement(self.c8y, type="acme_Temperature", source=self.device_id,
                        time=now - datetime.timedelta(minutes=index),
                        acme_Temperature={"T": {"value": 20 + index, "unit": "C"}}).create()
            Event(self.c8y, type="acme_Tick", source=self.device_id, time=now - datetime.timedelta(minutes=index),
                  text=f"tick {index}").create()
        measurements = self.c8y.measurements.get_all(source=self.device_id, type="acme_Temperature", page_size=5)
        self.assertEqual(len(measurements), 12)  # three pages of five
        self.assertEqual(self.c8y.measurements.get_count(source=self.device_id, type="acme_Temperature"), 12)
        events = self.c8y.events.get_all(source=self.device_id, type="acme_Tick", page_size=5)
        self.assertEqual(len(events), 12)
        self.assertEqual(self.c8y.events.get_count(source=self.device_id, type="acme_Tick"), 12)
        self.assertEqual(self.c8y.events.get_last(source=self.device_id, type="acme_Tick").text, "tick 0")

        Alarm(self.c8y, type="acme_Overheat", source=self.device_id, time=now, text="too hot", severity=Alarm.Severity.MAJOR).create()
        active = self.c8y.alarms.get_all(source=self.device_id, type="acme_Overheat", status="ACTIVE")
        self.assertEqual(len(active), 1)
        # c8y-api 3.7 has no alarms.get_count: the count the way its other get_count functions ask for it.
        totals = self.c8y.get("/alarm/alarms", params={"source": self.device_id, "type": "acme_Overheat", "pageSize": 1,
                                                       "withTotalPages": "true", "withTotalElements": "true"})
        self.assertEqual((totals["statistics"]["totalPages"], totals["statistics"]["totalElements"]), (1, 1))
        alarm = self.c8y.alarms.get(active[0].id)
        alarm.status = "CLEARED"
        alarm.update()
        self.assertEqual(len(self.c8y.alarms.get_all(source=self.device_id, type="acme_Overheat", status="ACTIVE")), 0)
        self.assertEqual(len(self.c8y.alarms.get_all(source=self.device_id, type="acme_Overheat", status="CLEARED")), 1)

    def test_binaries_upload_download_delete(self):
        content = b"a file uploaded with c8y-api\n" * 1000
        created = Binary(self.c8y, type="text/plain", name="notes.txt", file=io.BytesIO(content)).create()
        self.assertTrue(created.id)
        self.assertEqual(created.name, "notes.txt")
        self.assertEqual(int(created.length), len(content))
        self.assertEqual(self.c8y.binaries.read_file(created.id), content)
        self.c8y.binaries.update(created.id, io.BytesIO(b"replaced"), type="text/plain")
        self.assertEqual(self.c8y.binaries.read_file(created.id), b"replaced")
        self.assertEqual(self.c8y.binaries.create(Binary(self.c8y, type="text/plain", name="second.txt", file=io.BytesIO(b"2"))), 1)
        self.c8y.binaries.delete(created.id)
        with self.assertRaises(KeyError):
            self.c8y.binaries.read_file(created.id)

    def test_event_attachments(self):
        event = Event(self.c8y, type="c8y_Logfile", source=self.device_id, time=datetime.datetime.now(datetime.timezone.utc),
                      text="a log").create()
        event.create_attachment(io.BytesIO(b"line 1\nline 2\n"), content_type="text/plain")
        self.assertEqual(event.download_attachment(), b"line 1\nline 2\n")
        self.assertTrue(self.c8y.events.get(event.id).has_attachment())
        event.delete_attachment()
        self.assertFalse(self.c8y.events.get(event.id).has_attachment())


class CommandLineTests(unittest.TestCase):
    """`switchyard-sandbox device|operation|measurement|event|alarm|binary`: what the console does, from a terminal."""

    def cli(self, *arguments):
        done = subprocess.run([SANDBOX.binary, *arguments, "--url", SANDBOX.url], capture_output=True, text=True, timeout=60)
        self.assertEqual(done.returncode, 0, f"{arguments}: {done.stderr}")
        return done.stdout

    def test_the_platform_side_from_a_terminal(self):
        c8y = CumulocityApi(base_url=SANDBOX.url, tenant_id=SANDBOX.tenant, username=SANDBOX.user, password=SANDBOX.password)
        self.assertIn(f"id={SANDBOX.device}", self.cli("device", "list"))
        self.assertIn('"c8y_SupportedOperations"', self.cli("device", "show", SANDBOX.device))

        idle = Device(c8y, type="acme_Idle", name="cli device").create()
        created = self.cli("operation", "create", "--device", idle.id, '{"c8y_Message":{"text":"from the cli"}}')
        operation_id = re.search(r'"id":"(\d+)"', created).group(1)
        self.assertIn('"status":"PENDING"', self.cli("operation", "get", operation_id))
        self.assertIn("status=FAILED  failureReason=not today", self.cli("operation", "cancel", operation_id, "--reason", "not today"))
        self.assertEqual(c8y.operations.get(operation_id).status, "FAILED")

        now = datetime.datetime.now(datetime.timezone.utc)
        Measurement(c8y, type="acme_Pressure", source=idle.id, time=now, acme_Pressure={"P": {"value": 1013, "unit": "hPa"}}).create()
        self.assertIn("acme_Pressure.P=1013 hPa", self.cli("measurement", "list", "--device", idle.id))
        Event(c8y, type="acme_Door", source=idle.id, time=now, text="door opened").create()
        self.assertIn("text=door opened", self.cli("event", "list", "--device", idle.id))
        alarm = Alarm(c8y, type="acme_Leak", source=idle.id, time=now, text="leak", severity=Alarm.Severity.CRITICAL).create()
        self.assertIn("status=ACTIVE", self.cli("alarm", "list", "--device", idle.id))
        self.assertIn(f"cleared alarm {alarm.id}", self.cli("alarm", "clear", alarm.id))
        Alarm(c8y, type="acme_Smoke", source=idle.id, time=now, text="smoke", severity=Alarm.Severity.MAJOR).create()
        self.cli("alarm", "clear", "--device", idle.id)
        self.assertEqual(self.cli("alarm", "list", "--device", idle.id, "--status", "ACTIVE").strip(), "(no alarms)")

        path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"sy-cli-upload-{os.getpid()}.bin")
        with open(path, "wb") as file:
            file.write(bytes(range(256)) * 64)
        try:
            uploaded = self.cli("binary", "upload", path, "--name", "image.bin")
        finally:
            os.remove(path)
        binary_id = re.search(r"as binary (\d+)", uploaded).group(1)
        self.assertEqual(c8y.binaries.read_file(binary_id), bytes(range(256)) * 64)
        listed = c8y.get("/inventory/binaries", params={"ids": binary_id})["managedObjects"]
        self.assertEqual([(item["name"], item["length"]) for item in listed], [("image.bin", 256 * 64)])


class ConsoleTests(unittest.TestCase):
    """The web console in a real headless browser (Debian's chromium through Playwright): it opens
    without a login on loopback, shows the agent, creates an operation from the advertised fragments
    (prefilled from the declaration's example) and shows it become SUCCESSFUL; a screenshot is saved."""

    def test_an_operation_created_in_the_page_becomes_successful(self):
        from playwright.sync_api import sync_playwright
        screenshot = os.environ.get("SWITCHYARD_CONSOLE_SCREENSHOT", os.path.join(".build", "console.png"))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                                 args=["--no-sandbox"], headless=True)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                problems = []
                page.on("pageerror", lambda error: problems.append(str(error)))
                page.goto(SANDBOX.url + "/")
                page.click(f'#devices a[data-id="{SANDBOX.device}"]')
                page.wait_for_selector("#fragment option", state="attached")
                options = page.eval_on_selector_all("#fragment option", "options => options.map(o => o.textContent)")
                self.assertIn("c8y_Message", options)
                page.select_option("#fragment", "c8y_Message")
                prefilled = page.input_value("#operation-json")
                self.assertIn('"c8y_Message"', prefilled)  # the declaration's example
                page.fill("#operation-json", '{"c8y_Message": {"text": "from the console"}}')
                page.click("#create")
                page.wait_for_selector("#create-result:has-text('created')")
                operation_id = page.text_content("#create-result").split()[1]
                page.wait_for_selector(f'tr[data-operation="{operation_id}"] td.status-SUCCESSFUL', timeout=60_000)
                c8y = CumulocityApi(base_url=SANDBOX.url, tenant_id=SANDBOX.tenant, username=SANDBOX.user, password=SANDBOX.password)
                self.assertEqual(c8y.operations.get(operation_id).c8y_Message["text"], "from the console")
                now = datetime.datetime.now(datetime.timezone.utc)
                for minute in range(10):
                    Measurement(c8y, type="acme_Load", source=SANDBOX.device, time=now - datetime.timedelta(minutes=10 - minute),
                                acme_Load={"cpu": {"value": 20 + (minute * 7) % 30, "unit": "%"}}).create()
                Alarm(c8y, type="acme_Console", source=SANDBOX.device, time=now, text="raised for the console",
                      severity=Alarm.Severity.MINOR).create()
                page.wait_for_selector('.chart[data-series="acme_Load.cpu"]', timeout=10_000)  # a chart per series
                page.click("button[data-alarm]")  # the alarm is cleared from the page
                wait_for(lambda: not c8y.alarms.get_all(source=SANDBOX.device, type="acme_Console", status="ACTIVE"),
                         "the alarm cleared in the console", timeout=10)
                page.screenshot(path=screenshot, full_page=True)
                print(f"console screenshot: {os.path.abspath(screenshot)}", flush=True)
                self.assertEqual(problems, [])
            except Exception:
                page.screenshot(path=screenshot, full_page=True)
                print(f"console screenshot (of the failure): {os.path.abspath(screenshot)}", flush=True)
                raise
            finally:
                browser.close()


def main():
    global SANDBOX
    parser = argparse.ArgumentParser()
    parser.add_argument("--sandbox", required=True, help="the switchyard-sandbox binary")
    parser.add_argument("--handlers", default="handlers.d")
    arguments, rest = parser.parse_known_args()
    SANDBOX = KeptSandbox(arguments.sandbox, arguments.handlers)
    print(f"c8y-api suite against {SANDBOX.url} (device {SANDBOX.device})", flush=True)
    try:
        result = unittest.main(argv=[sys.argv[0], "-v"] + rest, exit=False).result
    finally:
        SANDBOX.stop()
    sys.exit(0 if result.wasSuccessful() else 1)


if __name__ == "__main__":
    main()
