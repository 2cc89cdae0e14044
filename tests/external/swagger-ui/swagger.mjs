// Swagger UI scenario for agora, in headless Debian Chromium driven by playwright-core.
// Everything on /docs is done as a person would, with clicks and typing: register and log in
// with "Try it out", read the access token off the live response, Authorize with it, then create
// a market with POST /api/markets and check the live response. Node's fetch is used only to
// double-check the result through the API and to place a stake that an EventSource opened on the
// page (the server's own origin) must receive as a `stake.placed` event.
//
// Env: AGORA_URL, AGORA_ARTIFACTS (screenshots), SWAGGER_UI_MODULES (node_modules holding
// playwright-core). Run through tests/external/swagger-ui/run.
import { createRequire } from "node:module";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";

const require = createRequire(path.join(process.env.SWAGGER_UI_MODULES, "noop.js"));
const { chromium } = require("playwright-core");

const BASE = process.env.AGORA_URL.replace(/\/+$/, "");
const ORIGIN = new URL(BASE).origin;
const ARTIFACTS = process.env.AGORA_ARTIFACTS || "target/external";
const SHOT = path.join(ARTIFACTS, "swagger-ui-create-market.png");
const SHOT_OP = path.join(ARTIFACTS, "swagger-ui-create-market-response.png");
const STEP_TIMEOUT = 15_000;

const suffix = `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
const username = `swui_${suffix}`;
const password = `swagger-ui-pass-${suffix}`;
const marketName = `Swagger UI market ${suffix}: will the docs page work offline?`;

const t0 = Date.now();
const step = (msg) => console.log(`swagger-ui: [${((Date.now() - t0) / 1000).toFixed(1)}s] ${msg}`);
class Failure extends Error {}
const fail = (msg) => {
  throw new Failure(msg);
};

// What the page did that it should not: console errors, uncaught exceptions, failed requests,
// HTTP errors, and any request leaving the server's origin (the page must work offline).
const problems = [];

for (const f of [SHOT, SHOT_OP]) fs.rmSync(f, { force: true }); // no stale pictures from a past run
const profile = fs.mkdtempSync(path.join(os.tmpdir(), "swagger-ui-profile-"));
let context;
let page;
let status = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1400, height: 1000 },
  });
  context.setDefaultTimeout(STEP_TIMEOUT);
  step(`chromium ${context.browser()?.version() ?? "(persistent context)"} launched, profile ${profile}`);

  page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console error: ${m.text()} (${m.location().url || "?"})`);
  });
  page.on("pageerror", (e) => problems.push(`uncaught page error: ${e.message}`));
  page.on("request", (r) => {
    const u = r.url();
    if (!u.startsWith("data:") && !u.startsWith("blob:") && new URL(u).origin !== ORIGIN)
      problems.push(`request to another origin (needs the internet): ${r.method()} ${u}`);
  });
  page.on("requestfailed", (r) =>
    problems.push(`request failed: ${r.method()} ${r.url()}: ${r.failure()?.errorText}`),
  );
  page.on("response", (r) => {
    if (r.status() >= 400) problems.push(`HTTP ${r.status()}: ${r.request().method()} ${r.url()}`);
  });

  // ---- 1. /docs loads, offline
  const resp = await page.goto(`${BASE}/docs`, { waitUntil: "load" });
  if (!resp || resp.status() !== 200) fail(`GET /docs answered ${resp?.status()}`);
  await page.locator(".swagger-ui .information-container .title").waitFor();
  const title = (await page.locator(".swagger-ui .information-container .title").innerText()).trim();
  const opCount = await page.locator(".opblock").count();
  await page.waitForLoadState("networkidle");
  step(`GET /docs: 200, "${title.split("\n")[0]}", ${opCount} operations rendered`);
  if (opCount < 5) fail(`only ${opCount} operations rendered on /docs`);

  // Expands an operation, clicks "Try it out", replaces the example body, clicks "Execute", and
  // returns the live response shown by the UI: { status, body (text), curl, url }.
  async function tryItOut(opId, body) {
    const op = page.locator(`#${opId}`);
    await op.scrollIntoViewIfNeeded();
    await op.locator(".opblock-summary-control").click();
    await op.locator("button.try-out__btn", { hasText: "Try it out" }).click();
    const editor = op.locator("textarea.body-param__text");
    await editor.click();
    await editor.press("ControlOrMeta+a");
    await editor.press("Delete");
    await editor.fill(JSON.stringify(body, null, 2));
    await op.locator("button.execute").click();
    const live = op.locator(".responses-wrapper .live-responses-table");
    const statusCell = live.locator("tbody .response-col_status").first();
    await statusCell.waitFor();
    const code = Number((await statusCell.innerText()).trim());
    const bodyText = (await live.locator(".response-col_description pre.microlight").first().innerText()).trim();
    const curl = (await op.locator(".curl-command .curl").innerText()).trim();
    const url = (await op.locator(".request-url pre").innerText()).trim();
    return { code, bodyText, curl, url, op };
  }
  const parse = (what, text) => {
    try {
      return JSON.parse(text);
    } catch {
      fail(`${what}: the UI's response body is not JSON: ${text.slice(0, 300)}`);
    }
  };
  const collapse = async (op) => op.locator(".opblock-summary-control").click();

  // ---- 2. register and log in through "Try it out"
  {
    const r = await tryItOut("operations-Auth-register_user", { username, password });
    step(`POST /api/auth/register (Try it out): live response ${r.code}`);
    if (r.code !== 201) fail(`register: expected 201, the UI shows ${r.code}: ${r.bodyText}`);
    const j = parse("register", r.bodyText);
    if (j.data?.username !== username) fail(`register: body has no username ${username}: ${r.bodyText}`);
    await collapse(r.op);
  }
  let token;
  {
    const r = await tryItOut("operations-Auth-login_user", { username, password });
    step(`POST /api/auth/login (Try it out): live response ${r.code}`);
    if (r.code !== 200) fail(`login: expected 200, the UI shows ${r.code}: ${r.bodyText}`);
    token = parse("login", r.bodyText).data?.access_token;
    if (typeof token !== "string" || token.split(".").length !== 3)
      fail(`login: no access_token (JWT) in the UI's response body: ${r.bodyText.slice(0, 300)}`);
    step(`access token copied from the live response (${token.length} chars)`);
    await collapse(r.op);
  }

  // ---- 3. Authorize: paste the token into bearerAuth
  {
    await page.locator(".scheme-container button.authorize").click();
    const modal = page.locator(".dialog-ux .modal-ux");
    await modal.waitFor();
    const box = modal.locator(".auth-container").filter({ hasText: "bearerAuth" });
    await box.locator('input[aria-label="auth-bearer-value"]').fill(token);
    await box.locator("button.authorize", { hasText: "Authorize" }).click();
    await box.locator("button", { hasText: "Logout" }).waitFor();
    await modal.locator("button.btn-done", { hasText: "Close" }).click();
    await modal.waitFor({ state: "detached" });
    await page.locator(".scheme-container button.authorize.locked").waitFor();
    step("Authorize: bearerAuth set, dialog closed, padlock shows locked");
  }

  // ---- 4. POST /api/markets: Try it out, Execute
  const closeTime = new Date(Date.now() + 30 * 86400_000).toISOString().replace(/\.\d+Z$/, "Z");
  const marketBody = {
    name: marketName,
    description: "Created by tests/external/swagger-ui through the Swagger UI page.",
    outcomes: ["YES", "NO"],
    close_time: closeTime,
    initial_stake: { outcome: 0, amount: 10 },
  };
  const r = await tryItOut("operations-Markets-create_market", marketBody);
  step(`POST /api/markets (Try it out): live response ${r.code}, request ${r.url}`);
  if (!/Authorization: Bearer /i.test(r.curl)) fail(`the UI sent no bearer token; its curl:\n${r.curl}`);
  if (r.code !== 201) fail(`create market: expected 201, the UI shows ${r.code}: ${r.bodyText}`);
  if (!r.bodyText.includes(marketName)) fail(`create market: body lacks the name: ${r.bodyText}`);
  const market = parse("create market", r.bodyText).data;
  if (!Number.isInteger(market?.id)) fail(`create market: no data.id in ${r.bodyText}`);
  step(`live response body shows market ${market.id} "${market.name}" (creator ${market.creator?.username})`);

  // ---- 5. the market exists, seen through the API
  {
    const res = await fetch(`${BASE}/api/markets/${market.id}`);
    const j = await res.json();
    if (res.status !== 200 || j.data?.name !== marketName || j.data?.creator?.username !== username)
      fail(`GET /api/markets/${market.id}: ${res.status} ${JSON.stringify(j).slice(0, 300)}`);
    step(`GET /api/markets/${market.id} (API): 200, name and creator match, volume ${j.data.volume}`);
  }

  // ---- 6. live events: an EventSource on the page (the way a browser app follows markets)
  // receives the stake.placed of a stake placed now through the API
  {
    await page.evaluate(
      (id) =>
        new Promise((resolve, reject) => {
          window.agoraEvents = [];
          const source = new EventSource(`/api/events?markets=${id}`);
          source.addEventListener("stake.placed", (e) =>
            window.agoraEvents.push({ lastEventId: e.lastEventId, ...JSON.parse(e.data) }),
          );
          source.onopen = () => resolve();
          source.onerror = () => reject(new Error(`EventSource error, readyState ${source.readyState}`));
        }),
      market.id,
    );
    const res = await fetch(`${BASE}/api/markets/${market.id}/positions`, {
      method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${token}` },
      body: JSON.stringify({ outcome: 1, amount: 5 }),
    });
    const bet = (await res.json()).data;
    if (res.status !== 201 || !Number.isInteger(bet?.id)) fail(`stake: ${res.status} ${JSON.stringify(bet)}`);
    const sent = Date.now();
    const handle = await page
      .waitForFunction((id) => window.agoraEvents.find((e) => e.data?.bet_id === id), bet.id, { timeout: 5_000 })
      .catch(() => fail(`the page's EventSource got no stake.placed of bet ${bet.id} within 5 s`));
    const got = await handle.jsonValue();
    if (got.market_id !== market.id || got.type !== "stake.placed" || String(got.id) !== got.lastEventId)
      fail(`the page's event does not match the stake: ${JSON.stringify(got)}`);
    if (got.data.amount !== 5 || got.data.outcome !== 1 || got.data.pools?.[1] !== 5)
      fail(`the page's event carries the wrong stake: ${JSON.stringify(got)}`);
    step(`EventSource("/api/events"): stake.placed of bet ${bet.id} (event ${got.id}) in the page ${Date.now() - sent} ms after the stake's response`);
  }

  // ---- 7. screenshots: the whole page, and the operation down to its live response
  await r.op.locator(".live-responses-table").scrollIntoViewIfNeeded();
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: SHOT, fullPage: true });
  const top = await r.op.boundingBox();
  const end = await r.op.locator(".live-responses-table").boundingBox();
  const scroll = await page.evaluate(() => ({ x: window.scrollX, y: window.scrollY })); // for the clip only
  await page.screenshot({
    path: SHOT_OP,
    fullPage: true,
    clip: { x: top.x + scroll.x, y: top.y + scroll.y, width: top.width, height: end.y + end.height - top.y },
  });
  step(`screenshots: ${SHOT} (full page), ${SHOT_OP} (the operation and its live response)`);

  // ---- 8. the page itself stayed clean
  if (problems.length) {
    const hint = problems.some((p) => p.includes("/favicon.ico"))
      ? "\n  (browsers fetch /favicon.ico for every page: the server should answer it, e.g. 204 or an icon," +
        " or /docs should name an icon with <link rel=\"icon\">)"
      : "";
    fail(`the page had ${problems.length} problem(s):\n  ${problems.join("\n  ")}${hint}`);
  }
  step("no console errors, no failed or off-origin requests, no HTTP errors on /docs");
  console.log("swagger-ui: scenario passed");
} catch (e) {
  status = 1;
  console.error(`swagger-ui: FAILED: ${e instanceof Failure ? e.message : e.stack || e}`);
  if (problems.length && !(e instanceof Failure && e.message.includes("problem(s)")))
    console.error(`swagger-ui: page problems seen so far:\n  ${problems.join("\n  ")}`);
  if (page) {
    try {
      fs.mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: SHOT, fullPage: true, timeout: 10_000 });
      console.error(`swagger-ui: screenshot of the failure: ${SHOT}`);
    } catch (e2) {
      console.error(`swagger-ui: could not take a screenshot: ${e2.message}`);
    }
  }
} finally {
  await context?.close().catch(() => {});
  fs.rmSync(profile, { recursive: true, force: true });
}
process.exit(status);
