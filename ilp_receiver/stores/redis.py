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

Durability is Redis's: a credit is as durable as the server's persistence settings make
it (``appendonly yes`` with ``appendfsync always`` or ``everysec``). Idempotency keys
expire by the server's clock, not by the injected ``clock``. For Redis Cluster put a
hash tag in the prefix (``"{ilp}:"``) so one script's keys share a slot.
"""

from __future__ import annotations

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
    check_add_args,
)

__all__ = ["ADD_SCRIPT", "REVERT_SCRIPT", "RedisStore"]

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

#: The Lua script behind :meth:`RedisStore.add`.
#: KEYS: balance key, index key[, idempotency key].
#: ARGV: delta, minimum or "", maximum or "", account key, retention in ms.
#: Returns {status, balance}: 1 applied, 0 duplicate idempotency key, -1 limit refused.
ADD_SCRIPT = (
    _DECIMAL
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
return {1, new}
"""
)

#: The Lua script behind :meth:`RedisStore.revert`.
#: KEYS: balance key, idempotency key.  ARGV: delta, -delta.
#: Returns 1 when the key held exactly this delta (forgotten, balance lowered), else 0.
REVERT_SCRIPT = (
    _DECIMAL
    + r"""
if redis.call("GET", KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call("DEL", KEYS[2])
redis.call("SET", KEYS[1], add(redis.call("GET", KEYS[1]) or "0", ARGV[2]))
return 1
"""
)


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

    async def add(
        self,
        key: str,
        delta: int,
        *,
        minimum: int | None = None,
        maximum: int | None = None,
        idempotency_key: str | None = None,
    ) -> AddResult:
        """Atomically add ``delta`` to ``key``; see :meth:`BalanceStore.add`."""
        check_add_args(key, delta, minimum, maximum, idempotency_key)
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
        try:
            reply: Any = await self._script(keys=keys, args=args)
        except RedisError as exc:
            raise StoreError(f"Redis add failed: {type(exc).__name__}: {exc}") from exc
        status, balance = int(reply[0]), int(reply[1])
        if status < 0:
            raise BalanceLimitError(key, balance, delta, minimum, maximum)
        return AddResult(balance, status == 1)

    supports_revert = True

    async def revert(self, key: str, delta: int, idempotency_key: str) -> bool:
        """Undo an idempotent change in one script; see ``BalanceStore.revert``.  The
        stored idempotency key records the delta, not the account: a key is matched on
        its delta."""
        check_add_args(key, delta, None, None, idempotency_key)
        self._check_open()
        prefix = self.prefix
        keys = [prefix + "b:" + key, prefix + "i:" + idempotency_key]
        try:
            reply: Any = await self._revert_script(keys=keys, args=[str(delta), str(-delta)])
        except RedisError as exc:
            raise StoreError(f"Redis revert failed: {type(exc).__name__}: {exc}") from exc
        return int(reply) == 1

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
