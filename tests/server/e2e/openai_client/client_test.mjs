// Drives `expertmesh serve` with the official `openai` npm package — the client editors and agents
// use — and checks the responses with node:assert. Exits 0 when every check passes.
//
// Usage: node client_test.mjs BASE_URL API_KEY ALIAS
//   (or EXPERTMESH_BASE_URL, EXPERTMESH_API_KEY, EXPERTMESH_ALIAS); BASE_URL ends in /v1.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.argv[2] ?? process.env.EXPERTMESH_BASE_URL;
const apiKey = process.argv[3] ?? process.env.EXPERTMESH_API_KEY;
const alias = process.argv[4] ?? process.env.EXPERTMESH_ALIAS;
assert.ok(baseURL && apiKey && alias, 'usage: node client_test.mjs BASE_URL API_KEY ALIAS');

// No retries: a failing request must fail the test, not be hidden by a second attempt.
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });

function checkUsage(usage, what) {
  assert.ok(usage, `${what}: usage missing`);
  assert.ok(Number.isInteger(usage.prompt_tokens) && usage.prompt_tokens > 0, `${what}: prompt_tokens ${usage.prompt_tokens}`);
  assert.ok(Number.isInteger(usage.completion_tokens) && usage.completion_tokens > 0,
    `${what}: completion_tokens ${usage.completion_tokens}`);
  assert.equal(usage.total_tokens, usage.prompt_tokens + usage.completion_tokens, `${what}: total_tokens`);
}

// Streams a chat completion; returns the concatenated deltas, the finish reason and the usage.
async function streamChat(params) {
  const stream = await client.chat.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish = null;
  let usage = null;
  let chunks = 0;
  let role = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    chunks += 1;
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices.length === 0) continue;
    const choice = chunk.choices[0];
    if (choice.delta?.role) role = choice.delta.role;
    if (typeof choice.delta?.content === 'string') text += choice.delta.content;
    if (choice.finish_reason) finish = choice.finish_reason;
  }
  assert.ok(chunks > 1, `a stream of ${chunks} chunk(s)`);
  assert.equal(role, 'assistant', 'the stream names the assistant role');
  return { text, finish, usage };
}

async function streamCompletion(params) {
  const stream = await client.completions.create({ ...params, stream: true, stream_options: { include_usage: true } });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'text_completion');
    if (chunk.usage) usage = chunk.usage;
    if (chunk.choices.length === 0) continue;
    text += chunk.choices[0].text ?? '';
    if (chunk.choices[0].finish_reason) finish = chunk.choices[0].finish_reason;
  }
  return { text, finish, usage };
}

// --- GET /v1/models ---------------------------------------------------------------------------
const models = await client.models.list();
const ids = models.data.map((m) => m.id);
assert.ok(ids.includes(alias), `models.list() ${JSON.stringify(ids)} lacks the alias ${alias}`);
for (const m of models.data) assert.equal(m.object, 'model');
const one = await client.models.retrieve(alias).catch(() => null);  // optional in llama-server: not checked

// --- chat, non-streaming and streaming --------------------------------------------------------
const messages = [
  { role: 'system', content: 'You are a terse assistant.' },
  { role: 'user', content: 'Name three colours of the rainbow.' },
];
const chatParams = { model: alias, messages, max_tokens: 24, temperature: 0 };
const chat = await client.chat.completions.create(chatParams);
assert.equal(chat.object, 'chat.completion');
assert.equal(typeof chat.id, 'string');
assert.equal(chat.choices.length, 1);
assert.equal(chat.choices[0].index, 0);
assert.equal(chat.choices[0].message.role, 'assistant');
assert.equal(typeof chat.choices[0].message.content, 'string');
assert.ok(['stop', 'length'].includes(chat.choices[0].finish_reason), `finish_reason ${chat.choices[0].finish_reason}`);
checkUsage(chat.usage, 'chat');
assert.ok(chat.usage.completion_tokens <= 24, 'max_tokens is respected');

const streamed = await streamChat(chatParams);
assert.equal(streamed.text, chat.choices[0].message.content, 'streamed deltas equal the non-streaming answer');
assert.equal(streamed.finish, chat.choices[0].finish_reason);
// The counts agree; prompt_tokens_details.cached_tokens may not (the second request reuses the cache).
for (const k of ['prompt_tokens', 'completion_tokens', 'total_tokens'])
  assert.equal(streamed.usage?.[k], chat.usage[k], `stream usage.${k} equals the non-streaming one`);

// Seeded sampling is reproducible, streamed or not.
const sampledParams = { model: alias, messages, max_tokens: 16, temperature: 0.9, seed: 1234 };
const s1 = await client.chat.completions.create(sampledParams);
const s2 = await client.chat.completions.create(sampledParams);
assert.equal(s2.choices[0].message.content, s1.choices[0].message.content, 'same seed, same answer');
const s3 = await streamChat(sampledParams);
assert.equal(s3.text, s1.choices[0].message.content, 'same seed streamed, same answer');

// --- completions ------------------------------------------------------------------------------
const compParams = { model: alias, prompt: 'Once upon a time', max_tokens: 16, temperature: 0 };
const comp = await client.completions.create(compParams);
assert.equal(comp.object, 'text_completion');
assert.equal(comp.choices.length, 1);
assert.equal(typeof comp.choices[0].text, 'string');
assert.ok(['stop', 'length'].includes(comp.choices[0].finish_reason), `finish_reason ${comp.choices[0].finish_reason}`);
checkUsage(comp.usage, 'completion');
const compStreamed = await streamCompletion(compParams);
assert.equal(compStreamed.text, comp.choices[0].text, 'streamed completion equals the non-streaming one');
assert.equal(compStreamed.finish, comp.choices[0].finish_reason);

// --- max_tokens ends with finish_reason "length" ----------------------------------------------
// ignore_eos is a llama-server extension the client passes through: the model may not stop early.
const short = await client.chat.completions.create({ ...chatParams, max_tokens: 3, ignore_eos: true });
assert.equal(short.choices[0].finish_reason, 'length');
assert.equal(short.usage.completion_tokens, 3);
const shortComp = await client.completions.create({ ...compParams, max_tokens: 2, ignore_eos: true });
assert.equal(shortComp.choices[0].finish_reason, 'length');
assert.equal(shortComp.usage.completion_tokens, 2);

// --- a wrong API key: 401, surfaced by the client as AuthenticationError -----------------------
const bad = new OpenAI({ baseURL, apiKey: `${apiKey}-wrong`, maxRetries: 0, timeout: 30_000 });
const isAuthError = (e) => {
  assert.ok(e instanceof OpenAI.AuthenticationError, `expected AuthenticationError, got ${e?.constructor?.name}: ${e}`);
  assert.equal(e.status, 401);
  return true;
};
// (GET /v1/models is public in the peer, as /health is, so it is not asked here.)
await assert.rejects(bad.chat.completions.create(chatParams), isAuthError);
await assert.rejects(bad.completions.create(compParams), isAuthError);

console.log(`client_test: ok (models ${JSON.stringify(ids)}; chat ${chat.usage.completion_tokens} tokens` +
  `, completion ${comp.usage.completion_tokens} tokens${one ? '; models.retrieve ok' : ''})`);
