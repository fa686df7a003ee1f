-- name: user_by_id
-- The profile fields of one user.
select id, email, display_name, timezone, daily_goal, role
from users
where id = $1

-- name: user_for_login
-- The user an email names, whatever its case (users_email_lower_key makes this an index lookup).
select id, email, password_hash, display_name, timezone, daily_goal, role
from users
where lower(email) = lower($1)

-- name: insert_user
-- A new account; a duplicate email (any case) raises unique_violation on users_email_lower_key.
insert into users (email, password_hash, display_name, timezone)
values ($1, $2, $3, $4)
returning id, email, display_name, timezone, daily_goal, role

-- name: user_for_update
-- Lock the user's row for a profile change, so two concurrent changes apply one after the other.
select id, email, display_name, timezone, daily_goal, role
from users
where id = $1
for update

-- name: update_profile
-- $2..$4: display name, timezone, daily goal; the caller passes the current value for a field
-- that does not change.
update users
set display_name = $2, timezone = $3, daily_goal = $4, updated_at = now()
where id = $1
returning id, email, display_name, timezone, daily_goal, role

-- name: delete_user_rollups
-- After a timezone change every local day moves: the user's rollup is meaningless, so it goes,
-- together with the coverage watermark that vouches for it.
with gone as (delete from daily_analytics where user_id = $1)
delete from rollup_coverage where user_id = $1

-- name: insert_refresh_token
-- One refresh token of a family (a login's chain of rotations), stored as its SHA-256.
insert into refresh_tokens (user_id, family_id, token_hash, expires_at)
values ($1, $2, $3, now() + make_interval(days => $4))

-- name: rotate_refresh_token
-- Claim a live refresh token for rotation. One conditional UPDATE: of two concurrent uses of one
-- token the second waits on the row lock, then sees rotated_at set and gets no row.
update refresh_tokens
set rotated_at = now()
where token_hash = $1 and rotated_at is null and revoked_at is null and expires_at > now()
returning user_id, family_id

-- name: refresh_token_state
-- Why a token could not be rotated: unknown (no row), already rotated (reuse), revoked, expired.
select family_id, rotated_at, revoked_at, expires_at <= now() as expired
from refresh_tokens
where token_hash = $1

-- name: revoke_refresh_family
-- Revoke every live token of a family (logout, or reuse of a rotated token).
update refresh_tokens
set revoked_at = now()
where family_id = $1 and revoked_at is null
