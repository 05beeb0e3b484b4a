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
            .redirect(80, "tcp", "198.51.100.25", 8080)
            .fallback("198.51.100.9"))
    print("\\n".join(map(str, spec.plan())))   # dry run
    with spec.apply() as router:                  # torn down when the block ends
        ...

Also: RouterSpec.from_dict() / to_dict() (the JSON form), RouterSpec.from_env() (OpenShift's
EGRESS_* variables), spec.check() (drift), spec.ensure() (idempotent apply),
egress.inspect(name, netns=...) and egress.teardown(name, netns=...).

Every error is an EgressError; InvalidSpecError is also a ValueError. Arguments of the wrong
type raise TypeError. Everything needs CAP_NET_ADMIN (root) except building and planning.
"""

from egress._egress import (
    AlreadyExistsError,
    ApplyError,
    ConflictError,
    Drift,
    EgressError,
    EnsureResult,
    KernelError,
    NotFoundError,
    PermissionDeniedError,
    RollbackIncompleteError,
    Router,
    RouterSpec,
    Step,
    TeardownError,
    __version__,
    inspect,
    teardown,
)


class InvalidSpecError(EgressError, ValueError):
    """A spec field holds a value that can never work, whatever the kernel holds.

    The message names the field, the value and what would be valid. Attributes: field (a JSON
    path such as "redirects[1].port"), value (as given), expected (what would be valid).
    """

    field: str
    value: str
    expected: str


__all__ = [
    "AlreadyExistsError",
    "ApplyError",
    "ConflictError",
    "Drift",
    "EgressError",
    "EnsureResult",
    "InvalidSpecError",
    "KernelError",
    "NotFoundError",
    "PermissionDeniedError",
    "RollbackIncompleteError",
    "Router",
    "RouterSpec",
    "Step",
    "TeardownError",
    "__version__",
    "inspect",
    "teardown",
]
