// node --test supabase/functions/ (run by `make test`): the Edge Function's handler with a stand-in fetch.
import assert from "node:assert/strict";
import { test } from "node:test";

import { SECRET_HEADER, handleWebhook } from "./handler.mjs";

const CONFIG = { updaterUrl: "http://updater.internal:8787", updaterToken: "t0ken", webhookSecret: "s3cret" };

function webhook(payload, headers = { [SECRET_HEADER]: "s3cret" }) {
  return new Request("http://edge/teamu-realtime", {
    method: "POST",
    headers: { "content-type": "application/json", ...headers },
    body: typeof payload === "string" ? payload : JSON.stringify(payload),
  });
}

function recordingFetch(status = 202, body = { queued: 1 }) {
  const calls = [];
  const fetchImpl = async (url, init) => {
    calls.push({ url: String(url), init });
    return new Response(JSON.stringify(body), { status });
  };
  return { calls, fetchImpl };
}

const VOTE = { type: "INSERT", table: "votes", schema: "public", record: { vote_id: 9, user_id: 42, post_id: 7 } };

test("a vote insert is forwarded to the updater with its bearer token", async () => {
  const { calls, fetchImpl } = recordingFetch();
  const answer = await handleWebhook(webhook(VOTE), CONFIG, fetchImpl);
  assert.equal(answer.status, 202);
  assert.deepEqual(await answer.json(), { forwarded: true, updater_status: 202, updater: { queued: 1 } });
  assert.equal(calls.length, 1);
  assert.equal(calls[0].url, "http://updater.internal:8787/v1/supabase-webhook");
  assert.equal(calls[0].init.headers.authorization, "Bearer t0ken");
  assert.deepEqual(JSON.parse(calls[0].init.body), {
    type: "INSERT",
    table: "votes",
    schema: "public",
    record: { user_id: 42 },
  });
});

test("a comment insert is forwarded too", async () => {
  const { calls, fetchImpl } = recordingFetch();
  const comment = { ...VOTE, table: "comments", record: { comment_id: 3, user_id: 5, body: "hi" } };
  assert.equal((await handleWebhook(webhook(comment), CONFIG, fetchImpl)).status, 202);
  assert.equal(JSON.parse(calls[0].init.body).record.user_id, 5);
});

test("other tables and events are acknowledged, not forwarded", async () => {
  const { calls, fetchImpl } = recordingFetch();
  for (const payload of [{ ...VOTE, type: "UPDATE" }, { ...VOTE, table: "posts" }, { ...VOTE, type: "DELETE" }]) {
    const answer = await handleWebhook(webhook(payload), CONFIG, fetchImpl);
    assert.equal(answer.status, 200);
    assert.equal((await answer.json()).forwarded, false);
  }
  assert.equal(calls.length, 0);
});

test("a wrong or missing secret is refused before anything is read", async () => {
  const { calls, fetchImpl } = recordingFetch();
  for (const headers of [{}, { [SECRET_HEADER]: "guess" }, { [SECRET_HEADER]: "s3cret-and-more" }]) {
    assert.equal((await handleWebhook(webhook(VOTE, headers), CONFIG, fetchImpl)).status, 401);
  }
  assert.equal(calls.length, 0);
});

test("without a configured secret nothing is forwarded, whatever the request says", async () => {
  const { calls, fetchImpl } = recordingFetch();
  for (const webhookSecret of [undefined, ""]) {
    const config = { ...CONFIG, webhookSecret };
    for (const headers of [{}, { [SECRET_HEADER]: "" }, { [SECRET_HEADER]: "s3cret" }]) {
      const answer = await handleWebhook(webhook(VOTE, headers), config, fetchImpl);
      assert.equal(answer.status, 500);
      assert.match((await answer.json()).error, /TEAMU_WEBHOOK_SECRET is not set/);
    }
  }
  assert.equal(calls.length, 0);
});

test("malformed payloads and user ids are refused", async () => {
  const { calls, fetchImpl } = recordingFetch();
  const bad = [
    "not json",
    "[1, 2]",
    { ...VOTE, record: {} },
    { ...VOTE, record: { user_id: "42" } },
    { ...VOTE, record: { user_id: -1 } },
    { ...VOTE, record: { user_id: 2 ** 60 } },
    { ...VOTE, record: { user_id: 4.5 } },
  ];
  for (const payload of bad) {
    assert.equal((await handleWebhook(webhook(payload), CONFIG, fetchImpl)).status, 400, JSON.stringify(payload));
  }
  assert.equal(calls.length, 0);
});

test("an updater that fails or can't be reached is a 502", async () => {
  const refusing = recordingFetch(401, { error: "missing or wrong bearer token" });
  const answer = await handleWebhook(webhook(VOTE), CONFIG, refusing.fetchImpl);
  assert.equal(answer.status, 502);
  assert.equal((await answer.json()).updater_status, 401);
  const unreachable = async () => {
    throw new TypeError("fetch failed");
  };
  const down = await handleWebhook(webhook(VOTE), CONFIG, unreachable);
  assert.equal(down.status, 502);
  assert.match((await down.json()).error, /fetch failed/);
});

test("GET and a missing updater URL are refused", async () => {
  const { fetchImpl } = recordingFetch();
  const get = new Request("http://edge/teamu-realtime", { method: "GET" });
  assert.equal((await handleWebhook(get, CONFIG, fetchImpl)).status, 405);
  assert.equal((await handleWebhook(webhook(VOTE), { ...CONFIG, updaterUrl: "" }, fetchImpl)).status, 500);
});
