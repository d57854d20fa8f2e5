// Validates recorded responses of the fake Open Payments server (tests/op_fake.py)
// against the OpenAPI documents bundled in @interledger/open-payments, with the
// validator the Open Payments client itself uses (@interledger/openapi).
// stdin: JSON [{spec, path, method, status, body}]; stdout: JSON [{ok, errors?}].
"use strict";
const path = require("node:path");
const { createOpenAPI } = require("@interledger/openapi");

const SPECS = path.join(__dirname, "node_modules", "@interledger", "open-payments", "dist",
  "openapi", "specs");

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) { chunks.push(chunk); }
  const items = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const apis = {};
  const results = [];
  for (const item of items) {
    if (!apis[item.spec]) { apis[item.spec] = await createOpenAPI(path.join(SPECS, item.spec)); }
    try {
      const validate = apis[item.spec].createResponseValidator({
        path: item.path, method: item.method
      });
      validate({ status: item.status, body: item.body });
      results.push({ ok: true });
    } catch (error) {
      const errors = error && Array.isArray(error.errors)
        ? error.errors.map((e) => e.message) : [String(error && error.message || error)];
      results.push({ ok: false, errors });
    }
  }
  process.stdout.write(JSON.stringify(results));
}

main().catch((error) => { console.error(error); process.exit(1); });
