// @ts-check
// The Edge Function's handler, in plain JavaScript so that Deno (index.ts imports it) and Node's test runner
// (handler.test.mjs, `make test`) run the same file.
//
// A Supabase Database Webhook on INSERT into votes or comments posts {type, table, schema, record, old_record};
// this forwards the record's user to the online updater's endpoint (`teamu realtime --http-port`,
// POST /v1/supabase-webhook), which queues the user: their embedding is rewritten within a second.

/** @typedef {{updaterUrl: string, updaterToken?: string, webhookSecret?: string, timeoutMs?: number}} Config */

export const TABLES = new Set(["votes", "comments"]);
export const SECRET_HEADER = "x-teamu-webhook-secret";
const DEFAULT_TIMEOUT_MS = 5000;

/**
 * @param {number} status
 * @param {unknown} body
 * @returns {Response}
 */
function json(status, body) {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

/**
 * Equal strings, compared in time that depends on their length only.
 * @param {string} offered
 * @param {string} expected
 */
function sameSecret(offered, expected) {
  const a = new TextEncoder().encode(offered);
  const b = new TextEncoder().encode(expected);
  let difference = a.length ^ b.length;
  for (let i = 0; i < b.length; i++) difference |= (a[i] ?? 0) ^ b[i];
  return difference === 0;
}

/**
 * @param {Request} request
 * @param {Config} config
 * @param {typeof fetch} [fetchImpl]
 * @returns {Promise<Response>}
 */
export async function handleWebhook(request, config, fetchImpl = fetch) {
  if (request.method !== "POST") return json(405, { error: "POST only" });
  if (!config.updaterUrl) return json(500, { error: "TEAMU_REALTIME_URL is not set" });
  // Deployed with --no-verify-jwt, the secret is the function's only gate: without one it forwards nothing.
  if (!config.webhookSecret) return json(500, { error: "TEAMU_WEBHOOK_SECRET is not set" });
  if (!sameSecret(request.headers.get(SECRET_HEADER) ?? "", config.webhookSecret)) {
    return json(401, { error: `missing or wrong ${SECRET_HEADER}` });
  }
  /** @type {any} */
  let payload;
  try {
    payload = await request.json();
  } catch {
    return json(400, { error: "the payload is not JSON" });
  }
  if (payload === null || typeof payload !== "object" || Array.isArray(payload)) {
    return json(400, { error: "the payload is not a JSON object" });
  }
  if (payload.type !== "INSERT" || !TABLES.has(payload.table)) {
    return json(200, { forwarded: false, ignored: `${payload.type} on ${payload.table}` });
  }
  const userId = payload.record?.user_id;
  // Ids past 2^53 lose digits in JavaScript numbers: refused rather than sent for the wrong user.
  if (!Number.isSafeInteger(userId) || userId < 0) {
    return json(400, { error: `record.user_id is not a user id: ${JSON.stringify(userId)}` });
  }
  /** @type {Record<string, string>} */
  const headers = { "content-type": "application/json" };
  if (config.updaterToken) headers.authorization = `Bearer ${config.updaterToken}`;
  let answer;
  try {
    answer = await fetchImpl(new URL("/v1/supabase-webhook", config.updaterUrl), {
      method: "POST",
      headers,
      body: JSON.stringify({ type: payload.type, table: payload.table, schema: payload.schema, record: { user_id: userId } }),
      signal: AbortSignal.timeout(config.timeoutMs ?? DEFAULT_TIMEOUT_MS),
    });
  } catch (error) {
    // The database's own trigger queued the user too, where it is installed: nothing is lost, only a wake-up.
    return json(502, { error: `the updater did not answer: ${error instanceof Error ? error.message : error}` });
  }
  const body = await answer.json().catch(() => ({}));
  return json(answer.ok ? 202 : 502, { forwarded: answer.ok, updater_status: answer.status, updater: body });
}
