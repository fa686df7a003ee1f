-- wrk script of `make bench`: POST GraphQL bodies as random users, and count GraphQL errors.
--
-- Arguments (after `--`): MODE DIR
--   MODE read: every request is DIR/read.json as a random user of DIR/tokens.txt
--   MODE mix:  60% read.json, 20% create.json, 20% complete.json (its __TASK__ replaced by an
--              open task of the same user), each as a random user
-- DIR/tokens.txt has one line per user: "<access token> [<open task id>]".
-- done() prints one line "BENCH_JSON {...}" that bench/run.py parses.

local threads = {}
local tokens, tasks, bodies = {}, {}, {}
local mode
graphql_errors = 0 -- a global, so that done() can read it from each thread

local function read_file(path)
  local f = assert(io.open(path, "r"))
  local s = f:read("*a")
  f:close()
  return s
end

function setup(thread)
  thread:set("thread_number", #threads + 1)
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  local dir = args[2]
  math.randomseed(os.time() * 1000 + (thread_number or 0) * 7919)
  for line in io.lines(dir .. "/tokens.txt") do
    local token, task = line:match("^(%S+)%s*(%S*)")
    if token then
      tokens[#tokens + 1] = token
      tasks[#tasks + 1] = task
    end
  end
  bodies.read = read_file(dir .. "/read.json")
  if mode == "mix" then
    bodies.create = read_file(dir .. "/create.json")
    bodies.complete = read_file(dir .. "/complete.json")
  end
end

function request()
  local i = math.random(#tokens)
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. tokens[i],
  }
  local body = bodies.read
  if mode == "mix" then
    local roll = math.random()
    if roll < 0.2 then
      body = bodies.create
    elseif roll < 0.4 and tasks[i] ~= "" then
      body = bodies.complete:gsub("__TASK__", tasks[i])
    end
  end
  return wrk.format("POST", nil, headers, body)
end

function response(status, headers, body)
  if status == 200 and body and body:find('"errors"', 1, true) then
    graphql_errors = graphql_errors + 1
  end
end

function done(summary, latency, requests)
  local errors = 0
  for _, thread in ipairs(threads) do
    errors = errors + (thread:get("graphql_errors") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "graphql_errors": %d, "p50": %d, "p95": %d, "p99": %d, ' ..
    '"max": %d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    errors, latency:percentile(50), latency:percentile(95), latency:percentile(99),
    latency.max))
end
