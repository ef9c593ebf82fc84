"""`keepdocker push IMAGE [TAG]`: run the push-image flow and print the collection UUID, like arv-keepdocker.

The image comes from the Docker engine ($DOCKER_HOST), a saved archive (--from-archive) or straight from its
registry (--from-registry, no engine).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cli.commands._flowrun import prepare_prefect, run_flow

if TYPE_CHECKING:
    from cli.quickpush import Background

DEFAULT_PLATFORM = "linux/amd64"  # keepdocker.registry.DEFAULT_PLATFORM; not imported, to keep --help fast


def add_parser(sub: Any) -> None:
    """Register the command."""
    p: argparse.ArgumentParser = sub.add_parser(
        "push", help="put a Docker image into Arvados", description="Put a Docker image into Arvados Keep."
    )
    p.add_argument(
        "image",
        nargs="?",
        help="repo, repo:tag, registry:port/repo:tag or image ID (prefix); optional with --from-archive",
    )
    p.add_argument("tag", nargs="?", help="tag, when not part of IMAGE (default latest)")
    p.add_argument("--project-uuid", help="project that owns the collection and links (default: your home)")
    p.add_argument("--name", help="collection name (default: arv-keepdocker's)")
    p.add_argument("--force", action="store_true", help="upload even if Arvados already holds the image")
    p.add_argument("--pull", action="store_true", help="pull the image first (always refreshes it)")
    p.add_argument("--force-image-format", action="store_true", help="store even if the cluster lacks v2")
    p.add_argument(
        "--from-archive",
        metavar="FILE",
        help="push this saved archive; no Docker engine is used (no IMAGE: the archive's own image and tags)",
    )
    reg = p.add_argument_group("from a registry (no Docker engine; needs skopeo)")
    reg.add_argument(
        "--from-registry",
        action="store_true",
        help="fetch IMAGE straight from its registry; credentials from your Docker config",
    )
    reg.add_argument(
        "--platform",
        default=DEFAULT_PLATFORM,
        help=f"platform to take from a multi-platform image (os/arch[/variant], default {DEFAULT_PLATFORM})",
    )
    reg.add_argument(
        "--allow-http", action="store_true", help="allow a plain-HTTP registry (loopback ones need no opt-in)"
    )
    reg.add_argument("--registry-ca", metavar="FILE", help="PEM file with the CA(s) to trust for the registry")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr (errors are still printed)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Validate, run the flow, print the collection UUID."""
    from keepdocker.requests import PushRequest  # imported here: `keepdocker --help` stays fast

    request = PushRequest(
        image=args.image,
        tag=args.tag,
        project_uuid=args.project_uuid,
        name=args.name,
        force=args.force,
        pull=args.pull,
        force_image_format=args.force_image_format,
        from_archive=args.from_archive,
        from_registry=args.from_registry,
        platform=args.platform,
        allow_http=args.allow_http,
        registry_ca=str(Path(args.registry_ca).resolve()) if args.registry_ca else None,
    )
    presave: Background | None = None  # a save or registry fetch running while Prefect imports
    if args.from_registry and not args.force:
        from cli.quickpush import pre_fetch, quick_look_registry
        from keepdocker.push_plan import PushTarget

        target = PushTarget(
            request.image,
            request.tag,
            request.project_uuid,
            request.force_image_format,
            from_registry=True,
            platform=request.platform,
            allow_http=request.allow_http,
            registry_ca=request.registry_ca,
        )
        look = quick_look_registry(target)
        if look.present_uuid is not None:
            print(look.present_uuid)
            return 0
        if look.fetch is not None:
            presave = pre_fetch(look.fetch, target).start()  # fetches while Prefect imports; the fetch task reuses it
    elif not (args.from_archive or args.pull or args.force):
        from cli.quickpush import pre_save, quick_look

        look = quick_look(
            request.image or "", request.tag, request.project_uuid, force_image_format=args.force_image_format
        )
        if look.present_uuid is not None:
            # Nothing to do is answered without starting a flow run (and so without a history row).
            print(look.present_uuid)
            return 0
        if look.save_id is not None:
            presave = pre_save(look.save_id).start()  # saves while Prefect imports; the flow's save task reuses it
    try:
        prepare_prefect()
        from flows.push import push_image

        ok, result = run_flow(push_image, request)
    except BaseException as exc:
        # Ctrl-C ends at once: the background save (a daemon thread) dies with the process, and its temporary
        # file is removed by the next save of the image. Any other end waits for it, so nothing is left half-written.
        if presave is not None and not isinstance(exc, KeyboardInterrupt):
            presave.join()
        raise
    if presave is not None:
        presave.join()
    if not ok:
        raise result
    print(result.collection_uuid)
    return 0
