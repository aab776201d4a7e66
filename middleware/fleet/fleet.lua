-- taatom-jobs fleet script: capped fetch, ack/nack/requeue releasing
-- concurrency leases, lease renewal and dead-worker recovery.
--
-- KEYS[1]  namespace
-- ARGV[1]  command: fetch | ack | settle | nack | requeue | tick
-- ARGV[2]  now (ms)
-- ARGV[3]  worker id (broker id of the calling process)
-- ARGV[4+] command arguments, as below
--
-- Queue layout is Dramatiq's RedisBroker's (so its enqueue, purge and
-- maintenance keep working): list {ns}:{q}, hash {ns}:{q}.msgs, per-worker
-- ack set {ns}:__acks__.{worker}.{q}, dead letters {ns}:{q}.XQ (+ .msgs),
-- heartbeats zset {ns}:__heartbeats__. Ours: leases zset {ns}:slots:{q}
-- (redis message id -> expiry ms) and the paused set {ns}:paused.

local ns = KEYS[1]
local command = ARGV[1]
local now = tonumber(ARGV[2])
local worker = ARGV[3]

local heartbeats = ns .. ":__heartbeats__"

local function canonical(q)
    if string.sub(q, -3) == ".DQ" then
        return string.sub(q, 1, -4)
    end
    return q
end

-- A high-priority lane ("email.HI") shares its queue's slots and dead letters.
local function group(q)
    local c = canonical(q)
    if string.sub(c, -3) == ".HI" then
        return string.sub(c, 1, -4)
    end
    return c
end

local function slots_key(q)
    return ns .. ":slots:" .. group(q)
end

local function acks_key(w, q)
    return ns .. ":__acks__." .. w .. "." .. q
end

-- Wake one idle consumer of q (a freed slot, a requeued message). The list
-- is trimmed: tokens only need to outnumber the idle consumers.
local function wake(q)
    local key = ns .. ":wake:" .. q
    redis.call("rpush", key, "1")
    redis.call("ltrim", key, -64, -1)
end

-- A freed slot only matters to a lane with messages waiting for one.
local function wake_if_waiting(q)
    if redis.call("llen", ns .. ":" .. q) > 0 then
        wake(q)
    end
end

-- Take up to `wanted` messages of q for this worker, no more than the free
-- slots of a capped queue allow, none while q is paused or while the high
-- lane `yield_to` has messages waiting. Returns {id1, data1, id2, data2, ...}.
local function take(q, wanted, cap, lease_ms, yield_to)
    if q == canonical(q) and redis.call("sismember", ns .. ":paused", group(q)) == 1 then
        return {}
    end
    if yield_to ~= "" and redis.call("llen", ns .. ":" .. yield_to) > 0 then
        return {}
    end
    local slots = slots_key(q)
    if cap > 0 then
        redis.call("zremrangebyscore", slots, "-inf", now)
        local free = cap - redis.call("zcard", slots)
        if free < wanted then
            wanted = free
        end
    end
    local out = {}
    local qkey = ns .. ":" .. q
    local msgs = qkey .. ".msgs"
    local acks = acks_key(worker, q)
    while wanted > 0 do
        local id = redis.call("lpop", qkey)
        if not id then
            break
        end
        local data = redis.call("hget", msgs, id)
        -- an id whose message is gone (purged) is dropped, not delivered
        if data then
            redis.call("sadd", acks, id)
            if cap > 0 then
                redis.call("zadd", slots, now + lease_ms, id)
            end
            out[#out + 1] = id
            out[#out + 1] = data
            wanted = wanted - 1
        end
    end
    return out
end

-- Forget a finished message of this worker: out of its ack set, and its data
-- deleted unless the id went back to a queue meanwhile (recovery moved it).
local function forget(q, id)
    if redis.call("srem", acks_key(worker, q), id) > 0 then
        redis.call("hdel", ns .. ":" .. q .. ".msgs", id)
    end
end

-- fetch: ARGV[4] queue, ARGV[5] how many, ARGV[6] cap (0: none), ARGV[7] lease ms,
-- ARGV[8] a high lane this queue yields to while it has messages waiting ("": none)
-- returns {id1, data1, id2, data2, ...}
if command == "fetch" then
    return take(ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8])

-- ack: ARGV[4] queue, ARGV[5] id, ARGV[6] the other lane to wake when a slot frees ("": none),
-- ARGV[7] how many to take for this worker in the same call (a refill; 0: none),
-- ARGV[8] cap, ARGV[9] lease ms, ARGV[10] lane to yield to (as fetch's),
-- ARGV[11] "1": free the slot but keep the message in the ack set until "settle"
-- (its outcome is not recorded yet: should this worker die first, recovery runs it again).
-- A busy consumer thus gets its next message without a fetch of its own, and
-- a slot it frees and takes again wakes nobody. Returns what it took, as fetch.
elseif command == "ack" then
    local q = ARGV[4]
    local id = ARGV[5]
    if ARGV[11] ~= "1" then
        forget(q, id)
    end
    local freed = redis.call("zrem", slots_key(q), id) == 1
    local out = {}
    local refill = tonumber(ARGV[7] or "0")
    if refill > 0 then
        out = take(q, refill, tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10])
    end
    if freed and #out == 0 then
        wake_if_waiting(canonical(q))
        if ARGV[6] ~= "" then
            wake_if_waiting(ARGV[6])
        end
    end
    return out

-- settle: ARGV[4..] queue, id pairs acked with "keep" whose outcome is now recorded
elseif command == "settle" then
    for i = 4, #ARGV, 2 do
        forget(ARGV[i], ARGV[i + 1])
    end
    return 1

-- nack: ARGV[4] queue, ARGV[5] id, ARGV[6] other lane to wake; the message moves to the dead letters
elseif command == "nack" then
    local q = ARGV[4]
    local id = ARGV[5]
    local msgs = ns .. ":" .. q .. ".msgs"
    if redis.call("srem", acks_key(worker, q), id) > 0 then
        local data = redis.call("hget", msgs, id)
        if data then
            local xq = ns .. ":" .. group(q) .. ".XQ"
            redis.call("zadd", xq, now, id)
            redis.call("hset", xq .. ".msgs", id, data)
            redis.call("hdel", msgs, id)
        end
    end
    if redis.call("zrem", slots_key(q), id) == 1 then
        wake_if_waiting(canonical(q))
        if ARGV[6] ~= "" then
            wake_if_waiting(ARGV[6])
        end
    end
    return 1

-- requeue: ARGV[4] queue, ARGV[5..] ids; back to the head, in their order
elseif command == "requeue" then
    local q = ARGV[4]
    local qkey = ns .. ":" .. q
    local acks = acks_key(worker, q)
    local slots = slots_key(q)
    for i = #ARGV, 5, -1 do
        local id = ARGV[i]
        if redis.call("srem", acks, id) > 0 and redis.call("hexists", qkey .. ".msgs", id) == 1 then
            redis.call("lpush", qkey, id)
            wake(q)
        end
        redis.call("zrem", slots, id)
    end
    return 1

-- tick: the keeper's one call per interval: renew leases, then recover.
-- ARGV[4] lease ms, ARGV[5] heartbeat timeout ms, ARGV[6] held pairs N,
-- ARGV[7..6+2N] queue, id pairs, then queue names (with .DQ twins)
-- returns how many messages of dead workers went back to their queues
elseif command == "tick" then
    -- The keeper's tick is a worker's heartbeat (every fifth of the timeout,
    -- busy or idle); fetches and acks do not repeat it.
    redis.call("zadd", heartbeats, now, worker)
    local expiry = now + tonumber(ARGV[4])
    local pairs_end = 6 + 2 * tonumber(ARGV[6])
    for i = 7, pairs_end, 2 do
        redis.call("zadd", slots_key(ARGV[i]), "XX", expiry, ARGV[i + 1])
    end
    -- A negative timeout: renew and heartbeat only (the caller was just cut
    -- off from Redis, so everyone's heartbeats may look stale for a while).
    if tonumber(ARGV[5]) < 0 then
        return 0
    end
    local dead = redis.call("zrangebyscore", heartbeats, "-inf", now - tonumber(ARGV[5]))
    local requeued = 0
    for _, w in ipairs(dead) do
        for i = pairs_end + 1, #ARGV do
            local q = ARGV[i]
            local acks = acks_key(w, q)
            local ids = redis.call("smembers", acks)
            local qkey = ns .. ":" .. q
            for _, id in ipairs(ids) do
                if redis.call("hexists", qkey .. ".msgs", id) == 1 then
                    redis.call("lpush", qkey, id)
                    wake(q)
                    requeued = requeued + 1
                end
                redis.call("zrem", slots_key(q), id)
            end
            redis.call("del", acks)
        end
        redis.call("zrem", heartbeats, w)
    end
    return requeued
end

return redis.error_reply("unknown fleet command " .. tostring(command))
