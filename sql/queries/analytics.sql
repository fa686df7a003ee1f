-- The analytics read queries (docs/analytics.md defines every figure). Each takes arrays, one
-- element per DataLoader key, so a request for 100 users' figures is one statement: a request's
-- figures of every kind come from `analytics_figures`, which includes the three parts (overview,
-- daily series, productivity extras) that the per-kind statements run alone. Local days use
-- the user's timezone: the local day of `ts` is `(ts at time zone u.timezone)::date`, the first
-- instant of local day `d` is `(d::timestamp at time zone u.timezone)`, and today is
-- `(now() at time zone u.timezone)::date`.
-- Predicates are written `deleted = false` so that the planner matches the partial indexes.

-- name: analytics_users
-- The users behind a batch of ids, with their local today by the database's clock (resolvers
-- derive default ranges from it, so that a request and its SQL agree on what "today" is), and
-- the data version that keys their cached figures (docs/cache.md). The caller's account row of
-- every request (gateway/http/identity.py). The ids are read through a MATERIALIZED CTE, like
-- analytics_figures' arguments: the plan then does not depend on how many there are, and the
-- plan cache keeps one generic plan instead of planning every call (planning cost twice the
-- execution of this one index probe).
-- $1: user ids. Missing users are simply absent.
with args as materialized (select $1::uuid[] as ids)
select u.id, u.email, u.display_name, u.timezone, u.daily_goal, u.role, u.created_at,
       u.data_version, (now() at time zone u.timezone)::date as today
from args a
join users u on u.id = any(a.ids);

-- name: analytics_users_page
-- One page of the admin `users` connection, in (created_at, id) order after a cursor.
-- $1: cursor created_at (null = from the start), $2: cursor id, $3: page size + 1.
select u.id, u.email, u.display_name, u.timezone, u.daily_goal, u.role, u.created_at,
       u.data_version, (now() at time zone u.timezone)::date as today
from users u
where $1::timestamptz is null or (u.created_at, u.id) > ($1::timestamptz, $2::uuid)
order by u.created_at, u.id
limit $3;

-- name: analytics_overview_part
-- FRAGMENT, not run alone: included by analytics_overview and analytics_figures. The overview
-- counts of all of each user's tasks, for a CTE `overview_keys(k, user_id)` defined by the
-- including query; one row per key whose user exists: (k, user_id, total, done, todo,
-- in_progress, overdue, due_today, high, medium, low). Per user, one index-only scan of
-- idx_tasks_user_id (user_id) include (status, priority, due_date) where deleted = false.
-- The user's local today is computed once per key in a MATERIALIZED CTE: written inline, the
-- planner put `now() at time zone` into the filters, evaluated for every task row (40 % of
-- the overview's time).
with keys as materialized (
    select o.k, u.id as user_id, (now() at time zone u.timezone)::date as today
    from overview_keys o
    join users u on u.id = o.user_id
)
select k.k, k.user_id,
       s.total, s.done, s.todo, s.in_progress, s.overdue, s.due_today, s.high, s.medium, s.low
from keys k
cross join lateral (
    select count(*) as total,
           count(*) filter (where t.status = 'done') as done,
           count(*) filter (where t.status = 'todo') as todo,
           count(*) filter (where t.status = 'in_progress') as in_progress,
           count(*) filter (where t.status <> 'done' and t.due_date < k.today) as overdue,
           count(*) filter (where t.status <> 'done' and t.due_date = k.today) as due_today,
           count(*) filter (where t.priority = 'high') as high,
           count(*) filter (where t.priority = 'medium') as medium,
           count(*) filter (where t.priority = 'low') as low
    from tasks t
    where t.user_id = k.user_id and t.deleted = false
) s

-- name: analytics_overview
-- Overview counts of all of each user's tasks (analytics_overview_part).
-- $1: user ids. Returns one row per existing user; k is the user's 1-based position in $1.
with overview_keys as (
    select o.k, o.user_id from unnest($1::uuid[]) with ordinality as o(user_id, k)
),
overview as (
    -- include: analytics_overview_part
)
select * from overview;

-- name: analytics_live_days
-- FRAGMENT, not run alone: included (`-- include: analytics_live_days`) by
-- analytics_daily_series_part and rollup_aggregate, so that the live figures and the rollup
-- share one definition of a day.
-- Reads a CTE `live(k, user_id, timezone, lo, hi)` defined by the including query: the local
-- day intervals [lo, hi] to compute from `tasks` for key k. Returns the sparse non-zero days:
-- (k, day, tasks_created, tasks_completed, tasks_due, tasks_completed_on_time, half_points),
-- half_points being twice the day's productivity points (an integer: points are multiples of
-- 0.5). Three index range scans per interval, all index-only: created (idx_tasks_created_at),
-- completed (idx_tasks_user_completed), due (idx_tasks_user_due_all).
select e.k, e.day,
       sum(e.created)::int as tasks_created,
       sum(e.completed)::int as tasks_completed,
       sum(e.due)::int as tasks_due,
       sum(e.on_time)::int as tasks_completed_on_time,
       sum(e.half_points)::int as half_points
from (
    select l.k, (t.created_at at time zone l.timezone)::date as day,
           1 as created, 0 as completed, 0 as due, 0 as on_time, 0 as half_points
    from live l
    join tasks t on t.user_id = l.user_id and t.deleted = false
        and t.created_at >= (l.lo::timestamp at time zone l.timezone)
        and t.created_at < ((l.hi + 1)::timestamp at time zone l.timezone)
    union all
    select l.k, (t.completed_at at time zone l.timezone)::date,
           0, 1, 0, 0,
           (case t.priority when 'high' then 3 when 'medium' then 2 else 1 end)
           * (case when t.due_date is null
                     or (t.completed_at at time zone l.timezone)::date <= t.due_date
                   then 2 else 1 end)
    from live l
    join tasks t on t.user_id = l.user_id and t.status = 'done' and t.deleted = false
        and t.completed_at >= (l.lo::timestamp at time zone l.timezone)
        and t.completed_at < ((l.hi + 1)::timestamp at time zone l.timezone)
    union all
    select l.k, t.due_date,
           0, 0, 1,
           (t.status = 'done'
            and (t.completed_at at time zone l.timezone)::date <= t.due_date)::int,
           0
    from live l
    join tasks t on t.user_id = l.user_id and t.deleted = false and t.due_date is not null
        and t.due_date >= l.lo and t.due_date <= l.hi
) e
group by e.k, e.day

-- name: analytics_daily_series_part
-- FRAGMENT, not run alone: included by analytics_daily_series and analytics_figures. The per-day
-- figures of each key of a CTE `series_keys(k, user_id, d_from, d_to)` defined by the including
-- query: sparse rows (k, day, tasks_created, tasks_completed, tasks_due, tasks_completed_on_time,
-- half_points), days without activity absent, in no particular order. Days inside the user's
-- rollup_coverage that are not stale come from daily_analytics (a covered day without a row had
-- no activity); every other day (before or after the coverage, stale, and always today) is
-- computed live from tasks by analytics_live_days. Exact either way.
with keys as (
    select s.k, s.user_id, s.d_from, s.d_to, u.timezone,
           -- (greatest and least ignore nulls: a user never covered has no covered part)
           case when rc.user_id is not null then greatest(s.d_from, rc.covered_from) end
               as c_from,
           case when rc.user_id is not null then least(s.d_to, rc.covered_through) end as c_to
    from series_keys s
    join users u on u.id = s.user_id
    left join rollup_coverage rc on rc.user_id = s.user_id
),
-- The rollup rows of each key's covered days, fresh or stale: one range scan of the primary
-- key (user_id, date) per key. Stale ones are recomputed live below; reading them here, rather
-- than through idx_daily_analytics_stale, keeps the cost per key whatever other users left
-- stale (the planner, expecting few stale rows, scanned that whole index otherwise).
rolled as (
    select c.k, c.user_id, c.timezone, d.date, d.stale, d.tasks_created, d.tasks_completed,
           d.tasks_due, d.tasks_completed_on_time, d.productivity_points
    from keys c
    join daily_analytics d on d.user_id = c.user_id and d.date between c.c_from and c.c_to
),
live (k, user_id, timezone, lo, hi) as (
    select k, user_id, timezone, d_from, d_to from keys
    where not coalesce(c_from <= c_to, false)
    union all
    select k, user_id, timezone, d_from, c_from - 1 from keys
    where c_from <= c_to and d_from < c_from
    union all
    select k, user_id, timezone, c_to + 1, d_to from keys
    where c_from <= c_to and c_to < d_to
    union all
    select k, user_id, timezone, date, date from rolled where stale
),
live_days as (
    -- include: analytics_live_days
)
select k, day, tasks_created, tasks_completed, tasks_due, tasks_completed_on_time, half_points
from live_days
union all
select k, date, tasks_created, tasks_completed, tasks_due, tasks_completed_on_time,
       (productivity_points * 2)::int
from rolled
where not stale

-- name: analytics_daily_series
-- The per-day figures of each key (user, from, to) (analytics_daily_series_part), by key and day.
-- $1: user ids, $2: from dates, $3: to dates (one element per key; k is the 1-based position).
with series_keys as (
    select i.k, i.user_id, i.d_from, i.d_to
    from unnest($1::uuid[], $2::date[], $3::date[]) with ordinality as i(user_id, d_from, d_to, k)
),
series as (
    -- include: analytics_daily_series_part
)
select * from series order by k, day;

-- name: analytics_productivity_part
-- FRAGMENT, not run alone: included by analytics_productivity_extras and analytics_figures. The
-- productivity figures that need the raw completions, for each key of a CTE
-- `extras_keys(k, user_id, d_from, d_to)` defined by the including query: lead and cycle times,
-- completions by local weekday and hour over the key's range, and the completion streaks over
-- all history. One row per key whose user exists: (k, completed, lead_seconds, cycle_count,
-- cycle_seconds, weekdays, hours, longest_streak, current_streak); the range's columns are null
-- (completed null) when nothing was completed in it. Sums of seconds are exact numerics; Python
-- divides and rounds. Weekday is ISO (1 = Monday).
with keys as (
    select x.k, x.user_id, x.d_from, x.d_to, u.timezone,
           (now() at time zone u.timezone)::date as today
    from extras_keys x
    join users u on u.id = x.user_id
),
-- The range's completions: one range scan of idx_tasks_user_completed per key.
done_in_range as (
    select k.k, t.id, t.created_at, t.completed_at,
           (t.completed_at at time zone k.timezone) as local_completed
    from keys k
    join tasks t on t.user_id = k.user_id and t.status = 'done' and t.deleted = false
        and t.completed_at >= (k.d_from::timestamp at time zone k.timezone)
        and t.completed_at < ((k.d_to + 1)::timestamp at time zone k.timezone)
),
-- Each of them with its first move to in_progress: one probe of idx_task_events_task per task.
ranged as (
    select d.k,
           count(*) as completed,
           sum(extract(epoch from d.completed_at - d.created_at)) as lead_seconds,
           count(s.started) as cycle_count,
           sum(extract(epoch from d.completed_at - s.started)) as cycle_seconds,
           array_agg(extract(isodow from d.local_completed)::int) as weekdays,
           array_agg(extract(hour from d.local_completed)::int) as hours
    from done_in_range d
    left join lateral (
        select min(e.at) as started
        from task_events e
        where e.task_id = d.id and e.to_status = 'in_progress'
    ) s on true
    group by d.k
),
-- The local day of every completion up to today: one index-only scan of
-- idx_tasks_user_completed per key (5 pages for a user's 120 completions on the bench data,
-- where the rollup's rows of the same user's year are 244 pages: daily_analytics has a row for
-- every day with any activity, its index does not hold tasks_completed, and its stale and
-- uncovered days would have to be computed live anyway).
completion_days as (
    select k.k, k.today, (t.completed_at at time zone k.timezone)::date as day
    from keys k
    join tasks t on t.user_id = k.user_id and t.status = 'done' and t.deleted = false
        and t.completed_at < ((k.today + 1)::timestamp at time zone k.timezone)
),
-- Runs of consecutive days: day - (its rank among the key's distinct days) is the same along a
-- run (dense_rank: several completions of one day share a rank, no DISTINCT needed).
runs as (
    select k, today, min(day) as first_day, max(day) as last_day
    from (select c.*, c.day - (dense_rank() over (partition by c.k order by c.day))::int as grp
          from completion_days c) g
    group by k, today, grp
),
streaks as (
    select k,
           max(last_day - first_day + 1) as longest,
           coalesce(max(last_day - first_day + 1)
                    filter (where last_day >= today - 1), 0) as current
    from runs
    group by k
)
select k.k, r.completed, r.lead_seconds, r.cycle_count, r.cycle_seconds, r.weekdays, r.hours,
       coalesce(s.longest, 0) as longest_streak, coalesce(s.current, 0) as current_streak
from keys k
left join ranged r on r.k = k.k
left join streaks s on s.k = k.k

-- name: analytics_productivity_extras
-- The productivity figures that need the raw completions (analytics_productivity_part).
-- $1: user ids, $2: from dates, $3: to dates (k is the 1-based position).
with extras_keys as (
    select i.k, i.user_id, i.d_from, i.d_to
    from unnest($1::uuid[], $2::date[], $3::date[]) with ordinality as i(user_id, d_from, d_to, k)
),
extras as (
    -- include: analytics_productivity_part
)
select * from extras;

-- name: analytics_figures
-- The figures of every kind that one request's loaders ask for in one event-loop tick, in ONE
-- statement (loaders/cached.py: FigureBatch): the three parts above, each given its own keys
-- (an empty array costs nothing), the rows tagged with their part and ordered by part, key, day.
-- $1: overview user ids; $2, $3, $4: daily series user ids, from dates, to dates; $5, $6, $7:
-- productivity extras user ids, from dates, to dates; $8: user ids whose data version to read
-- too (live pushes: the version this statement's figures are exactly those of, since one
-- statement reads one snapshot). k is the 1-based position in its part's arrays. Columns a
-- part does not fill are null:
--   part 1 (analytics_overview_part): k, total .. low;
--   part 2 (analytics_daily_series_part): k, day, tasks_created .. half_points;
--   part 3 (analytics_productivity_part): k, completed .. current_streak;
--   part 4: k, data_version (one row per existing user).
-- The arguments are read through a MATERIALIZED CTE so that the planner cannot see the arrays'
-- lengths: every call then has the same estimates (10 keys per part), PostgreSQL's plan cache
-- settles on one generic plan per connection after five executions, and a call pays no planning
-- (which cost more than the execution when each call was planned for its own arguments).
with args as materialized (
    select $1::uuid[] as overview_ids,
           $2::uuid[] as series_ids, $3::date[] as series_from, $4::date[] as series_to,
           $5::uuid[] as extras_ids, $6::date[] as extras_from, $7::date[] as extras_to,
           $8::uuid[] as version_ids
),
overview_keys as (
    select o.k, o.user_id
    from args a
    cross join unnest(a.overview_ids) with ordinality as o(user_id, k)
),
series_keys as (
    select i.k, i.user_id, i.d_from, i.d_to
    from args a
    cross join unnest(a.series_ids, a.series_from, a.series_to)
        with ordinality as i(user_id, d_from, d_to, k)
),
extras_keys as (
    select i.k, i.user_id, i.d_from, i.d_to
    from args a
    cross join unnest(a.extras_ids, a.extras_from, a.extras_to)
        with ordinality as i(user_id, d_from, d_to, k)
),
overview as (
    -- include: analytics_overview_part
),
series as (
    -- include: analytics_daily_series_part
),
extras as (
    -- include: analytics_productivity_part
),
versions as (
    select v.k, u.data_version
    from args a
    cross join unnest(a.version_ids) with ordinality as v(user_id, k)
    join users u on u.id = v.user_id
)
select 1 as part, k, null::date as day,
       total, done, todo, in_progress, overdue, due_today, high, medium, low,
       null::int as tasks_created, null::int as tasks_completed, null::int as tasks_due,
       null::int as tasks_completed_on_time, null::int as half_points,
       null::bigint as completed, null::numeric as lead_seconds, null::bigint as cycle_count,
       null::numeric as cycle_seconds, null::int[] as weekdays, null::int[] as hours,
       null::int as longest_streak, null::int as current_streak, null::bigint as data_version
from overview
union all
select 2, k, day,
       null, null, null, null, null, null, null, null, null,
       tasks_created, tasks_completed, tasks_due, tasks_completed_on_time, half_points,
       null, null, null, null, null, null, null, null, null
from series
union all
select 3, k, null,
       null, null, null, null, null, null, null, null, null,
       null, null, null, null, null,
       completed, lead_seconds, cycle_count, cycle_seconds, weekdays, hours,
       longest_streak, current_streak, null
from extras
union all
select 4, k, null,
       null, null, null, null, null, null, null, null, null,
       null, null, null, null, null,
       null, null, null, null, null, null, null, null, data_version
from versions
order by part, k, day;
