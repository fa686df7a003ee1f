-- The materialized views now serve the task gauges of /metrics (metrics_view_gauges in
-- sql/queries/metrics.sql, docs/operations.md). Those sum user_monthly_trends over one month for
-- all users; its unique index leads with user_id, so the month needs an index of its own, or
-- every refresh of the gauges would read every user's every month. The view is small (a row per
-- user and month) and this runs in the migration's transaction, hence no CONCURRENTLY.
create index idx_user_monthly_trends_month on user_monthly_trends (month);
