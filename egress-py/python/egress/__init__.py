"""Turn a Linux network namespace into an egress router.

Pods reach an outside system only through the router, which DNATs their connections to the
external destination and sends them out of a macvlan with one known source IP. Everything is
programmed over netlink as one transaction with automatic rollback (the Rust library
egress-core does the work; this package builds its spec and calls it).

    import egress

    spec = (egress.RouterSpec(name="egress-1", netns="/run/netns/pod")
            .macvlan(parent="eth1", mode="private")
            .source("203.0.113.99/24")
            .gateway("203.0.113.1")
            .redirect(80, "198.51.100.25", 8080)
            .fallback("198.51.100.9"))
    print("\\n".join(map(str, spec.plan())))   # dry run
    with spec.apply() as router:                  # torn down when the block ends
        ...

Also: RouterSpec.from_dict() / to_dict() (the JSON form), RouterSpec.from_env() (OpenShift's
EGRESS_* variables), spec.check() (drift), spec.plan_live() (what the namespace still needs),
spec.ensure() (idempotent apply), egress.inspect(name, netns=...),
egress.stats(name, netns=...) and Router.stats() (traffic per redirect, fallback and SNAT, as
a Stats dict), egress.teardown(name, netns=...) and its dry run egress.plan_teardown(), and
egress.diagnose(name, netns=...) /
spec.diagnose(): why a router does not work, as a Diagnosis of Checks, each with its hint
(docs/diagnose.md). High availability: spec.apply(standby=True), then router.promote() /
router.demote(), or egress.promote(name, netns=...) / egress.demote(...) from another process
(keepalived's notify, a Kubernetes Lease holder).

Every error is an EgressError; InvalidSpecError is also a ValueError. Arguments of the wrong
type raise TypeError. Everything needs CAP_NET_ADMIN (root) except building and planning.

The library logs through the standard logging module, logger "egress": each step of an apply
at DEBUG (message "step done step=... us=..."), repairs at INFO, failed steps at WARNING;
the fields are also in record.egress_fields (a dict). The records of a call are handled on
the thread that made it, when it returns. Levels the "egress" logger does not pass cost
nothing measurable: the library reads the logger's level at each call.

Threads, signals and fork: every function and every method of one Router may be called from
any thread, also at once; a signal whose handler raises during spec.apply() (Ctrl-C) tears
the new router down again before the exception propagates; a forked child may call the
library at once. The repository's README says more.
"""

import logging as _logging
from typing import TypedDict as _TypedDict

from egress._egress import (
    AlreadyExistsError,
    ApplyError,
    Check,
    ConflictError,
    Diagnosis,
    Drift,
    EgressError,
    EnsureResult,
    KernelError,
    NotFoundError,
    PermissionDeniedError,
    RollbackIncompleteError,
    Router,
    RouterSpec,
    StaleHandleError,
    Step,
    TeardownError,
    TeardownInProgressError,
    UndoSkippedError,
    VerifyError,
    __version__,
    demote,
    diagnose,
    inspect,
    plan_teardown,
    promote,
    stats,
    teardown,
)

# A library leaves the output of its log records to the application.
_logging.getLogger("egress").addHandler(_logging.NullHandler())


class InvalidField(_TypedDict):
    """One invalid field of a spec, as InvalidSpecError.errors lists them."""

    field: str
    """The field as a JSON path, such as "redirects[1].port"."""
    value: str
    """The value given, as text."""
    expected: str
    """What would be valid."""


class RedirectStats(_TypedDict):
    """The traffic of one redirect (Stats["redirects"])."""

    protocol: str
    """tcp, udp or sctp."""
    port: int
    """The local port on the router."""
    to: str
    """The destination address."""
    to_port: int
    """The destination port."""
    connections: int
    """Connections redirected (their first packet)."""
    packets: int
    """Packets of those connections, both directions."""
    bytes: int
    """Bytes of those connections, both directions."""


class FallbackStats(_TypedDict):
    """The traffic sent to the fallback of one family (Stats["fallback"])."""

    to: str
    connections: int
    packets: int
    bytes: int


class SnatStats(_TypedDict):
    """What left through the external link from the egress source of one family."""

    source: str
    packets: int
    bytes: int


class Stats(_TypedDict):
    """A router's traffic since it was applied, read from the kernel: egress.stats() and
    Router.stats(). A repair that rebuilds the router's ruleset starts the counters again."""

    name: str
    redirects: list[RedirectStats]
    fallback: list[FallbackStats]
    snat: list[SnatStats]
    conntrack_entries: int
    """Connections tracked in the router's namespace now."""


class InvalidSpecError(EgressError, ValueError):
    """Spec fields hold values that can never work, whatever the kernel holds.

    Validation reports every invalid field at once. The message names each field, its value
    and what would be valid. Attributes: errors (every invalid field, as InvalidField dicts:
    {"field", "value", "expected"}, in the order of the spec), and the first of them again as
    field (a JSON path such as "redirects[1].port"), value (as given) and expected.
    """

    field: str
    value: str
    expected: str
    errors: list[InvalidField]


__all__ = [
    "AlreadyExistsError",
    "ApplyError",
    "Check",
    "ConflictError",
    "Diagnosis",
    "Drift",
    "EgressError",
    "EnsureResult",
    "FallbackStats",
    "InvalidField",
    "InvalidSpecError",
    "KernelError",
    "NotFoundError",
    "PermissionDeniedError",
    "RedirectStats",
    "RollbackIncompleteError",
    "Router",
    "RouterSpec",
    "SnatStats",
    "StaleHandleError",
    "Stats",
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
