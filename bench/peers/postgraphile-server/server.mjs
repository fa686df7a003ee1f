// The PostGraphile peer of `BENCH_PEERS=postgraphile make bench` (bench/peers/postgraphile.py
// installs, starts, verifies and measures it). PostGraphile 5 (Amber preset) with
// @graphile/pg-aggregates over the gateway's own tables, served by grafserv on node:http.
//
// The caller: the same access token the gateway gets (`Authorization: Bearer`), verified on every
// request with jsonwebtoken (HS256 with JWT_SECRET_KEY, issuer and audience as the gateway
// checks them, expiry), its `sub` put in the GraphQL context. `currentUser` is the users row of
// that id (planned with Grafast's `context()`, so it is a parameter of the same SQL statement,
// with no transaction or `set_config` around it). Environment: DATABASE_URL, PORT, JWT_SECRET_KEY,
// JWT_ALGORITHM, JWT_ISSUER, JWT_AUDIENCE, PEER_POOL_SIZE, BENCH_PARENT_PID.
import { createServer } from "node:http";

import { PgAggregatesPreset } from "@graphile/pg-aggregates";
import jwt from "jsonwebtoken";
import { postgraphile } from "postgraphile";
import { makePgService } from "postgraphile/adaptors/pg";
import { context } from "postgraphile/grafast";
import { grafserv } from "postgraphile/grafserv/node";
import { PostGraphileAmberPreset } from "postgraphile/presets/amber";
import { extendSchema, gql } from "postgraphile/utils";

const env = process.env;

// `currentUser`: the caller's own users row, or null without a valid token.
const CurrentUserPlugin = extendSchema((build) => {
  const users = build.input.pgRegistry.pgResources.users;
  return {
    typeDefs: gql`
      extend type Query {
        "The user named by the bearer token."
        currentUser: User
      }
    `,
    objects: {
      Query: {
        plans: {
          currentUser() {
            return users.get({ id: context().get("userId") });
          },
        },
      },
    },
  };
});

function callerId(requestContext) {
  const header = requestContext.node?.req?.headers?.authorization ?? "";
  const [scheme, token] = header.split(" ");
  if (scheme?.toLowerCase() !== "bearer" || !token) {
    return null;
  }
  const claims = jwt.verify(token, env.JWT_SECRET_KEY, {
    algorithms: [env.JWT_ALGORITHM || "HS256"],
    audience: env.JWT_AUDIENCE,
    issuer: env.JWT_ISSUER,
  });
  return typeof claims.sub === "string" && claims.typ === "access" ? claims.sub : null;
}

const preset = {
  extends: [PostGraphileAmberPreset, PgAggregatesPreset],
  plugins: [CurrentUserPlugin],
  // The gateway's indexes on tasks are partial (`where deleted = false`), which this plugin does
  // not count as indexes: it would hide User.tasksByUserId and the `deleted` condition, which
  // PostgreSQL does answer from those indexes.
  disablePlugins: ["PgIndexBehaviorsPlugin"],
  pgServices: [
    makePgService({
      connectionString: env.DATABASE_URL,
      schemas: ["public", "bench_peer"],
      poolConfig: { max: Number(env.PEER_POOL_SIZE || 5) },
    }),
  ],
  grafserv: { port: Number(env.PORT), host: "127.0.0.1", graphiql: false, watch: false },
  grafast: {
    explain: false,
    context(requestContext) {
      return { userId: callerId(requestContext) };
    },
  },
};

const pgl = postgraphile(preset);
await pgl.getSchemaResult(); // build the schema before answering anything
const server = createServer();
await pgl.createServ(grafserv).addTo(server);

let stopping = false;
function stop(code) {
  if (stopping) return;
  stopping = true;
  server.close();
  server.closeAllConnections();
  pgl.release().finally(() => process.exit(code));
}
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => stop(0));
}
// Never outlive the benchmark, even one that was killed without a chance to stop us.
const parent = Number(env.BENCH_PARENT_PID || 0);
if (parent) {
  setInterval(() => {
    try {
      process.kill(parent, 0);
    } catch {
      stop(1);
    }
  }, 1000).unref();
}
server.on("error", (error) => {
  console.error(error);
  stop(1);
});
server.listen(Number(env.PORT), "127.0.0.1", () => {
  console.log(`postgraphile peer on http://127.0.0.1:${env.PORT}/graphql`);
});
