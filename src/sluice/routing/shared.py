"""Routing state shared between replicas through Redis: cooldowns, cache affinity, live metrics.

Every replica (every `sluice serve` worker process, on any host) keeps its own `LiveRouting` and
routes from it alone: no request ever waits on Redis. This module keeps those copies in step in
the background, when the config names a `redis` URL:

- **Cooldowns and cache affinities** are drained from `RouteHealth.changes` / `Affinity.changes`
  every `tick` (0.1 s), published on one pub/sub channel and applied by every other replica
  (`apply_remote`). Each is also written to Redis with an expiry, so a replica that starts (or
  reconnects) later loads what is current. Nothing is ever deleted: an entry just expires.
- **Metrics**: every `push_every` (1 s) the local minute buckets (`RouteMetrics.drain()`) are
  added into per-route minute and hour hashes (HINCRBYFLOAT: every field is additive); every
  `pull_every` (2 s) the last 60 minutes of every route are read back (the last 7 days of hours
  every `hours_every`, 30 s; between full reads only the newest buckets, see `_View`) and
  installed with `RouteMetrics.merge_remote`, so every replica sorts on the same numbers.

Keys (prefix `sluice:`; `label` is a route's `provider/model`, `<db>` the URL's database number):

    sluice:cooldowns                   zset  member "<replica>\\t<label>\\t<reason>", score = end (unix s)
    sluice:affinity:<key>              str   JSON [replica, label, expires, cached tokens], PX = time left
    sluice:metrics:labels              zset  member label, score = last push (unix s)
    sluice:metrics:<label>:m:<minute>  hash  field -> float (minute = unix s // 60), expires after 2 h
    sluice:metrics:<label>:h:<hour>    hash  field -> float (hour = unix s // 3600), expires after 8 days
    sluice:events:<db>                 pub/sub channel (pub/sub ignores database numbers: the number
                                       keeps two deployments on one server apart)

Redis down or slow: every call has a short timeout (`timeout`, 0.5 s) and runs in these tasks
only. The first failure logs one warning for the outage, the loops back off (0.5 s doubling to
5 s) and routing goes on from local state; when Redis answers again one line says so and sharing
resumes (the subscriber reloads the cooldowns and affinities it may have missed). Meanwhile what
was learned locally is kept, bounded, and sent when Redis is back: the latest cooldown per route
and affinity per key (at most `MAX_PENDING` affinities, oldest dropped; expired ones are never
sent), and metric deltas merged per route and minute for up to 2 hours (older ones are dropped:
their minute keys would have expired anyway). A push that timed out after Redis applied it is
sent again, so an outage's edge may count a second of measurements twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from sluice.routing.metrics import MAX_LABELS

if TYPE_CHECKING:
    from sluice.routing.live import LiveRouting

log = logging.getLogger("sluice")

PREFIX = "sluice:"
MINUTE_TTL = 2 * 3600  # minute hashes: the 60 minutes a pull reads, plus room for a late push
HOUR_TTL = 8 * 86400  # hour hashes: the 7 days a pull reads, plus a day
MINUTES_READ = 60
HOURS_READ = 7 * 24
HOURS_WINDOW = HOURS_READ * 3600
PENDING_MINUTES = 120  # metric deltas kept through an outage, in minutes (= MINUTE_TTL)
MAX_PENDING = 10_000  # affinities kept through an outage
_CHUNK = 500  # entries per published message / per MGET

_encode = msgspec.json.encode
_decode = msgspec.json.decode


class _Message(msgspec.Struct, array_like=True):
    replica: str  # the sender
    cooldowns: list[tuple[str, float, str]]  # (label, until, reason)
    affinities: list[tuple[str, str, float, int]]  # (key, label, expires, cached tokens)


class _StoredAffinity(msgspec.Struct, array_like=True):  # a JSON array: there may be 100k of these
    replica: str
    label: str
    expires: float
    tokens: int


class _Link:
    """Whether Redis answers, as the background loops see it: logs an outage once, and its end."""

    QUIET = 30.0  # a flapping Redis logs at most one warning per this many seconds

    def __init__(self) -> None:
        self.up: bool | None = None  # None: not tried yet
        self._warned_at = -self.QUIET
        self._warned = False

    def ok(self) -> None:
        if self.up is False and self._warned:
            log.info("redis answers again: routing state is shared again")
            self._warned = False
        self.up = True

    def failed(self, what: str, exc: BaseException) -> None:
        if self.up is not False:
            now = time.monotonic()
            if now - self._warned_at >= self.QUIET:
                self._warned_at, self._warned = now, True
                log.warning("redis unavailable (%s: %s: %s): routing state stays local until it answers; "
                            "requests are not affected", what, type(exc).__name__, exc)
        self.up = False


class _Backoff:
    FIRST = 0.5
    MAX = 5.0

    def __init__(self) -> None:
        self.delay = self.FIRST
        self.until = 0.0  # monotonic: no new try before

    def waiting(self) -> bool:
        return time.monotonic() < self.until

    def failed(self) -> float:
        delay = self.delay
        self.until = time.monotonic() + delay
        self.delay = min(delay * 2, self.MAX)
        return delay

    def reset(self) -> None:
        self.delay, self.until = self.FIRST, 0.0


class _Plan(NamedTuple):
    view: _View
    labels: list[str]
    first: int  # the oldest bucket in the window
    full: bool  # the whole window is read (else the newest buckets only)
    clock: float  # loop time of the read
    wanted: list[tuple[str, int]]  # (label, bucket index) to read


class _View:
    """Every route's buckets of one size (minutes or hours) as last read from Redis.

    Only the newest buckets still grow (a push lands within seconds of its minute), so a refresh
    reads those alone, and the whole window every `full_every` seconds: that picks up what a
    replica cut off from Redis pushes late. For 20 routes that is 60 reads per 2 s instead of
    1,200, and 60 per 30 s instead of 3,360 for the hours.
    """

    NEWEST = 3

    def __init__(self, size: int, span: int, *, full_every: float, key: Callable[[str, int], str]) -> None:
        self.size, self.span, self.full_every, self.key = size, span, full_every, key
        self.buckets: dict[str, dict[int, dict[str, float]]] = {}
        self.full_at = -math.inf

    def plan(self, labels: list[str], now: float, clock: float) -> _Plan:
        current = int(now // self.size)
        first = current - self.span + 1
        full = clock - self.full_at >= self.full_every
        wanted = []
        for label in labels:
            start = first if full or label not in self.buckets else max(first, current - self.NEWEST + 1)
            wanted.extend((label, index) for index in range(start, current + 1))
        return _Plan(self, labels, first, full, clock, wanted)

    def install(self, plan: _Plan, results: list[dict[str, str]]) -> None:
        kept = {} if plan.full else self.buckets
        buckets = {label: {index: bucket for index, bucket in kept.get(label, {}).items() if index >= plan.first}
                   for label in plan.labels}
        for (label, index), found in zip(plan.wanted, results, strict=True):
            if found:
                buckets[label][index] = {name: float(value) for name, value in found.items()}
            else:
                buckets[label].pop(index, None)
        self.buckets = buckets
        if plan.full:
            self.full_at = plan.clock

    def current(self) -> dict[str, dict[int, dict[str, float]]]:
        return {label: buckets for label, buckets in self.buckets.items() if buckets}


class SharedRouting:
    """Keeps one process's `LiveRouting` in step with the other replicas', through Redis.

    `start()` never fails for Redis' sake and `stop()` is quick; in between, background tasks do
    all the talking (the module doc has the design, the keys and the outage behaviour).
    """

    def __init__(self, live: LiveRouting, url: str, *, prefix: str = PREFIX, timeout: float = 0.5,
                 tick: float = 0.1, push_every: float = 1.0, pull_every: float = 2.0, hours_every: float = 30.0,
                 ping_every: float = 5.0) -> None:
        self.live = live
        self.replica = secrets.token_hex(8)  # tells our own messages from the others'
        self.prefix = prefix
        self.tick, self.push_every, self.pull_every, self.hours_every = tick, push_every, pull_every, hours_every
        self.ping_every = ping_every
        self.timeout = timeout
        # No retries inside the client: a loop's next turn is the retry, after its backoff.
        self.client: aioredis.Redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=0)
        db = self.client.connection_pool.connection_kwargs.get("db", 0)
        self.channel = f"{prefix}events:{db}"
        self.link = _Link()
        self._tasks: list[asyncio.Task[None]] = []
        self._first_sync = asyncio.Event()  # the subscriber's first try (done or failed)
        self._local_errors: set[str] = set()
        # Learned here, not yet in Redis (kept through an outage, bounded: see the module doc).
        self._cooldowns: dict[str, tuple[float, str]] = {}
        self._affinities: dict[str, tuple[str, float, int]] = {}
        self._deltas: dict[tuple[str, int], dict[str, float]] = {}
        # Every replica's metric buckets as last read (a pull reads only what may have changed).
        self._minutes = _View(60, MINUTES_READ, full_every=30.0, key=self._minute_key)
        self._hours = _View(3600, HOURS_READ, full_every=600.0, key=self._hour_key)

    # --- keys ----------------------------------------------------------------------------------

    def _cooldowns_key(self) -> str:
        return f"{self.prefix}cooldowns"

    def _affinity_key(self, key: str) -> str:
        return f"{self.prefix}affinity:{key}"

    def _labels_key(self) -> str:
        return f"{self.prefix}metrics:labels"

    def _minute_key(self, label: str, minute: int) -> str:
        return f"{self.prefix}metrics:{label}:m:{minute}"

    def _hour_key(self, label: str, hour: int) -> str:
        return f"{self.prefix}metrics:{label}:h:{hour}"

    # --- lifespan ------------------------------------------------------------------------------

    async def start(self, wait: float = 1.0) -> None:
        """Start the background tasks; wait up to `wait` s for the first load of the others' state.

        So a replica that starts while others are cooling a route down skips it from its first
        request. Redis down: the wait ends at the first failed connection (refused at once; at
        most `timeout` for an unreachable host), a warning is logged, and the gateway serves.
        """
        self.live.sharing = True  # from now on health and affinity keep their changes for us
        loops: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("subscribe", self._subscribe_loop), ("publish", self._publish_loop), ("metrics", self._metrics_loop)]
        self._tasks = [asyncio.create_task(loop(), name=f"sluice-shared-{name}") for name, loop in loops]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._first_sync.wait(), wait)

    async def stop(self, flush: float = 0.5) -> None:
        """Stop the tasks, send what was learned since their last turn (if Redis answers, within `flush` s), close."""
        pending = set(self._tasks)
        for _ in range(20 if pending else 0):  # (never started: nothing to cancel, `wait` refuses an empty set)
            # Cancelled again until done: on Python 3.11 a cancellation that lands as redis-py's
            # `wait_for` around a socket write completes is lost (the task carries on reading).
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.05)
            if not pending:
                break
        self._tasks = []
        if self.link.up:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(flush):
                    self._collect_changes()
                    await self._publish()
                    self._collect_deltas()
                    await self._push()
        close = getattr(self.client, "aclose", None) or self.client.close  # aclose: redis >= 5.0.1
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.timeout):
                await close()

    def status(self) -> str:
        """For /health: "ok" once Redis answered and while it does, "unavailable" otherwise."""
        return "ok" if self.link.up else "unavailable"

    # --- cooldowns and affinities: out ---------------------------------------------------------

    async def _publish_loop(self) -> None:
        backoff = _Backoff()
        while True:
            await asyncio.sleep(self.tick)
            # Drained every tick, Redis or not, so the lists never grow: an outage keeps only the
            # latest entry per route / key here.
            self._collect_changes()
            if not (self._cooldowns or self._affinities) or backoff.waiting():
                continue
            await self._guarded("publish", backoff, self._publish)

    async def _guarded(self, what: str, backoff: _Backoff, exchange: Callable[[], Awaitable[None]]) -> None:
        """One exchange with Redis: a failure marks the link down and backs off, and never escapes."""
        try:
            await exchange()
        except Exception as exc:  # whatever failed, the loop must go on
            self.link.failed(what, exc)
            backoff.failed()
        else:
            self.link.ok()
            backoff.reset()

    def _collect_changes(self) -> None:
        health, affinity = self.live.health, self.live.affinity
        changes, health.changes = health.changes, []
        cooldowns = self._cooldowns
        for label, until, reason in changes:
            if until > cooldowns.get(label, (0.0, ""))[0]:
                cooldowns[label] = (until, reason)
        learned, affinity.changes = affinity.changes, []
        affinities = self._affinities
        for key, label, expires, tokens in learned:
            affinities.pop(key, None)  # re-inserted last: the dict's order is oldest first
            affinities[key] = (label, expires, tokens)
        while len(affinities) > MAX_PENDING:
            del affinities[next(iter(affinities))]

    async def _publish(self) -> None:
        now = time.time()
        cooldowns = [(label, until, reason) for label, (until, reason) in self._cooldowns.items() if until > now]
        affinities = [(key, label, expires, tokens)
                      for key, (label, expires, tokens) in self._affinities.items() if expires > now]
        if cooldowns or affinities:
            pipe = self.client.pipeline(transaction=False)
            key = self._cooldowns_key()
            if cooldowns:
                pipe.zadd(key, {f"{self.replica}\t{label}\t{reason}": until for label, until, reason in cooldowns},
                          gt=True)
                pipe.zremrangebyscore(key, "-inf", now)  # expired cooldowns, whoever opened them
            for akey, label, expires, tokens in affinities:
                pipe.set(self._affinity_key(akey), _encode(_StoredAffinity(self.replica, label, expires, tokens)),
                         px=max(1, int((expires - now) * 1000)))
            for i in range(0, max(len(cooldowns), len(affinities)), _CHUNK):
                pipe.publish(self.channel, _encode(_Message(self.replica, cooldowns[i:i + _CHUNK],
                                                            affinities[i:i + _CHUNK])))
            async with asyncio.timeout(self.timeout * 4):
                await pipe.execute()
        self._cooldowns.clear()
        self._affinities.clear()

    # --- cooldowns and affinities: in ----------------------------------------------------------

    async def _subscribe_loop(self) -> None:
        backoff = _Backoff()
        while True:
            pubsub = self.client.pubsub()
            try:
                await self._subscribed(pubsub, backoff)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever failed, the loop must go on
                self.link.failed("subscribe", exc)
            finally:
                self._first_sync.set()
                close = getattr(pubsub, "aclose", None) or pubsub.reset  # aclose: redis >= 5.0.1
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(self.timeout):
                        await close()
            await asyncio.sleep(backoff.failed())

    async def _subscribed(self, pubsub: Any, backoff: _Backoff) -> None:
        """Subscribe, load the current state, then apply what the others publish; raises when the link fails."""
        # Subscribe first, then load: what is published meanwhile waits in the socket, so nothing
        # falls between the snapshot and the messages.
        await pubsub.subscribe(self.channel)
        await self._load()
        self.link.ok()
        backoff.reset()
        self._first_sync.set()
        loop = asyncio.get_running_loop()
        seen = loop.time()
        next_ping = seen + self.ping_every
        while True:
            message = await pubsub.get_message(timeout=min(1.0, self.ping_every))
            now = loop.time()
            if message is not None:
                seen = now
                if message["type"] == "message":
                    self._receive(message["data"])
            if now >= next_ping:
                # A connection cut by a network partition stays silent forever: a PING it never
                # answers is how the subscriber learns it must reconnect.
                await pubsub.ping()
                next_ping = now + self.ping_every
            if now - seen > self.ping_every + 2 * self.timeout + 1.0:
                raise ConnectionError("no answer to PING on the subscription")

    def _receive(self, data: str) -> None:
        try:
            message = _decode(data, type=_Message)
        except msgspec.DecodeError:
            return  # not ours (another program on the channel): nothing to apply
        if message.replica != self.replica:
            self._apply(message.cooldowns, message.affinities)

    def _apply(self, cooldowns: list[tuple[str, float, str]], affinities: list[tuple[str, str, float, int]]) -> None:
        health, affinity = self.live.health, self.live.affinity
        try:
            for label, until, reason in cooldowns:
                health.apply_remote(label, until, reason)
            for key, label, expires, tokens in affinities:
                affinity.apply_remote(key, label, expires, tokens)
        except Exception:
            self._local_error("apply")

    async def _load(self) -> None:
        """The cooldowns and affinities other replicas opened that are still current."""
        now = time.time()
        async with asyncio.timeout(self.timeout * 4):
            members = await self.client.zrangebyscore(self._cooldowns_key(), now, "+inf", withscores=True)
        cooldowns = []
        for member, until in members:
            replica, _, rest = member.partition("\t")
            label, _, reason = rest.partition("\t")
            if replica != self.replica:
                cooldowns.append((label, float(until), reason))
        self._apply(cooldowns, [])
        # Affinities are one key each (the latest route to serve a prefix wins): a SCAN, in
        # batches, so a large keyspace never holds the loop for long.
        pattern = _glob_escape(self._affinity_key("")) + "*"
        cursor: int | str = 0
        while True:
            async with asyncio.timeout(self.timeout * 4):
                cursor, keys = await self.client.scan(cursor, match=pattern, count=1000)
                values = await self.client.mget(keys) if keys else []
            strip = len(self._affinity_key(""))
            affinities = []
            for key, value in zip(keys, values, strict=True):
                if value is None:
                    continue  # expired between the SCAN and the MGET
                try:
                    stored = _decode(value, type=_StoredAffinity)
                except msgspec.DecodeError:
                    continue
                if stored.replica != self.replica and stored.expires > now:
                    affinities.append((key[strip:], stored.label, stored.expires, stored.tokens))
            self._apply([], affinities)
            if int(cursor) == 0:
                return

    # --- metrics ------------------------------------------------------------------------------

    async def _metrics_loop(self) -> None:
        backoff = _Backoff()
        loop = asyncio.get_running_loop()
        next_pull = next_hours = 0.0

        async def exchange() -> None:
            nonlocal next_pull, next_hours
            await self._push()
            # Pushed first, then read: the view read back includes this replica's latest.
            if loop.time() >= next_pull:
                await self._pull(hours=loop.time() >= next_hours)
                next_pull = loop.time() + self.pull_every
                if loop.time() >= next_hours:
                    next_hours = loop.time() + self.hours_every

        while True:
            await asyncio.sleep(self.push_every)
            self._collect_deltas()  # every turn, Redis or not: the local side stays bounded
            if not backoff.waiting():
                await self._guarded("metrics", backoff, exchange)

    def _collect_deltas(self) -> None:
        try:
            drained = self.live.metrics.drain() or ()
        except Exception:
            self._local_error("drain")
            return
        deltas = self._deltas
        for label, minute, fields in drained:
            bucket = deltas.setdefault((label, minute), {})
            for name, value in fields.items():
                bucket[name] = bucket.get(name, 0.0) + value
        oldest = int(time.time() // 60) - PENDING_MINUTES
        for stale in [key for key in deltas if key[1] < oldest]:
            del deltas[stale]

    async def _push(self) -> None:
        if not self._deltas:
            return
        now = time.time()
        # MULTI/EXEC: applied whole or not at all, so a failed push can be sent again as it is.
        pipe = self.client.pipeline(transaction=True)
        labels: dict[str, float] = {}
        for (label, minute), fields in self._deltas.items():
            minute_key, hour_key = self._minute_key(label, minute), self._hour_key(label, minute // 60)
            for name, value in fields.items():
                if value:
                    pipe.hincrbyfloat(minute_key, name, value)
                    pipe.hincrbyfloat(hour_key, name, value)
            pipe.expire(minute_key, MINUTE_TTL)
            pipe.expire(hour_key, HOUR_TTL)
            labels[label] = now
        pipe.zadd(self._labels_key(), labels)
        pipe.expire(self._labels_key(), HOUR_TTL)
        async with asyncio.timeout(self.timeout * 4):
            await pipe.execute()
        self._deltas.clear()

    async def _pull(self, hours: bool) -> None:
        """Read every replica's buckets back and install them (the hours only when `hours`)."""
        now, clock = time.time(), asyncio.get_running_loop().time()
        key = self._labels_key()
        async with asyncio.timeout(self.timeout * 4):
            # The most recently measured routes only, as many as a replica keeps of its own: ad-hoc
            # `provider/any-model` labels come from client input, and each costs reads and memory.
            active = await self.client.zrevrangebyscore(key, "+inf", now - HOURS_WINDOW, start=0, num=MAX_LABELS,
                                                        withscores=True)
        # Only routes measured within a window are read for it: a route gone from every config
        # costs nothing after a week.
        recent = [label for label, pushed in active if pushed >= now - MINUTES_READ * 60 - 60]
        plans = [self._minutes.plan(recent, now, clock)]
        if hours:
            plans.append(self._hours.plan([label for label, _ in active], now, clock))
        pipe = self.client.pipeline(transaction=False)
        for plan in plans:
            for label, index in plan.wanted:
                pipe.hgetall(plan.view.key(label, index))
        if hours:
            pipe.zremrangebyscore(key, "-inf", now - HOURS_WINDOW)
        async with asyncio.timeout(self.timeout * 4):
            results = await pipe.execute() if len(pipe) else []
        position = 0
        for plan in plans:
            plan.view.install(plan, results[position:position + len(plan.wanted)])
            position += len(plan.wanted)
        try:
            self.live.metrics.merge_remote(self._minutes.current(), self._hours.current(), now=now)
        except Exception:
            self._local_error("merge_remote")

    def _local_error(self, what: str) -> None:
        """A bug on this side (not Redis'): logged once with its traceback, then the loops go on."""
        if what not in self._local_errors:
            self._local_errors.add(what)
            log.exception("shared routing state: %s failed", what)


def _glob_escape(text: str) -> str:
    """`text` matched literally by a SCAN MATCH pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
