"""`keepdocker deployment-run FLOW/DEPLOYMENT --param KEY=VALUE`: run a deployment, wait, print only its answer.

For CI: on success stdout holds the run's final state message (for push-image it starts with the collection UUID)
and the exit code is 0; on failure stderr holds one line with the reason and the exit code is 1; parameters the
server refuses, or a deployment that does not exist, exit 2. No logs to read: they stay in the UI.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from cli.commands._flowrun import prepare_prefect
from keepdocker.errors import ConfigurationError, KeepdockerError, UsageError

POLL_SECONDS = 1.0
PROBE_SECONDS = 5.0


def add_parser(sub: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "deployment-run",
        help="run a Prefect deployment and print its answer (for CI)",
        description="Run a deployment on the Prefect server at PREFECT_API_URL, wait for it to finish, and print "
        "the run's answer: the state message on stdout (exit 0), or the reason it failed on stderr (exit 1).",
    )
    p.add_argument("deployment", metavar="FLOW/DEPLOYMENT", help="e.g. push-image/ci")
    p.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help='a flow parameter: text ones take VALUE as typed (tag=1.10), others read it as JSON (true, 3, ["a"])',
    )
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the run (default 3600)")
    p.set_defaults(func=run)


def parse_params(items: list[str]) -> dict[str, str]:
    """KEY=VALUE pairs, the values as typed (later keys win)."""
    params: dict[str, str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param {item!r}: give KEY=VALUE, e.g. --param image=busybox:1.36")
        params[key.strip()] = raw
    return params


def typed_params(raw: dict[str, str], schema: dict[str, Any], deployment: str) -> dict[str, Any]:
    """Values for the deployment's parameters: text for text parameters, JSON (else text) for the others.

    `prefect deployment run --param` reads every value as JSON, so `tag=1.10` arrives as the number 1.1. Here a
    parameter whose schema says string keeps exactly what was typed.
    """
    properties: dict[str, Any] = schema.get("properties") or {}
    unknown = sorted(set(raw) - set(properties))
    if unknown:
        raise UsageError(
            f"{deployment} has no parameter {', '.join(unknown)}; it takes {', '.join(properties) or 'none'}"
        )
    params: dict[str, Any] = {}
    for key, value in raw.items():
        if properties[key].get("type") == "string":
            params[key] = value
            continue
        try:
            params[key] = json.loads(value)
        except ValueError:
            params[key] = value
    return params


def first_line(text: str | None) -> str:
    """The first non-empty line of a state message ('' when none)."""
    return next((line.strip() for line in (text or "").splitlines() if line.strip()), "")


def _refusal(exc: Any) -> str:
    """The server's reason for refusing a flow run (its JSON detail), as one line."""
    try:
        detail = exc.response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return first_line(str(detail or exc))


def run(args: argparse.Namespace) -> int:
    """Create the flow run, wait for a final state, print the answer."""
    raw = parse_params(args.param)
    if "/" not in args.deployment:
        raise UsageError(f"{args.deployment!r}: name the deployment as FLOW/DEPLOYMENT, e.g. push-image/ci")
    prepare_prefect()
    import httpx
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
    from prefect.settings import get_current_settings

    api_url = get_current_settings().api.url
    if not api_url:
        raise ConfigurationError("PREFECT_API_URL is not set: point it at the Prefect server that holds the deployment")
    try:
        # One quick probe first: Prefect's client retries a refused connection for half a minute.
        httpx.get(f"{api_url.rstrip('/')}/health", timeout=PROBE_SECONDS)
        with get_client(sync_client=True) as client:
            try:
                deployment = client.read_deployment_by_name(args.deployment)
            except ObjectNotFound:
                raise UsageError(
                    f"no deployment {args.deployment!r} at {api_url}: see `prefect deployment ls`"
                ) from None
            params = typed_params(raw, deployment.parameter_openapi_schema or {}, args.deployment)
            try:
                flow_run = client.create_flow_run_from_deployment(deployment.id, parameters=params)
            except PrefectHTTPStatusError as exc:
                if exc.response.status_code in (409, 422):
                    raise UsageError(f"{args.deployment}: parameters refused: {_refusal(exc)}") from None
                raise
            print(f"flow run {flow_run.name!r} ({flow_run.id}) of {args.deployment} created", file=sys.stderr)
            deadline = time.monotonic() + args.timeout
            while not (flow_run.state is not None and flow_run.state.is_final()):
                if time.monotonic() > deadline:
                    current = flow_run.state.name if flow_run.state else "no state"
                    raise KeepdockerError(
                        f"flow run {flow_run.name!r} still {current} after {args.timeout:g} s; it goes on (see the UI)"
                    )
                time.sleep(POLL_SECONDS)
                flow_run = client.read_flow_run(flow_run.id)
    except httpx.TransportError as exc:
        raise ConfigurationError(f"cannot reach the Prefect API at {api_url}: {first_line(str(exc)) or exc}") from None
    state = flow_run.state
    assert state is not None  # the loop above ends only on a final state
    if state.is_completed():
        print(first_line(state.message) or state.name)
        return 0
    reason = first_line(state.message) or "no reason given"
    raise KeepdockerError(f"flow run {flow_run.name!r} {state.name}: {reason}")
