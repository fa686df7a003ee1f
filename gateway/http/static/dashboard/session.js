// The signed-in session: the token pair in sessionStorage (this tab only, gone when it closes),
// refreshed with `refreshToken` before the access token expires, revoked with `logout`.
//
// Events (it is an EventTarget): "change" when signing in or out, "refreshed" with a new access
// token, "ended" (detail: a message) when the session could not be kept.

import { LOGIN, LOGOUT, REFRESH, request } from "./graphql.js";

const STORAGE_KEY = "analytics-dashboard:session";
const RETRY_MS = 10_000; // a refresh that could not reach the server is tried again after this

function load() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "null");
    if (saved?.accessToken && saved?.refreshToken && saved?.expiresAt) return saved;
  } catch {
    // A corrupt entry is the same as none.
  }
  return null;
}

/** How long before the access token's expiry to refresh it: a minute, or a quarter of a short
 * lifetime. */
function margin(lifetimeMs) {
  return Math.min(60_000, lifetimeMs / 4);
}

export class Session extends EventTarget {
  #state = load();
  #timer = null;
  #refreshing = null;

  constructor() {
    super();
    if (this.#state) this.#schedule();
    // Timers do not run while a laptop sleeps: check again when the tab is seen.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible" && this.#state) this.#schedule();
    });
  }

  get signedIn() {
    return this.#state !== null;
  }

  get accessToken() {
    return this.#state?.accessToken ?? null;
  }

  get user() {
    return this.#state?.user ?? null;
  }

  async signIn(email, password) {
    const data = await request(LOGIN, { email, password });
    this.#store(data.login);
    this.dispatchEvent(new Event("change"));
  }

  /** Trade the refresh token for a new pair; one at a time (a refresh token is single-use). */
  refresh() {
    this.#refreshing ??= this.#refresh().finally(() => {
      this.#refreshing = null;
    });
    return this.#refreshing;
  }

  async #refresh() {
    const state = this.#state;
    if (!state) return false;
    try {
      const data = await request(REFRESH, { refreshToken: state.refreshToken });
      if (this.#state !== state) return false; // signed out meanwhile
      this.#store(data.refreshToken);
      this.dispatchEvent(new Event("refreshed"));
      return true;
    } catch (error) {
      if (this.#state !== state) return false;
      if (error.code === "NETWORK_ERROR" && Date.now() < state.expiresAt) {
        this.#timer = setTimeout(() => this.refresh(), RETRY_MS);
        return false;
      }
      this.#end("Your session has ended: please sign in again.");
      return false;
    }
  }

  /** Revoke the refresh token's family and forget the tokens (even when the server is away). */
  async signOut() {
    const state = this.#state;
    this.#clear();
    this.dispatchEvent(new Event("change"));
    if (state) {
      try {
        await request(LOGOUT, { refreshToken: state.refreshToken }, state.accessToken);
      } catch {
        // Signed out here regardless; the refresh token expires on its own.
      }
    }
  }

  #store(payload) {
    const lifetimeMs = payload.expiresIn * 1000;
    this.#state = {
      accessToken: payload.accessToken,
      refreshToken: payload.refreshToken,
      expiresAt: Date.now() + lifetimeMs,
      lifetimeMs,
      user: payload.user ?? this.#state?.user ?? null,
    };
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(this.#state));
    this.#schedule();
  }

  #schedule() {
    clearTimeout(this.#timer);
    const { expiresAt, lifetimeMs } = this.#state;
    const delay = Math.max(0, expiresAt - margin(lifetimeMs) - Date.now());
    this.#timer = setTimeout(() => this.refresh(), delay);
  }

  #clear() {
    clearTimeout(this.#timer);
    this.#state = null;
    sessionStorage.removeItem(STORAGE_KEY);
  }

  #end(message) {
    this.#clear();
    this.dispatchEvent(new CustomEvent("ended", { detail: message }));
  }
}
