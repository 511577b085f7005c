"""Python example (websockets 10.4 or later, e.g. Debian's python3-websockets): join a wsproxy group, send one chat line
as the shared envelope, and print what arrives.

    pip install websockets==17.4
    python3 chat.py ws://127.0.0.1:8080/ws demo alice "hello from python" [COUNT]
"""
import asyncio
import json
import sys
from urllib.parse import urlencode

import websockets


async def main(url, group, member_id, line, count):
    query = urlencode({"id": member_id, "groupName": group})
    # max_size=None: wsproxy has no message size limit by default.
    async with websockets.connect(f"{url}?{query}", max_size=None) as ws:
        await ws.send(json.dumps({"type": "chat", "from": member_id, "data": line}))
        seen = 0
        async for msg in ws:  # str for text, bytes for binary
            if isinstance(msg, bytes):
                kind = "file" if msg[:4] == b"WSPF" else "binary"
                print(f"[{kind} message, {len(msg)} bytes]", flush=True)
            else:
                try:
                    env = json.loads(msg)
                except ValueError:
                    env = None
                if isinstance(env, dict) and env.get("type") == "chat":
                    print(f"{env.get('from', '?')}: {env.get('data')}", flush=True)
                else:
                    print(msg, flush=True)
            seen += 1
            if count and seen >= count:
                return


if __name__ == "__main__":
    url, group, member_id, line = sys.argv[1:5]
    count = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    asyncio.run(main(url, group, member_id, line, count))
