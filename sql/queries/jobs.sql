-- Queries of the arq jobs (workers/jobs.py). The aggregation itself is in workers/aggregation.py.

-- name: refresh_user_task_stats
-- CONCURRENTLY keeps the old contents readable while the new ones are built (needs the view's
-- unique index, idx_user_task_stats_user_id). Refreshes of one view queue behind each other.
refresh materialized view concurrently user_task_stats

-- name: refresh_user_priority_distribution
-- As above; unique index idx_user_priority_dist_user_id.
refresh materialized view concurrently user_priority_distribution

-- name: refresh_user_status_distribution
-- As above; unique index idx_user_status_dist_user_id.
refresh materialized view concurrently user_status_distribution

-- name: refresh_user_monthly_trends
-- As above; unique index idx_user_monthly_trends_user_month. Built from daily_analytics, so it is
-- refreshed after the aggregation has written its rows.
refresh materialized view concurrently user_monthly_trends

-- name: active_user_ids
-- Users who created or changed a task in the last $1 days: those whose dashboards are worth
-- warming. A deleted task counts too (deleting sets updated_at), as it changed the figures.
select u.id
from users u
where exists (
    select 1
    from tasks t
    where t.user_id = u.id
      and (t.updated_at >= now() - make_interval(days => $1::int)
           or t.created_at >= now() - make_interval(days => $1::int))
)
order by u.id

-- name: user_has_stale_days
-- Whether a user still has rollup days marked stale (a change landed while a repair ran).
select exists (select 1 from daily_analytics where user_id = $1 and stale)

-- name: bump_data_versions
-- Raise the data version of these users, so that their cached figures miss (docs/cache.md); for
-- changes no trigger sees, such as a rollup repair. $1: user ids.
update users set data_version = data_version + 1 where id = any($1::uuid[])
