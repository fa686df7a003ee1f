-- The analytics read queries (docs/analytics.md defines every figure). Each takes arrays, one
-- element per DataLoader key, so a request for 100 users' figures is one statement per kind of
-- figure. Local days use the user's timezone: the local day of `ts` is
-- `(ts at time zone u.timezone)::date`, the first instant of local day `d` is
-- `(d::timestamp at time zone u.timezone)`, and today is `(now() at time zone u.timezone)::date`.
-- Predicates are written `deleted = false` so that the planner matches the partial indexes.

-- name: analytics_users
-- The users behind a batch of ids, with their local today by the database's clock (resolvers
-- derive default ranges from it, so that a request and its SQL agree on what "today" is), and
-- the data version that keys their cached figures (docs/cache.md).
-- $1: user ids. Missing users are simply absent.
select u.id, u.email, u.display_name, u.timezone, u.daily_goal, u.role, u.created_at,
       u.data_version, (now() at time zone u.timezone)::date as today
from users u
where u.id = any($1::uuid[]);

-- name: analytics_users_page
-- One page of the admin `users` connection, in (created_at, id) order after a cursor.
-- $1: cursor created_at (null = from the start), $2: cursor id, $3: page size + 1.
select u.id, u.email, u.display_name, u.timezone, u.daily_goal, u.role, u.created_at,
       u.data_version, (now() at time zone u.timezone)::date as today
from users u
where $1::timestamptz is null or (u.created_at, u.id) > ($1::timestamptz, $2::uuid)
order by u.created_at, u.id
limit $3;

-- name: analytics_overview
-- Overview counts of all of each user's tasks: one index-only scan of idx_tasks_user_id
-- (user_id) include (status, priority, due_date) where deleted = false, per user.
-- $1: user ids. Returns one row per existing user.
select u.id as user_id,
       s.total, s.done, s.todo, s.in_progress, s.overdue, s.due_today, s.high, s.medium, s.low
from unnest($1::uuid[]) as k(user_id)
join users u on u.id = k.user_id
cross join lateral (select (now() at time zone u.timezone)::date as today) l
cross join lateral (
    select count(*) as total,
           count(*) filter (where t.status = 'done') as done,
           count(*) filter (where t.status = 'todo') as todo,
           count(*) filter (where t.status = 'in_progress') as in_progress,
           count(*) filter (where t.status <> 'done' and t.due_date < l.today) as overdue,
           count(*) filter (where t.status <> 'done' and t.due_date = l.today) as due_today,
           count(*) filter (where t.priority = 'high') as high,
           count(*) filter (where t.priority = 'medium') as medium,
           count(*) filter (where t.priority = 'low') as low
    from tasks t
    where t.user_id = u.id and t.deleted = false
) s;

-- name: analytics_live_days
-- FRAGMENT, not run alone: included (`-- include: analytics_live_days`) by analytics_daily_series
-- and rollup_aggregate, so that the live figures and the rollup share one definition of a day.
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

-- name: analytics_daily_series
-- The per-day figures of each key (user, from, to): sparse rows, days without activity absent.
-- Days inside the user's rollup_coverage that are not stale come from daily_analytics (a covered
-- day without a row had no activity); every other day (before or after the coverage, stale, and
-- always today) is computed live from tasks in this same statement. Exact either way.
-- $1: user ids, $2: from dates, $3: to dates (one element per key; k is the 1-based position).
with keys as (
    select i.k, i.user_id, i.d_from, i.d_to, u.timezone,
           -- (greatest and least ignore nulls: a user never covered has no covered part)
           case when rc.user_id is not null then greatest(i.d_from, rc.covered_from) end
               as c_from,
           case when rc.user_id is not null then least(i.d_to, rc.covered_through) end as c_to
    from unnest($1::uuid[], $2::date[], $3::date[]) with ordinality as i(user_id, d_from, d_to, k)
    join users u on u.id = i.user_id
    left join rollup_coverage rc on rc.user_id = i.user_id
),
covered as (
    select * from keys where c_from <= c_to
),
stale as (
    select c.k, c.user_id, c.timezone, d.date
    from covered c
    join daily_analytics d on d.user_id = c.user_id and d.date between c.c_from and c.c_to
        and d.stale
),
live (k, user_id, timezone, lo, hi) as (
    select k, user_id, timezone, d_from, d_to from keys where not coalesce(c_from <= c_to, false)
    union all
    select k, user_id, timezone, d_from, c_from - 1 from covered where d_from < c_from
    union all
    select k, user_id, timezone, c_to + 1, d_to from covered where c_to < d_to
    union all
    select k, user_id, timezone, date, date from stale
),
live_days as (
    -- include: analytics_live_days
)
select k, day, tasks_created, tasks_completed, tasks_due, tasks_completed_on_time, half_points
from live_days
union all
select c.k, d.date, d.tasks_created, d.tasks_completed, d.tasks_due, d.tasks_completed_on_time,
       (d.productivity_points * 2)::int
from covered c
join daily_analytics d on d.user_id = c.user_id and d.date between c.c_from and c.c_to
    and not d.stale
order by 1, 2;

-- name: analytics_productivity_extras
-- The productivity figures that need the raw completions: lead and cycle times, completions by
-- local weekday and hour over each key's range, and the completion streaks over all history.
-- Sums of seconds are exact numerics; Python divides and rounds. Weekday is ISO (1 = Monday).
-- $1: user ids, $2: from dates, $3: to dates (k is the 1-based position).
with keys as (
    select i.k, i.user_id, i.d_from, i.d_to, u.timezone,
           (now() at time zone u.timezone)::date as today
    from unnest($1::uuid[], $2::date[], $3::date[]) with ordinality as i(user_id, d_from, d_to, k)
    join users u on u.id = i.user_id
),
done_in_range as (
    select k.k, t.id, t.created_at, t.completed_at,
           (t.completed_at at time zone k.timezone) as local_completed
    from keys k
    join tasks t on t.user_id = k.user_id and t.status = 'done' and t.deleted = false
        and t.completed_at >= (k.d_from::timestamp at time zone k.timezone)
        and t.completed_at < ((k.d_to + 1)::timestamp at time zone k.timezone)
),
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
completion_days as (
    select distinct k.k, k.today, (t.completed_at at time zone k.timezone)::date as day
    from keys k
    join tasks t on t.user_id = k.user_id and t.status = 'done' and t.deleted = false
        and t.completed_at < ((k.today + 1)::timestamp at time zone k.timezone)
),
runs as (
    select k, today, min(day) as first_day, max(day) as last_day
    from (select c.*, c.day - (row_number() over (partition by c.k order by c.day))::int as grp
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
left join streaks s on s.k = k.k;
