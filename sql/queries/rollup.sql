-- The rollup: daily_analytics rows and the rollup_coverage watermark (workers/aggregation.py).
-- The per-day figures come from the same fragment as the live reads (analytics_live_days), so the
-- rollup and the live path cannot disagree about what a day is.

-- name: rollup_lock_users
-- Taken first in each aggregation transaction: FOR SHARE on the batch's users rows. A task
-- mutation takes FOR NO KEY UPDATE on its user's row in mark_days_stale (rollup_lock_user), so a
-- mutation that marks days stale and an aggregation of that user never interleave: whichever
-- comes second sees the other's committed rows.
-- $1: user ids.
select u.id from users u where u.id = any($1::uuid[]) order by u.id for share;

-- name: rollup_lock_user
-- mark_days_stale's lock of one user's row (see rollup_lock_users). $1: user id.
select u.id from users u where u.id = $1 for no key update;

-- name: rollup_aggregate
-- Aggregate the local days [lo, hi] of each user, clamped to the user's local yesterday (only
-- closed days are rolled up): upsert one row per day with activity (clearing `stale`), delete the
-- rows of days in range that no longer have any, and extend rollup_coverage (merged when
-- overlapping or adjacent; when a gap would result, the later interval is kept).
-- $1: user ids, $2: lo per user (null = the user's first task day, created or due),
-- $3: hi per user (null = the user's local yesterday). Returns the number of rows written
-- (inserted, or updated because their figures or `stale` changed).
with bounds as (
    select i.user_id, u.timezone, u.daily_goal,
           coalesce(i.lo, least(
               (select (min(t.created_at) at time zone u.timezone)::date
                from tasks t where t.user_id = u.id and t.deleted = false),
               (select min(t.due_date)
                from tasks t where t.user_id = u.id and t.deleted = false
                    and t.due_date is not null))) as lo,
           least(coalesce(i.hi, y.yesterday), y.yesterday) as hi
    from unnest($1::uuid[], $2::date[], $3::date[]) as i(user_id, lo, hi)
    join users u on u.id = i.user_id
    cross join lateral (select (now() at time zone u.timezone)::date - 1 as yesterday) y
),
live (k, user_id, timezone, lo, hi) as (
    select row_number() over (order by user_id), user_id, timezone, lo, hi
    from bounds
    where lo <= hi
),
live_days as (
    -- include: analytics_live_days
),
written as (
    insert into daily_analytics as d (
        user_id, date, tasks_created, tasks_completed, tasks_due, tasks_completed_on_time,
        completion_rate, productivity_score, productivity_points, stale, computed_at)
    select l.user_id, x.day, x.tasks_created, x.tasks_completed, x.tasks_due,
           x.tasks_completed_on_time,
           round(100.0 * x.tasks_completed_on_time / nullif(x.tasks_due, 0), 1),
           least(100, round(100.0 * x.half_points / (4 * b.daily_goal), 1)),
           x.half_points / 2.0, false, now()
    from live_days x
    join live l on l.k = x.k
    join bounds b on b.user_id = l.user_id
    on conflict (user_id, date) do update set
        tasks_created = excluded.tasks_created,
        tasks_completed = excluded.tasks_completed,
        tasks_due = excluded.tasks_due,
        tasks_completed_on_time = excluded.tasks_completed_on_time,
        completion_rate = excluded.completion_rate,
        productivity_score = excluded.productivity_score,
        productivity_points = excluded.productivity_points,
        stale = false,
        computed_at = excluded.computed_at
    -- A day whose figures did not change is not rewritten: a re-run writes nothing.
    where d.stale
        or (d.tasks_created, d.tasks_completed, d.tasks_due, d.tasks_completed_on_time,
            d.productivity_points, d.productivity_score)
           is distinct from
           (excluded.tasks_created, excluded.tasks_completed, excluded.tasks_due,
            excluded.tasks_completed_on_time, excluded.productivity_points,
            excluded.productivity_score)
    returning 1
),
emptied as (
    delete from daily_analytics d
    using live l
    where d.user_id = l.user_id and d.date between l.lo and l.hi
        and not exists (select 1 from live_days x where x.k = l.k and x.day = d.date)
    returning 1
),
covered as (
    insert into rollup_coverage as c (user_id, covered_from, covered_through, updated_at)
    select user_id, lo, hi, now() from live
    on conflict (user_id) do update set
        covered_from = case
            when excluded.covered_from <= c.covered_through + 1
                 and excluded.covered_through >= c.covered_from - 1
                then least(c.covered_from, excluded.covered_from)
            when excluded.covered_from > c.covered_through then excluded.covered_from
            else c.covered_from end,
        covered_through = case
            when excluded.covered_from <= c.covered_through + 1
                 and excluded.covered_through >= c.covered_from - 1
                then greatest(c.covered_through, excluded.covered_through)
            when excluded.covered_from > c.covered_through then excluded.covered_through
            else c.covered_through end,
        updated_at = now()
    returning 1
)
select (select count(*) from written) as written,
       (select count(*) from emptied) as emptied,
       (select count(*) from covered) as covered;

-- name: rollup_users_page
-- A page of users for the nightly catch-up, in id order after $1 (null = from the start), with
-- the first day each still needs: covered_through + 1, or the local yesterday when never covered.
-- $1: last id of the previous page, $2: page size.
select u.id,
       coalesce(rc.covered_through + 1, (now() at time zone u.timezone)::date - 1) as lo
from users u
left join rollup_coverage rc on rc.user_id = u.id
where $1::uuid is null or u.id > $1::uuid
order by u.id
limit $2;

-- name: rollup_stale_ranges
-- Users with stale rollup days and the span of those days. $1: user ids (null = all users).
select user_id, min(date) as lo, max(date) as hi
from daily_analytics
where stale and ($1::uuid[] is null or user_id = any($1::uuid[]))
group by user_id
order by user_id;

-- name: rollup_mark_stale
-- Mark the given local days of one user stale, for the days inside the user's coverage (a day
-- outside it is computed live anyway). A covered day without a row gets a zero row marked stale.
-- $1: user id, $2: days.
insert into daily_analytics as d (user_id, date, stale)
select c.user_id, x.day, true
from rollup_coverage c
cross join unnest($2::date[]) as x(day)
where c.user_id = $1 and x.day between c.covered_from and c.covered_through
on conflict (user_id, date) do update set stale = true;
