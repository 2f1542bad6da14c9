// enifab's topology page: draws /ui/api/topology as SVG, polls /ui/api/counters, and draws the
// hops of /ui/api/trace on the picture. No framework, no build step: one file the binary embeds.
// In a report written by `enifab lab check --html` the data is embedded and nothing is polled.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const SG_COLOURS = ["#3a7bd5", "#f28e2b", "#8e6bbf", "#17a2a2", "#e0b400", "#e377c2", "#8c6d31", "#5b8f29", "#6b6ecf", "#c7683b"];
const GAP = 20, PAD = 18;
let NODE_W = 320;

const state = {
  topo: null,
  sgColour: new Map(),
  boxes: new Map(),       // ENI id → {x, y, w, h, rect}
  nodeBoxes: new Map(),   // instance id → {x, y, w, h, rect}
  lbBoxes: new Map(),     // LB id → {x, y, w, h, rect}
  ipToEni: new Map(),
  ctrText: new Map(),     // ENI id → [text elements]
  prev: null, prevAt: 0,
  trace: null,
  embedded: null,
};

function el(tag, attrs, parent, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  if (parent) parent.appendChild(e);
  return e;
}

function h(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) if (v !== undefined && v !== null) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function tip(parent, text) { el("title", {}, parent, text); }

// Shortens an SVG text element to `max` pixels, with an ellipsis; the full text stays in a tooltip.
function fit(t, max) {
  if (!t.getComputedTextLength || t.getComputedTextLength() <= max) return t;
  const full = t.textContent;
  let lo = 0, hi = full.length;
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    t.textContent = full.slice(0, mid) + "…";
    if (t.getComputedTextLength() <= max) lo = mid; else hi = mid - 1;
  }
  t.textContent = full.slice(0, lo) + "…";
  tip(t, full);
  return t;
}

function bytes(n) {
  if (n < 1024) return n + " B";
  const u = ["kB", "MB", "GB", "TB"];
  let i = -1;
  do { n /= 1024; i++; } while (n >= 1024 && i < u.length - 1);
  return n.toFixed(n < 10 ? 1 : 0) + " " + u[i];
}

function count(n) {
  if (n < 10000) return String(n);
  if (n < 1e6) return (n / 1e3).toFixed(1) + "k";
  return (n / 1e6).toFixed(1) + "M";
}

function sgColour(id) {
  if (!state.sgColour.has(id)) state.sgColour.set(id, SG_COLOURS[state.sgColour.size % SG_COLOURS.length]);
  return state.sgColour.get(id);
}

function sgName(id) {
  const g = (state.topo.security_groups || []).find(g => g.id === id);
  return g ? (g.name || g.id) : id;
}

// ---- layout ------------------------------------------------------------------------------------

function nodeHeight(inst) {
  let hgt = 56;
  for (const e of inst.enis) {
    hgt += 58;
    if (e.kind === "Trunk") hgt += (e.members || []).length * MEMBER_STEP + ((e.members || []).length ? 8 : 0);
  }
  return Math.max(hgt, 90);
}

function lbHeight(lb) {
  let n = 0;
  for (const l of lb.listeners) n += 1 + l.backends.length;
  return 62 + n * 17;
}

function draw() {
  const t = state.topo;
  const svg = document.getElementById("map");
  svg.replaceChildren();
  state.boxes.clear(); state.nodeBoxes.clear(); state.lbBoxes.clear(); state.ipToEni.clear(); state.ctrText.clear();
  const defs = el("defs", {}, svg);
  const f = el("filter", { id: "shadow", x: "-5%", y: "-5%", width: "110%", height: "120%" }, defs);
  el("feDropShadow", { dx: 0, dy: 1, stdDeviation: 1.6, "flood-color": "#1d2b3a", "flood-opacity": 0.13 }, f);
  const W = Math.max(document.getElementById("canvas").clientWidth || 1000, NODE_W + 4 * PAD);
  // nodes as wide as the lane allows (up to 420 px), so that pod names fit
  const most = Math.max(1, ...t.vpcs.flatMap(v => v.vswitches.map(s => t.instances.filter(i => i.vswitch_id === s.id).length)));
  const inner = W - 2 * PAD - 28;
  const perRow = Math.max(1, Math.min(most, Math.floor((inner + GAP) / (300 + GAP))));
  NODE_W = Math.max(300, Math.min(420, Math.floor((inner - (perRow - 1) * GAP) / perRow)));
  let y = 8;
  const vpcs = t.vpcs.length ? t.vpcs : [];
  if (!vpcs.length) el("text", { x: 20, y: 40, class: "empty" }, svg, "No VPC yet: create one (enifab apply, enifab lab up) and it appears here.");
  const linkLayer = [];
  for (const vpc of vpcs) {
    const g = el("g", { "data-vpc": vpc.id }, svg);
    const box = el("rect", { x: PAD / 2, y, width: W - PAD, rx: 14, class: "vpc-box" }, g);
    el("text", { x: PAD + 4, y: y + 26, class: "vpc-title" }, g, vpc.name || vpc.id);
    el("text", { x: PAD + 4, y: y + 44, class: "vpc-sub" }, g, `${vpc.id} · ${vpc.cidr} · ${t.region}`);
    let cy = y + 60;
    // load balancers of this VPC, in a row at the top
    const lbs = (t.load_balancers || []).filter(lb => lb.vpc_id === vpc.id || (!lb.vpc_id && vpc === vpcs[0]));
    if (lbs.length) {
      let x = PAD + 4, rowH = 0;
      for (const lb of lbs) {
        const hgt = lbHeight(lb);
        if (x + 280 > W - PAD && x > PAD + 4) { x = PAD + 4; cy += rowH + GAP; rowH = 0; }
        drawLb(g, lb, x, cy, 280, hgt, linkLayer);
        x += 280 + GAP; rowH = Math.max(rowH, hgt);
      }
      cy += rowH + GAP;
    }
    const byVsw = new Map(vpc.vswitches.map(s => [s.id, []]));
    for (const inst of t.instances) if (byVsw.has(inst.vswitch_id)) byVsw.get(inst.vswitch_id).push(inst);
    for (const vsw of vpc.vswitches) {
      const insts = byVsw.get(vsw.id);
      const rows = [];
      for (let i = 0; i < insts.length; i += perRow) rows.push(insts.slice(i, i + perRow));
      const lane = el("g", { "data-vswitch": vsw.id }, g);
      const laneBox = el("rect", { x: PAD, y: cy, width: W - 2 * PAD, rx: 10, class: "vsw-box" }, lane);
      const title = el("text", { x: PAD + 14, y: cy + 22, class: "vsw-title" }, lane, "vSwitch " + (vsw.name || vsw.id) + "  ");
      el("tspan", { class: "vsw-cidr" }, title, `${vsw.cidr} · ${vsw.zone} · ${vsw.id}`);
      let ly = cy + 36;
      if (!insts.length) {
        const members = countMembersIn(vsw.id);
        el("text", { x: PAD + 14, y: ly + 6, class: "node-sub" }, lane,
          members ? `no instances; ${members} member ENI(s) of pods take their addresses here` : "no instances");
        ly += 18;
      }
      for (const row of rows) {
        const rowH = Math.max(...row.map(nodeHeight));
        row.forEach((inst, i) => drawNode(lane, inst, PAD + 14 + i * (NODE_W + GAP), ly, NODE_W, nodeHeight(inst)));
        ly += rowH + GAP;
      }
      laneBox.setAttribute("height", ly - cy - (insts.length ? GAP - 12 : -6));
      cy = ly + (insts.length ? 0 : 14);
    }
    box.setAttribute("height", cy - y + 4);
    y = cy + 20;
  }
  // the backends' links, over everything
  const links = el("g", { class: "links" }, svg);
  for (const l of linkLayer) drawLink(links, l);
  svg.setAttribute("height", y);
  svg.setAttribute("viewBox", `0 0 ${W} ${y}`);
  if (state.prev) paintCounters(state.prev, null);
  if (state.trace) drawTraceOnMap(state.trace);
}

function countMembersIn(vswId) {
  let n = 0;
  for (const i of state.topo.instances) for (const e of i.enis) for (const m of e.members || []) if (m.vswitch_id === vswId) n++;
  return n;
}

function sgDots(g, groups, x, y) {
  // right-aligned, one dot per group, in the group's colour
  groups.slice().reverse().forEach((id, i) => {
    const c = el("circle", { cx: x - i * 10, cy: y, r: 4, fill: sgColour(id), "data-sg": id }, g);
    tip(c, `security group ${sgName(id)} (${id})`);
  });
}

function register(e, box) {
  state.boxes.set(e.id, box);
  for (const ip of e.ips || []) state.ipToEni.set(ip, e.id);
}

function drawNode(parent, inst, x, y, w, hgt) {
  const g = el("g", { "data-instance": inst.id, class: "node" }, parent);
  const rect = el("rect", { x, y, width: w, height: hgt, rx: 10, class: "node-box" }, g);
  state.nodeBoxes.set(inst.id, { x, y, w, h: hgt, rect });
  // a small server glyph
  el("rect", { x: x + 14, y: y + 10, width: 16, height: 6, rx: 1.5, class: "glyph" }, g);
  el("rect", { x: x + 14, y: y + 18, width: 16, height: 6, rx: 1.5, class: "glyph" }, g);
  el("circle", { cx: x + 26, cy: y + 13, r: 1.2, class: "glyph-led" }, g);
  el("circle", { cx: x + 26, cy: y + 21, r: 1.2, class: "glyph-led" }, g);
  fit(el("text", { x: x + 38, y: y + 23, class: "node-title" }, g, inst.name || inst.id), w - 52);
  el("text", { x: x + 14, y: y + 40, class: "node-sub" }, g, `${inst.id} · ${inst.status}`);
  let ey = y + 52;
  for (const e of inst.enis) {
    const trunk = e.kind === "Trunk";
    const eg = el("g", { "data-eni": e.id, "data-kind": e.kind }, g);
    const r = el("rect", { x: x + 10, y: ey, width: w - 20, height: 50, rx: 7, class: "eni-box" + (trunk ? " trunk" : "") }, eg);
    register(e, { x: x + 10, y: ey, w: w - 20, h: 50, rect: r });
    const dev = e.device_index === null || e.device_index === undefined ? "" : `eth${e.device_index} · `;
    el("text", { x: x + 20, y: ey + 16, class: "eni-title" }, eg, `${dev}${e.kind.toLowerCase()} ENI  ${e.ips[0] || ""}`);
    el("text", { x: x + 20, y: ey + 30, class: "eni-sub" }, eg, `${e.id}  ${e.status === "InUse" ? "" : e.status}`);
    sgDots(eg, e.security_groups, x + w - 22, ey + 12);
    const c1 = el("text", { x: x + 20, y: ey + 44, class: "ctr" }, eg, "·");
    state.ctrText.set(e.id, c1);
    tip(r, `${e.kind} ENI ${e.id}\nMAC ${e.mac}\nIPs ${e.ips.join(", ")}\nvSwitch ${e.vswitch_id}\ngroups ${e.security_groups.map(sgName).join(", ")}`);
    ey += 58;
    if (trunk && (e.members || []).length) {
      const cableX = x + 26;
      const last = ey + (e.members.length - 1) * MEMBER_STEP + 19;
      el("path", { d: `M${cableX} ${ey - 8} L${cableX} ${last}`, class: "cable" }, g);
      for (const m of e.members) {
        drawMember(g, m, cableX, x + 44, ey, w - 54);
        ey += MEMBER_STEP;
      }
      ey += 8;
    }
  }
}

// A member's box (its VLAN, pod, address, and its own counters) and the gap below it.
const MEMBER_H = 50;
const MEMBER_STEP = 58;

function drawMember(parent, m, cableX, x, y, w) {
  const g = el("g", { "data-eni": m.id, "data-kind": "Member", "data-vlan": m.vlan, "data-pod": m.pod || "", class: "member" }, parent);
  el("path", { d: `M${cableX} ${y + 19} L${x} ${y + 19}`, class: "cable" }, g);
  const r = el("rect", { x, y, width: w, height: MEMBER_H, rx: 7, class: "member-box" }, g);
  register(m, { x, y, w, h: MEMBER_H, rect: r });
  // a stripe per group on the left edge
  const sgs = m.security_groups.length ? m.security_groups : [null];
  const band = (MEMBER_H - 2) / sgs.length;
  sgs.forEach((id, i) => el("rect", { x: x + 1, y: y + 1 + i * band, width: 4, height: band, fill: id ? sgColour(id) : "#ccc" }, g));
  const vlan = `VLAN ${m.vlan ?? "?"}`;
  const bw = 12 + 6.1 * vlan.length;
  const badge = el("rect", { x: x + 10, y: y + 7, width: bw, height: 17, rx: 8.5, class: "vlan-badge" }, g);
  tip(badge, "802.1Q VLAN id on the trunk = the member's DeviceIndex");
  el("text", { x: x + 10 + bw / 2, y: y + 19.5, "text-anchor": "middle", class: "vlan-text" }, g, vlan);
  // the pod's name without its namespace (in the tooltip); the CNI tags members "namespace/name"
  const pod = m.pod ? m.pod.slice(m.pod.indexOf("/") + 1) : null;
  const name = fit(el("text", { x: x + bw + 18, y: y + 20, class: "pod-name" }, g, pod ? "⬢ " + pod : (m.name || "member ENI")),
    w - bw - 30 - 10 * m.security_groups.length);
  if (m.pod) tip(name, "pod " + m.pod);
  el("text", { x: x + 10, y: y + 33, class: "member-sub" }, g, `${m.ips.join(", ")} · ${m.id}${m.status === "InUse" ? "" : " · " + m.status}`);
  state.ctrText.set(m.id, el("text", { x: x + 10, y: y + 45, class: "ctr" }, g, "·"));
  sgDots(g, m.security_groups, x + w - 10, y + 12);
  tip(r, `member ENI ${m.id} (VLAN ${m.vlan})\npod ${m.pod || "—"}\nMAC ${m.mac}\nIPs ${m.ips.join(", ")}\nvSwitch ${m.vswitch_id}\ngroups ${m.security_groups.map(sgName).join(", ")}`);
}

function drawLb(parent, lb, x, y, w, hgt, links) {
  const g = el("g", { "data-lb": lb.id, class: "lb" }, parent);
  const rect = el("rect", { x, y, width: w, height: hgt, rx: 10, class: "lb-box" }, g);
  state.lbBoxes.set(lb.id, { x, y, w, h: hgt, rect, address: lb.address });
  fit(el("text", { x: x + 14, y: y + 20, class: "lb-title" }, g, `⚖ CLB ${lb.name || ""}`), w - 28);
  el("text", { x: x + 14, y: y + 40, class: "lb-vip" }, g, lb.address);
  el("text", { x: x + 14, y: y + 54, class: "lb-sub" }, g, `${lb.id} · ${lb.address_type}`);
  let ly = y + 72;
  for (const l of lb.listeners) {
    el("text", { x: x + 14, y: ly, class: "eni-title" }, g,
      `${l.protocol.toUpperCase()}:${l.port} · ${l.scheduler}${l.status === "running" ? "" : " · " + l.status}${l.health_check ? "" : " · no health check"}`);
    ly += 17;
    for (const b of l.backends) {
      const cls = "health-" + b.health;
      const dot = el("circle", { cx: x + 22, cy: ly - 4, r: 4.5, class: cls, "data-health": b.health }, g);
      tip(dot, `backend ${b.server_id} ${b.ip}:${b.port}, weight ${b.weight}: ${b.health}`);
      el("text", { x: x + 32, y: ly, class: "eni-sub" }, g, `${b.ip}:${b.port}  w${b.weight}  ${b.health}`);
      links.push({ from: { x: x + w, y: ly - 4 }, backend: b });
      ly += 17;
    }
  }
}

function drawLink(parent, l) {
  const target = state.boxes.get(l.backend.server_id) || state.boxes.get(state.ipToEni.get(l.backend.ip));
  if (!target) return;
  const tx = target.x + target.w, ty = target.y + target.h / 2;
  const midY = (l.from.y + ty) / 2;
  el("path", { d: `M${l.from.x} ${l.from.y} C${l.from.x + 60} ${l.from.y}, ${tx + 60} ${midY}, ${tx} ${ty}`,
    class: "backend-link health-" + l.backend.health, fill: "none" }, parent);
  el("circle", { cx: tx, cy: ty, r: 3.5, class: "health-" + l.backend.health }, parent);
}

// ---- legend ------------------------------------------------------------------------------------

function legend() {
  const box = document.getElementById("legend");
  box.replaceChildren(h("h3", {}, "Security groups"));
  const groups = state.topo.security_groups || [];
  if (!groups.length) box.appendChild(h("div", { class: "meta" }, "none"));
  for (const g of groups) {
    const row = h("div", { class: "legend-row", "data-sg": g.id });
    const sw = h("span", { class: "swatch" }); sw.style.background = sgColour(g.id);
    const txt = h("div");
    txt.appendChild(h("span", { class: "name" }, g.name || g.id));
    const kind = g.kind === "enterprise" ? "enterprise" : (g.inner_access_accept ? "basic, members reach each other" : "basic");
    const ing = g.rules.filter(r => r.direction === "ingress").length, eg = g.rules.length - ing;
    txt.appendChild(h("div", { class: "meta" }, `${g.id} · ${kind} · ${ing} in / ${eg} out rules`));
    txt.title = g.rules.map(r => `${r.id} ${r.direction} ${r.policy} ${r.protocol} ${r.ports} ${r.peer} prio ${r.priority}`).join("\n");
    row.append(sw, txt);
    box.appendChild(row);
  }
  box.appendChild(h("h3", { style: "margin-top:12px" }, "Picture"));
  const items = [
    ["#2f5d8a", "trunk ENI and its member ENIs; the badge is the VLAN id"],
    ["#1f9d55", "backend healthy / hop allowed"],
    ["#d64545", "backend unhealthy / blocking hop"],
    ["#9aa5b1", "backend health unknown"],
  ];
  for (const [c, t] of items) {
    const row = h("div", { class: "legend-row" });
    const sw = h("span", { class: "swatch" }); sw.style.background = c;
    row.append(sw, h("span", { class: "meta" }, t));
    box.appendChild(row);
  }
  box.appendChild(h("div", { class: "meta", style: "margin-top:8px" },
    "A NIC's counters are its fabric port's: a trunk's include its members' frames, which each member also counts on its own. ⇡ = from the node into the VPC, ⇣ = from the VPC to the node."));
}

// ---- counters ----------------------------------------------------------------------------------

function paintCounters(c, prev) {
  const dt = prev ? (c.at - prev.at) / 1000 : 0;
  for (const [eni, text] of state.ctrText) {
    const p = c.ports[eni] || (c.members || {})[eni];
    if (!p) { text.textContent = "no shim plugged in"; continue; }
    const q = prev && (prev.ports[eni] || (prev.members || {})[eni]);
    let rate = "";
    if (q && dt > 0) {
      const fps = ((p.rx_frames - q.rx_frames) + (p.tx_frames - q.tx_frames)) / dt;
      if (fps > 0) rate = `  ${fps.toFixed(fps < 10 ? 1 : 0)} fr/s`;
    }
    const drops = Object.values(p.drops || {}).reduce((a, b) => a + b, 0);
    text.replaceChildren();
    el("tspan", {}, text, `⇡ ${count(p.rx_frames)} fr ${bytes(p.rx_bytes)}  ⇣ ${count(p.tx_frames)} fr ${bytes(p.tx_bytes)}${rate}`);
    if (drops) {
      const d = el("tspan", { class: "ctr drop", dx: 6 }, text, `✕ ${count(drops)}`);
      tip(d, Object.entries(p.drops).map(([k, v]) => `${k}: ${v}`).join("\n"));
    }
    const changed = q && (q.rx_frames !== p.rx_frames || q.tx_frames !== p.tx_frames);
    if (changed) { text.classList.remove("flash"); requestAnimationFrame(() => text.classList.add("flash")); }
    text.setAttribute("data-rx-frames", p.rx_frames);
    text.setAttribute("data-tx-frames", p.tx_frames);
  }
}

async function pollCounters() {
  const live = document.getElementById("live"), txt = document.getElementById("live-text");
  try {
    const r = await fetch("api/counters", { cache: "no-store" });
    if (!r.ok) throw new Error(r.status);
    const c = await r.json();
    c.at = Date.now();
    if (state.topoEpoch !== undefined && c.epoch !== state.topoEpoch) {
      state.topoEpoch = c.epoch;
      await loadTopology();
    }
    paintCounters(c, state.prev);
    state.prev = c;
    live.className = "live on";
    txt.textContent = `live · ${c.conntrack_entries} flows in conntrack`;
  } catch (e) {
    live.className = "live off";
    txt.textContent = "emulator not answering";
  }
}

// ---- trace -------------------------------------------------------------------------------------

// Where a hop happens on the picture. Decisions of the fabric itself (route, conntrack, NAT,
// the gateway) have no place of their own: they stay in the list, so the drawn path runs from
// the source's node through its ENIs to the destination's without doubling back.
const PLACED = new Set(["port", "trunk", "member", "anti_spoof", "sg_egress", "sg_ingress", "deliver"]);

function boxForHop(hop) {
  if (hop.kind === "node") return state.nodeBoxes.get(hop.instance) || state.boxes.get(hop.eni) || null;
  if (hop.kind === "slb") {
    for (const [id, b] of state.lbBoxes) {
      const s = `${hop.title} ${hop.detail}`;
      if (s.includes(id) || (b.address && s.includes(b.address))) return b;
    }
    return null;
  }
  if (!PLACED.has(hop.kind) && hop.ok) return null;
  if (hop.eni && state.boxes.has(hop.eni)) return state.boxes.get(hop.eni);
  if (hop.instance && state.nodeBoxes.has(hop.instance)) return state.nodeBoxes.get(hop.instance);
  return null;
}

function clearTraceMarks() {
  document.querySelectorAll(".hop-ok, .hop-blocked").forEach(e => e.classList.remove("hop-ok", "hop-blocked"));
  document.querySelectorAll("[data-hop-blocked]").forEach(e => { if (e.tagName.toLowerCase() !== "li") e.removeAttribute("data-hop-blocked"); });
  const old = document.getElementById("trace-layer");
  if (old) old.remove();
}

function drawTraceOnMap(rep) {
  clearTraceMarks();
  const svg = document.getElementById("map");
  const layer = el("g", { id: "trace-layer" }, svg);
  const points = [];
  const blockedAt = rep.hops.findIndex(hop => !hop.ok);
  rep.hops.forEach((hop, i) => {
    const b = boxForHop(hop);
    if (!b) return;
    const blocked = i === blockedAt;
    b.rect.classList.add(blocked ? "hop-blocked" : "hop-ok");
    if (blocked) b.rect.setAttribute("data-hop-blocked", "true");
    const p = { x: b.x + b.w / 2, y: b.y + b.h / 2, b, blocked, n: i + 1 };
    const last = points[points.length - 1];
    if (last && last.b === b) { last.blocked = last.blocked || blocked; last.n2 = i + 1; } else points.push(p);
  });
  if (points.length > 1) {
    const d = points.map((p, i) => (i ? "L" : "M") + p.x + " " + p.y).join(" ");
    el("path", { d, class: "trace-path" + (rep.verdict === "dropped" ? " blocked" : "") }, layer);
  }
  for (const p of points) {
    const cx = p.b.x + p.b.w - 12, cy = p.b.y + p.b.h - 10;
    const g = el("g", p.blocked ? { "data-hop-blocked": "true" } : {}, layer);
    el("circle", { cx, cy, r: 9, class: p.blocked ? "hop-dot-blocked" : "hop-dot-ok" }, g);
    el("text", { x: cx, y: cy + 3.5, "text-anchor": "middle", class: "hop-num" }, g, p.blocked ? "✕" : String(p.n));
  }
}

function showTrace(rep, query) {
  state.trace = rep;
  const box = document.getElementById("trace-result");
  box.hidden = false;
  box.replaceChildren(h("h3", {}, "Trace"));
  box.appendChild(h("div", { class: "meta" }, `${query.from} → ${query.to} · ${query.protocol}${query.port ? ":" + query.port : ""}`));
  box.appendChild(h("div", { class: "verdict " + rep.verdict, "data-verdict": rep.verdict }, rep.verdict));
  if (rep.reason) box.appendChild(h("div", { class: "reason" }, rep.reason));
  const ol = h("ol", { class: "hops" });
  const blockedAt = rep.hops.findIndex(hop => !hop.ok);
  rep.hops.forEach((hop, i) => {
    const li = h("li", { "data-kind": hop.kind, "data-hop-blocked": i === blockedAt ? "true" : "false" });
    li.appendChild(h("span", { class: "t" }, hop.title));
    li.appendChild(h("span", { class: "k" }, hop.kind + (hop.vlan ? ` · VLAN ${hop.vlan}` : "")));
    if (hop.detail) li.appendChild(h("div", { class: "d" }, hop.detail));
    ol.appendChild(li);
  });
  box.appendChild(ol);
  drawTraceOnMap(rep);
}

async function runTrace(q) {
  const box = document.getElementById("trace-result");
  const params = new URLSearchParams({ from: q.from, to: q.to, protocol: q.protocol });
  if (q.port) params.set("port", q.port);
  try {
    const r = await fetch("api/trace?" + params, { cache: "no-store" });
    const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
    if (!r.ok) throw new Error(body.error || body.message || `HTTP ${r.status}`);
    showTrace(body, q);
  } catch (e) {
    state.trace = null;
    clearTraceMarks();
    box.hidden = false;
    box.replaceChildren(h("h3", {}, "Trace"), h("div", { class: "error" }, String(e.message || e)));
  }
}

function traceForm() {
  const form = document.getElementById("trace");
  if (state.embedded) { form.hidden = true; return; }
  form.addEventListener("submit", ev => {
    ev.preventDefault();
    const f = new FormData(form);
    const q = { from: f.get("from").trim(), to: f.get("to").trim(), protocol: f.get("protocol"), port: f.get("port").trim() };
    const u = new URL(location.href);
    u.searchParams.set("trace_from", q.from); u.searchParams.set("trace_to", q.to);
    u.searchParams.set("protocol", q.protocol); u.searchParams.set("port", q.port);
    history.replaceState(null, "", u);
    runTrace(q);
  });
  document.getElementById("clear-trace").addEventListener("click", () => {
    state.trace = null; clearTraceMarks(); document.getElementById("trace-result").hidden = true;
    history.replaceState(null, "", location.pathname);
  });
  const u = new URLSearchParams(location.search);
  if (u.get("trace_from") && u.get("trace_to")) {
    const q = { from: u.get("trace_from"), to: u.get("trace_to"), protocol: u.get("protocol") || u.get("trace_protocol") || "tcp",
      port: u.get("port") || u.get("trace_port") || "" };
    form.from.value = q.from; form.to.value = q.to; form.protocol.value = q.protocol; form.port.value = q.port;
    return q;
  }
  return null;
}

// ---- the lab check report (embedded) -----------------------------------------------------------

function report(rep) {
  if (!rep || !rep.rows) return;
  const sec = document.getElementById("report");
  sec.hidden = false;
  const passed = rep.rows.filter(r => r.passed).length;
  sec.appendChild(h("h3", {}, `lab check · ${passed} of ${rep.rows.length} as expected${rep.file ? " · " + rep.file : ""}`));
  const table = h("table");
  const head = h("tr");
  for (const c of ["", "check", "scenario", "path", "expected", "got", "detail"]) head.appendChild(h("th", {}, c));
  table.appendChild(head);
  for (const r of rep.rows) {
    const tr = h("tr", { "data-passed": r.passed });
    tr.appendChild(h("td", { class: r.passed ? "pass" : "fail" }, r.passed ? "✓" : "✗"));
    tr.appendChild(h("td", {}, r.name));
    tr.appendChild(h("td", {}, r.scenario ?? ""));
    tr.appendChild(h("td", {}, r.path));
    tr.appendChild(h("td", {}, r.expected));
    tr.appendChild(h("td", { class: r.passed ? "" : "fail" }, r.got));
    tr.appendChild(h("td", {}, [r.detail, r.answered].filter(Boolean).join(" · ")));
    table.appendChild(tr);
  }
  sec.appendChild(table);
}

// ---- start -------------------------------------------------------------------------------------

async function loadTopology() {
  const r = await fetch("api/topology", { cache: "no-store" });
  if (!r.ok) throw new Error(`topology: HTTP ${r.status}`);
  setTopology(await r.json());
}

function setTopology(t) {
  state.topo = t;
  for (const g of t.security_groups || []) sgColour(g.id);
  document.getElementById("region").textContent = `${t.region} · ${t.instances.length} instances · ` +
    `${t.instances.reduce((n, i) => n + i.enis.reduce((m, e) => m + (e.members || []).length, 0), 0)} member ENIs`;
  draw();
  legend();
}

async function main() {
  const emb = document.getElementById("embedded");
  if (emb) {
    state.embedded = JSON.parse(emb.textContent);
    setTopology(state.embedded.topology);
    if (state.embedded.counters) { state.prev = state.embedded.counters; paintCounters(state.prev, null); }
    else state.ctrText.forEach(t => { t.textContent = ""; });
    report(state.embedded.report);
    if (state.embedded.trace) showTrace(state.embedded.trace.report, state.embedded.trace.query);
    document.getElementById("live").hidden = true;
    document.getElementById("status").textContent = state.embedded.report && state.embedded.report.written
      ? "written " + state.embedded.report.written : "";
    traceForm();
    return;
  }
  const fromUrl = traceForm();
  try {
    await loadTopology();
  } catch (e) {
    document.getElementById("status").textContent = String(e.message || e);
  }
  await pollCounters();
  if (state.prev) state.topoEpoch = state.prev.epoch;
  setInterval(pollCounters, 1500);
  if (fromUrl) runTrace(fromUrl);
  let resize;
  window.addEventListener("resize", () => { clearTimeout(resize); resize = setTimeout(draw, 150); });
}

main();
