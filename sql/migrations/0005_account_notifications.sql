-- Every change of an account row is announced on the `account_changed` channel, with the user's
-- id as the payload: the API processes keep the rows of recent callers in memory
-- (gateway/data/accounts.py, ACCOUNT_CACHE_SECONDS) and drop a row the moment its notification
-- arrives. A trigger rather than application calls, like the data versions of 0002: a task
-- written by the API, a worker's repair, a role changed in psql, an account deleted: every one
-- updates or deletes the row (a task change raises the user's data_version), so no writer can
-- forget. PostgreSQL delivers a notification when its transaction commits, never for one rolled
-- back, and folds identical notifications of one transaction into one.
create function notify_account_changed() returns trigger
language plpgsql as $$
begin
    perform pg_notify('account_changed', old.id::text);
    return null;
end;
$$;

create trigger users_notify_account_changed after update or delete on users
    for each row execute function notify_account_changed();
