// The dashboard in a real browser (Debian's headless Chromium, driven by playwright-core).
//
// Started by crates/emporium/tests/it/dashboard.rs, which runs the platform and places the orders:
//   1. this script signs in (a customer first, who must be refused), then prints `ready` on stdout;
//   2. the Rust test places orders through the API and, once they have settled, writes one JSON line
//      on stdin: {"confirmed": [ids], "shipped": id, "cancelled": id};
//   3. this script checks that the page showed each order appear and change status, the tiles, the
//      feed, the lag and the chart, opens the shipped order's timeline, and saves the screenshot.
// Exit code 0 means every check passed. Logs go to stderr; stdout carries only the protocol.
//
// Environment: EMPORIUM_URL, EMPORIUM_ADMIN_EMAIL, EMPORIUM_ADMIN_PASSWORD, DASHBOARD_SCREENSHOT;
// optional EMPORIUM_CUSTOMER_EMAIL / EMPORIUM_CUSTOMER_PASSWORD, CHROMIUM (default /usr/bin/chromium).

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const TIMEOUT = 30_000;

function env(name, fallback) {
  const value = process.env[name] ?? fallback;
  if (value === undefined || value === "") throw new Error(`${name} is not set`);
  return value;
}

const base = env("EMPORIUM_URL");
const admin = { email: env("EMPORIUM_ADMIN_EMAIL"), password: env("EMPORIUM_ADMIN_PASSWORD") };
const customer = process.env.EMPORIUM_CUSTOMER_EMAIL
  ? { email: process.env.EMPORIUM_CUSTOMER_EMAIL, password: env("EMPORIUM_CUSTOMER_PASSWORD") }
  : null;
const screenshotPath = env("DASHBOARD_SCREENSHOT");
const executablePath = env("CHROMIUM", "/usr/bin/chromium");

const log = (...args) => console.error("[dashboard.mjs]", ...args);
function check(condition, message) {
  if (!condition) throw new Error(`check failed: ${message}`);
}
const byTestId = (id) => `[data-testid="${id}"]`;

// The first line on stdin.
function readLine() {
  const lines = createInterface({ input: process.stdin });
  return new Promise((resolve, reject) => {
    lines.once("line", (line) => {
      resolve(line);
      lines.close();
    });
    lines.once("close", () => reject(new Error("stdin closed before the orders were announced")));
  });
}

let apiToken = null;

// One order's event types as the API lists them (oldest first).
async function apiEvents(orderId) {
  if (!apiToken) {
    const login = await fetch(`${base}/api/auth/login`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(admin),
    });
    check(login.ok, `admin login through the API answered ${login.status}`);
    apiToken = (await login.json()).accessToken;
  }
  const accessToken = apiToken;
  const events = await fetch(`${base}/api/admin/events?aggregateId=${orderId}&limit=1000`, {
    headers: { authorization: `Bearer ${accessToken}` },
  });
  check(events.ok, `/api/admin/events answered ${events.status}`);
  return (await events.json()).map((e) => e.eventType);
}

async function signIn(page, who) {
  await page.fill(byTestId("login-email"), who.email);
  await page.fill(byTestId("login-password"), who.password);
  await page.click(byTestId("login-submit"));
}

async function main() {
  const profile = await mkdtemp(join(tmpdir(), "emporium-chromium-"));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    viewport: { width: 1280, height: 800 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const problems = [];
  try {
    const page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(TIMEOUT);
    // A script error or a Content-Security-Policy violation shows up here.
    page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
    page.on("console", (m) => {
      if (m.type() === "error") problems.push(`console error: ${m.text()}`);
    });

    await page.goto(`${base}/dashboard`);
    await page.waitForSelector(byTestId("login-form"), { state: "visible" });
    check(await page.isHidden(byTestId("no-admin")), "the no-admin note is hidden when an admin is configured");

    if (customer) {
      await signIn(page, customer);
      await page.waitForSelector(`${byTestId("login-error")}:has-text("admin")`, { state: "visible" });
      check(await page.isHidden(byTestId("dashboard")), "a customer does not get the dashboard");
      log("a customer was refused:", await page.textContent(byTestId("login-error")));
    }

    await signIn(page, admin);
    await page.waitForSelector(byTestId("dashboard"), { state: "visible" });
    await page.waitForSelector(`${byTestId("connection")}[data-state="live"]`);
    // The first stats event has arrived once the tiles show numbers.
    await page.waitForFunction(() => /^\d+$/.test(document.querySelector('[data-testid="status-count-PENDING"]').textContent));

    // Every status an order row takes, in order, however fast it changes.
    await page.evaluate(() => {
      const seen = {};
      window.statusHistory = seen;
      new MutationObserver((records) => {
        for (const r of records) {
          if (r.type === "attributes" && r.target.dataset.orderId && r.oldValue) {
            (seen[r.target.dataset.orderId] ??= []).push(r.oldValue);
          }
        }
      }).observe(document.querySelector('[data-testid="recent-orders"]'), {
        subtree: true,
        attributes: true,
        attributeFilter: ["data-status"],
        attributeOldValue: true,
      });
    });
    console.log("ready");

    const orders = JSON.parse(await readLine());
    log("orders announced:", JSON.stringify(orders));
    const expected = new Map([
      ...orders.confirmed.map((id) => [id, ["PENDING", "CONFIRMED"]]),
      [orders.shipped, ["PENDING", "CONFIRMED", "SHIPPED"]],
      [orders.cancelled, ["PENDING", "CANCELLED"]],
    ]);
    for (const [id, path] of expected) {
      await page.waitForSelector(`tr[data-order-id="${id}"][data-status="${path.at(-1)}"]`);
    }
    const history = await page.evaluate(() => {
      const rows = document.querySelectorAll('[data-testid="order-row"]');
      return Object.fromEntries([...rows].map((r) => [r.dataset.orderId, [...(window.statusHistory[r.dataset.orderId] ?? []), r.dataset.status]]));
    });
    for (const [id, path] of expected) {
      check(JSON.stringify(history[id]) === JSON.stringify(path), `order ${id} went ${JSON.stringify(history[id])} on the page, expected ${JSON.stringify(path)}`);
    }
    log("every order appeared and changed status on the page");

    const tiles = { PENDING: 0, CONFIRMED: orders.confirmed.length, SHIPPED: 1, DELIVERED: 0, CANCELLED: 1 };
    for (const [status, count] of Object.entries(tiles)) {
      await page.waitForSelector(`${byTestId(`status-count-${status}`)}:text-is("${count}")`);
    }
    check((await page.textContent(byTestId("dead-letters"))) === "0", "no dead letters");
    await page.waitForSelector(`${byTestId("lag-orders")}[data-lag="0"]`);
    await page.waitForSelector(`${byTestId("event-feed")} [data-event-type="OrderShipped"][data-aggregate-id="${orders.shipped}"]`);
    check(
      (await page.locator(`${byTestId("event-feed")} [data-aggregate-id="${orders.cancelled}"][data-event-type="PaymentFailed"]`).count()) === 1,
      "the feed shows the declined payment",
    );

    // The shipped order's timeline, opened from its row.
    await page.click(`tr[data-order-id="${orders.shipped}"] button`);
    await page.waitForSelector(`${byTestId("timeline")}[data-aggregate-id="${orders.shipped}"] ${byTestId("timeline-entry")}`);
    // The saga's last effects (capture, commit) may still be on their way: the page appends them
    // live, so it must come to show exactly what the API lists.
    let fromApi = [];
    let shown = [];
    const deadline = Date.now() + TIMEOUT;
    for (;;) {
      fromApi = await apiEvents(orders.shipped);
      shown = await page.$$eval(byTestId("timeline-entry"), (entries) =>
        entries.map((e) => ({ type: e.dataset.eventType, time: e.querySelector(".time").textContent })),
      );
      if (JSON.stringify(shown.map((e) => e.type)) === JSON.stringify(fromApi)) break;
      check(Date.now() < deadline, `the timeline shows ${JSON.stringify(shown.map((e) => e.type))}, the API ${JSON.stringify(fromApi)}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
    check(shown.every((e) => /^\d\d:\d\d:\d\d\.\d{3}$/.test(e.time)), "every timeline entry shows its time");
    const saga = ["OrderCreated", "InventoryReserved", "PaymentAuthorized", "OrderConfirmed", "ShipmentDispatched", "OrderShipped"];
    const positions = saga.map((type) => shown.findIndex((e) => e.type === type));
    check(positions.every((p, i) => p >= 0 && (i === 0 || p > positions[i - 1])), `the saga steps appear in order: ${JSON.stringify(shown.map((e) => e.type))}`);
    check((await page.textContent(byTestId("timeline-status"))).includes(orders.shipped), "the timeline names its order");
    log("the timeline shows", shown.length, "events");

    // The chart has picked up the orders; a few more seconds of points make the screenshot readable.
    await page.waitForFunction(() => {
      const chart = document.querySelector('[data-testid="throughput-chart"]');
      return Number(chart.dataset.points) >= 15 && Number(chart.dataset.peakOrders) > 0 && chart.querySelector('[data-series="orders"]');
    });
    check(problems.length === 0, `the page logged no errors: ${problems.join("; ")}`);
    await page.mouse.move(0, 0);
    await page.screenshot({ path: screenshotPath });
    log("screenshot saved to", screenshotPath);
  } catch (e) {
    const page = context.pages()[0];
    if (page) {
      const failure = join(tmpdir(), "emporium-dashboard-failure.png");
      await page.screenshot({ path: failure }).catch(() => {});
      log("the page at the failure:", failure);
    }
    if (problems.length) log("page problems:", problems.join("; "));
    throw e;
  } finally {
    await context.close();
    await rm(profile, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    log(e.stack ?? String(e));
    process.exit(1);
  },
);
