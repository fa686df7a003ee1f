// The example dashboard: sign in, then follow the `dashboard` subscription for the period and
// dates chosen; figures arrive at once and whenever they change. While the WebSocket is not
// connected the figures are loaded once over HTTP, so the page is never blank.

import { LIVE, ONCE, request, websocketUrl } from "./graphql.js";
import { FORBIDDEN, LiveFeed } from "./live.js";
import { Session } from "./session.js";
import { TrendChart } from "./chart.js";
import { FiguresView } from "./view.js";

const $ = (selector) => document.querySelector(selector);
const DATE_DEBOUNCE_MS = 300; // typing a date changes it once per segment

const STATUS_TEXT = {
  offline: () => "Not signed in",
  connecting: () => "Connecting…",
  live: () => "Live",
  reconnecting: (seconds) => seconds ? `Reconnecting in ${seconds} s…` : "Reconnecting…",
  error: (why) => `Not live: ${why}`,
};

const session = new Session();
const view = new FiguresView(document, new TrendChart($("#chart")));
const feed = new LiveFeed({
  url: websocketUrl(),
  token: () => session.accessToken,
  onStatus: showStatus,
  onClosedFor: async (code) => {
    if (code === FORBIDDEN) {
      await session.signOut();
      $("#sign-in-error").textContent = "This account no longer exists.";
    } else if (await session.refresh()) {
      // "refreshed" restarts the feed with the new token.
    } else if (session.signedIn) {
      showStatus("error", "the session could not be renewed");
    }
  },
});
let following = null; // the variables of the subscription followed, and whether it answered

function showStatus(state, detail) {
  const status = $("#connection");
  status.dataset.state = state;
  $("#connection-text").textContent = STATUS_TEXT[state](detail);
}

// --- signing in and out ------------------------------------------------------------------

function prefillInDevelopment() {
  const email = document.querySelector('meta[name="dashboard:demo-email"]')?.content;
  const password = document.querySelector('meta[name="dashboard:demo-password"]')?.content;
  if (email && !$("#email").value) $("#email").value = email;
  if (email && password) {
    const hint = $("#demo-hint");
    hint.textContent = `Development: the demo user ${email} has the password "${password}".`;
    hint.hidden = false;
  }
}

function fieldError(input, message) {
  input.setAttribute("aria-invalid", "true");
  $("#sign-in-error").textContent = message;
  input.focus();
}

async function onSignIn(event) {
  event.preventDefault();
  const email = $("#email");
  const password = $("#password");
  for (const input of [email, password]) input.removeAttribute("aria-invalid");
  $("#sign-in-error").textContent = "";
  if (!email.value.trim()) return fieldError(email, "Enter your e-mail address.");
  if (!password.value) return fieldError(password, "Enter your password.");
  const button = $("#sign-in-button");
  button.disabled = true;
  button.textContent = "Signing in…";
  try {
    await session.signIn(email.value.trim(), password.value);
    password.value = "";
  } catch (error) {
    const message = error.code === "NETWORK_ERROR" ? "The server cannot be reached." : error.message;
    fieldError(password, message || "Signing in failed.");
  } finally {
    button.disabled = false;
    button.textContent = "Sign in";
  }
}

function signedIn() {
  $("#sign-in").hidden = true;
  $("#dashboard").hidden = false;
  $("#account").hidden = false;
  $("#account-name").textContent = session.user?.displayName || session.user?.email || "";
  follow();
}

function signedOut(message = "", { focus = true } = {}) {
  feed.stop();
  following = null;
  view.clear();
  $("#live-error").textContent = "";
  $("#dashboard").hidden = true;
  $("#account").hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = message;
  prefillInDevelopment();
  if (focus) $("#email").focus();
}

// --- what to follow ----------------------------------------------------------------------

/** The controls' variables, or null (with the reason shown) when the dates are not a range. */
function variables() {
  const period = document.querySelector('input[name="period"]:checked').value;
  const from = $("#from").value || null;
  const to = $("#to").value || null;
  const error = $("#controls-error");
  for (const input of [$("#from"), $("#to")]) input.removeAttribute("aria-invalid");
  if (from && to && from > to) {
    error.textContent = "The first day comes after the last: change one of the dates.";
    $("#to").setAttribute("aria-invalid", "true");
    return null;
  }
  error.textContent = "";
  return { period, from, to };
}

function follow() {
  const chosen = variables();
  if (chosen === null || !session.signedIn) return;
  const current = { variables: chosen, answered: false, fallback: false };
  following = current;
  feed.follow(LIVE, chosen, {
    next: (payload) => {
      if (payload.errors?.length) return showErrors(payload.errors);
      current.answered = true;
      $("#live-error").textContent = "";
      view.render(payload.data.dashboard);
    },
    error: showErrors,
    closed: () => loadOnce(current),
  });
}

/** The figures over HTTP, once per subscription that has not answered yet. */
async function loadOnce(current) {
  if (current.answered || current.fallback || following !== current) return;
  current.fallback = true;
  try {
    const data = await request(ONCE, current.variables, session.accessToken);
    if (following === current && !current.answered) view.render(data);
  } catch (error) {
    if (following === current) showErrors(error.errors ?? [error]);
  }
}

function showErrors(errors) {
  const codes = new Set(errors.map((error) => error.extensions?.code));
  if (codes.has("UNAUTHENTICATED")) {
    session.refresh();
    return;
  }
  $("#live-error").textContent = errors.map((error) => error.message).join(" ");
}

let dateTimer = null;
function onControlsChange(event) {
  clearTimeout(dateTimer);
  if (event.target.type === "date") dateTimer = setTimeout(follow, DATE_DEBOUNCE_MS);
  else follow();
}

// --- wiring ------------------------------------------------------------------------------

$("#sign-in-form").addEventListener("submit", onSignIn);
$("#sign-out").addEventListener("click", () => session.signOut());
$("#controls").addEventListener("change", onControlsChange);
$("#controls").addEventListener("submit", (event) => event.preventDefault());
$("#clear-range").addEventListener("click", () => {
  $("#from").value = "";
  $("#to").value = "";
  follow();
});
session.addEventListener("change", () => {
  if (session.signedIn) {
    signedIn();
    $("#dashboard-title").focus();
  } else {
    signedOut();
  }
});
session.addEventListener("refreshed", () => feed.restart());
session.addEventListener("ended", (event) => signedOut(event.detail));

if (session.signedIn) {
  signedIn();
} else {
  signedOut("", { focus: false }); // no focus moved on arrival: the page reads from the top
}
