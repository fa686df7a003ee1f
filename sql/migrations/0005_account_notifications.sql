-- A change of an account row that nobody else announces is announced on the `account_changed`
-- channel, with the user's id as the payload: the API processes keep the rows of recent callers in
-- memory (gateway/data/accounts.py, ACCOUNT_CACHE_SECONDS) and drop a row when they hear that it
-- changed. A task change raises the user's data_version, so it is an update of the row too.
--
-- Who announces what:
-- - The API's own writes are announced by the API, after the commit, on Redis
--   (domain/changes.py `tasks_changed`, the live dashboards' change message), falling back to
--   pg_notify when Redis cannot take it. Its connections say so
--   (`analytics_gateway.changes_announced = on`, set by gateway/data/db.py `create_pool`), and
--   this trigger then stays silent: a NOTIFY in a transaction takes a database-wide lock from its
--   commit until the commit is durable, which serializes every notifying commit of the server
--   (measured here: 4,900 single-row updates a second without, 3,100 with).
-- - Every other writer (the workers, a migration, psql, another program writing the tables) is
--   announced here, in its own transaction: PostgreSQL delivers a notification when its
--   transaction commits, never for one rolled back, and folds identical notifications of one
--   transaction into one.
--
-- The condition is the trigger's WHEN clause, evaluated without calling the function at all: the
-- API's writes (a tasks statement updates the user row) pay no PL/pgSQL call.
create function notify_account_changed() returns trigger
language plpgsql as $$
begin
    perform pg_notify('account_changed', old.id::text);
    return null;
end;
$$;

create trigger users_notify_account_changed after update or delete on users
    for each row
    when (current_setting('analytics_gateway.changes_announced', true) is distinct from 'on')
    execute function notify_account_changed();
