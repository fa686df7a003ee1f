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
