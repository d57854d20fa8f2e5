// Test oracle for tests/test_wm_open_payments.py, from the Open Payments packages:
// * responses and requests of the fake wallet (tests/op_fake.py) against the OpenAPI
//   documents bundled in @interledger/open-payments, with the validator the Open
//   Payments client itself uses (@interledger/openapi);
// * HTTP message signatures of our requests, with Rafiki's verifier
//   (@interledger/http-signature-utils validateSignatureHeaders + validateSignature).
// stdin: JSON [{kind: "response"|"request", spec, path, method, status?, body}
//              | {kind: "signature", jwk, request: {method, url, headers, body?}}];
// stdout: JSON [{ok, errors?}].
"use strict";
const path = require("node:path");
const { createOpenAPI } = require("@interledger/openapi");
const { validateSignature, validateSignatureHeaders } = require(
  "@interledger/http-signature-utils"
);

const SPECS = path.join(__dirname, "node_modules", "@interledger", "open-payments", "dist",
  "openapi", "specs");

function errorsOf(error) {
  return error && Array.isArray(error.errors)
    ? error.errors.map((e) => e.message) : [String(error && error.message || error)];
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) { chunks.push(chunk); }
  const items = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const apis = {};
  const results = [];
  for (const item of items) {
    try {
      if (item.kind === "signature") {
        const request = item.request;
        const headersOk = validateSignatureHeaders(request);
        const signatureOk = headersOk && await validateSignature(item.jwk, request);
        results.push(signatureOk ? { ok: true }
          : { ok: false, errors: [headersOk ? "bad signature" : "bad signature headers"] });
        continue;
      }
      if (!apis[item.spec]) { apis[item.spec] = await createOpenAPI(path.join(SPECS, item.spec)); }
      if (item.kind === "request") {
        const validate = apis[item.spec].createRequestValidator({
          path: item.path, method: item.method
        });
        validate({ body: item.body, headers: { "content-type": "application/json" } });
      } else {
        const validate = apis[item.spec].createResponseValidator({
          path: item.path, method: item.method
        });
        validate({ status: item.status, body: item.body });
      }
      results.push({ ok: true });
    } catch (error) {
      results.push({ ok: false, errors: errorsOf(error) });
    }
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((error) => { console.error(error); process.exit(1); });
