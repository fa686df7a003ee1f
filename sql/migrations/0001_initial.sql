-- The tables of shared/spec/analytics.md, what authentication needs, and the indexes and
-- materialized views of the deployment guide. Runs in one transaction (see gateway/migrate.py),
-- so indexes are built plainly here: CONCURRENTLY is for later migrations on live tables.

create table users (
    id            uuid primary key default gen_random_uuid(),
    email         text not null check (email = btrim(email) and position('@' in email) > 1),
    password_hash text not null,
    display_name  text not null check (char_length(display_name) between 1 and 200),
    timezone      text not null default 'UTC',
    daily_goal    integer not null default 5 check (daily_goal between 1 and 100),
    role          text not null default 'user' check (role in ('user', 'admin')),
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now()
);
-- Emails are unique whatever their case.
create unique index users_email_lower_key on users (lower(email));

create table tasks (
    id           uuid primary key default gen_random_uuid(),
    user_id      uuid not null references users (id) on delete cascade,
    title        text not null check (char_length(title) between 1 and 500),
    description  text not null default '' check (char_length(description) <= 10000),
    status       text not null default 'todo' check (status in ('todo', 'in_progress', 'done')),
    priority     text not null default 'medium' check (priority in ('low', 'medium', 'high')),
    due_date     date,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    started_at   timestamptz,
    completed_at timestamptz,
    deleted      boolean not null default false,
    deleted_at   timestamptz,
    constraint tasks_completed_at_iff_done check ((status = 'done') = (completed_at is not null)),
    constraint tasks_deleted_at_iff_deleted check (deleted = (deleted_at is not null))
);

-- The deployment guide's indexes, under its names. Three of them carry INCLUDE columns so that the
-- analytics queries are answered by index-only scans: a user's tasks lie on as many heap pages as
-- there are rows, and visiting the heap costs more than anything Python does.
create index idx_tasks_user_id on tasks (user_id) include (status, priority, due_date)
    where deleted = false;
create index idx_tasks_user_status on tasks (user_id, status) where deleted = false;
create index idx_tasks_user_due_date on tasks (user_id, due_date)
    where deleted = false and status != 'done';
create index idx_tasks_user_completed on tasks (user_id, completed_at)
    include (created_at, priority, due_date) where status = 'done' and deleted = false;
create index idx_tasks_user_priority on tasks (user_id, priority) where deleted = false;
create index idx_tasks_created_at on tasks (user_id, created_at) where deleted = false;
-- Our own: every task due on a day, done or not (tasksDue and tasksCompletedOnTime).
create index idx_tasks_user_due_all on tasks (user_id, due_date) include (status, completed_at)
    where deleted = false and due_date is not null;

create table task_events (
    id          bigint generated always as identity primary key,
    task_id     uuid not null references tasks (id) on delete cascade,
    user_id     uuid not null references users (id) on delete cascade,
    from_status text check (from_status in ('todo', 'in_progress', 'done')),
    to_status   text not null check (to_status in ('todo', 'in_progress', 'done')),
    at          timestamptz not null default now()
);
create index idx_task_events_task on task_events (task_id, at);
create index idx_task_events_user_at on task_events (user_id, at);

-- One row per user and local day. `productivity_points` (the weighted completions of the day) is
-- kept beside the score so that a change of daily goal can recompute scores without the raw rows.
-- `stale` marks a day that a later change to a task made wrong; readers compute it live until the
-- worker re-aggregates it.
create table daily_analytics (
    user_id                 uuid not null references users (id) on delete cascade,
    date                    date not null,
    tasks_created           integer not null default 0,
    tasks_completed         integer not null default 0,
    tasks_due               integer not null default 0,
    tasks_completed_on_time integer not null default 0,
    completion_rate         numeric(5, 1),
    productivity_score      numeric(5, 1) not null default 0,
    productivity_points     numeric(10, 1) not null default 0,
    stale                   boolean not null default false,
    computed_at             timestamptz not null default now(),
    -- The guide's idx_daily_analytics_user_date is this primary key's index.
    constraint idx_daily_analytics_user_date primary key (user_id, date)
);
create index idx_daily_analytics_date on daily_analytics (date);
create index idx_daily_analytics_stale on daily_analytics (user_id, date) where stale;

-- Which days daily_analytics covers for each user: every day in [covered_from, covered_through]
-- without a row had no activity, so readers need not recompute quiet days.
create table rollup_coverage (
    user_id         uuid primary key references users (id) on delete cascade,
    covered_from    date not null,
    covered_through date not null,
    updated_at      timestamptz not null default now(),
    check (covered_from <= covered_through)
);

-- Refresh tokens are opaque; only their SHA-256 is stored. A family is one login's chain of
-- rotations: reuse of a rotated token revokes the family.
create table refresh_tokens (
    id          uuid primary key default gen_random_uuid(),
    user_id     uuid not null references users (id) on delete cascade,
    family_id   uuid not null,
    token_hash  bytea not null unique,
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null,
    rotated_at  timestamptz,
    revoked_at  timestamptz
);
create index idx_refresh_tokens_family on refresh_tokens (family_id);
create index idx_refresh_tokens_user on refresh_tokens (user_id);

-- The deployment guide's materialized views. Each has a unique index so that it can be refreshed
-- CONCURRENTLY (readers never blocked). Overdue uses each user's own local today.
create materialized view user_task_stats as
select
    t.user_id,
    count(*) as total_tasks,
    count(*) filter (where t.status = 'done') as completed_tasks,
    count(*) filter (where t.status = 'todo') as pending_tasks,
    count(*) filter (where t.status = 'in_progress') as in_progress_tasks,
    count(*) filter (where t.status != 'done'
                     and t.due_date < (now() at time zone u.timezone)::date) as overdue_tasks,
    round(count(*) filter (where t.status = 'done')::numeric / nullif(count(*), 0) * 100, 1)
        as completion_rate
from tasks t
join users u on u.id = t.user_id
where t.deleted = false
group by t.user_id;
create unique index idx_user_task_stats_user_id on user_task_stats (user_id);

create materialized view user_priority_distribution as
select
    user_id,
    count(*) filter (where priority = 'high') as high_priority,
    count(*) filter (where priority = 'medium') as medium_priority,
    count(*) filter (where priority = 'low') as low_priority
from tasks
where deleted = false
group by user_id;
create unique index idx_user_priority_dist_user_id on user_priority_distribution (user_id);

create materialized view user_status_distribution as
select
    user_id,
    count(*) filter (where status = 'todo') as todo_count,
    count(*) filter (where status = 'in_progress') as in_progress_count,
    count(*) filter (where status = 'done') as done_count
from tasks
where deleted = false
group by user_id;
create unique index idx_user_status_dist_user_id on user_status_distribution (user_id);

create materialized view user_monthly_trends as
select
    user_id,
    date_trunc('month', date)::date as month,
    sum(tasks_created) as tasks_created,
    sum(tasks_completed) as tasks_completed,
    avg(completion_rate) as avg_completion_rate,
    avg(productivity_score) as avg_productivity_score
from daily_analytics
group by user_id, date_trunc('month', date);
create unique index idx_user_monthly_trends_user_month on user_monthly_trends (user_id, month);
