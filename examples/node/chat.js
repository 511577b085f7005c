// Node example (ws): join a wsproxy group, send one chat line as the shared
// envelope, and print what arrives.
//
//   npm install            (ws, pinned in package.json)
//   node chat.js ws://127.0.0.1:8080/ws demo alice "hello from node" [COUNT]
"use strict";
const WebSocket = require("ws");

const [url, group, id, line, count] = process.argv.slice(2);
const ws = new WebSocket(`${url}?${new URLSearchParams({ id, groupName: group })}`, { maxPayload: 0 });
let seen = 0;
ws.on("open", () => ws.send(JSON.stringify({ type: "chat", from: id, data: line })));
ws.on("message", (data, isBinary) => {
  if (isBinary) {
    const kind = data.subarray(0, 4).toString("latin1") === "WSPF" ? "file" : "binary";
    console.log(`[${kind} message, ${data.length} bytes]`);
  } else {
    const text = data.toString("utf8");
    let env = null;
    try { env = JSON.parse(text); } catch (_) { /* plain text */ }
    console.log(env && env.type === "chat" ? `${env.from || "?"}: ${env.data}` : text);
  }
  if (count && ++seen >= Number(count)) ws.close(1000);
});
ws.on("unexpected-response", (req, res) => { // a refused handshake: show the proxy's reason
  let body = "";
  res.on("data", (c) => { body += c; });
  res.on("end", () => { console.error(`refused: ${res.statusCode} ${body}`); process.exit(3); });
});
ws.on("close", (code, reason) => { if (code !== 1000) console.error(`closed: ${code} ${reason}`); });
