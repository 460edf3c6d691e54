// Unit tests of the page's event-stream parser, reconnect schedule and
// duration format, run in Node on the very module the browser loads
// (nginx/www/app.js starts the UI only when it finds a document).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SSEParser, SSEError, backoffDelay, formatDuration } from '../../nginx/www/app.js';

function parseAll(pieces) {
  const events = [];
  const comments = [];
  const p = new SSEParser((e) => events.push(e), (c) => comments.push(c));
  for (const piece of pieces) p.push(piece);
  return { events, comments, parser: p };
}

/* Every way of cutting text into two pieces, and one character at a time. */
function splits(text) {
  const out = [[text], [...text]];
  for (let i = 1; i < text.length; i++) out.push([text.slice(0, i), text.slice(i)]);
  return out;
}

const KILN_STREAM = [
  ': keep-alive',
  'id: 1',
  'event: run.accepted',
  'data: {"type":"run.accepted","seq":1,"payload":{"input":"hi"}}',
  '',
  'id: 2',
  'event: assistant.delta',
  'data: {"type":"assistant.delta","seq":2,"payload":{"text":"a:b","message_index":0}}',
  '',
  '',
];

const WANT = [
  { type: 'run.accepted', id: '1', data: '{"type":"run.accepted","seq":1,"payload":{"input":"hi"}}' },
  { type: 'assistant.delta', id: '2', data: '{"type":"assistant.delta","seq":2,"payload":{"text":"a:b","message_index":0}}' },
];

for (const [name, eol] of [['LF', '\n'], ['CRLF', '\r\n'], ['CR', '\r']]) {
  test(`parses Kiln's stream with ${name} line ends, however it is cut`, () => {
    const text = KILN_STREAM.join(eol);
    for (const pieces of splits(text)) {
      const { events, comments } = parseAll(pieces);
      assert.deepEqual(events, WANT, `pieces: ${JSON.stringify(pieces.length > 3 ? 'char by char' : pieces)}`);
      assert.deepEqual(comments, ['keep-alive']);
    }
  });
}

test('a CRLF split between two pieces ends one line, not two', () => {
  const { events } = parseAll(['data: x\r', '\ndata: y\r', '\n\r', '\n']);
  assert.deepEqual(events, [{ type: 'message', id: '', data: 'x\ny' }]);
});

test('mixed line ends in one stream', () => {
  const { events } = parseAll(['data: a\rdata: b\ndata: c\r\n\n']);
  assert.deepEqual(events, [{ type: 'message', id: '', data: 'a\nb\nc' }]);
});

test('a leading byte-order mark is dropped', () => {
  const { events } = parseAll(['\ufeffdata: x\n\n']);
  assert.deepEqual(events, [{ type: 'message', id: '', data: 'x' }]);
});

test('field rules: one optional space, no colon, unknown fields, empty data', () => {
  const { events, parser } = parseAll([
    'data:no-space\n', 'data:  two spaces\n', 'data\n', 'foo: ignored\n', 'retry: 1500\n', 'retry: soon\n', '\n',
  ]);
  assert.deepEqual(events, [{ type: 'message', id: '', data: 'no-space\n two spaces\n' }]);
  assert.equal(parser.retryMs, 1500);
});

test('an event with no data is not dispatched, and its type does not leak', () => {
  const { events } = parseAll(['event: lonely\nid: 7\n\n', 'data: next\n\n']);
  assert.deepEqual(events, [{ type: 'message', id: '7', data: 'next' }]);
});

test('the last event id persists until changed; ids with NUL are ignored', () => {
  const { events } = parseAll(['id: 5\ndata: a\n\n', 'data: b\n\n', 'id: 6\0\ndata: c\n\n', 'id\ndata: d\n\n']);
  assert.deepEqual(events.map((e) => e.id), ['5', '5', '5', '']);
});

test('an unfinished event at the end of the stream is not dispatched', () => {
  const { events } = parseAll(['data: complete\n\n', 'id: 9\ndata: partial\n']);
  assert.deepEqual(events.map((e) => e.data), ['complete']);
});

test('a line without end that grows past the cap is refused', () => {
  const p = new SSEParser(() => {});
  const big = 'x'.repeat(1024 * 1024);
  assert.throws(() => {
    for (let i = 0; i < 6; i++) p.push(big);
  }, SSEError);
});

test('one event with too much data is refused', () => {
  const p = new SSEParser(() => {});
  const line = `data: ${'y'.repeat(1024 * 1024)}\n`;
  assert.throws(() => {
    for (let i = 0; i < 10; i++) p.push(line);
  }, SSEError);
});

test('reconnect delays grow from about half a second to at most five', () => {
  const lo = () => 0;
  const hi = () => 0.999999;
  assert.equal(backoffDelay(1, lo), 375);
  assert.equal(backoffDelay(1, hi), 625);
  for (let n = 1; n < 50; n++) {
    assert.ok(backoffDelay(n, lo) <= backoffDelay(n + 1, lo), 'never shrinks');
    assert.ok(backoffDelay(n, hi) <= 5000, 'capped');
  }
  assert.equal(backoffDelay(10, () => 0.5), 4000);
});

test('tool durations read as ms, seconds with a tenth, then minutes', () => {
  assert.equal(formatDuration(0), '0 ms');
  assert.equal(formatDuration(12), '12 ms');
  assert.equal(formatDuration(999.4), '999 ms');
  assert.equal(formatDuration(1000), '1.0 s');
  assert.equal(formatDuration(1549), '1.5 s');
  assert.equal(formatDuration(59999), '60.0 s');
  assert.equal(formatDuration(60000), '1 min 0 s');
  assert.equal(formatDuration(125400), '2 min 5 s');
  assert.equal(formatDuration(NaN), '');
  assert.equal(formatDuration(undefined), '');
});
