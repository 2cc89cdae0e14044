// A scenario against a running agora server, written only against types that openapi-typescript
// generated from openapi/openapi.json and called through openapi-fetch's typed client. It is
// compiled by ./run with tsc (strict, noUncheckedIndexedAccess, exactOptionalPropertyTypes), so a
// spec change that breaks a request or a field read here fails the build before anything runs.
//
// Every response is also checked against the spec at run time (conformance.ts).
//
// Usage (after ./run has installed, generated and compiled), from the repo root:
//   AGORA_URL=http://127.0.0.1:8080 node tests/external/.cache/typescript/out/scenario.js [SPEC]
// SPEC defaults to openapi/openapi.json.
import { randomBytes } from "node:crypto";
import createClient, { type Middleware } from "openapi-fetch";
import type { components, paths } from "../.cache/typescript/gen/schema.js";
import { Conformance } from "./conformance.js";

type Market = components["schemas"]["MarketView"];
type ErrorBody = components["schemas"]["ErrorBody"];

const NAME = "typescript";

class ScenarioFailure extends Error {}

/** Fails the step, listing the responses so far that do not match the spec. */
function fail(step: string, message: string): never {
  const problems = conformance.problems;
  const listed = problems.length === 0 ? "" : `\n  responses that do not match ${conformance.specPath}:\n    ${problems.join("\n    ")}`;
  throw new ScenarioFailure(`step ${step}: ${message}${listed}`);
}

function check(condition: boolean, step: string, message: string): asserts condition {
  if (!condition) fail(step, message);
}

/** A refused request: its status and the typed error body, for the failure message. */
function refused(step: string, what: string, response: Response, error: ErrorBody): never {
  fail(step, `${what} answered ${response.status} ${error.code}: ${error.error} (request ${error.request_id})`);
}

function say(step: string, line: string): void {
  if (conformance.problems.length > 0) fail(step, "the server's responses do not match the spec");
  console.log(`  ${step}. ${line}`);
}

const baseUrl = process.env["AGORA_URL"];
if (baseUrl === undefined || baseUrl === "") {
  console.error(`${NAME}: AGORA_URL is not set (e.g. AGORA_URL=http://127.0.0.1:8080)`);
  process.exit(2);
}

// Unique per run: the server is shared with other steps and may keep data between runs.
const suffix = `${Date.now().toString(36)}${randomBytes(3).toString("hex")}`;
const username = `ts_${suffix}`;
const password = `ts-pass-${randomBytes(8).toString("hex")}`;
const word = `tsclient${suffix}`;

const client = createClient<paths>({ baseUrl });
const conformance = new Conformance(process.argv[2] ?? "openapi/openapi.json");
client.use(conformance.middleware);

// The access token, once logged in, goes on every request through a middleware.
let accessToken: string | undefined;
const auth: Middleware = {
  onRequest({ request }) {
    if (accessToken !== undefined) request.headers.set("Authorization", `Bearer ${accessToken}`);
    return request;
  },
};
client.use(auth);

async function scenario(): Promise<void> {
  console.log(`${NAME}: scenario against ${baseUrl} as ${username}, market word ${word}`);

  // 1. Register.
  const registered = await client.POST("/api/auth/register", { body: { username, password } });
  if (registered.error !== undefined) refused("1", "register", registered.response, registered.error);
  const user = registered.data.data;
  check(registered.response.status === 201, "1", `register answered ${registered.response.status}, expected 201`);
  check(user.username === username, "1", `registered username is ${user.username}, expected ${username}`);
  check(user.role === "user", "1", `a registered account has role ${user.role}, expected user`);
  check(user.balance > 0, "1", `the signup grant is ${user.balance}`);
  const startBalance = user.balance;
  say("1", `registered ${user.username} (id ${user.id}, role ${user.role}, balance ${user.balance})`);

  // 2. Log in; from here the middleware sends the access token.
  const login = await client.POST("/api/auth/login", { body: { username, password } });
  if (login.error !== undefined) refused("2", "login", login.response, login.error);
  const session = login.data.data;
  check(session.token_type === "Bearer", "2", `token_type is ${session.token_type}, expected Bearer`);
  check(session.access_token.length > 0, "2", "the access token is empty");
  check(session.user.id === user.id, "2", `login returned user ${session.user.id}, expected ${user.id}`);
  accessToken = session.access_token;
  const me = await client.GET("/api/me");
  if (me.error !== undefined) refused("2", "GET /api/me with the access token", me.response, me.error);
  check(me.data.data.id === user.id, "2", `GET /api/me is user ${me.data.data.id}, expected ${user.id}`);
  say("2", `logged in: ${session.token_type} token valid ${session.expires_in}s, GET /api/me is ${me.data.data.username}`);

  // 3. Create a market whose name carries the unique word.
  const marketName = `Will the TypeScript client find ${word} by keyword?`;
  const outcomes = ["RED", "GREEN", "BLUE"];
  const created = await client.POST("/api/markets", {
    body: {
      name: marketName,
      description: "Created by tests/external/typescript through openapi-fetch.",
      outcomes,
      close_time: null,
    },
  });
  if (created.error !== undefined) refused("3", "create market", created.response, created.error);
  const market: Market = created.data.data;
  check(created.response.status === 201, "3", `create answered ${created.response.status}, expected 201`);
  check(market.name === marketName, "3", `market name is ${JSON.stringify(market.name)}`);
  check(market.status === "active", "3", `new market status is ${market.status}, expected active`);
  check(market.creator.id === user.id, "3", `creator is ${market.creator.id}, expected ${user.id}`);
  check(market.volume === 0, "3", `new market volume is ${market.volume}, expected 0`);
  check(
    market.outcomes.map((o) => o.label).join() === outcomes.join(),
    "3",
    `outcomes are ${market.outcomes.map((o) => o.label).join()}, expected ${outcomes.join()}`,
  );
  const location = created.response.headers.get("Location");
  check(location === `/api/markets/${market.id}`, "3", `Location is ${String(location)}`);
  say("3", `created market ${market.id} "${market.name}" (${market.status}, outcomes ${outcomes.join("/")})`);

  // 4. Stake on one of its outcomes (with an Idempotency-Key, a typed header parameter).
  const outcome = 1;
  const amount = 125;
  const staked = await client.POST("/api/markets/{id}/positions", {
    params: { path: { id: market.id }, header: { "Idempotency-Key": `ts-${suffix}-stake` } },
    body: { outcome, amount },
  });
  if (staked.error !== undefined) refused("4", "stake", staked.response, staked.error);
  const bet = staked.data.data;
  check(staked.response.status === 201, "4", `stake answered ${staked.response.status}, expected 201`);
  check(bet.market_id === market.id && bet.outcome === outcome && bet.amount === amount, "4", `bet is ${JSON.stringify(bet)}`);
  check(bet.balance_after === startBalance - amount, "4", `balance_after is ${bet.balance_after}, expected ${startBalance - amount}`);
  const replayed = staked.response.headers.get("Idempotent-Replayed");
  check(replayed === "false", "4", `Idempotent-Replayed is ${String(replayed)}, expected false`);
  say("4", `staked ${bet.amount} on outcome ${bet.outcome} (${outcomes[outcome] ?? "?"}): bet ${bet.id}, balance ${bet.balance_after}`);

  // 5. Read the market back: the stake shows in its volume and in that outcome's pool.
  const read = await client.GET("/api/markets/{id}", { params: { path: { id: market.id } } });
  if (read.error !== undefined) refused("5", "get market", read.response, read.error);
  const after: Market = read.data.data;
  check(after.volume === amount, "5", `volume is ${after.volume}, expected ${amount}`);
  for (const o of after.outcomes) {
    const want = o.index === outcome ? amount : 0;
    check(o.pool === want, "5", `outcome ${o.index} (${o.label}) pool is ${o.pool}, expected ${want}`);
  }
  const backed = after.outcomes[outcome];
  check(backed !== undefined, "5", `the market has no outcome ${outcome}`);
  check(backed.probability === 1, "5", `outcome ${outcome} probability is ${backed.probability}, expected 1`);
  check(after.version > market.version, "5", `version is ${after.version}, not above ${market.version}`);
  const etag = read.response.headers.get("ETag");
  check(etag === `"${after.id}-${after.version}"`, "5", `ETag is ${String(etag)}, expected "${after.id}-${after.version}"`);
  say("5", `market ${after.id}: volume ${after.volume}, ${backed.label} pool ${backed.pool} (p=${backed.probability}), version ${after.version}, ETag ${etag}`);

  // 6. Search for the unique word.
  const searched = await client.GET("/api/markets/search", { params: { query: { q: word, limit: 10 } } });
  if (searched.error !== undefined) refused("6", "search", searched.response, searched.error);
  const hits = searched.data.data;
  const hit = hits.find((h) => h.market.id === market.id);
  check(
    hit !== undefined,
    "6",
    `search for ${word} did not find market ${market.id}; got ids [${hits.map((h) => h.market.id).join(", ")}]`,
  );
  check(searched.data.meta.count === hits.length, "6", `meta.count is ${searched.data.meta.count}, got ${hits.length} hits`);
  say(
    "6",
    `search "${word}" (${searched.data.meta.mode}) found market ${hit.market.id} among ${hits.length} hit(s): ` +
      `score ${hit.score}, keyword_rank ${String(hit.keyword_rank ?? null)}, vector_rank ${String(hit.vector_rank ?? null)}`,
  );

  // 7. Expected error: stake more than the balance -> 409 insufficient_funds, read from the typed error.
  const tooMuch = bet.balance_after + 1;
  const over = await client.POST("/api/markets/{id}/positions", {
    params: { path: { id: market.id } },
    body: { outcome: 0, amount: tooMuch },
  });
  if (over.error === undefined) fail("7", `a stake of ${tooMuch} with balance ${bet.balance_after} was accepted: bet ${over.data.data.id}`);
  const error: ErrorBody = over.error;
  check(over.response.status === 409, "7", `overdraw answered ${over.response.status} ${error.code}, expected 409`);
  check(error.code === "insufficient_funds", "7", `error.code is ${error.code}, expected insufficient_funds`);
  check(error.success === false, "7", `error.success is ${String(error.success)}, expected false`);
  const meAfter = await client.GET("/api/me");
  if (meAfter.error !== undefined) refused("7", "GET /api/me", meAfter.response, meAfter.error);
  check(
    meAfter.data.data.balance === bet.balance_after,
    "7",
    `balance after the refused stake is ${meAfter.data.data.balance}, expected ${bet.balance_after}`,
  );
  say("7", `stake of ${tooMuch} refused: ${over.response.status} ${error.code} ("${error.error}"), balance still ${meAfter.data.data.balance}`);
}

try {
  await scenario();
  console.log(`${NAME}: all ${conformance.checked} responses matched ${conformance.specPath}`);
  console.log(`${NAME}: scenario passed`);
} catch (e: unknown) {
  if (e instanceof ScenarioFailure) {
    console.error(`${NAME}: scenario FAILED at ${e.message}`);
  } else {
    console.error(`${NAME}: scenario FAILED with an exception:`, e);
  }
  process.exit(1);
}
