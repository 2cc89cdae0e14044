"""End-to-end scenario against a running agora server, through the generated Python client.

Run by tests/external/python/run, which generates the `agora_client` package from
openapi/openapi.json with openapi-python-client and puts it on PYTHONPATH. Every call goes
through the generated api functions and models (no raw HTTP), and every decoded response is
checked against the model's own type annotations (`conforms`), so a field the server sends
with another type than the spec says (say null for a non-nullable field), or a field the spec
does not declare at all, fails the run instead of slipping through the generated parsers.
Results are assigned to variables annotated with the spec's own models (MarketView, UserView,
...), so `mypy --strict` also fails when the generator has to invent inline copies of them
(e.g. `MarketEnvelopeData`) because the spec wraps a reference in something it cannot pass
through.

Environment: AGORA_URL, the server's base URL (e.g. http://127.0.0.1:8080).
"""

from __future__ import annotations

import datetime
import enum
import os
import secrets
import sys
import time
import types
import typing
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import attrs
import httpx

import agora_client.models
from agora_client import AuthenticatedClient, Client
from agora_client.api.auth import login_user, register_user
from agora_client.api.markets import create_market, get_market, search_markets
from agora_client.api.positions import create_position
from agora_client.api.users import get_me
from agora_client.errors import UnexpectedStatus
from agora_client.models import (
    BetEnvelope,
    BetView,
    CreateMarketBody,
    ErrorBody,
    LoginBody,
    MarketEnvelope,
    MarketStatusView,
    MarketView,
    RegisterBody,
    RoleView,
    SearchEnvelope,
    SearchHitView,
    SessionEnvelope,
    SessionView,
    StakeBody,
    UserEnvelope,
    UserView,
)
from agora_client.types import Response, Unset

T = TypeVar("T")

STAKE = 150
OUTCOMES = ["RED", "GREEN", "BLUE"]
STAKED_OUTCOME = 1
RETRIES_ON_429 = 3


class ScenarioError(Exception):
    pass


def fail(message: str) -> NoReturn:
    raise ScenarioError(message)


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)


def step(number: int, text: str) -> None:
    print(f"  {number}. {text}", flush=True)


# --- decoding checks ----------------------------------------------------------------------------

_MODEL_NAMESPACE: dict[str, Any] = dict(vars(agora_client.models))
_hints_cache: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    """The resolved annotations of a generated model (its nested models are imported only
    under TYPE_CHECKING, so they are resolved from the models package)."""
    if cls not in _hints_cache:
        module = sys.modules[cls.__module__]
        _hints_cache[cls] = typing.get_type_hints(cls, globalns={**vars(module), **_MODEL_NAMESPACE})
    return _hints_cache[cls]


def conforms(value: object, hint: Any, path: str) -> list[str]:
    """Problems found checking a decoded value against a type annotation of the generated
    client (empty when it conforms)."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return []
    if origin is typing.Union or origin is types.UnionType:
        arms = typing.get_args(hint)
        results = [conforms(value, arm, path) for arm in arms]
        if any(not r for r in results):
            return []
        names = " | ".join(getattr(a, "__name__", str(a)) for a in arms)
        return [f"{path}: {value!r} is not {names}"]
    if hint is type(None):
        return [] if value is None else [f"{path}: expected null, got {value!r}"]
    if origin is list:
        if not isinstance(value, list):
            return [f"{path}: expected a list, got {value!r}"]
        (item,) = typing.get_args(hint)
        return [p for i, v in enumerate(value) for p in conforms(v, item, f"{path}[{i}]")]
    if origin is dict:
        return [] if isinstance(value, dict) else [f"{path}: expected an object, got {value!r}"]
    if not isinstance(hint, type):
        return [f"{path}: cannot check against {hint!r}"]
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected a number, got {value!r}"]
    if hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        return [] if ok else [f"{path}: expected an integer, got {value!r}"]
    if hint is datetime.datetime:
        if not isinstance(value, datetime.datetime):
            return [f"{path}: expected a date-time, got {value!r}"]
        return [] if value.tzinfo is not None else [f"{path}: date-time without a time zone"]
    if issubclass(hint, enum.Enum) or hint in (str, bool, Unset):
        return [] if isinstance(value, hint) else [f"{path}: expected {hint.__name__}, got {value!r}"]
    if attrs.has(hint):
        if not isinstance(value, hint):
            return [f"{path}: expected {hint.__name__}, got {value!r}"]
        problems = []
        hints = _hints(hint)
        fields = attrs.fields(hint)
        for field in fields:
            if field.name == "additional_properties":
                # A model with no declared properties is a free-form object in the spec.
                extra = sorted(getattr(value, field.name))
                if extra and len(fields) > 1:
                    problems.append(f"{path}: fields not in the spec's {hint.__name__}: {extra}")
                continue
            problems += conforms(getattr(value, field.name), hints[field.name], f"{path}.{field.name}")
        return problems
    return [f"{path}: cannot check against {hint!r}"]


def send(what: str, request: Callable[[], Response[Any]]) -> Response[Any]:
    """Make a request; on 429 (the server is shared, and its rate limits may be on) wait for
    Retry-After and try again, a few times."""
    for _ in range(RETRIES_ON_429):
        response = request()
        if response.status_code != 429:
            return response
        try:
            wait = min(float(response.headers.get("retry-after", "1")), 60.0)
        except ValueError:
            wait = 1.0
        print(f"     ({what}: 429 rate limited; retrying in {wait:g} s)", flush=True)
        time.sleep(wait)
    return request()


def decode(response: Response[Any], status: int, cls: type[T], what: str) -> T:
    """The decoded body of a response that must have this status and decode to this model."""
    body = response.content.decode(errors="replace")
    check(
        response.status_code == status,
        f"{what}: expected HTTP {status}, got {int(response.status_code)}: {body}",
    )
    parsed = response.parsed
    if not isinstance(parsed, cls):
        fail(f"{what}: expected a {cls.__name__}, decoded {type(parsed).__name__}: {body}")
    problems = conforms(parsed, cls, cls.__name__)
    check(not problems, f"{what}: the response does not match the spec:\n    " + "\n    ".join(problems))
    return parsed


def expect(what: str, request: Callable[[], Response[Any]], status: int, cls: type[T]) -> T:
    return decode(send(what, request), status, cls, what)


# --- the scenario -------------------------------------------------------------------------------


def run(base_url: str) -> None:
    timeout = httpx.Timeout(30.0)
    anonymous = Client(base_url=base_url, timeout=timeout, raise_on_unexpected_status=True)
    suffix = secrets.token_hex(5)
    username = f"py-{suffix}"
    password = f"pw-{secrets.token_hex(8)}"
    word = f"pyclient{suffix}"

    # 1. register
    user: UserView = expect(
        "register",
        lambda: register_user.sync_detailed(client=anonymous, body=RegisterBody(username=username, password=password)),
        201,
        UserEnvelope,
    ).data
    check(user.username == username, f"register: username {user.username!r}, expected {username!r}")
    check(user.role == RoleView.USER, f"register: role {user.role!r}, expected user")
    grant = user.balance  # the server's --signup-grant, 1000 by default
    check(grant >= 2 * STAKE, f"register: balance {grant}, expected at least {2 * STAKE}")
    step(1, f"registered {user.username} (id {user.id}, role {user.role}, balance {user.balance})")

    # 2. login, then act with an AuthenticatedClient
    session: SessionView = expect(
        "login",
        lambda: login_user.sync_detailed(client=anonymous, body=LoginBody(username=username, password=password)),
        200,
        SessionEnvelope,
    ).data
    check(session.token_type == "Bearer", f"login: token_type {session.token_type!r}")
    check(session.user.id == user.id, f"login: user id {session.user.id}, expected {user.id}")
    client = AuthenticatedClient(
        base_url=base_url, token=session.access_token, timeout=timeout, raise_on_unexpected_status=True
    )
    me: UserView = expect("get me", lambda: get_me.sync_detailed(client=client), 200, UserEnvelope).data
    check(me.id == user.id, f"get me: id {me.id}, expected {user.id}")
    step(2, f"logged in: {session.token_type} token, expires in {session.expires_in} s; /api/me is id {me.id}")

    # 3. create a market
    name = f"Will the {word} ferry run on time in 2027?"
    body = CreateMarketBody(
        name=name, description="Created by the Python generated-client scenario.", outcomes=OUTCOMES
    )
    created_response = send("create market", lambda: create_market.sync_detailed(client=client, body=body))
    market: MarketView = decode(created_response, 201, MarketEnvelope, "create market").data
    check(market.name == name, f"create market: name {market.name!r}")
    check(market.creator.id == user.id, f"create market: creator {market.creator.id}, expected {user.id}")
    check(market.status == MarketStatusView.ACTIVE, f"create market: status {market.status}")
    check([o.label for o in market.outcomes] == OUTCOMES, f"create market: outcomes {market.outcomes}")
    check(market.volume == 0, f"create market: volume {market.volume}")
    location = created_response.headers.get("location")
    check(location == f"/api/markets/{market.id}", f"create market: Location {location!r}")
    step(3, f"created market {market.id} {market.name!r} (version {market.version}, status {market.status})")

    # 4. stake on one of its outcomes
    stake = StakeBody(outcome=STAKED_OUTCOME, amount=STAKE)
    bet: BetView = expect(
        "stake", lambda: create_position.sync_detailed(market.id, client=client, body=stake), 201, BetEnvelope
    ).data
    check(bet.market_id == market.id, f"stake: market_id {bet.market_id}, expected {market.id}")
    check(bet.outcome == STAKED_OUTCOME and bet.amount == STAKE, f"stake: got {bet}")
    check(bet.balance_after == grant - STAKE, f"stake: balance_after {bet.balance_after}, expected {grant - STAKE}")
    step(4, f"staked {bet.amount} on {OUTCOMES[bet.outcome]} (bet {bet.id}, balance after {bet.balance_after})")

    # 5. read the market back: the stake shows in its pool, volume and probabilities
    read_response = send("get market", lambda: get_market.sync_detailed(market.id, client=anonymous))
    read: MarketView = decode(read_response, 200, MarketEnvelope, "get market").data
    pools = {o.label: o.pool for o in read.outcomes}
    check(read.volume == STAKE, f"get market: volume {read.volume}, expected {STAKE}")
    check(
        pools == {label: STAKE if i == STAKED_OUTCOME else 0 for i, label in enumerate(OUTCOMES)},
        f"get market: pools {pools}",
    )
    check(read.outcomes[STAKED_OUTCOME].probability == 1.0, f"get market: outcomes {read.outcomes}")
    check(read.version > market.version, f"get market: version {read.version} not above {market.version}")
    etag = read_response.headers.get("etag")
    check(etag == f'"{read.id}-{read.version}"', f"get market: ETag {etag!r}, expected \"{read.id}-{read.version}\" (id and version)")
    step(5, f"read market {read.id} back: volume {read.volume}, pools {pools}, version {read.version}, ETag {etag}")

    # 6. search for the unique word
    found = expect("search", lambda: search_markets.sync_detailed(client=anonymous, q=word), 200, SearchEnvelope)
    ids = [hit.market.id for hit in found.data]
    check(market.id in ids, f"search {word!r}: market {market.id} not among {ids}")
    check(found.meta.count == len(found.data), f"search: meta.count {found.meta.count}, {len(found.data)} hits")
    hit: SearchHitView = found.data[ids.index(market.id)]
    step(
        6,
        f"search {word!r} ({found.meta.mode} mode) found market {market.id} at rank {ids.index(market.id) + 1}"
        f" of {len(ids)} (keyword rank {hit.keyword_rank}, score {hit.score:.4f})",
    )

    # 7. one expected error: a stake beyond the balance is refused with the typed error body
    too_much = StakeBody(outcome=0, amount=grant * 1000)
    error = expect(
        "stake beyond the balance",
        lambda: create_position.sync_detailed(market.id, client=client, body=too_much),
        409,
        ErrorBody,
    )
    check(error.code == "insufficient_funds", f"overdraw: code {error.code!r}, expected 'insufficient_funds'")
    check(error.success is False, f"overdraw: success {error.success!r}")
    check(bool(error.request_id), "overdraw: empty request_id")
    after: UserView = expect("get me", lambda: get_me.sync_detailed(client=client), 200, UserEnvelope).data
    check(after.balance == grant - STAKE, f"overdraw: balance {after.balance}, expected {grant - STAKE}")
    step(7, f"staking {too_much.amount} got 409 {error.code}: {error.error!r}; balance still {after.balance}")


def main() -> int:
    base_url = os.environ.get("AGORA_URL", "").rstrip("/")
    if not base_url:
        print("python: AGORA_URL is not set", file=sys.stderr)
        return 2
    try:
        run(base_url)
    except (ScenarioError, UnexpectedStatus) as e:
        print(f"python: scenario FAILED: {e}", file=sys.stderr)
        return 1
    except httpx.HTTPError as e:
        print(f"python: scenario FAILED: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    print("python: scenario passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
