"""`prasso push ...`: Web Push setup."""

from __future__ import annotations

import base64
from typing import Annotated

import typer

from prasso_messaging.cli.app import fail, print_json

push_app = typer.Typer(help="Web Push (VAPID) setup.", no_args_is_help=True)


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def new_vapid_keys() -> tuple[str, str]:
    """A fresh P-256 key pair as (public, private), both base64url without padding.

    The public key is the uncompressed point browsers take as `applicationServerKey`; the
    private key is the raw 32-byte scalar py_vapid reads.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    private = key.private_numbers().private_value.to_bytes(32, "big")
    return _b64url(public), _b64url(private)


@push_app.command("vapid-keys")
def vapid_keys(
    as_json: Annotated[bool, typer.Option("--json", help="Print stable JSON.")] = False,
) -> None:
    """Generate a VAPID key pair to put in VAPID_PUBLIC_KEY and VAPID_PRIVATE_KEY."""
    try:
        public, private = new_vapid_keys()
    except ImportError:
        fail("web push needs `pip install 'prasso-messaging[push]'` (cryptography is missing)")
    if as_json:
        print_json({"public_key": public, "private_key": private})
        return
    typer.echo(f"VAPID_PUBLIC_KEY={public}")
    typer.echo(f"VAPID_PRIVATE_KEY={private}")
    typer.echo("VAPID_SUBJECT=mailto:you@example.com  # a contact for push services")
