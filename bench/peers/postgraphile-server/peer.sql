-- What the PostGraphile peer of `make bench` needs in the benchmark's database, beside the
-- gateway's tables (bench/peers/postgraphile.py runs this before starting it; idempotent). Its
-- own schema, which the gateway never reads: two computed columns of User (PostGraphile's way
-- to add a figure that a condition cannot express), with shared/spec/analytics.md's definitions
-- of overdue and due today: not done, due before / on the user's local today.
create schema if not exists bench_peer;

create or replace function bench_peer.users_overdue_tasks(u public.users) returns bigint
language sql stable as $$
    select count(*) from public.tasks t
    where t.user_id = u.id and t.deleted = false and t.status <> 'done'
      and t.due_date < (now() at time zone u.timezone)::date
$$;

create or replace function bench_peer.users_due_today_tasks(u public.users) returns bigint
language sql stable as $$
    select count(*) from public.tasks t
    where t.user_id = u.id and t.deleted = false and t.status <> 'done'
      and t.due_date = (now() at time zone u.timezone)::date
$$;
