// One autocannon run, as scripts/bench-reads drives each query: POSTs BODY
// (JSON) to URL on CONNECTIONS connections for DURATION seconds and prints
// autocannon's result as JSON. With FRESH=1 each request's body is made
// unique: `[<id>]` in BODY becomes the request's own number (autocannon's
// -I keeps one Content-Length for ids of varying length, so it is not used).
//
//   URL=… BODY='{"query":…}' CONNECTIONS=32 DURATION=10 [FRESH=1] node load.mjs
import autocannon from "autocannon";

const { URL: url, BODY: body, CONNECTIONS = "32", DURATION = "10", FRESH } = process.env;
let sent = 0;
const request = { method: "POST", headers: { "content-type": "application/json" }, body };
if (FRESH === "1") {
  request.setupRequest = (req) => ({ ...req, body: body.replaceAll("[<id>]", String(sent++)) });
}
const result = await autocannon({
  url,
  connections: Number(CONNECTIONS),
  duration: Number(DURATION),
  requests: [request],
});
console.log(JSON.stringify(result));
