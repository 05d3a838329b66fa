// Supabase Edge Function `teamu-realtime`: Database Webhooks on inserts into votes and comments call it, and it
// wakes the online updater (`teamu realtime --http-port`) for the row's user. The handler is handler.mjs, plain
// JavaScript shared with its Node test. Deploy: `supabase functions deploy teamu-realtime --no-verify-jwt` (the
// webhook authenticates with TEAMU_WEBHOOK_SECRET instead of a user's JWT); docs/OPERATIONS.md has the wiring.
import { handleWebhook } from "./handler.mjs";

Deno.serve((request: Request): Promise<Response> =>
  handleWebhook(request, {
    updaterUrl: Deno.env.get("TEAMU_REALTIME_URL") ?? "",
    updaterToken: Deno.env.get("TEAMU_REALTIME_TOKEN") ?? undefined,
    webhookSecret: Deno.env.get("TEAMU_WEBHOOK_SECRET") ?? undefined,
  })
);
