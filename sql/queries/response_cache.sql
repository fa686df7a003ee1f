-- The whole-response cache (gateway/response_cache.py).

-- name: response_cache_user_timezone
-- The caller's timezone: a cached dashboard answer must not outlive the caller's local day.
-- $1: user id.
select timezone from users where id = $1;
