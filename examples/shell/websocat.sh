#!/bin/sh
# Shell examples: websocat, wsproxy-cli and curl. Not run by the tests as a
# script (websocat is not installed where they run); the wsproxy-cli lines
# are what cmd/wsproxy-cli's tests do.
URL=ws://127.0.0.1:8080/ws

# websocat: one line = one text message; -b for binary, -n to keep going after stdin ends.
websocat "$URL?id=alice&groupName=demo"
websocat -b -n "$URL?id=bob&groupName=demo" < photo.jpg   # beware: websocat splits messages over its buffer (-B)

# wsproxy-cli pipe: the same, byte-exact at any size.
wsproxy-cli pipe --url "$URL" --group demo --id bob --exit-on-eof < photo.jpg
wsproxy-cli pipe --url "$URL" --group demo --id carol --receive-only --count 1 > photo.jpg

# curl: publish through the admin API (add -H "Authorization: Bearer $TOKEN" with an admin token).
curl -X POST -H 'Content-Type: text/plain' --data 'hello from curl' http://127.0.0.1:8080/api/groups/demo/messages
