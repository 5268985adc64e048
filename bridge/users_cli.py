"""`python -m bridge users add | list | rotate-token | remove`: users and tokens, from the host.

An access token goes to stdout only, where the person or script that asked reads it; commentary
and errors go to stderr, which may be a log (no token there, ever). With --json stdout carries
exactly one JSON object. Errors (unknown user, bad role or name, database unreachable) exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import TYPE_CHECKING, Any

from bridge.errors import BridgeError
from bridge.settings import Settings

if TYPE_CHECKING:
    from bridge.store import User

EXIT_ERROR = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `users` subcommands, under `parser`."""
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="create a user and print its id and access token")
    add.add_argument("name", help="display name (printable, at most 100 characters)")
    add.add_argument("--operator", action="store_true", help="same as --role operator")
    # No argparse choices: the store checks the role, so the command line and the web agree.
    add.add_argument("--role", default="user", help="user (default) or operator")
    actions.add_parser("list", help="id, name, role and creation time of every user")
    rotate = actions.add_parser(
        "rotate-token", help="give a user a new access token; the old one stops working"
    )
    rotate.add_argument("user_id")
    remove = actions.add_parser("remove", help="delete a user and all its settings")
    remove.add_argument("user_id")
    for action in (add, actions.choices["list"], rotate):
        action.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace, settings: Settings) -> int:
    """Run the `users` subcommand in `args`; the exit code."""
    try:
        return asyncio.run(_run(args, settings))
    except (BridgeError, LookupError, ValueError) as exc:
        # LookupError and ValueError are the store's refusals (unknown id, bad role or name,
        # the default user); BridgeError a setting or the database. None carries a token.
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    # Imported here: __main__ builds this parser for every command, and `tts-server` (the
    # bridge's child process) has no use for SQLAlchemy.
    from bridge.store import DEFAULT_USER_ID, Store
    from bridge.store.models import OPERATOR

    # show_default_token=False: a fresh database's default user must not get a token printed
    # to stderr as a side effect; `users rotate-token default` prints one where asked.
    store = await Store.open(
        settings.database_url, settings.secret_key,
        default_user_token=settings.default_user_token, show_default_token=False,
    )
    try:
        if args.action == "add":
            role = OPERATOR if args.operator else args.role
            user, token = await store.create_user(args.name, role=role)
            _print_added(user, token, as_json=args.json)
        elif args.action == "list":
            _print_users(await store.list_users(), as_json=args.json)
        elif args.action == "rotate-token":
            token = await store.rotate_token(args.user_id)
            _print_rotated(args.user_id, token, as_json=args.json)
            if args.user_id == DEFAULT_USER_ID and settings.default_user_token:
                # At its next start the bridge makes that setting the default user's token again.
                print("warning: BRIDGE_DEFAULT_USER_TOKEN is set and replaces this token when the"
                      " bridge next starts; unset it to keep this one", file=sys.stderr)
        else:
            await store.remove_user(args.user_id)
            print(f"removed user {args.user_id!r} and its settings")
    finally:
        await store.close()
    return 0


def _print_added(user: User, token: str, *, as_json: bool) -> None:
    if as_json:
        _print_json({**_public(user), "token": token})
        return
    print(f"user_id: {user.id}\nname: {user.display_name}\nrole: {user.role}\ntoken: {token}")
    print("The token is shown only this once: keep it now.", file=sys.stderr)


def _print_users(users: list[User], *, as_json: bool) -> None:
    if as_json:
        _print_json({"users": [_public(user) for user in users]})
        return
    rows = [("ID", "NAME", "ROLE", "CREATED")] + [
        (u.id, u.display_name, u.role, _created(u)) for u in users
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in rows:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print("  ".join(cells).rstrip())


def _print_rotated(user_id: str, token: str, *, as_json: bool) -> None:
    if as_json:
        _print_json({"user_id": user_id, "token": token})
        return
    print(token)  # alone on stdout, so TOKEN=$(python -m bridge users rotate-token ID) works
    print(f"New access token of user {user_id!r}; the old one no longer works.", file=sys.stderr)


def _public(user: User) -> dict[str, Any]:
    return {"user_id": user.id, "display_name": user.display_name, "role": user.role,
            "created_at": _created(user)}


def _created(user: User) -> str:
    return user.created_at.isoformat(timespec="seconds") if user.created_at else ""


def _print_json(value: dict[str, Any]) -> None:
    print(json.dumps(value, ensure_ascii=False))
