"""`warden events send` (docs/workflows.md#events)."""

from __future__ import annotations

import argparse

from engine.cli.common import print_json, with_db
from engine.core import errors
from engine.core.settings import Settings
from engine.runs import events, views
from engine.runs.services import Services


async def cmd_events_send(args: argparse.Namespace, settings: Settings) -> int:
    async def body(svc: Services) -> int:
        try:
            sent = await events.send(svc, tenant_id=args.tenant or "default",
                                     event_id=args.id, name=args.name, key=args.key,
                                     data=args.data, sent_by=args.principal)
        except errors.InvalidInput as exc:
            raise errors.InvalidInput(f"--{exc.field}", str(exc).split(": ", 1)[-1]) from None
        doc = views.sent_event(sent.event, replayed=not sent.created)
        if args.json:
            print_json(doc)
        elif sent.created:
            print(f"event {doc['event_id']} ({doc['name']}, key {doc['key']!r}) stored; "
                  f"kept until {doc['expires_at']}")
        else:
            print(f"event {doc['event_id']} was already sent at {doc['received_at']} "
                  "(same content): unchanged")
        return 0

    return await with_db(settings, body, acting=args)
