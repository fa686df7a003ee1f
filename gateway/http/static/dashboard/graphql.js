// GraphQL over HTTP: one POST to /graphql of this origin, the documents the dashboard sends, and
// the figures' selection shared by the query (HTTP fallback) and the subscription.

export const ENDPOINT = new URL("/graphql", window.location.origin).href;

/** The URL of the subscriptions' WebSocket: the same path, ws: or wss: like the page. */
export function websocketUrl() {
  const url = new URL(ENDPOINT);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

const FIGURES = `
  overview {
    totalTasks completedTasks pendingTasks inProgressTasks
    overdueTasks dueTodayTasks completionRate
  }
  trends(period: $period, from: $from, to: $to) {
    period from to
    points {
      date tasksCreated tasksCompleted tasksDue tasksCompletedOnTime
      completionRate productivityScore
    }
  }
  productivity(from: $from, to: $to) {
    from to score tasksCompleted averageTasksPerDay currentStreak longestStreak
    daysGoalMet onTimeRate leadTimeHours mostProductiveWeekday
  }`;

/** Pushed at once and on every change: `{ dashboard: { overview, trends, productivity } }`. */
export const LIVE = `subscription Dashboard($period: Period!, $from: Date, $to: Date) {
  dashboard {${FIGURES}
  }
}`;

/** The same figures once, over HTTP, while the WebSocket is not connected. */
export const ONCE = `query Dashboard($period: Period!, $from: Date, $to: Date) {${FIGURES}
}`;

const SESSION_FIELDS = "accessToken refreshToken expiresIn user { email displayName }";
export const LOGIN = `mutation Login($email: String!, $password: String!) {
  login(email: $email, password: $password) { ${SESSION_FIELDS} }
}`;
export const REFRESH = `mutation Refresh($refreshToken: String!) {
  refreshToken(refreshToken: $refreshToken) { ${SESSION_FIELDS} }
}`;
export const LOGOUT = `mutation Logout($refreshToken: String!) {
  logout(refreshToken: $refreshToken)
}`;

/** A GraphQL answer's errors (or a transport failure), with the first error's code. */
export class GraphQLError extends Error {
  constructor(errors) {
    super(errors.map((error) => error.message).join("; ") || "Request failed");
    this.name = "GraphQLError";
    this.errors = errors;
    this.code = errors[0]?.extensions?.code ?? null;
  }
}

/** POST a document; resolves to `data`, rejects with a GraphQLError (code NETWORK_ERROR when the
 * server could not be reached or did not answer GraphQL). */
export async function request(query, variables = {}, token = null) {
  const headers = {
    "content-type": "application/json",
    accept: "application/graphql-response+json, application/json",
  };
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(ENDPOINT, {
      method: "POST",
      headers,
      body: JSON.stringify({ query, variables }),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new GraphQLError([{ message: "The server cannot be reached",
                              extensions: { code: "NETWORK_ERROR" } }]);
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new GraphQLError([{ message: `The server answered ${response.status}`,
                              extensions: { code: "NETWORK_ERROR" } }]);
  }
  if (body.errors?.length) throw new GraphQLError(body.errors);
  return body.data;
}
