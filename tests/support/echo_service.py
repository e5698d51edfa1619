"""A test service on the real runner: echoes each event of $ECHO_IN to $ECHO_OUT.

$ECHO_SLEEP makes the handler slow; $ECHO_MARKS names a folder where each handler start leaves a
file; $ECHO_CRASH_ONCE names a file: if it does not exist, the process creates it and dies
(os._exit, like SIGKILL) after handling and publishing but before committing.
"""

import asyncio
import os
import uuid
from pathlib import Path

from selfimprove.core import envelope as envelopes
from selfimprove.core.bus import Outgoing
from selfimprove.core.consumer import Consumer
from selfimprove.core.runner import Context, main
from selfimprove.v2.stages_pb2 import Decision


async def setup(ctx: Context):
    source, target = os.environ["ECHO_IN"], os.environ["ECHO_OUT"]
    sleep = float(os.environ.get("ECHO_SLEEP", "0"))
    marks = os.environ.get("ECHO_MARKS")
    crash_flag = os.environ.get("ECHO_CRASH_ONCE")
    await ctx.bus.ensure_topics([source, target], partitions=1)

    async def handle(env):
        if marks:
            Path(marks, f"{os.getpid()}-{uuid.uuid4().hex[:6]}").write_text(env.event_id)
        await asyncio.sleep(sleep)
        reply = envelopes.caused_by(env, ctx.service, decision=Decision(reason=f"echo {env.event_id}"))
        return [Outgoing(target, reply)]

    if crash_flag and not Path(crash_flag).exists():
        original = Consumer._commit

        async def crash_before_commit(self, consumer, tp, offset):
            Path(crash_flag).write_text("crashed")
            os._exit(137)

        Consumer._commit = crash_before_commit  # type: ignore[method-assign]
        assert original

    consumer = ctx.consumer([source], handler=handle, group=os.environ["ECHO_GROUP"], max_handler_seconds=60)
    return [consumer.run]


if __name__ == "__main__":
    main("echo", setup)
