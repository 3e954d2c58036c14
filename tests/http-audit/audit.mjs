// Audits a GraphQL endpoint against the GraphQL over HTTP specification with
// graphql-http's own audits. Fails when any MUST fails; prints SHOULD and MAY
// findings. Usage: node audit.mjs http://127.0.0.1:8080/graphql
import { serverAudits } from 'graphql-http';

const url = process.argv[2];
if (!url) {
  console.error('usage: node audit.mjs <graphql url>');
  process.exit(2);
}
let passed = 0;
let failed = 0;
for (const audit of serverAudits({ url, fetchFn: fetch })) {
  const result = await audit.fn();
  if (result.status === 'ok') {
    passed++;
    continue;
  }
  const must = audit.name.startsWith('MUST');
  if (must) failed++;
  console.log(`${must ? 'FAIL' : result.status.toUpperCase()} ${audit.name}: ${result.reason}`);
}
console.log(`http-audit: ${passed} passed, ${failed} MUST failed (${url})`);
process.exit(failed ? 1 : 0);
