// Emporium's live dashboard. Plain JS, no framework, no build step: served from the binary.
//
// Data sources (all admin endpoints, same origin):
//   GET /api/events/stream            Server-Sent Events: each bus event (named after its type),
//                                     `stats` every second, `lagged` when this reader missed events
//   GET /api/admin/events?aggregateId one order's saga, oldest first (the timeline)
//   GET /api/orders, /api/admin/events the recent orders and events when the page opens
// The stream is read with fetch (EventSource cannot send the Authorization header, and a token in
// the URL would end up in logs).

const CHART_WINDOW_MAX_S = 300;
const CHART_WINDOW_MIN_S = 30;
const FEED_CAP = 150;
const ORDERS_CAP = 30;
const STALE_AFTER_MS = 10_000;
const STATUSES = ["PENDING", "CONFIRMED", "SHIPPED", "DELIVERED", "CANCELLED"];
// Later statuses never go back to earlier ones: a late or replayed event cannot undo a change.
const STATUS_RANK = { PENDING: 0, CONFIRMED: 1, SHIPPED: 2, DELIVERED: 3, CANCELLED: 4 };
const ORDER_EVENTS = {
  OrderCreated: "PENDING",
  OrderConfirmed: "CONFIRMED",
  OrderShipped: "SHIPPED",
  OrderDelivered: "DELIVERED",
  OrderCancelled: "CANCELLED",
};
const SESSION_KEY = "emporium.dashboard.session";

const $ = (testid) => document.querySelector(`[data-testid="${testid}"]`);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

const pad = (n, width = 2) => String(n).padStart(width, "0");
function clock(iso, millis = false) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const base = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  return millis ? `${base}.${pad(d.getMilliseconds(), 3)}` : base;
}
const shortId = (id) => (typeof id === "string" && id.length > 13 ? `${id.slice(0, 8)}…${id.slice(-4)}` : String(id));
function money(m) {
  if (!m || typeof m.amount !== "number") return "";
  try {
    return new Intl.NumberFormat("en", { style: "currency", currency: m.currency }).format(m.amount / 100);
  } catch {
    return `${(m.amount / 100).toFixed(2)} ${m.currency}`;
  }
}
const rate = (x) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---------------------------------------------------------------------------------- session

let session = null;
let refreshing = null;

function loadSession() {
  try {
    return JSON.parse(sessionStorage.getItem(SESSION_KEY) ?? "null");
  } catch {
    return null;
  }
}
function saveSession(s) {
  session = s;
  if (s) sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
  else sessionStorage.removeItem(SESSION_KEY);
}

async function problemDetail(response) {
  try {
    const body = await response.json();
    const fields = (body.errors ?? []).map((e) => `${e.field}: ${e.message}`).join("; ");
    return fields || body.detail || body.title || `HTTP ${response.status}`;
  } catch {
    return `HTTP ${response.status}`;
  }
}

// Refresh tokens work once: concurrent 401s share one refresh.
function refreshSession() {
  if (!session?.refreshToken) return Promise.resolve(false);
  refreshing ??= (async () => {
    try {
      const response = await fetch("/api/auth/refresh", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ refreshToken: session.refreshToken }),
      });
      if (!response.ok) return false;
      const body = await response.json();
      saveSession({ ...session, accessToken: body.accessToken, refreshToken: body.refreshToken });
      return true;
    } catch {
      return false;
    } finally {
      refreshing = null;
    }
  })();
  return refreshing;
}

async function api(path, options = {}) {
  const send = () =>
    fetch(path, { ...options, headers: { ...(options.headers ?? {}), authorization: `Bearer ${session?.accessToken}` } });
  let response = await send();
  if (response.status === 401 && (await refreshSession())) response = await send();
  if (response.status === 401) {
    signOut("Your session has expired: sign in again.");
    throw new Error("signed out");
  }
  if (response.status === 403) {
    signOut("This account is not an admin: the dashboard needs the admin role.");
    throw new Error("signed out");
  }
  return response;
}

// ---------------------------------------------------------------------------------- views

function showLogin(message) {
  $("dashboard").hidden = true;
  $("session").hidden = true;
  $("login-view").hidden = false;
  const error = $("login-error");
  error.textContent = message ?? "";
  error.hidden = !message;
  $("login-email").focus();
}

function showBoard() {
  $("login-view").hidden = true;
  $("dashboard").hidden = false;
  $("session").hidden = false;
  $("signed-in-as").textContent = session.email;
}

let live = null; // AbortController of the running stream

function signOut(message) {
  live?.abort();
  live = null;
  saveSession(null);
  showLogin(message);
}

async function signIn(email, password) {
  let response;
  try {
    response = await fetch("/api/auth/login", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ email, password }),
    });
  } catch {
    return "Cannot reach the platform.";
  }
  if (response.status === 401) return "Wrong email or password.";
  if (response.status === 429) return "Too many attempts: wait a minute, then try again.";
  if (!response.ok) return await problemDetail(response);
  const body = await response.json();
  if (body.user?.role !== "admin") {
    return `${body.user?.email ?? email} is a customer account: the dashboard needs an admin account.`;
  }
  saveSession({ email: body.user.email, accessToken: body.accessToken, refreshToken: body.refreshToken });
  return null;
}

// ---------------------------------------------------------------------------------- state

const state = {
  samples: [], // {t, orders, events}: per-second rates for the chart
  lastStats: null, // {t, totalOrders}
  eventsSinceSample: 0,
  orders: new Map(), // id -> {id, status, total, reason, createdAt, updatedAt}
  feedIds: new Set(),
  feedCount: 0,
  timeline: null, // {id, eventIds: Set, first: Date}
};

function resetState() {
  state.samples = [];
  state.lastStats = null;
  state.eventsSinceSample = 0;
  state.orders.clear();
  state.feedIds.clear();
  state.feedCount = 0;
  $("recent-orders").replaceChildren();
  $("event-feed").replaceChildren();
  renderChart();
}

// ---------------------------------------------------------------------------------- stats

function onStats(stats) {
  const byStatus = stats.ordersByStatus ?? {};
  for (const status of STATUSES) {
    $(`status-count-${status}`).textContent = String(byStatus[status] ?? 0);
  }
  const deadLetters = stats.deadLetters ?? 0;
  $("dead-letters").textContent = String(deadLetters);
  $("dead-letters-tile").classList.toggle("alert", deadLetters > 0);
  $("events-per-second").textContent = rate(stats.eventsPerSecond ?? 0);
  renderLag(stats.consumerLag ?? []);

  // A chart point per stats event: new orders (the change in the total the index knows) and the
  // events that came down the stream (plus those we were told we missed) since the last one.
  const now = Date.now();
  const totalOrders = Object.values(byStatus).reduce((sum, n) => sum + (Number(n) || 0), 0);
  if (state.lastStats) {
    const seconds = Math.max((now - state.lastStats.t) / 1000, 0.001);
    state.samples.push({
      t: now,
      orders: Math.max(totalOrders - state.lastStats.totalOrders, 0) / seconds,
      events: state.eventsSinceSample / seconds,
    });
    const horizon = now - CHART_WINDOW_MAX_S * 1000;
    while (state.samples.length && state.samples[0].t < horizon) state.samples.shift();
  }
  state.lastStats = { t: now, totalOrders };
  state.eventsSinceSample = 0;
  const latest = state.samples.at(-1);
  $("orders-rate").textContent = latest ? rate(latest.orders) : "–";
  $("events-rate").textContent = latest ? rate(latest.events) : "–";
  renderChart();
}

function renderLag(groups) {
  const list = $("consumer-lag");
  const max = Math.max(1, ...groups.map((g) => g.lag));
  list.replaceChildren(
    ...groups.map((g) => {
      const bar = el("span", { class: "lag-bar" });
      bar.style.width = `${(g.lag / max) * 100}%`;
      return el(
        "li",
        { "data-testid": `lag-${g.group}`, "data-lag": String(g.lag), class: g.lag > 0 ? "behind" : "" },
        el("span", { class: "lag-group", text: g.group }),
        el("span", { class: "lag-track" }, bar),
        el("span", { class: "lag-value", text: String(g.lag) }),
      );
    }),
  );
  if (!groups.length) list.append(el("li", { class: "muted", text: "No consumer groups yet." }));
}

// ---------------------------------------------------------------------------------- chart

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function niceStep(range, ticks) {
  const raw = range / ticks;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].find((m) => m * magnitude >= raw) ?? 10;
  return step * magnitude;
}

function renderChart() {
  const box = $("throughput-chart");
  const width = Math.max(box.clientWidth, 200);
  const height = Math.max(box.clientHeight, 120);
  const margin = { left: 40, right: 10, top: 8, bottom: 22 };
  const plotW = width - margin.left - margin.right;
  const plotH = height - margin.top - margin.bottom;
  const chart = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  const title = svg("title");
  title.textContent = "Orders and events per second";
  chart.append(title);

  const now = Date.now();
  const samples = state.samples;
  // The window grows with the data up to five minutes, so a fresh page is not an empty strip.
  const span = samples.length
    ? Math.min(Math.max((now - samples[0].t) / 1000 + 1, CHART_WINDOW_MIN_S), CHART_WINDOW_MAX_S)
    : CHART_WINDOW_MIN_S;
  const peak = Math.max(1, ...samples.map((s) => Math.max(s.orders, s.events)));
  const yStep = niceStep(peak, 4);
  const yMax = Math.ceil(peak / yStep) * yStep;
  const x = (t) => margin.left + plotW - ((now - t) / 1000 / span) * plotW;
  const y = (v) => margin.top + plotH - (v / yMax) * plotH;

  for (let v = 0; v <= yMax + 1e-9; v += yStep) {
    chart.append(svg("line", { x1: margin.left, x2: margin.left + plotW, y1: y(v), y2: y(v), class: "grid" }));
    const label = svg("text", { x: margin.left - 6, y: y(v) + 4, "text-anchor": "end", class: "axis" });
    label.textContent = yStep < 1 ? v.toFixed(1) : String(Math.round(v));
    chart.append(label);
  }
  const xStep = [5, 10, 15, 30, 60].find((s) => span / s <= 6) ?? 60;
  for (let ago = 0; ago <= span; ago += xStep) {
    const px = margin.left + plotW - (ago / span) * plotW;
    const label = svg("text", { x: px, y: height - 6, "text-anchor": ago === 0 ? "end" : "middle", class: "axis" });
    label.textContent = ago === 0 ? "now" : ago % 60 === 0 ? `-${ago / 60}m` : `-${ago}s`;
    chart.append(label);
  }

  const visible = samples.filter((s) => now - s.t <= span * 1000);
  const line = (key) => visible.map((s, i) => `${i ? "L" : "M"}${x(s.t).toFixed(1)},${y(s[key]).toFixed(1)}`).join("");
  if (visible.length) {
    const first = x(visible[0].t).toFixed(1);
    const last = x(visible.at(-1).t).toFixed(1);
    const base = y(0).toFixed(1);
    chart.append(svg("path", { d: `${line("events")}L${last},${base}L${first},${base}Z`, class: "area-events" }));
    chart.append(svg("path", { d: line("events"), class: "line-events", "data-series": "events" }));
    chart.append(svg("path", { d: line("orders"), class: "line-orders", "data-series": "orders" }));
  }
  box.dataset.points = String(visible.length);
  box.dataset.peakOrders = String(Math.max(0, ...visible.map((s) => s.orders)));
  box.replaceChildren(chart);
}

// ---------------------------------------------------------------------------------- orders

function applyOrder(update) {
  const known = state.orders.get(update.id);
  if (known && STATUS_RANK[update.status] < STATUS_RANK[known.status]) return;
  const order = { ...known, ...Object.fromEntries(Object.entries(update).filter(([, v]) => v !== undefined)) };
  order.createdAt ??= order.updatedAt;
  state.orders.set(order.id, order);
  renderOrder(order, known?.status !== order.status && known !== undefined);
}

function renderOrder(order, changed) {
  const body = $("recent-orders");
  let row = body.querySelector(`tr[data-order-id="${CSS.escape(order.id)}"]`);
  const open = el("button", { type: "button", class: "id-link", title: `Show the timeline of ${order.id}`, text: shortId(order.id) });
  open.addEventListener("click", () => openTimeline(order.id));
  const status = el("span", { class: `badge status-${order.status}`, text: order.status });
  const reason = order.reason ? el("span", { class: "reason", text: order.reason }) : null;
  const cells = [
    el("td", {}, open),
    el("td", {}, status, reason),
    el("td", { class: "num", text: money(order.total) }),
    el("td", { class: "muted", text: clock(order.updatedAt) }),
  ];
  if (!row) {
    row = el("tr", { "data-testid": "order-row", "data-order-id": order.id });
    // Newest first, by creation time.
    const created = (o) => Date.parse(o?.createdAt ?? "") || 0;
    const after = [...body.children].find((r) => created(state.orders.get(r.dataset.orderId)) < created(order));
    body.insertBefore(row, after ?? null);
    while (body.children.length > ORDERS_CAP) {
      const gone = body.lastElementChild;
      state.orders.delete(gone.dataset.orderId);
      gone.remove();
    }
  }
  if (row.dataset.status !== order.status) row.setAttribute("data-status", order.status);
  row.replaceChildren(...cells);
  if (changed) {
    row.classList.remove("flash");
    void row.offsetWidth; // restart the animation
    row.classList.add("flash");
  }
  $("recent-orders-empty").hidden = body.children.length > 0;
}

function orderFromEvent(envelope) {
  const status = ORDER_EVENTS[envelope.eventType];
  if (!status) return;
  const p = envelope.payload ?? {};
  applyOrder({
    id: p.orderId ?? envelope.aggregateId,
    status,
    total: p.total,
    reason: p.reason,
    createdAt: envelope.eventType === "OrderCreated" ? envelope.occurredAt : undefined,
    updatedAt: envelope.occurredAt,
  });
}

// ---------------------------------------------------------------------------------- feed

const TOPIC_OF = [
  ["Order", "order"], ["Inventory", "inventory"], ["StockAdjusted", "inventory"], ["LowStock", "inventory"],
  ["Payment", "payment"], ["Shipment", "shipment"], ["Product", "product"], ["User", "user"],
  ["Promotion", "promotion"], ["Notification", "notification"],
];
const topicOf = (type) => TOPIC_OF.find(([prefix]) => type.startsWith(prefix))?.[1] ?? "other";

function summary(envelope) {
  const p = envelope.payload ?? {};
  const parts = [];
  if (p.total) parts.push(money(p.total));
  if (p.amount && typeof p.amount === "object") parts.push(money(p.amount));
  if (Array.isArray(p.items)) parts.push(`${p.items.length} item${p.items.length === 1 ? "" : "s"}`);
  for (const key of ["reason", "declineReason", "trackingNumber", "carrier", "template", "channel", "name"]) {
    if (typeof p[key] === "string") parts.push(p[key]);
  }
  for (const key of ["requested", "available", "quantity", "delta", "initialStock"]) {
    if (typeof p[key] === "number") parts.push(`${key} ${p[key]}`);
  }
  return parts.join(" · ");
}

function feedItem(envelope) {
  const aggregate = el("button", { type: "button", class: "id-link", title: `Show the timeline of ${envelope.aggregateId}`, text: shortId(envelope.aggregateId) });
  aggregate.addEventListener("click", () => openTimeline(envelope.aggregateId));
  return el(
    "li",
    {
      "data-testid": "feed-item",
      "data-event-id": envelope.eventId,
      "data-event-type": envelope.eventType,
      "data-aggregate-id": envelope.aggregateId,
    },
    el("span", { class: "time", text: clock(envelope.occurredAt) }),
    el("span", { class: `type topic-${topicOf(envelope.eventType)}`, text: envelope.eventType }),
    aggregate,
    el("span", { class: "detail muted", text: summary(envelope) }),
  );
}

function addToFeed(envelope, { newest = true } = {}) {
  if (state.feedIds.has(envelope.eventId)) return;
  state.feedIds.add(envelope.eventId);
  const feed = $("event-feed");
  if (newest) feed.prepend(feedItem(envelope));
  else feed.append(feedItem(envelope));
  while (feed.children.length > FEED_CAP) {
    const gone = feed.lastElementChild;
    state.feedIds.delete(gone.dataset.eventId);
    gone.remove();
  }
  state.feedCount += 1;
  $("feed-count").textContent = `${state.feedCount} seen`;
}

function onMissed(missed) {
  state.eventsSinceSample += missed;
  $("event-feed").prepend(
    el("li", { class: "missed", "data-testid": "feed-missed" }, `${missed} events went by too fast to show (they are in the log).`),
  );
}

// ---------------------------------------------------------------------------------- timeline

function timelineEntry(envelope, first) {
  const offset = new Date(envelope.occurredAt) - first;
  return el(
    "li",
    { "data-testid": "timeline-entry", "data-event-type": envelope.eventType, "data-event-id": envelope.eventId },
    el(
      "details",
      {},
      el(
        "summary",
        {},
        el("span", { class: "time", text: clock(envelope.occurredAt, true) }),
        el("span", { class: "offset muted", text: `+${Number.isFinite(offset) ? offset : 0} ms` }),
        el("span", { class: `type topic-${topicOf(envelope.eventType)}`, text: envelope.eventType }),
        el("span", { class: "source muted", text: envelope.source }),
        el("span", { class: "detail", text: summary(envelope) }),
      ),
      el("pre", { text: JSON.stringify(envelope, null, 2) }),
    ),
  );
}

async function openTimeline(id) {
  const orderId = id.trim();
  const input = $("timeline-input");
  input.value = orderId;
  const list = $("timeline");
  const status = $("timeline-status");
  if (!orderId) {
    status.textContent = "Enter an order id.";
    list.replaceChildren();
    state.timeline = null;
    return;
  }
  status.textContent = "Loading…";
  let events;
  try {
    const response = await api(`/api/admin/events?aggregateId=${encodeURIComponent(orderId)}&limit=1000`);
    if (!response.ok) {
      status.textContent = await problemDetail(response);
      return;
    }
    events = await response.json();
  } catch (e) {
    if (e.message !== "signed out") status.textContent = "Cannot reach the platform.";
    return;
  }
  if (input.value.trim() !== orderId) return; // another search started meanwhile
  if (!events.length) {
    state.timeline = null;
    list.replaceChildren();
    status.textContent = `No events for ${orderId}.`;
    return;
  }
  const first = new Date(events[0].occurredAt);
  state.timeline = { id: orderId, eventIds: new Set(events.map((e) => e.eventId)), first };
  list.dataset.aggregateId = orderId;
  list.replaceChildren(...events.map((e) => timelineEntry(e, first)));
  describeTimeline();
}

function describeTimeline() {
  const t = state.timeline;
  const entries = $("timeline").children.length;
  const order = state.orders.get(t.id);
  const last = $("timeline").lastElementChild?.querySelector(".offset")?.textContent ?? "";
  $("timeline-status").textContent =
    `${t.id} · ${entries} event${entries === 1 ? "" : "s"}${last ? `, ${last.slice(1)} end to end` : ""}` +
    (order ? ` · ${order.status}` : "");
}

function followTimeline(envelope) {
  const t = state.timeline;
  if (!t || envelope.aggregateId !== t.id || t.eventIds.has(envelope.eventId)) return;
  t.eventIds.add(envelope.eventId);
  // In event id order (ids grow with time), like /api/admin/events: events of one order on different
  // topics may arrive in another order than they happened.
  const list = $("timeline");
  const later = [...list.children].find((entry) => entry.dataset.eventId > envelope.eventId);
  list.insertBefore(timelineEntry(envelope, t.first), later ?? null);
  describeTimeline();
}

// ---------------------------------------------------------------------------------- stream

function setConnection(name, text) {
  const badge = $("connection");
  badge.dataset.state = name;
  badge.textContent = text;
}

// Reads a text/event-stream body and calls onEvent(name, data) per event; resolves when it ends.
async function readEventStream(body, onEvent, onActivity) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onActivity();
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (!line || line.startsWith(":")) continue; // comments keep the connection alive
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? "" : line.slice(colon + 1);
        if (text.startsWith(" ")) text = text.slice(1);
        if (field === "event") name = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) onEvent(name, data.join("\n"));
    }
  }
}

function onStreamEvent(name, data) {
  let value;
  try {
    value = JSON.parse(data);
  } catch {
    return;
  }
  if (name === "stats") return onStats(value);
  if (name === "lagged") return onMissed(Number(value.missed) || 0);
  state.eventsSinceSample += 1;
  addToFeed(value);
  orderFromEvent(value);
  followTimeline(value);
}

async function stream(controller) {
  let backoff = 1000;
  while (!controller.signal.aborted) {
    setConnection("connecting", "connecting…");
    // A stats event comes every second: silence means a dead connection.
    const attempt = new AbortController();
    const onAbort = () => attempt.abort();
    controller.signal.addEventListener("abort", onAbort);
    let watchdog = setTimeout(() => attempt.abort(), STALE_AFTER_MS);
    const alive = () => {
      clearTimeout(watchdog);
      watchdog = setTimeout(() => attempt.abort(), STALE_AFTER_MS);
    };
    try {
      const response = await api("/api/events/stream", { signal: attempt.signal, headers: { accept: "text/event-stream" } });
      if (!response.ok) throw new Error(await problemDetail(response));
      setConnection("live", "live");
      backoff = 1000;
      await readEventStream(response.body, onStreamEvent, alive);
    } catch (e) {
      if (e.message === "signed out") return;
    } finally {
      clearTimeout(watchdog);
      controller.signal.removeEventListener("abort", onAbort);
    }
    if (controller.signal.aborted) return;
    setConnection("down", "reconnecting…");
    await sleep(backoff);
    backoff = Math.min(backoff * 2, 15_000);
  }
}

// What happened before the page opened: the latest orders and events.
async function backfill() {
  try {
    const [orders, events] = await Promise.all([api("/api/orders?limit=25"), api("/api/admin/events?limit=60")]);
    if (orders.ok) {
      const page = await orders.json();
      for (const o of [...(page.items ?? [])].reverse()) {
        applyOrder({ id: o.id, status: o.status, total: o.total, reason: o.cancellationReason ?? undefined, createdAt: o.createdAt, updatedAt: o.updatedAt });
      }
    }
    if (events.ok) {
      for (const e of await events.json()) addToFeed(e, { newest: false });
    }
  } catch {
    // The live stream still works; the lists fill as events come.
  }
}

function start() {
  showBoard();
  resetState();
  live?.abort();
  const controller = new AbortController();
  live = controller;
  // Stream first, then the backfill: an event in between is then seen twice (deduplicated), not lost.
  stream(controller);
  backfill();
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("order");
  if (fromHash) openTimeline(fromHash);
}

// ---------------------------------------------------------------------------------- wiring

async function main() {
  $("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const email = form.email.value.trim();
    const password = form.password.value;
    if (!email || !password) {
      showLogin("Enter the admin's email and password.");
      return;
    }
    form.querySelector("button").disabled = true;
    const error = await signIn(email, password);
    form.querySelector("button").disabled = false;
    if (error) {
      showLogin(error);
      return;
    }
    form.password.value = "";
    start();
  });
  $("logout").addEventListener("click", () => signOut());
  $("timeline-search").addEventListener("submit", (event) => {
    event.preventDefault();
    openTimeline($("timeline-input").value);
  });
  new ResizeObserver(() => renderChart()).observe($("throughput-chart"));

  try {
    const config = await (await fetch("/dashboard/config.json")).json();
    $("no-admin").hidden = config.adminConfigured === true;
  } catch {
    $("no-admin").hidden = true;
  }
  session = loadSession();
  if (session?.accessToken) start();
  else showLogin();
}

main();
