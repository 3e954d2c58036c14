// PostGraphile 5 with its recommended (amber) preset over a Conveyor
// database, as scripts/bench-reads runs it: the peer that Conveyor's reads
// are measured against (issue 15). Production settings: no watch mode, no
// GraphiQL, no query plans in answers.
//
//   DATABASE_URL=postgres://… LISTEN=127.0.0.1:5678 node postgraphile.mjs
import { createServer } from "node:http";
import { postgraphile } from "postgraphile";
import { makePgService } from "postgraphile/adaptors/pg";
import { grafserv } from "postgraphile/grafserv/node";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";

const [host, port] = (process.env.LISTEN ?? "127.0.0.1:5678").split(/:(?=\d+$)/);
const preset = {
  extends: [PostGraphileAmberPreset],
  pgServices: [makePgService({ connectionString: process.env.DATABASE_URL, schemas: ["public"] })],
  grafserv: { graphqlPath: "/graphql", graphiql: false, watch: false },
  grafast: { explain: false },
};
const serv = postgraphile(preset).createServ(grafserv);
const server = createServer();
server.on("error", (error) => {
  console.error(error);
  process.exit(1);
});
await serv.addTo(server);
server.listen(Number(port), host, () => console.log(`postgraphile on http://${host}:${port}/graphql`));
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => server.close(() => process.exit(0)));
