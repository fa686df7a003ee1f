-- The admin `users` connection pages through users in (created_at, id) order after a cursor
-- (analytics_users_page in sql/queries/analytics.sql). Without an index in that order every page
-- read and sorted the whole table (4.3 ms of PostgreSQL for the first page of 100 among 10,000
-- users, docs/performance.md); with it a page is an index range scan of the page's rows
-- (0.07 ms), whatever the cursor. The table is small (a row per account) and this runs in the
-- migration's transaction, hence no CONCURRENTLY.
create index idx_users_created_at on users (created_at, id);
