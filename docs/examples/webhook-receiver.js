// A stream-stats webhook receiver: verifies the signature, drops duplicates, handles each event.
// Run: STREAMSTATS_WEBHOOK_SECRET=... PORT=9000 node webhook-receiver.js   (Node.js, no packages)
// Keep `seen` in your database (a unique key on the event id) in production.
const crypto = require("node:crypto");
const http = require("node:http");

const SECRET = process.env.STREAMSTATS_WEBHOOK_SECRET;
const TOLERANCE_SECONDS = 300; // reject signatures older (or newer) than 5 minutes: replays
const seen = new Set();

// Check `StreamStats-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`.
function verify(header, rawBody) {
  const fields = Object.fromEntries((header || "").split(",").map((p) => p.split("=", 2)));
  const timestamp = Number(fields.t);
  if (!Number.isInteger(timestamp) || typeof fields.v1 !== "string") return false;
  if (Math.abs(Date.now() / 1000 - timestamp) > TOLERANCE_SECONDS) return false;
  const expected = crypto
    .createHmac("sha256", SECRET)
    .update(`${timestamp}.`)
    .update(rawBody)
    .digest();
  const given = Buffer.from(fields.v1, "hex");
  return given.length === expected.length && crypto.timingSafeEqual(given, expected);
}

// Your code: page someone, post to chat, open a ticket...
function handle(event) {
  const alert = event.data;
  console.log(event.type, event.id, alert.type, alert.streamId);
}

http
  .createServer((req, res) => {
    const chunks = [];
    req.on("data", (chunk) => chunks.push(chunk));
    req.on("end", () => {
      const rawBody = Buffer.concat(chunks); // verify the raw bytes, not re-serialized JSON
      if (req.method !== "POST" || !verify(req.headers["streamstats-signature"], rawBody)) {
        res.writeHead(401).end();
        return;
      }
      const event = JSON.parse(rawBody);
      // Delivery is at least once: the same event may come again, always with the same id.
      if (!seen.has(event.id)) {
        seen.add(event.id);
        handle(event);
      }
      res.writeHead(204).end(); // any 2xx: delivered; anything else is retried
    });
  })
  .listen(Number(process.env.PORT || 9000), "127.0.0.1");
