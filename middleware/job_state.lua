-- Job-state transitions, in order: each with its history, expiry and done signal.
--
-- KEYS: none (each transition names its own keys, so one call carries a batch
-- of jobs; standalone Redis and Sentinel, as Dramatiq's broker itself).
-- ARGV[1..] one transition each, a JSON array of strings but for the last three:
--   [1] job hash  [2] history list  [3] done list  [4] ttl (s)  [5] now (ms)
--   [6] state  [7] seq  [8] done (0/1)  [9] history entries (JSON strings)
--   [10] field, value, field, value, ...
--
-- A transition older than the one recorded (lower seq: generation, attempt,
-- phase) is not applied, so a late write never takes a job back in time.
-- Fleet counters are not here: the state writer sums a batch's and writes them once.

for i = 1, #ARGV do
    local t = cjson.decode(ARGV[i])
    local job, history, done_key, ttl = t[1], t[2], t[3], t[4]
    local current = tonumber(redis.call("hget", job, "seq") or "-1")
    if tonumber(t[7]) >= current then
        local fields = {"state", t[6], "seq", t[7], "updated_at", t[5]}
        for _, part in ipairs(t[10]) do
            fields[#fields + 1] = part
        end
        redis.call("hset", job, unpack(fields))
        if #t[9] > 0 then
            redis.call("rpush", history, unpack(t[9]))
        end
        redis.call("expire", job, ttl)
        redis.call("expire", history, ttl)
    end
    if t[8] == 1 then
        redis.call("rpush", done_key, t[6])
        redis.call("expire", done_key, ttl)
    end
end
return 1
