// Live figures over the `graphql-transport-ws` protocol, with the vendored graphql-ws client:
// `connection_init` carries {Authorization: "Bearer <access token>"}; pings every 15 s (a pong
// missing for 5 s drops the socket); lost connections are retried for ever with a randomised
// exponential back-off capped at 30 s. One subscription at a time: following new variables ends
// the previous one on the same socket.
//
// The server closes the socket with 4401 when the access token expires or is refused and 4403
// when the account is deleted: those are not retried but reported (`onClosedFor`), so that the
// page can refresh the token (and `restart`) or sign out.

import { createClient } from "./vendor.js";

const PING_MS = 15_000;
const PONG_TIMEOUT_MS = 5_000;
const MAX_BACKOFF_MS = 30_000;
const KEEP_SOCKET_MS = 3_000; // between one subscription's end and the next's start
export const UNAUTHORIZED = 4401;
export const FORBIDDEN = 4403;

/** Randomised exponential back-off: 1, 2, 4 … 30 s, each plus up to a second. */
export function backoffMs(retries) {
  return Math.min(MAX_BACKOFF_MS, 1000 * 2 ** retries) + Math.floor(Math.random() * 1000);
}

function isCloseEvent(value) {
  return value !== null && typeof value === "object" && typeof value.code === "number" &&
    "reason" in value;
}

export class LiveFeed {
  /**
   * @param {object} options
   * @param {string} options.url  ws(s)://host/graphql
   * @param {() => string | null} options.token  the current access token
   * @param {(state: string, detail?: string) => void} options.onStatus  connecting, live,
   *   reconnecting (detail: seconds to wait), offline, error (detail: why)
   * @param {(code: number) => void} options.onClosedFor  4401 or 4403 from the server
   */
  constructor({ url, token, onStatus, onClosedFor }) {
    this.url = url;
    this.token = token;
    this.onStatus = onStatus;
    this.onClosedFor = onClosedFor;
    this.client = null;
    this.current = null; // { query, variables, sink, dispose }
  }

  #createClient() {
    let pongTimer = null;
    const client = createClient({
      url: this.url,
      lazy: true,
      lazyCloseTimeout: KEEP_SOCKET_MS,
      keepAlive: PING_MS,
      retryAttempts: Infinity,
      connectionParams: () => ({ Authorization: `Bearer ${this.token() ?? ""}` }),
      shouldRetry: (event) => isCloseEvent(event) &&
        event.code !== UNAUTHORIZED && event.code !== FORBIDDEN,
      retryWait: async (retries) => {
        const wait = backoffMs(retries);
        this.onStatus("reconnecting", String(Math.round(wait / 1000)));
        await new Promise((resolve) => setTimeout(resolve, wait));
      },
      on: {
        connecting: (isRetry) => {
          if (client === this.client) this.onStatus(isRetry ? "reconnecting" : "connecting");
        },
        connected: () => {
          if (client === this.client) this.onStatus("live");
        },
        ping: (received) => {
          if (!received) pongTimer = setTimeout(() => client.terminate(), PONG_TIMEOUT_MS);
        },
        pong: (received) => {
          if (received) clearTimeout(pongTimer);
        },
        closed: (event) => {
          clearTimeout(pongTimer);
          if (client !== this.client) return; // a client we replaced
          if (isCloseEvent(event) && (event.code === UNAUTHORIZED || event.code === FORBIDDEN)) {
            this.onClosedFor(event.code);
          } else if (this.current) {
            this.onStatus("reconnecting");
            this.current.sink.closed?.();
          }
        },
      },
    });
    return client;
  }

  /** Follow `query` with `variables`: `sink.next(payload)` for each event, `sink.error(errors)`
   * for GraphQL errors (the subscription has ended), `sink.closed()` when the socket drops. */
  follow(query, variables, sink) {
    this.current?.dispose();
    this.client ??= this.#createClient();
    const current = { query, variables, sink, dispose: () => {} };
    current.dispose = this.client.subscribe({ query, variables }, {
      next: (payload) => {
        if (this.current === current) sink.next(payload);
      },
      error: (error) => {
        if (this.current !== current) return;
        if (Array.isArray(error)) sink.error(error);
        else if (!isCloseEvent(error)) {
          this.onStatus("error", error?.message ?? String(error));
        }
        // 4401/4403 closes are reported by the `closed` listener.
      },
      complete: () => {},
    });
    this.current = current;
  }

  /** A new connection (with the current token) and the same subscription on it. */
  restart() {
    const current = this.current;
    this.#dropClient();
    if (current) this.follow(current.query, current.variables, current.sink);
  }

  /** End the subscription and close the socket. */
  stop() {
    this.current?.dispose();
    this.current = null;
    this.#dropClient();
    this.onStatus("offline");
  }

  #dropClient() {
    const client = this.client;
    this.client = null;
    if (client) client.dispose();
  }
}
