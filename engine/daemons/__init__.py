"""The loops of `warden serve`: scheduler wiring, lease reaper, reconciler, webhook
notifier, each with a ``run_once()`` that tests call directly.

May import every engine layer below ``cli`` except ``worker``.
"""
