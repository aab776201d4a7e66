-- One job-state transition, with its history, expiry, done signal and fleet counters.
--
-- KEYS[1] job hash   KEYS[2] history list   KEYS[3] done list
-- KEYS[4] metrics:jobs   KEYS[5] metrics:minute:{m}   KEYS[6] metrics:duration
-- ARGV[1] ttl (s)   ARGV[2] now (ms)   ARGV[3] state   ARGV[4] seq
-- ARGV[5] done (0/1)   ARGV[6] counter field ("actor|queue|outcome|code" or "")
-- ARGV[7] minute field ("queue|outcome")   ARGV[8] duration bucket field ("actor|le" or "")
-- ARGV[9] actor   ARGV[10] duration (s)   ARGV[11] history entries H (JSON strings)
-- ARGV[12..11+H] history entries   then field, value pairs
--
-- A transition older than the one recorded (lower seq: generation, attempt,
-- phase) is not applied, so a late write never takes a job back in time.

local ttl = tonumber(ARGV[1])
local seq = tonumber(ARGV[4])
local current = tonumber(redis.call("hget", KEYS[1], "seq") or "-1")
local entries = tonumber(ARGV[11])
if seq >= current then
    local fields = {"state", ARGV[3], "seq", ARGV[4], "updated_at", ARGV[2]}
    for i = 12 + entries, #ARGV, 2 do
        fields[#fields + 1] = ARGV[i]
        fields[#fields + 1] = ARGV[i + 1]
    end
    redis.call("hset", KEYS[1], unpack(fields))
    for i = 12, 11 + entries do
        redis.call("rpush", KEYS[2], ARGV[i])
    end
    redis.call("expire", KEYS[1], ttl)
    redis.call("expire", KEYS[2], ttl)
end
if ARGV[5] == "1" then
    redis.call("rpush", KEYS[3], ARGV[3])
    redis.call("expire", KEYS[3], ttl)
end
if ARGV[6] ~= "" then
    redis.call("hincrby", KEYS[4], ARGV[6], 1)
    redis.call("hincrby", KEYS[5], ARGV[7], 1)
    redis.call("expire", KEYS[5], 7200)
    if ARGV[8] ~= "" then
        redis.call("hincrby", KEYS[6], ARGV[8], 1)
        redis.call("hincrbyfloat", KEYS[6], ARGV[9] .. "|sum", ARGV[10])
        redis.call("hincrby", KEYS[6], ARGV[9] .. "|count", 1)
    end
end
return 1
