-- name: task_of_user
-- One task of its owner; another user's task and a deleted one are both "not found".
select id, user_id, title, description, status, priority, due_date, created_at, updated_at,
       started_at, completed_at, deleted, deleted_at
from tasks
where id = $1 and user_id = $2 and not deleted

-- name: task_of_user_for_update
-- The same, locked for a change, so that two concurrent updates of a task apply in turn and each
-- sees the status the other left (the task_events chain stays unbroken).
select id, user_id, title, description, status, priority, due_date, created_at, updated_at,
       started_at, completed_at, deleted, deleted_at
from tasks
where id = $1 and user_id = $2 and not deleted
for update

-- name: task_filters
-- FRAGMENT, not run alone: the filters of the task list and the CSV export (included by
-- list_tasks, export_tasks and export_tasks_count, so that an export's row count and rows, and
-- the list, can never filter differently). Nulls do not filter. $6 is a LIKE pattern whose own
-- % and _ the caller escaped.
  and ($2::text is null or status = $2::text)
  and ($3::text is null or priority = $3::text)
  and ($4::date is null or due_date >= $4::date)
  and ($5::date is null or due_date <= $5::date)
  and ($6::text is null or title ilike $6::text)

-- name: list_tasks
-- A page of a user's tasks in creation order, after the cursor ($7, $8) when given; filters that
-- are null do not apply. $6 is a LIKE pattern with its own % and _ escaped by the caller.
-- Ordered by idx_tasks_created_at (user_id, created_at) where deleted = false.
select id, user_id, title, description, status, priority, due_date, created_at, updated_at,
       started_at, completed_at, deleted, deleted_at
from tasks
where user_id = $1 and not deleted
  -- include: task_filters
  -- Always a row comparison (from the very start without a cursor), so that even a generic plan
  -- starts its index scan of idx_tasks_created_at at the cursor instead of filtering up to it.
  and (created_at, id) > (coalesce($7::timestamptz, '-infinity'),
                          coalesce($8::uuid, '00000000-0000-0000-0000-000000000000'))
order by created_at, id
limit $9

-- name: insert_task
-- A new task. started_at is set when it is created in progress, completed_at when created done.
insert into tasks (user_id, title, description, status, priority, due_date, started_at,
                   completed_at)
values ($1, $2, $3, $4::text, $5, $6,
        case when $4::text = 'in_progress' then now() end,
        case when $4::text = 'done' then now() end)
returning id, user_id, title, description, status, priority, due_date, created_at, updated_at,
          started_at, completed_at, deleted, deleted_at

-- name: update_task
-- Write a task's editable fields ($3..$7, the caller passes unchanged ones as they are). The
-- status timestamps follow the product contract: started_at on the first move to in_progress,
-- completed_at on the move to done (kept while it stays done), cleared on reopening. On the right
-- of SET, `status` and the others are the row's values before this update.
update tasks
set title = $3, description = $4, status = $5::text, priority = $6, due_date = $7,
    started_at = case when $5::text = 'in_progress' and started_at is null then now()
                      else started_at end,
    completed_at = case when $5::text <> 'done' then null
                        when status = 'done' then completed_at
                        else now() end,
    updated_at = now()
where id = $1 and user_id = $2
returning id, user_id, title, description, status, priority, due_date, created_at, updated_at,
          started_at, completed_at, deleted, deleted_at

-- name: soft_delete_task
-- Mark a task deleted (it then counts nowhere); the row and its history stay.
update tasks
set deleted = true, deleted_at = now(), updated_at = now()
where id = $1 and user_id = $2 and not deleted
returning id, user_id, title, description, status, priority, due_date, created_at, updated_at,
          started_at, completed_at, deleted, deleted_at

-- name: insert_task_event
-- One status change ($3 null on creation), in the transaction that makes it; `at` is the
-- transaction's now(), the same instant as the task's started_at/completed_at.
insert into task_events (task_id, user_id, from_status, to_status)
values ($1, $2, $3, $4)

-- name: user_timezone
-- The IANA zone that a user's local days are counted in, and their data version: read after a
-- task mutation's statement, the version that statement raised (its trigger holds the row lock
-- until the commit), which the live change message carries (domain/deltas.py).
select timezone, data_version from users where id = $1

-- name: export_tasks
-- The CSV export's rows: a user's non-deleted tasks in creation order, filtered as list_tasks,
-- at most $7 rows. Timestamps in ISO 8601 UTC. A text cell starting with = + - @ or a tab/CR is
-- prefixed with ' so that a spreadsheet shows it instead of running it as a formula.
select id, title_cell as title, description_cell as description, status, priority, due_date,
       to_char(created_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as created_at,
       to_char(updated_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as updated_at,
       to_char(started_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as started_at,
       to_char(completed_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') as completed_at
from tasks,
     lateral (select case when left(title, 1) in ('=', '+', '-', '@', e'\t', e'\r')
                          then '''' || title else title end as title_cell,
                     case when left(description, 1) in ('=', '+', '-', '@', e'\t', e'\r')
                          then '''' || description else description end as description_cell
             ) as cells
where user_id = $1 and not deleted
  -- include: task_filters
-- Qualified: a bare `created_at` here would mean the to_char output column above.
order by tasks.created_at, tasks.id
limit $7

-- name: export_tasks_count
-- How many rows the export would have, counting no further than $7 (the limit + 1 says "cut").
select count(*) from (
    select 1 from tasks
    where user_id = $1 and not deleted
      -- include: task_filters
    limit $7
) as capped
