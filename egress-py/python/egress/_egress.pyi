"""Type stubs of the native module egress._egress (re-exported by the egress package)."""

from collections.abc import Mapping, Sequence
from os import PathLike
from types import TracebackType
from typing import Any, Literal, Optional, Union, final

from typing_extensions import Self

from egress import Stats

__all__ = [
    "AlreadyExistsError",
    "ApplyError",
    "Check",
    "ConflictError",
    "Diagnosis",
    "Drift",
    "EgressError",
    "EnsureResult",
    "KernelError",
    "NotFoundError",
    "PermissionDeniedError",
    "RollbackIncompleteError",
    "Router",
    "RouterSpec",
    "StaleHandleError",
    "Step",
    "TeardownError",
    "TeardownInProgressError",
    "UndoSkippedError",
    "VerifyError",
    "__version__",
    "demote",
    "diagnose",
    "inspect",
    "plan_teardown",
    "promote",
    "stats",
    "teardown",
]

__version__: str

_Netns = Union[str, PathLike[str], int]
"""A namespace: a path (str starting with "/", or os.PathLike), a name under /run/netns
(any other str), or a process id (int)."""

_Status = Literal["ok", "warn", "fail", "skipped"]
"""How a check came out."""

@final
class RouterSpec:
    """What an egress router should look like, built with keyword arguments and chained
    methods; each method returns a new RouterSpec."""

    def __new__(
        cls,
        name: str,
        *,
        netns: Optional[_Netns] = None,
        internal: Optional[str] = None,
        sources: Optional[Sequence[str]] = None,
        gateways: Optional[Sequence[str]] = None,
        fallback: Optional[Sequence[str]] = None,
        announce: Optional[int] = None,
    ) -> Self: ...
    @staticmethod
    def from_dict(spec: dict[str, Any]) -> RouterSpec: ...
    @staticmethod
    def from_env(env: Mapping[str, str]) -> RouterSpec: ...
    def to_dict(self) -> dict[str, Any]: ...
    def validate(self) -> Self: ...
    @property
    def name(self) -> str: ...
    def netns(self, netns: Optional[_Netns]) -> RouterSpec: ...
    def macvlan(
        self,
        parent: str,
        mode: str = "bridge",
        *,
        parent_netns: Optional[_Netns] = None,
        mtu: Optional[int] = None,
        mac: Optional[str] = None,
        name: Optional[str] = None,
    ) -> RouterSpec: ...
    def adopt(self, link: str) -> RouterSpec: ...
    def internal(self, link: str) -> RouterSpec: ...
    def source(self, cidr: str) -> RouterSpec: ...
    def gateway(self, ip: str) -> RouterSpec: ...
    def redirect(
        self, port: int, to: str, to_port: Optional[int] = None, protocol: str = "tcp"
    ) -> RouterSpec: ...
    def fallback(self, ip: str) -> RouterSpec: ...
    def keep_route(self, to: str, via: Optional[str] = None) -> RouterSpec: ...
    def announce(self, count: int) -> RouterSpec: ...
    def plan(self) -> list[Step]: ...
    def plan_live(self, *, standby: bool = False) -> list[Step]: ...
    def apply(self, *, standby: bool = False) -> Router: ...
    def check(self) -> list[Drift]: ...
    def ensure(self, *, standby: bool = False) -> EnsureResult: ...
    def diagnose(
        self, *, timeout_ms: Optional[int] = None, fallback_ports: Optional[Sequence[int]] = None
    ) -> Diagnosis: ...

@final
class Router:
    """A configured egress router (a context manager that tears it down on exit)."""

    @property
    def name(self) -> str: ...
    @property
    def spec(self) -> RouterSpec: ...
    @property
    def active(self) -> bool: ...
    def teardown(self) -> list[str]: ...
    def promote(self) -> dict[str, Any]: ...
    def demote(self) -> dict[str, Any]: ...
    def diagnose(
        self, *, timeout_ms: Optional[int] = None, fallback_ports: Optional[Sequence[int]] = None
    ) -> Diagnosis: ...
    def stats(self) -> Optional[Stats]: ...
    def __enter__(self) -> Self: ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
        /,
    ) -> bool: ...

@final
class Step:
    """One kernel change of a plan; str() renders it."""

    @property
    def index(self) -> int: ...

@final
class Drift:
    """One way the kernel differs from a spec; str() says it in a sentence."""

    @property
    def kind(self) -> str: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class EnsureResult:
    """What RouterSpec.ensure() did."""

    @property
    def changed(self) -> bool: ...
    @property
    def action(self) -> str: ...
    @property
    def drift(self) -> list[Drift]: ...

@final
class Check:
    """One question a diagnosis answered; to_dict() is its JSON form."""

    @property
    def name(self) -> str: ...
    @property
    def status(self) -> _Status: ...
    @property
    def summary(self) -> str: ...
    @property
    def hint(self) -> Optional[str]: ...
    @property
    def evidence(self) -> dict[str, Any]: ...
    @property
    def ok(self) -> bool: ...
    @property
    def failed(self) -> bool: ...
    def to_dict(self) -> dict[str, Any]: ...

@final
class Diagnosis:
    """What a diagnosis found: every Check, in a fixed order; str() prints one line per
    check, to_dict() is the documented JSON form."""

    @property
    def router(self) -> str: ...
    @property
    def checks(self) -> list[Check]: ...
    @property
    def status(self) -> _Status: ...
    @property
    def ok(self) -> bool: ...
    @property
    def failed(self) -> bool: ...
    def named(self, name: str) -> list[Check]: ...
    def to_dict(self) -> dict[str, Any]: ...

def teardown(name: str, *, netns: Optional[_Netns] = None) -> list[str]: ...
def plan_teardown(name: str, *, netns: Optional[_Netns] = None) -> list[str]: ...
def inspect(name: str, *, netns: Optional[_Netns] = None) -> Optional[dict[str, Any]]: ...
def promote(name: str, *, netns: Optional[_Netns] = None) -> dict[str, Any]: ...
def demote(name: str, *, netns: Optional[_Netns] = None) -> dict[str, Any]: ...
def diagnose(
    name: str,
    *,
    netns: Optional[_Netns] = None,
    timeout_ms: Optional[int] = None,
    fallback_ports: Optional[Sequence[int]] = None,
) -> Diagnosis: ...
def stats(name: str, *, netns: Optional[_Netns] = None) -> Optional[Stats]: ...

class EgressError(Exception): ...

class PermissionDeniedError(EgressError):
    operation: str
    capability: str

class NotFoundError(EgressError):
    field: str
    object: str
    value: str
    netns: str

class AlreadyExistsError(EgressError): ...
class ConflictError(EgressError): ...

class KernelError(EgressError):
    operation: str
    errno: int

class ApplyError(EgressError):
    step: str
    step_index: int
    rolled_back: bool
    remaining: list[str]
    errno: Optional[int]

class RollbackIncompleteError(ApplyError): ...

class TeardownError(EgressError):
    failures: list[str]
    errors: list[EgressError]

class StaleHandleError(EgressError):
    name: str
    netns: str
    reason: str

class TeardownInProgressError(EgressError):
    name: str
    netns: str
    since: float

class VerifyError(EgressError):
    drift: list[Drift]

class UndoSkippedError(EgressError):
    undo: str
    reason: str
