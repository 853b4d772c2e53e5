// The official TypeScript SDK client, run against the reference server directly and through
// the gateway: every feature must give the same results both ways.
// Usage: node client.mjs DIRECT_URL GATEWAY_URL TOKEN
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
  ResourceUpdatedNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";
import { check, normalise, sleep, until } from "./common.mjs";

const [direct, gateway, token] = process.argv.slice(2);

async function connect(url, auth, version) {
  const client = new Client(
    { name: "airlock-conformance", version: "1.0.0" },
    { capabilities: { sampling: {}, elicitation: {}, roots: { listChanged: true } } },
  );
  const seen = { logs: [], updates: [], samplings: 0, elicitations: 0, roots: 0 };
  client.setRequestHandler(CreateMessageRequestSchema, async (req) => {
    seen.samplings++;
    const text = req.params.messages[0]?.content?.text ?? "";
    return { model: "test-model", role: "assistant", content: { type: "text", text: `sampled: ${text}` } };
  });
  client.setRequestHandler(ElicitRequestSchema, async () => {
    seen.elicitations++;
    return { action: "decline" };
  });
  client.setRequestHandler(ListRootsRequestSchema, async () => {
    seen.roots++;
    return { roots: [{ uri: "file:///tmp/airlock-conformance", name: "conformance" }] };
  });
  client.setNotificationHandler(LoggingMessageNotificationSchema, (n) => seen.logs.push(n.params));
  client.setNotificationHandler(ResourceUpdatedNotificationSchema, (n) => seen.updates.push(n.params.uri));
  const headers = auth ? { Authorization: `Bearer ${auth}` } : {};
  const transport = new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers } });
  // The SDK always asks for its latest version; ask for an older one to cover it too.
  const send = transport.send.bind(transport);
  transport.send = (msg, opts) => {
    if (msg.method === "initialize") msg = { ...msg, params: { ...msg.params, protocolVersion: version } };
    return send(msg, opts);
  };
  await client.connect(transport);
  return { client, transport, seen };
}

// One run of every feature; returns what a caller would observe, normalised.
async function suite(url, auth, version) {
  const { client, transport, seen } = await connect(url, auth, version);
  const out = {};
  out.version = client.getServerVersion();
  out.protocol = transport.protocolVersion ?? null;
  out.capabilities = client.getServerCapabilities();
  out.ping = await client.ping();
  out.tools = (await client.listTools()).tools.map((t) => t.name).sort();
  out.echo = await client.callTool({ name: "echo", arguments: { message: "hello" } });
  out.sum = await client.callTool({ name: "get-sum", arguments: { a: 2, b: 40 } });
  out.invalid = await client
    .callTool({ name: "get-sum", arguments: { a: "x" } })
    .then((r) => ({ isError: r.isError ?? false }), (e) => ({ code: e.code }));
  out.unknownTool = await client
    .callTool({ name: "no-such-tool", arguments: {} })
    .then((r) => ({ isError: r.isError ?? false }), (e) => ({ code: e.code }));
  const progress = [];
  out.longRunning = await client.callTool(
    { name: "trigger-long-running-operation", arguments: { duration: 1, steps: 4 } },
    undefined,
    { onprogress: (p) => progress.push([p.progress, p.total]) },
  );
  out.progress = progress;
  out.sampling = await client.callTool({ name: "trigger-sampling-request", arguments: { prompt: "hi", maxTokens: 5 } });
  out.elicitation = await client.callTool({ name: "trigger-elicitation-request", arguments: {} });
  out.roots = await client.callTool({ name: "get-roots-list", arguments: {} });
  out.roundTrips = { samplings: seen.samplings, elicitations: seen.elicitations, roots: seen.roots };
  out.image = await client.callTool({ name: "get-tiny-image", arguments: {} });
  out.structured = await client.callTool({ name: "get-structured-content", arguments: { location: "New York" } });
  const resources = await client.listResources();
  out.resources = resources.resources.map((r) => r.uri).sort();
  out.templates = (await client.listResourceTemplates()).resourceTemplates.map((t) => t.uriTemplate).sort();
  const first = resources.resources[0].uri;
  out.read = await client.readResource({ uri: first });
  out.subscribe = await client.subscribeResource({ uri: first });
  out.prompts = (await client.listPrompts()).prompts.map((p) => p.name).sort();
  out.simplePrompt = await client.getPrompt({ name: "simple-prompt", arguments: {} });
  out.argsPrompt = await client.getPrompt({ name: "args-prompt", arguments: { city: "Oslo", state: "Viken" } });
  out.completion = await client.complete({
    ref: { type: "ref/prompt", name: "completable-prompt" },
    argument: { name: "department", value: "E" },
  });
  out.setLevel = await client.setLoggingLevel("debug");
  // Logging and resource updates come on the standalone GET stream.
  await client.callTool({ name: "toggle-simulated-logging", arguments: {} });
  await client.callTool({ name: "toggle-subscriber-updates", arguments: {} });
  out.gotLogs = await until(() => seen.logs.length > 0, 8000);
  out.gotUpdates = await until(() => seen.updates.includes(first), 8000);
  await client.callTool({ name: "toggle-simulated-logging", arguments: {} });
  await client.callTool({ name: "toggle-subscriber-updates", arguments: {} });
  out.unsubscribe = await client.unsubscribeResource({ uri: first });
  await transport.terminateSession();
  out.terminated = transport.sessionId === undefined;
  await client.close();
  return normalise(out);
}

const results = [];
for (const version of ["2025-03-26", "2025-06-18", "2025-11-25"]) {
  let a, b;
  try {
    a = await suite(direct, null, version);
  } catch (e) {
    check(results, `ts ${version}: direct run`, false, e.stack);
    continue;
  }
  try {
    b = await suite(gateway, token, version);
  } catch (e) {
    check(results, `ts ${version}: gateway run`, false, e.stack);
    continue;
  }
  check(results, `ts ${version}: negotiated ${version}`, a.protocol === version && b.protocol === version, `${a.protocol} / ${b.protocol}`);
  // Arguments that do not fit the tool's inputSchema, and tools the upstream does not list, are
  // refused by the gateway with -32602 before they reach the upstream (it fails closed); directly
  // the reference server answers them as tool errors.
  for (const key of ["invalid", "unknownTool"]) {
    check(results, `ts ${version}: ${key} fails directly and is refused -32602 through the gateway`, a[key].isError === true && b[key].code === -32602, `direct ${JSON.stringify(a[key])}\n  gateway ${JSON.stringify(b[key])}`);
  }
  for (const key of Object.keys(a).filter((k) => k !== "invalid" && k !== "unknownTool")) {
    const same = JSON.stringify(a[key]) === JSON.stringify(b[key]);
    check(results, `ts ${version}: ${key} same through the gateway`, same, `direct ${JSON.stringify(a[key]).slice(0, 400)}\n  gateway ${JSON.stringify(b[key]).slice(0, 400)}`);
  }
  check(results, `ts ${version}: progress arrived`, a.progress.length === 4, JSON.stringify(a.progress));
  check(results, `ts ${version}: sampling, elicitation and roots round trips`, a.roundTrips.samplings === 1 && a.roundTrips.elicitations === 1 && a.roundTrips.roots === 1, JSON.stringify(a.roundTrips));
  check(results, `ts ${version}: GET stream delivered logs and updates`, a.gotLogs && a.gotUpdates);
}
process.exit(results.every((r) => r) ? 0 : 1);
