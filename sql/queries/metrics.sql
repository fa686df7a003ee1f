-- name: metrics_business_gauges
-- The two business gauges of /metrics, cheap enough for every scrape (cached 30 s anyway):
-- active users are those with a daily_analytics row in the last 30 days (a range scan of
-- idx_daily_analytics_date); the task count is the planner's estimate, exact only until the
-- table has first been analysed (reltuples = -1), when it is counted instead.
select
    (select count(distinct user_id) from daily_analytics
      where date >= current_date - 30)::bigint as active_users,
    (select case when c.reltuples >= 0 then c.reltuples::bigint
                 else (select count(*) from tasks) end
       from pg_class c where c.oid = 'tasks'::regclass)::bigint as tasks_total

-- name: metrics_view_gauges
-- The task gauges of /metrics served from the deployment guide's materialized views (only with
-- ENABLE_MATERIALIZED_VIEWS): figures as of the views' last refresh (after every aggregation, and
-- a minute after a stale-day repair; docs/workers.md), which a fleet-wide gauge can afford and
-- a user's dashboard cannot. One row per user in the first three views, so each sum reads as many
-- rows as there are users; the month's rows are found by idx_user_monthly_trends_month.
select
    s.todo, s.in_progress, s.done,
    p.high, p.medium, p.low,
    t.open_tasks, t.overdue,
    m.month_created, m.month_completed
from (select coalesce(sum(todo_count), 0)::bigint as todo,
             coalesce(sum(in_progress_count), 0)::bigint as in_progress,
             coalesce(sum(done_count), 0)::bigint as done
        from user_status_distribution) s,
     (select coalesce(sum(high_priority), 0)::bigint as high,
             coalesce(sum(medium_priority), 0)::bigint as medium,
             coalesce(sum(low_priority), 0)::bigint as low
        from user_priority_distribution) p,
     (select coalesce(sum(pending_tasks + in_progress_tasks), 0)::bigint as open_tasks,
             coalesce(sum(overdue_tasks), 0)::bigint as overdue
        from user_task_stats) t,
     (select coalesce(sum(tasks_created), 0)::bigint as month_created,
             coalesce(sum(tasks_completed), 0)::bigint as month_completed
        from user_monthly_trends
       where month = date_trunc('month', now() at time zone 'UTC')::date) m
