"""Redis balance store, shared by many processes and machines (``redis.asyncio``).

Needs the optional extra: ``pip install 'ilp-receiver[redis]'``.

Each :meth:`RedisStore.add` is ONE Lua script call, which Redis runs atomically: read
the balance, check the idempotency key, check the limits, write the balance, remember
the idempotency key (``SET ... PX retention``) and index the key. Lua numbers are
doubles, so balances are stored as decimal strings and the script does exact
decimal-string arithmetic (7-digit limbs, exact in a double); no rounding, no overflow.
A single round trip with no retries means heavy contention on one key (200 concurrent
credits) costs no more than the same calls in sequence.

Keys (``prefix`` defaults to ``"ilp:"``)::

    {prefix}b:{key}     balance, a decimal string
    {prefix}i:{idem}    idempotency key -> applied delta, expires after ``retention``
    {prefix}index       sorted set of every account key (lexicographic range queries)
    {prefix}wh:...      the webhook outbox (stores/outbox.py): a hash per event, the
                        pending and dead ids by seq, the open events by merge key

Durability is Redis's: a credit is as durable as the server's persistence settings make
it (``appendonly yes`` with ``appendfsync always`` or ``everysec``). Idempotency keys
expire by the server's clock, not by the injected ``clock``. For Redis Cluster put a
hash tag in the prefix (``"{ilp}:"``) so one script's keys share a slot.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from typing import Any

try:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the Redis balance store needs the 'redis' package: pip install 'ilp-receiver[redis]'"
    ) from exc

from ..errors import ConfigError
from .base import (
    DEFAULT_RETENTION,
    AddResult,
    BalanceLimitError,
    BalanceStore,
    Clock,
    StoreClosedError,
    StoreError,
)
from .outbox import (
    CLAIM_RUN,
    CLAIM_SCAN,
    MAX_ERROR,
    OutboxEntry,
    OutboxEvent,
    OutboxState,
    check_claim_args,
    check_purge_age,
)

__all__ = ["ADD_SCRIPT", "CLAIM_SCRIPT", "REVERT_SCRIPT", "RedisStore"]

#: Exact decimal-string arithmetic for the scripts (``add(a, b)``, ``cmp(a, b)``).
_DECIMAL = r"""
local BASE = 10000000
local function parse(s)
  if string.sub(s, 1, 1) == "-" then return -1, string.sub(s, 2) end
  return 1, s
end
local function make(sign, mag)
  if mag == "0" then return "0" end
  if sign < 0 then return "-" .. mag end
  return mag
end
local function cmp_mag(a, b) -- byte by byte: Lua's "<" on strings uses strcoll
  if #a ~= #b then return (#a < #b) and -1 or 1 end
  for k = 1, #a do
    local x, y = string.byte(a, k), string.byte(b, k)
    if x ~= y then return (x < y) and -1 or 1 end
  end
  return 0
end
local function limbs(a)
  local t = {}
  local i = #a
  while i > 0 do
    local j = i - 6
    if j < 1 then j = 1 end
    t[#t + 1] = tonumber(string.sub(a, j, i))
    i = j - 1
  end
  return t
end
local function join(t)
  local n = #t
  while n > 1 and t[n] == 0 do n = n - 1 end
  local parts = {string.format("%d", t[n])}
  for k = n - 1, 1, -1 do parts[#parts + 1] = string.format("%07d", t[k]) end
  return table.concat(parts)
end
local function add_mag(a, b)
  local x, y, r = limbs(a), limbs(b), {}
  local carry = 0
  for k = 1, math.max(#x, #y) do
    local s = (x[k] or 0) + (y[k] or 0) + carry
    if s >= BASE then s = s - BASE; carry = 1 else carry = 0 end
    r[k] = s
  end
  if carry > 0 then r[#r + 1] = carry end
  return join(r)
end
local function sub_mag(a, b) -- requires a >= b
  local x, y, r = limbs(a), limbs(b), {}
  local borrow = 0
  for k = 1, #x do
    local s = x[k] - (y[k] or 0) - borrow
    if s < 0 then s = s + BASE; borrow = 1 else borrow = 0 end
    r[k] = s
  end
  return join(r)
end
local function add(a, b)
  local sa, ma = parse(a)
  local sb, mb = parse(b)
  if sa == sb then return make(sa, add_mag(ma, mb)) end
  local c = cmp_mag(ma, mb)
  if c == 0 then return "0" end
  if c > 0 then return make(sa, sub_mag(ma, mb)) end
  return make(sb, sub_mag(mb, ma))
end
local function cmp(a, b)
  local sa, ma = parse(a)
  local sb, mb = parse(b)
  if sa ~= sb then return (sa < sb) and -1 or 1 end
  return sa * cmp_mag(ma, mb)
end
"""

#: Writes webhook outbox rows (see :mod:`ilp_receiver.stores.outbox`): ``entries`` is
#: a list of ``{id, type, account, merge_key ("" for none), amount, data, due}`` (amounts
#: and times as decimal strings), ``balance`` the balance after the credit or "".
_OUTBOX = r"""
local function negate(a)
  if string.sub(a, 1, 1) == "-" then return string.sub(a, 2) end
  if a == "0" then return a end
  return "-" .. a
end
-- the amount of a conditional entry after a credit of delta that left balance, or nil
local function conditional(e, balance, delta)
  if e.when == "" then return e.amount end
  if delta == "" then return nil end
  if e.when == "reaches" then
    local before = add(balance, negate(delta))
    if cmp(before, e.threshold) < 0 and cmp(e.threshold, balance) <= 0 then return e.amount end
    return nil
  end
  if cmp(balance, e.threshold) > 0 then
    local above = add(balance, negate(e.threshold))
    if cmp(above, delta) < 0 then return above end
    return delta
  end
  return nil
end
local function write_events(prefix, now, entries, balance, delta)
  local open = prefix .. "wh:open"
  for _, e in ipairs(entries) do
    local merged = false
    local amount = conditional(e, balance, delta)
    if amount == nil then merged = true else e.amount = amount end
    if e.merge_key ~= "" then
      local id = redis.call("HGET", open, e.merge_key)
      if id then
        local h = prefix .. "wh:e:" .. id
        local v = redis.call("HMGET", h, "sealed", "due", "amount", "count", "balance")
        if v[1] == "0" and tonumber(v[2]) > tonumber(now) then
          local bal = balance
          if bal == "" then bal = v[5] end
          redis.call("HSET", h, "amount", add(v[3], e.amount), "count", tonumber(v[4]) + 1,
                     "last", now, "balance", bal)
          merged = true
        end
      end
    end
    if not merged then
      local seq = redis.call("INCR", prefix .. "wh:seq")
      local h = prefix .. "wh:e:" .. e.id
      local bal = balance
      if bal == "" then bal = e.balance end
      redis.call("HSET", h, "seq", seq, "type", e.type, "account", e.account,
                 "merge_key", e.merge_key, "amount", e.amount, "count", 1, "balance", bal,
                 "data", e.data, "created", now, "last", now, "due", e.due, "sealed", "0",
                 "state", "pending", "attempts", 0, "lease_until", "0", "token", "",
                 "acked", "[]", "error", "")
      redis.call("ZADD", prefix .. "wh:q", seq, e.id)
      if e.merge_key ~= "" then
        redis.call("HSET", open, e.merge_key, e.id)
      end
    end
  end
end
"""

#: The Lua script behind :meth:`RedisStore.add` (and ``add_with_outbox``).
#: KEYS: balance key, index key[, idempotency key].
#: ARGV: delta, minimum or "", maximum or "", account key, retention in ms[, prefix,
#: now, outbox entries as JSON].
#: Returns {status, balance}: 1 applied, 0 duplicate idempotency key, -1 limit refused.
ADD_SCRIPT = (
    _DECIMAL
    + _OUTBOX
    + r"""
local balance = redis.call("GET", KEYS[1]) or "0"
if #KEYS > 2 and redis.call("EXISTS", KEYS[3]) == 1 then
  return {0, balance}
end
local new = add(balance, ARGV[1])
if (ARGV[2] ~= "" and cmp(new, ARGV[2]) < 0) or (ARGV[3] ~= "" and cmp(new, ARGV[3]) > 0) then
  return {-1, balance}
end
redis.call("SET", KEYS[1], new)
redis.call("ZADD", KEYS[2], 0, ARGV[4])
if #KEYS > 2 then
  redis.call("SET", KEYS[3], ARGV[1], "PX", ARGV[5])
end
if #ARGV > 5 then
  write_events(ARGV[6], ARGV[7], cjson.decode(ARGV[8]), new, ARGV[1])
end
return {1, new}
"""
)

#: The Lua script behind :meth:`RedisStore.revert`.
#: KEYS: balance key, idempotency key.  ARGV: delta, -delta[, prefix, now, outbox JSON].
#: Returns 1 when the key held exactly this delta (forgotten, balance lowered), else 0.
REVERT_SCRIPT = (
    _DECIMAL
    + _OUTBOX
    + r"""
if redis.call("GET", KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call("DEL", KEYS[2])
local new = add(redis.call("GET", KEYS[1]) or "0", ARGV[2])
redis.call("SET", KEYS[1], new)
if #ARGV > 2 then
  write_events(ARGV[3], ARGV[4], cjson.decode(ARGV[5]), new, "")
end
return 1
"""
)

#: Writes outbox rows on their own.  ARGV: prefix, now, outbox JSON.
WRITE_SCRIPT = (
    _DECIMAL
    + _OUTBOX
    + r"""
write_events(ARGV[1], ARGV[2], cjson.decode(ARGV[3]), "", "")
return 1
"""
)

#: Claims due rows: from each account's first pending row (of the ``scan`` oldest), up
#: to ``run`` consecutive ones that are due and not leased.  ARGV: prefix, now, lease
#: deadline, limit, scan, token base, run.
#: Returns the claimed rows as flat HGETALL lists, each followed by its id.
CLAIM_SCRIPT = r"""
local prefix, now = ARGV[1], tonumber(ARGV[2])
local limit, scan = tonumber(ARGV[4]), tonumber(ARGV[5])
local queue, open = prefix .. "wh:q", prefix .. "wh:open"
local ids = redis.call("ZRANGE", queue, 0, scan - 1)
local run = tonumber(ARGV[7])
local taken, out = {}, {}
for i, id in ipairs(ids) do
  local h = prefix .. "wh:e:" .. id
  local v = redis.call("HMGET", h, "account", "due", "lease_until", "merge_key")
  local count = 0
  if v[1] then count = taken[v[1]] or 0 end
  if not v[1] then
    redis.call("ZREM", queue, id)
  elseif count >= 0 then
    if count >= run or tonumber(v[2]) > now or tonumber(v[3]) > now then
      taken[v[1]] = -1
    else
      taken[v[1]] = count + 1
      redis.call("HSET", h, "sealed", "1", "lease_until", ARGV[3], "token", ARGV[6] .. ":" .. i)
      redis.call("HINCRBY", h, "attempts", 1)
      if v[4] ~= "" and redis.call("HGET", open, v[4]) == id then
        redis.call("HDEL", open, v[4])
      end
      local row = redis.call("HGETALL", h)
      row[#row + 1] = "id"
      row[#row + 1] = id
      out[#out + 1] = row
      if #out >= limit then break end
    end
  end
end
return out
"""

#: Forgets a delivered row.  ARGV: prefix, id, token.  Returns 1, or 0 (token stale).
ACK_SCRIPT = r"""
local h = ARGV[1] .. "wh:e:" .. ARGV[2]
local v = redis.call("HMGET", h, "token", "state")
if ARGV[3] == "" or v[1] ~= ARGV[3] or v[2] ~= "pending" then return 0 end
redis.call("DEL", h)
redis.call("ZREM", ARGV[1] .. "wh:q", ARGV[2])
return 1
"""

#: Releases a claim for a later attempt, or moves the row to the dead letters.
#: ARGV: prefix, id, token, due, error, acked JSON, "1" for dead.  Returns 1 or 0.
RETRY_SCRIPT = r"""
local h = ARGV[1] .. "wh:e:" .. ARGV[2]
local v = redis.call("HMGET", h, "token", "state", "seq")
if ARGV[3] == "" or v[1] ~= ARGV[3] or v[2] ~= "pending" then return 0 end
redis.call("HSET", h, "due", ARGV[4], "error", ARGV[5], "acked", ARGV[6],
           "lease_until", "0", "token", "")
if ARGV[7] == "1" then
  redis.call("HSET", h, "state", "dead")
  redis.call("ZREM", ARGV[1] .. "wh:q", ARGV[2])
  redis.call("ZADD", ARGV[1] .. "wh:dead", v[3], ARGV[2])
end
return 1
"""

#: Deletes dead rows that died (their "due") before a cutoff, at most a limit of them.
#: ARGV: prefix, cutoff, limit.  Returns how many were deleted.
PURGE_SCRIPT = r"""
local dead = ARGV[1] .. "wh:dead"
local cutoff, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
local purged = 0
for _, id in ipairs(redis.call("ZRANGE", dead, 0, -1)) do
  local h = ARGV[1] .. "wh:e:" .. id
  local due = redis.call("HGET", h, "due")
  if not due or tonumber(due) < cutoff then
    redis.call("DEL", h)
    redis.call("ZREM", dead, id)
    purged = purged + 1
    if purged >= limit then break end
  end
end
return purged
"""

#: Makes a row due now (a dead one pending again).  ARGV: prefix, id, now.
REPLAY_SCRIPT = r"""
local h = ARGV[1] .. "wh:e:" .. ARGV[2]
local v = redis.call("HMGET", h, "state", "seq", "due")
if not v[1] then return 0 end
if v[1] == "dead" then
  redis.call("HSET", h, "state", "pending", "attempts", 0, "acked", "[]", "due", ARGV[3])
  redis.call("ZREM", ARGV[1] .. "wh:dead", ARGV[2])
  redis.call("ZADD", ARGV[1] .. "wh:q", v[2], ARGV[2])
elseif tonumber(v[3]) > tonumber(ARGV[3]) then
  redis.call("HSET", h, "due", ARGV[3])
end
return 1
"""


#: dead rows one purge script deletes at most (a script blocks Redis while it runs)
_PURGE_BATCH = 500


class RedisStore(BalanceStore):
    """Balances in Redis, one atomic Lua script per change.

    ``url`` is a ``redis://`` / ``rediss://`` / ``unix://`` URL (``redis://host:6379/0``).
    ``prefix`` namespaces every key. Up to ``max_connections`` connections are opened;
    further concurrent calls wait up to ``pool_timeout`` seconds for one. ``client`` may
    be an existing ``redis.asyncio.Redis`` (then ``url`` is ignored and :meth:`close`
    leaves it open).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "ilp:",
        retention: float = DEFAULT_RETENTION,
        clock: Clock | None = None,
        client: aioredis.Redis | None = None,
        max_connections: int = 50,
        pool_timeout: float = 20.0,
    ) -> None:
        super().__init__(retention=retention, clock=clock)
        if not isinstance(prefix, str):
            raise ConfigError("store", "the Redis key prefix must be a string")
        self.prefix = prefix
        self._prefix_bytes = prefix.encode()
        self._owns_client = client is None
        if client is None:
            try:
                # A blocking pool: a burst of concurrent calls waits for a free
                # connection instead of failing with "Too many connections".
                pool = aioredis.BlockingConnectionPool.from_url(
                    url, max_connections=max_connections, timeout=pool_timeout
                )
                client = aioredis.Redis.from_pool(pool)
            except ValueError as exc:
                raise ConfigError("store", f"bad Redis URL: {exc}") from None
        self._client: aioredis.Redis = client
        self._script = client.register_script(ADD_SCRIPT)
        self._revert_script = client.register_script(REVERT_SCRIPT)
        self._write_script = client.register_script(WRITE_SCRIPT)
        self._claim_script = client.register_script(CLAIM_SCRIPT)
        self._ack_script = client.register_script(ACK_SCRIPT)
        self._retry_script = client.register_script(RETRY_SCRIPT)
        self._replay_script = client.register_script(REPLAY_SCRIPT)
        self._purge_script = client.register_script(PURGE_SCRIPT)
        self._index = prefix + "index"
        self._retention_ms = str(max(1, round(self.retention * 1000)))
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("store is closed")

    async def open(self) -> None:
        """Check the server answers (``PING``)."""
        self._check_open()
        try:
            await self._client.ping()
        except RedisError as exc:
            raise StoreError(f"Redis is not reachable: {type(exc).__name__}") from exc

    async def _add(
        self,
        key: str,
        delta: int,
        minimum: int | None,
        maximum: int | None,
        idempotency_key: str | None,
        outbox: Sequence[OutboxEntry],
    ) -> AddResult:
        """The storage step of ``add`` / ``add_with_outbox``: one Lua script (atomic)."""
        self._check_open()
        prefix = self.prefix
        keys = [prefix + "b:" + key, self._index]
        if idempotency_key is not None:
            keys.append(prefix + "i:" + idempotency_key)
        args = [
            str(delta),
            "" if minimum is None else str(minimum),
            "" if maximum is None else str(maximum),
            key,
            self._retention_ms,
        ]
        if outbox:
            args += self._outbox_args(outbox)
        try:
            reply: Any = await self._script(keys=keys, args=args)
        except RedisError as exc:
            raise StoreError(f"Redis add failed: {type(exc).__name__}: {exc}") from exc
        status, balance = int(reply[0]), int(reply[1])
        if status < 0:
            raise BalanceLimitError(key, balance, delta, minimum, maximum)
        return AddResult(balance, status == 1)

    supports_revert = True

    async def _revert(
        self, key: str, delta: int, idempotency_key: str, outbox: Sequence[OutboxEntry]
    ) -> bool:
        """Undo an idempotent change in one script; see ``BalanceStore.revert``.  The
        stored idempotency key records the delta, not the account: a key is matched on
        its delta."""
        self._check_open()
        prefix = self.prefix
        keys = [prefix + "b:" + key, prefix + "i:" + idempotency_key]
        args = [str(delta), str(-delta)]
        if outbox:
            args += self._outbox_args(outbox)
        try:
            reply: Any = await self._revert_script(keys=keys, args=args)
        except RedisError as exc:
            raise StoreError(f"Redis revert failed: {type(exc).__name__}: {exc}") from exc
        return int(reply) == 1

    # -- the webhook outbox ----------------------------------------------------------------
    # Keys: {prefix}wh:e:{id} (a hash per event), {prefix}wh:q (pending ids by seq),
    # {prefix}wh:dead (dead ids by seq), {prefix}wh:open (merge key -> open event id),
    # {prefix}wh:seq (the counter).  The scripts derive them from the prefix: on Redis
    # Cluster the prefix needs a hash tag ("{ilp}:") so they share one slot.

    supports_outbox = True

    def _outbox_args(self, outbox: Sequence[OutboxEntry]) -> list[str]:
        now = self.clock()
        entries = [
            {
                "id": entry.event_id,
                "type": entry.type,
                "account": entry.account,
                "merge_key": entry.merge_key or "",
                "amount": str(entry.amount),
                "balance": "" if entry.balance is None else str(entry.balance),
                "data": entry.data_json(),
                "due": repr(now + entry.window),
                "when": entry.when or "",
                "threshold": str(entry.threshold),
            }
            for entry in outbox
        ]
        return [self.prefix, repr(now), json.dumps(entries, separators=(",", ":"))]

    async def _call(self, what: str, script: Any, args: list[str]) -> Any:
        self._check_open()
        try:
            return await script(keys=[], args=args)
        except RedisError as exc:
            raise StoreError(f"Redis {what} failed: {type(exc).__name__}: {exc}") from exc

    async def outbox_write(self, entries: Sequence[OutboxEntry]) -> None:
        """Write events on their own; see ``BalanceStore.outbox_write``."""
        if entries:
            await self._call("outbox write", self._write_script, self._outbox_args(entries))

    async def outbox_claim(self, worker: str, limit: int, lease: float) -> list[OutboxEvent]:
        """Claim due events in one script; see ``BalanceStore.outbox_claim``."""
        check_claim_args(limit, lease)
        now = self.clock()
        args = [
            self.prefix,
            repr(now),
            repr(now + lease),
            str(limit),
            str(CLAIM_SCAN),
            secrets.token_hex(12),
            str(CLAIM_RUN),
        ]
        reply = await self._call("outbox claim", self._claim_script, args)
        return [_event(_pairs(row)) for row in reply]

    async def outbox_ack(self, event_id: str, token: str) -> bool:
        """Forget a delivered event; see ``BalanceStore.outbox_ack``."""
        reply = await self._call("outbox ack", self._ack_script, [self.prefix, event_id, token])
        return int(reply) == 1

    async def outbox_retry(
        self,
        event_id: str,
        token: str,
        *,
        due: float,
        error: str,
        acked: Sequence[str] = (),
        dead: bool = False,
    ) -> bool:
        """Schedule another attempt (or give up); see ``BalanceStore.outbox_retry``."""
        args = [
            self.prefix,
            event_id,
            token,
            repr(self.clock() if dead else due),
            error[:MAX_ERROR],
            json.dumps(list(acked)),
            "1" if dead else "0",
        ]
        return int(await self._call("outbox retry", self._retry_script, args)) == 1

    async def outbox_list(self, state: OutboxState, limit: int = 100) -> list[OutboxEvent]:
        """Events in ``state``; see ``BalanceStore.outbox_list``."""
        self._check_open()
        index = self.prefix + ("wh:q" if state == "pending" else "wh:dead")
        try:
            ids: list[Any] = await self._client.zrange(index, 0, max(0, limit - 1))
            events: list[OutboxEvent] = []
            for raw in ids[:limit]:
                event_id = _text(raw)
                row = await self._client.hgetall(self.prefix + "wh:e:" + event_id)
                if row:
                    fields = {_text(k): _text(v) for k, v in row.items()}
                    fields["id"] = event_id
                    events.append(_event(fields))
        except RedisError as exc:
            raise StoreError(f"Redis read failed: {type(exc).__name__}: {exc}") from exc
        return events

    async def outbox_replay(self, event_id: str) -> bool:
        """Send an event again now; see ``BalanceStore.outbox_replay``."""
        args = [self.prefix, event_id, repr(self.clock())]
        return int(await self._call("outbox replay", self._replay_script, args)) == 1

    async def outbox_purge(self, older_than: float) -> int:
        """Delete old dead letters (in scripts of at most :data:`_PURGE_BATCH` each);
        see ``BalanceStore.outbox_purge``."""
        cutoff = repr(self.clock() - check_purge_age(older_than))
        total = 0
        while True:
            args = [self.prefix, cutoff, str(_PURGE_BATCH)]
            purged = int(await self._call("outbox purge", self._purge_script, args))
            total += purged
            if purged < _PURGE_BATCH:
                return total

    async def outbox_counts(self) -> dict[str, int]:
        """The outbox's depth; see ``BalanceStore.outbox_counts``."""
        self._check_open()
        try:
            pending = await self._client.zcard(self.prefix + "wh:q")
            dead = await self._client.zcard(self.prefix + "wh:dead")
        except RedisError as exc:
            raise StoreError(f"Redis read failed: {type(exc).__name__}: {exc}") from exc
        return {"pending": int(pending), "dead": int(dead)}

    async def balance(self, key: str) -> int:
        """The balance of ``key`` (0 if unknown)."""
        if not isinstance(key, str):
            raise TypeError(f"key must be str, not {type(key).__name__}")
        self._check_open()
        try:
            value = await self._client.get(self.prefix + "b:" + key)
        except RedisError as exc:
            raise StoreError(f"Redis read failed: {type(exc).__name__}: {exc}") from exc
        return 0 if value is None else int(value)

    async def balances(self, prefix: str = "") -> dict[str, int]:
        """Every key starting with ``prefix`` and its balance (via the lexicographic index)."""
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be str, not {type(prefix).__name__}")
        self._check_open()
        raw = prefix.encode()
        # UTF-8 never contains 0xff, so [prefix, prefix + 0xff) is exactly the prefix range.
        low, high = (b"[" + raw, b"(" + raw + b"\xff") if raw else (b"-", b"+")
        result: dict[str, int] = {}
        try:
            members = await self._client.zrangebylex(self._index, low, high)
            for start in range(0, len(members), 1000):
                chunk = [
                    m.decode() if isinstance(m, bytes) else m for m in members[start : start + 1000]
                ]
                values = await self._client.mget([self.prefix + "b:" + k for k in chunk])
                for k, v in zip(chunk, values, strict=True):
                    if v is not None:
                        result[k] = int(v)
        except RedisError as exc:
            raise StoreError(f"Redis read failed: {type(exc).__name__}: {exc}") from exc
        return result

    async def close(self) -> None:
        """Close the connection pool (unless the client was passed in)."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(row: list[Any]) -> dict[str, str]:
    """A flat ``[field, value, ...]`` reply as a dict of text."""
    return {_text(row[i]): _text(row[i + 1]) for i in range(0, len(row) - 1, 2)}


def _event(fields: dict[str, str]) -> OutboxEvent:
    """An :class:`OutboxEvent` from an event hash."""
    balance = fields.get("balance", "")
    state = fields.get("state", "pending")
    return OutboxEvent(
        event_id=fields["id"],
        seq=int(fields["seq"]),
        type=fields["type"],
        account=fields["account"],
        amount=int(fields["amount"]),
        count=int(fields["count"]),
        balance=int(balance) if balance else None,
        data=json.loads(fields["data"]),
        created=float(fields["created"]),
        last=float(fields["last"]),
        attempts=int(fields["attempts"]),
        state="dead" if state == "dead" else "pending",
        token=fields.get("token", ""),
        acked=tuple(json.loads(fields.get("acked", "[]"))),
        error=fields.get("error", ""),
        due=float(fields["due"]),
    )
