// The web dashboard: one static page that reads vusbd's control API (devices, VMs, stats) and
// follows its WebSocket event stream. Served by ControlApi at "/".
#include <string_view>

#include "vmm-frontend/control_api.h"

namespace vusbd {

std::string_view dashboard_html() {
  return R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>vusbd</title>
<style>
 body{font:14px system-ui,sans-serif;margin:2em;color:#222}
 table{border-collapse:collapse;margin-bottom:1.5em}
 td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}
 th{background:#f3f3f3} .off{color:#a00} .on{color:#070}
 #log{font:12px monospace;white-space:pre;max-height:20em;overflow:auto;background:#f8f8f8;padding:.5em}
</style></head><body>
<h1>vusbd</h1>
<h2>Devices</h2><table id="devices"></table>
<h2>Per-VM traffic</h2><table id="stats"></table>
<h2>Events</h2><div id="log"></div>
<script>
const esc = s => String(s).replace(/[&<>"]/g, c => ({'&':'&amp;','<':'&lt;','>':'&gt;','"':'&quot;'}[c]));
const hex = n => n === undefined ? '' : n.toString(16).padStart(4, '0');
async function refresh() {
  const devices = await (await fetch('/api/v1/devices')).json();
  let h = '<tr><th>device</th><th>id</th><th>source</th><th>mode</th><th>state</th><th>VMs (bus id)</th></tr>';
  for (const d of devices)
    h += `<tr><td>${esc(d.name)}</td><td>${hex(d.vendor_id)}:${hex(d.product_id)}</td><td>${esc(d.source)}</td>` +
         `<td>${esc(d.mode)}</td><td class="${d.connected ? 'on' : 'off'}">${d.connected ? 'connected' : 'waiting'}</td>` +
         `<td>${d.vms.map(v => esc(v.vm) + ' (' + esc(v.busid) + (v.imported ? ', in use' : '') + ')').join(', ')}</td></tr>`;
  document.getElementById('devices').innerHTML = h;
}
function showStats(s) {
  let h = '<tr><th>VM</th><th>device</th><th>URBs</th><th>bytes in</th><th>bytes out</th><th>cache hits</th><th>avg latency µs</th><th>errors</th><th>refused</th></tr>';
  for (const [vm, devs] of Object.entries(s.vms))
    for (const [dev, x] of Object.entries(devs))
      h += `<tr><td>${esc(vm)}</td><td>${esc(dev)}</td><td>${x.urbs}</td><td>${x.bytes_in}</td><td>${x.bytes_out}</td>` +
           `<td>${x.cache_hits}</td><td>${x.avg_latency_us.toFixed(0)}</td><td>${x.errors}</td><td>${x.refused}</td></tr>`;
  document.getElementById('stats').innerHTML = h;
}
function log(line) {
  const el = document.getElementById('log');
  el.textContent = new Date().toLocaleTimeString() + ' ' + line + '\n' + el.textContent.slice(0, 20000);
}
const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/api/v1/events');
ws.onmessage = m => {
  const e = JSON.parse(m.data);
  if (e.event === 'stats') return showStats(e.stats);
  if (e.event !== 'hello') log(JSON.stringify(e));
  refresh();
};
ws.onclose = () => log('event stream closed');
refresh();
fetch('/api/v1/stats').then(r => r.json()).then(showStats);
</script></body></html>
)html";
}

}  // namespace vusbd
