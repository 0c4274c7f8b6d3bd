import Hummingbird
import JSONSupport
import NIOCore

/// The sandbox's web console at `/`: devices with their children, one device's inventory, supported
/// operations, software, firmware and configuration, its operations live (polled every second,
/// status times from the sandbox's history), an operation created from the advertised fragments and
/// prefilled from the declarations' `example`, a chart per measurement series, alarms (clearable)
/// and events. Plain HTML and JavaScript, embedded in the binary: no CDN, works offline.
///
/// On loopback it opens without a login: `/console/session` hands the page the platform user's
/// credentials only when the request comes from the loopback interface; elsewhere the page asks for
/// them in a form. It never answers with a browser basic-auth prompt (no `WWW-Authenticate`).
extension Routes {
    func registerConsole(on router: Router<SandboxContext>) {
        let tenant = self.tenant
        for path in ["/", "/console"] {
            router.get(RouterPath(path)) { _, _ -> Response in
                Response(status: .ok, headers: [.contentType: "text/html; charset=utf-8", .cacheControl: "no-store"],
                         body: .init(byteBuffer: ByteBuffer(string: Self.consolePage)))
            }
        }
        router.get("/console/session") { _, context -> Response in
            guard context.fromLoopback else {
                return Self.error(403, "security/Forbidden", "the console signs in by itself on loopback only")
            }
            let settings = tenant.settings
            return Self.json(["tenant": .string(settings.tenantID), "user": .string(settings.platformUsername),
                              "password": .string(settings.platformPassword)])
        }
        router.get("/console/examples") { _, _ -> Response in
            Self.json(.object(await tenant.operationExamples))
        }
    }

    static let consolePage = ##"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Switchyard sandbox</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; display: grid; grid-template-columns: 260px 1fr; min-height: 100vh; color: #1d232a; }
  nav { background: #1d2b3a; color: #e8eef4; padding: 12px; }
  nav h1 { font-size: 16px; margin: 0 0 12px; }
  nav ul { list-style: none; padding-left: 14px; margin: 0; }
  nav > ul { padding-left: 0; }
  nav a { color: #cfe3ff; text-decoration: none; cursor: pointer; display: block; padding: 2px 4px; border-radius: 3px; }
  nav a.selected { background: #3b5a7a; color: #fff; }
  main { padding: 16px 24px; overflow: auto; }
  section { margin-bottom: 22px; }
  h2 { font-size: 18px; margin: 0 0 8px; }
  h3 { font-size: 15px; margin: 16px 0 6px; border-bottom: 1px solid #dde3ea; padding-bottom: 3px; }
  table { border-collapse: collapse; width: 100%; }
  td, th { text-align: left; padding: 3px 8px; border-bottom: 1px solid #eef1f4; vertical-align: top; }
  th { font-weight: 600; color: #51606f; }
  pre { background: #f5f7f9; padding: 8px; overflow: auto; max-height: 260px; margin: 0; }
  textarea { width: 100%; height: 110px; font: 13px monospace; }
  .status-SUCCESSFUL { color: #1b7f3b; font-weight: 600; } .status-FAILED { color: #b3261e; font-weight: 600; }
  .status-EXECUTING { color: #a86500; font-weight: 600; } .status-PENDING { color: #51606f; font-weight: 600; }
  .chips span { display: inline-block; background: #e6eef7; border-radius: 10px; padding: 1px 8px; margin: 2px; }
  .charts { display: flex; flex-wrap: wrap; gap: 12px; }
  .chart { border: 1px solid #dde3ea; padding: 6px; border-radius: 4px; }
  .error { color: #b3261e; }
  #login { max-width: 320px; margin: 60px auto; }
  #login input { display: block; width: 100%; margin-bottom: 8px; }
</style>
</head>
<body>
<nav><h1>Switchyard sandbox</h1><ul id="devices"></ul></nav>
<main id="main"><p>Loading…</p></main>
<script>
"use strict";
let auth = null, selected = null, timer = null;
const $ = (id) => document.getElementById(id);
const esc = (text) => String(text ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));

async function api(method, path, body) {
  const headers = {"Authorization": auth, "Accept": "application/json"};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(path, {method, headers, body: body === undefined ? undefined : JSON.stringify(body)});
  const text = await answer.text();
  if (!answer.ok) throw new Error(`${method} ${path}: ${answer.status} ${text.slice(0, 300)}`);
  return text ? JSON.parse(text) : null;
}

async function start() {
  // On loopback the sandbox hands its platform user to the page; elsewhere the page asks for it.
  const session = await fetch("/console/session");
  if (session.ok) {
    const who = await session.json();
    auth = "Basic " + btoa(`${who.tenant}/${who.user}:${who.password}`);
    return loadDevices();
  }
  $("main").innerHTML = `<form id="login"><h2>Sign in</h2>
    <input id="user" placeholder="tenant/user" value="t100/admin"><input id="password" type="password" placeholder="password">
    <button>Sign in</button><p id="login-error" class="error"></p></form>`;
  $("login").onsubmit = async (event) => {
    event.preventDefault();
    auth = "Basic " + btoa(`${$("user").value}:${$("password").value}`);
    try { await loadDevices(); } catch (error) { $("login-error").textContent = error.message; }
  };
}

async function loadDevices() {
  const answer = await api("GET", "/inventory/managedObjects?fragmentType=c8y_IsDevice&pageSize=500");
  const devices = answer.managedObjects;
  const children = new Set(devices.flatMap((d) => (d.childDevices?.references ?? []).map((r) => r.managedObject.id)));
  const byId = Object.fromEntries(devices.map((d) => [d.id, d]));
  const item = (device) => {
    const kids = (device.childDevices?.references ?? []).map((r) => byId[r.managedObject.id]).filter(Boolean);
    return `<li><a data-id="${esc(device.id)}" class="${device.id === selected ? "selected" : ""}">${esc(device.name ?? device.id)}</a>`
      + (kids.length ? `<ul>${kids.map(item).join("")}</ul>` : "") + "</li>";
  };
  $("devices").innerHTML = devices.filter((d) => !children.has(d.id)).map(item).join("") || "<li>(no devices)</li>";
  for (const link of document.querySelectorAll("#devices a")) link.onclick = () => show(link.dataset.id);
  if (!selected && devices.length) return show(devices[0].id);
  if (!devices.length) $("main").innerHTML = "<p>No device has registered yet.</p>";
}

async function show(id) {
  selected = id;
  for (const link of document.querySelectorAll("#devices a")) link.classList.toggle("selected", link.dataset.id === id);
  const device = await api("GET", `/inventory/managedObjects/${id}`);
  const examples = await (await fetch("/console/examples")).json();
  const supported = device.c8y_SupportedOperations ?? [];
  const standard = new Set(["id", "self", "name", "type", "owner", "creationTime", "lastUpdated", "childDevices", "childAssets",
                            "deviceParents", "assetParents", "childAdditions", "additionParents"]);
  const fragments = Object.fromEntries(Object.entries(device).filter(([key]) => !standard.has(key)));
  $("main").innerHTML = `
    <section><h2>${esc(device.name ?? id)} <small>(${esc(id)}${device.type ? ", " + esc(device.type) : ""})</small></h2>
      <div class="chips">${supported.map((f) => `<span>${esc(f)}</span>`).join("")}</div></section>
    <section><h3>Create an operation</h3>
      <select id="fragment">${supported.map((f) => `<option>${esc(f)}</option>`).join("")}</select>
      <textarea id="operation-json"></textarea><button id="create">Create operation</button> <span id="create-result"></span></section>
    <section><h3>Operations</h3><table id="operations"></table></section>
    <section><h3>Software, firmware, configuration</h3><table>
      <tr><th>c8y_SoftwareList</th><td><pre>${esc(JSON.stringify(device.c8y_SoftwareList ?? [], null, 1))}</pre></td></tr>
      <tr><th>c8y_Firmware</th><td><pre>${esc(JSON.stringify(device.c8y_Firmware ?? null, null, 1))}</pre></td></tr>
      <tr><th>c8y_Configuration</th><td><pre>${esc(JSON.stringify(device.c8y_Configuration ?? null, null, 1))}</pre></td></tr></table></section>
    <section><h3>Measurements</h3><div class="charts" id="charts"></div></section>
    <section><h3>Alarms</h3><table id="alarms"></table></section>
    <section><h3>Events</h3><table id="events"></table></section>
    <section><h3>Inventory fragments</h3><pre>${esc(JSON.stringify(fragments, null, 2))}</pre></section>`;
  const prefill = () => {
    const fragment = $("fragment").value;
    const example = examples[fragment] ?? {[fragment]: {}};
    $("operation-json").value = JSON.stringify(example, null, 2);
  };
  $("fragment").onchange = prefill;
  prefill();
  $("create").onclick = async () => {
    try {
      const body = JSON.parse($("operation-json").value);
      body.deviceId = id;
      const created = await api("POST", "/devicecontrol/operations", body);
      $("create-result").textContent = `operation ${created.id} created`;
      await refresh();
    } catch (error) { $("create-result").innerHTML = `<span class="error">${esc(error.message)}</span>`; }
  };
  clearInterval(timer);
  await refresh();
  timer = setInterval(() => refresh().catch((error) => console.error(error)), 1000);
}

async function refresh() {
  const id = selected;
  const [operations, measurements, alarms, events] = await Promise.all([
    api("GET", `/devicecontrol/operations?deviceId=${id}&revert=true&pageSize=15`),
    api("GET", `/measurement/measurements?source=${id}&pageSize=200`),
    api("GET", `/alarm/alarms?source=${id}&pageSize=20`),
    api("GET", `/event/events?source=${id}&pageSize=20`)]);
  if (id !== selected) return;
  const rows = await Promise.all(operations.operations.map(async (operation) => {
    const history = await (await fetch(`/sandbox/operations/${operation.id}/history`)).json();
    const times = history.map((entry) => Date.parse(entry.time)).filter((t) => !isNaN(t));
    const ended = operation.status === "SUCCESSFUL" || operation.status === "FAILED";
    const duration = ended && times.length > 1 ? `${times[times.length - 1] - times[0]} ms` : "";
    const fragment = Object.keys(operation).find((key) => /^[A-Za-z][A-Za-z0-9]*_[A-Za-z]/.test(key)) ?? "";
    return `<tr data-operation="${esc(operation.id)}"><td>${esc(operation.id)}</td><td>${esc(fragment)}</td>
      <td class="status status-${esc(operation.status)}">${esc(operation.status)}</td><td>${esc(operation.creationTime)}</td>
      <td>${esc(duration)}</td><td>${esc(operation.failureReason ?? "")}</td></tr>`;
  }));
  $("operations").innerHTML = "<tr><th>id</th><th>fragment</th><th>status</th><th>created</th><th>duration</th><th>failure reason</th></tr>" + rows.join("");

  const series = {};
  for (const measurement of measurements.measurements.slice().reverse()) {
    for (const [fragment, values] of Object.entries(measurement)) {
      if (typeof values !== "object" || values === null || ["source"].includes(fragment)) continue;
      for (const [name, reading] of Object.entries(values)) {
        if (typeof reading?.value !== "number") continue;
        (series[`${fragment}.${name}`] ??= {unit: reading.unit ?? "", values: []}).values.push(reading.value);
      }
    }
  }
  $("charts").innerHTML = Object.entries(series).map(([name, s]) => chart(name, s)).join("") || "(no measurements)";

  $("alarms").innerHTML = "<tr><th>severity</th><th>status</th><th>type</th><th>text</th><th>count</th><th></th></tr>"
    + alarms.alarms.map((a) => `<tr><td>${esc(a.severity)}</td><td>${esc(a.status)}</td><td>${esc(a.type)}</td><td>${esc(a.text)}</td>
      <td>${esc(a.count ?? 1)}</td><td>${a.status !== "CLEARED" ? `<button data-alarm="${esc(a.id)}">Clear</button>` : ""}</td></tr>`).join("");
  for (const button of document.querySelectorAll("button[data-alarm]")) {
    button.onclick = async () => { await api("PUT", `/alarm/alarms/${button.dataset.alarm}`, {status: "CLEARED"}); await refresh(); };
  }
  $("events").innerHTML = "<tr><th>time</th><th>type</th><th>text</th><th>file</th></tr>"
    + events.events.map((e) => `<tr><td>${esc(e.time)}</td><td>${esc(e.type)}</td><td>${esc(e.text)}</td>
      <td>${e.c8y_IsBinary ? `<a href="#" data-event="${esc(e.id)}">${esc(e.c8y_IsBinary.name ?? "file")}</a>` : ""}</td></tr>`).join("");
  for (const link of document.querySelectorAll("a[data-event]")) {
    link.onclick = async (event) => {
      event.preventDefault();
      const answer = await fetch(`/event/events/${link.dataset.event}/binaries`, {headers: {"Authorization": auth}});
      const url = URL.createObjectURL(await answer.blob());
      window.open(url, "_blank");
    };
  }
}

function chart(name, s) {
  const values = s.values.slice(-60), width = 240, height = 70;
  const low = Math.min(...values), high = Math.max(...values), span = high - low || 1;
  const points = values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * width},${height - ((v - low) / span) * (height - 6) - 3}`).join(" ");
  return `<div class="chart" data-series="${esc(name)}"><div>${esc(name)} <small>${esc(values[values.length - 1])} ${esc(s.unit)}</small></div>
    <svg width="${width}" height="${height}"><polyline fill="none" stroke="#2f6fb3" stroke-width="1.5" points="${points}"/></svg></div>`;
}

start().catch((error) => { $("main").innerHTML = `<p class="error">${esc(error.message)}</p>`; });
setInterval(() => { if (auth) loadDevices().catch(() => {}); }, 5000);
</script>
</body>
</html>
"""##
}
