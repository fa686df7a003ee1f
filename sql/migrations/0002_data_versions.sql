-- A per-user data version in PostgreSQL, the cache's source of truth (docs/cache.md).
--
-- Every change to what a user's figures are computed from raises `users.data_version` in the
-- transaction that makes the change, so it commits (or rolls back) with it. Cached figures and
-- cached responses are keyed by the version a request reads from PostgreSQL at its start; a
-- read that begins after a write was acknowledged therefore never matches an entry computed
-- before it, whatever Redis lost, kept or restored (a kill, a pause, a restart from AOF, a
-- failover). Triggers rather than application calls, so that no writer (API, workers, a
-- migration, psql) can forget.

alter table users add column data_version bigint not null default 0;

-- Tasks: one UPDATE of the affected users per statement (transition tables), so a bulk insert of
-- a million tasks touches each user row once. PostgreSQL allows a transition table on triggers
-- of one event only, hence three triggers sharing one function.
create function bump_data_version_of_task_users() returns trigger
language plpgsql as $$
begin
    if tg_op = 'DELETE' then
        update users set data_version = data_version + 1
        where id in (select distinct user_id from old_rows);
    else
        update users set data_version = data_version + 1
        where id in (select distinct user_id from new_rows);
    end if;
    return null;
end;
$$;

create trigger tasks_bump_data_version_insert after insert on tasks
    referencing new table as new_rows
    for each statement execute function bump_data_version_of_task_users();
create trigger tasks_bump_data_version_update after update on tasks
    referencing new table as new_rows
    for each statement execute function bump_data_version_of_task_users();
create trigger tasks_bump_data_version_delete after delete on tasks
    referencing old table as old_rows
    for each statement execute function bump_data_version_of_task_users();

-- The profile fields that figures depend on: the timezone moves every local day, the daily goal
-- changes every productivity score.
create function bump_data_version_of_profile() returns trigger
language plpgsql as $$
begin
    if new.timezone is distinct from old.timezone
       or new.daily_goal is distinct from old.daily_goal then
        new.data_version := old.data_version + 1;
    end if;
    return new;
end;
$$;

create trigger users_bump_data_version before update of timezone, daily_goal on users
    for each row execute function bump_data_version_of_profile();
