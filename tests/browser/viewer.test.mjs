// The viewer and `attend serve` in a real browser: Debian's headless Chromium driven by
// playwright-core, every network request blocked and counted.
//
//   ATTEND_BIN=target/release/attend node --test tests/browser/
//
// ATTEND_SCREENSHOTS=DIR also writes a screenshot of each view there (docs/viewer holds them).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { inflateSync } from 'node:zlib';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const bin = resolve(process.env.ATTEND_BIN || join(here, '../../target/release/attend'));
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const shots = process.env.ATTEND_SCREENSHOTS ? resolve(process.env.ATTEND_SCREENSHOTS) : null;
const dir = mkdtempSync(join(tmpdir(), 'attend-browser-'));
const TEXT = "The animal didn't cross the road because it was tired";
const PROMPT = "The animal didn't cross the road because it was";
const WORDS = 'Tokenization splits unbelievably long words';
const TOY = "The dog didn't cross the street because it was tired. it =";
// tokens that are markup: the effect view must show them as text
const HOSTILE = 'The </script><b>animal</b> didn\'t cross the road because it was';

function attend(args, file) {
  const out = execFileSync(bin, args, { maxBuffer: 1 << 30 });
  if (file) writeFileSync(file, out);
  return out;
}

let browser;
const files = {};
before(async () => {
  files.minilmHtml = join(dir, 'minilm.html');
  attend(['explain', '--compare', 'animal', 'road', '--token', 'it', TEXT, '-o', files.minilmHtml]);
  files.minilmJson = JSON.parse(attend(['explain', '--format', 'json', TEXT]).toString());
  files.wordsHtml = join(dir, 'words.html');
  attend(['explain', WORDS, '-o', files.wordsHtml]);
  files.wordsJson = JSON.parse(attend(['explain', '--format', 'json', WORDS]).toString());
  files.genHtml = join(dir, 'gen.html');
  attend(['generate', '--max-tokens', '6', PROMPT, '-o', files.genHtml]);
  files.genJson = JSON.parse(attend(['generate', '--max-tokens', '6', '--explain', '--format', 'json', PROMPT]).toString());
  // (pages without --compare, which open on the model view)
  files.decPlainHtml = join(dir, 'smollm2-plain.html');
  attend(['explain', '--model', 'smollm2', TEXT, '-o', files.decPlainHtml]);
  files.decHtml = join(dir, 'smollm2-explain.html');
  attend(['explain', '--model', 'smollm2', '--compare', 'animal', 'road', TEXT, '-o', files.decHtml]);
  files.decJson = JSON.parse(attend(['explain', '--model', 'smollm2', '--format', 'json', TEXT]).toString());
  files.toyHtml = join(dir, 'toy.html');
  attend(['explain', '--model', 'toy-winograd', TOY, '-o', files.toyHtml]);
  // attend effect: the page (opened on its effect view) and the JSON of the same prompt
  files.effectHtml = join(dir, 'effect.html');
  attend(['effect', '--model', 'smollm2', '--target', ' tired', PROMPT, '-o', files.effectHtml]);
  files.effectJson = JSON.parse(attend(['effect', '--model', 'smollm2', '--target', ' tired', '--format', 'json', PROMPT]).toString());
  files.effectWordsHtml = join(dir, 'effect-words.html');
  attend(['effect', '--model', 'smollm2', '--words', '--no-heads', '--knockout', 'predicting', '--layers', '5..20', HOSTILE, '-o', files.effectWordsHtml]);
  // an encoder's effect: on the sentence embedding (1 − cos), no target
  files.effectEncHtml = join(dir, 'effect-minilm.html');
  attend(['effect', '--model', 'minilm', TEXT, '-o', files.effectEncHtml]);
  files.effectEncJson = JSON.parse(attend(['effect', '--model', 'minilm', '--format', 'json', TEXT]).toString());
  // a training run with snapshots: training.html, and the final model's attention of the probe
  files.trainDir = join(dir, 'train');
  attend(['train', 'winograd', '--steps', '30', '--eval-every', '10', '--snapshots', '3', '-o', files.trainDir]);
  files.trainJson = JSON.parse(attend(['explain', '--model', files.trainDir, '--format', 'json', TOY]).toString());
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--disable-default-apps', '--disable-sync', '--no-first-run', '--disable-dev-shm-usage'],
  });
});
after(async () => { if (browser) await browser.close(); });

// A page with every request but its own file blocked and counted, and console errors kept.
async function open(url, viewport = { width: 1300, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const seen = { requests: [], errors: [] };
  await context.route('**/*', (route) => {
    const u = route.request().url();
    if (u === url) return route.continue();
    seen.requests.push(u);
    return route.abort();
  });
  page.on('request', (r) => { if (r.url() !== url && !seen.requests.includes(r.url())) seen.requests.push(r.url()); });
  page.on('console', (m) => { if (m.type() === 'error') seen.errors.push(m.text()); });
  page.on('pageerror', (e) => seen.errors.push(e.message));
  await page.goto(url);
  await page.evaluate(() => window.attendViewer.ready);
  return { page, context, seen };
}
const fileUrl = (f) => 'file://' + f;

async function screenshot(page, name) {
  if (!shots) return;
  await page.screenshot({ path: join(shots, name), fullPage: true });
}

// The colour scale the page documents: white → #08306b, by the square root of the weight.
function expected(w) {
  const t = Math.sqrt(Math.min(1, Math.max(0, w)));
  return [255 + (8 - 255) * t, 255 + (48 - 255) * t, 255 + (107 - 255) * t].map(Math.round);
}

// The one pixel of a 1 × 1 PNG screenshot (any filter type reduces to the raw bytes there).
function pixel(png) {
  let at = 8, idat = [], colourType = 0;
  while (at < png.length) {
    const len = png.readUInt32BE(at), type = png.toString('ascii', at + 4, at + 8);
    if (type === 'IHDR') colourType = png[at + 8 + 9];
    if (type === 'IDAT') idat.push(png.subarray(at + 8, at + 8 + len));
    at += 12 + len;
  }
  const raw = inflateSync(Buffer.concat(idat));
  assert.ok(colourType === 2 || colourType === 6, `colour type ${colourType}`);
  return [raw[1], raw[2], raw[3]];
}

test('the MiniLM page loads from file:// with no request and no console error', async () => {
  const { page, context, seen } = await open(fileUrl(files.minilmHtml));
  assert.deepEqual(seen.requests, []);
  assert.deepEqual(seen.errors, []);
  const api = await page.evaluate(() => ({ t: window.attendViewer.tokens, l: window.attendViewer.layers, h: window.attendViewer.heads, p: window.attendViewer.paintedAt }));
  assert.deepEqual(api.t, files.minilmJson.tokens.map((t) => t.text));
  assert.equal(api.l, 6);
  assert.equal(api.h, 12);
  assert.ok(api.p > 0, 'the first view was painted');
  // (the page was made with --compare: it opens on the comparison asked for)
  assert.equal(await page.evaluate(() => window.attendViewer.state.view), 'compare');
  await page.evaluate(() => window.attendViewer.show('model'));
  assert.equal(await page.locator('canvas.thumb').count(), 72);
  await screenshot(page, 'model-view.png');
  await context.close();
});

test('row() equals explain --format json for every head and query, to the stored precision', async () => {
  const { page, context } = await open(fileUrl(files.minilmHtml));
  const got = await page.evaluate(() => {
    const v = window.attendViewer, out = [];
    for (let l = 0; l < v.layers; l++) for (let h = 0; h < v.heads; h++) for (let q = 0; q < v.tokens.length; q++) {
      out.push([v.row(l, h, q), v.precision(l, h, q)]);
    }
    return out;
  });
  const J = files.minilmJson.attention;
  let i = 0, worst = 0;
  for (let l = 0; l < 6; l++) for (let h = 0; h < 12; h++) for (let q = 0; q < J[l][h].length; q++) {
    const [row, prec] = got[i++];
    assert.equal(row.length, J[l][h][q].length);
    row.forEach((w, k) => {
      const d = Math.abs(w - J[l][h][q][k]);
      worst = Math.max(worst, d);
      assert.ok(d <= prec + 1e-7, `layer ${l} head ${h} query ${q} key ${k}: ${w} vs ${J[l][h][q][k]} (precision ${prec})`);
    });
  }
  assert.ok(worst < 1e-4, `16-bit rows are within ${worst}`);
  await context.close();
});

test('a decoder\'s page (SmolLM2 explain): row() equals explain --format json; GQA heads name their key/value head', async () => {
  const { page, context, seen } = await open(fileUrl(files.decHtml));
  assert.deepEqual(seen.requests, []);
  assert.deepEqual(seen.errors, []);
  const got = await page.evaluate(() => {
    const v = window.attendViewer, out = [];
    for (let l = 0; l < v.layers; l++) for (let h = 0; h < v.heads; h++) for (let q = 0; q < v.tokens.length; q++) {
      out.push([v.row(l, h, q), v.precision(l, h, q)]);
    }
    return { out, layers: v.layers, heads: v.heads, tokens: v.tokens, view: document.body.dataset.view || null };
  });
  const J = files.decJson;
  assert.equal(got.layers, 30);
  assert.equal(got.heads, 9);
  assert.deepEqual(got.tokens, J.tokens.map((t) => t.text));
  let i = 0, worst = 0;
  for (let l = 0; l < 30; l++) for (let h = 0; h < 9; h++) for (let q = 0; q < J.tokens.length; q++) {
    const [row, prec] = got.out[i++];
    row.forEach((w, k) => {
      const d = Math.abs(w - J.attention[l][h][q][k]);
      worst = Math.max(worst, d);
      assert.ok(d <= prec + 1e-7, `layer ${l} head ${h} query ${q} key ${k}: ${w} vs ${J.attention[l][h][q][k]}`);
      if (k > q) assert.equal(w, 0, 'causal: nothing after the query');
    });
  }
  assert.ok(worst < 1e-4, `rows within ${worst}`);
  // the atlas lists every head with the key/value head it shares (9 query heads, 3 kv heads)
  await page.evaluate(() => window.attendViewer.show('atlas'));
  assert.equal(await page.locator('#av-atlas-table tbody tr').count(), 270);
  const header = (await page.locator('#av-atlas-table th').allTextContents()).join(' ');
  assert.match(header, /kv/i);
  // the comparison it was made with opens, and rollout and value norms exist for a decoder
  await page.evaluate(() => window.attendViewer.show('compare'));
  assert.equal(await page.locator('#av-compare-table tbody tr').count(), 270);
  for (const map of ['rollout', 'value']) {
    await page.evaluate((m) => window.attendViewer.set({ view: 'model', map: m }), map);
    assert.ok(await page.locator('canvas.thumb').count() >= 30, map);
  }
  await screenshot(page, 'decoder-atlas.png');
  assert.deepEqual(seen.errors, []);
  await context.close();
});

test('clicking a thumbnail opens that head, and hovering lists the top weights', async () => {
  const { page, context } = await open(fileUrl(files.minilmHtml));
  await page.evaluate(() => window.attendViewer.show('model'));
  await page.locator('canvas.thumb[data-layer="2"][data-head="7"]').click();
  const s = await page.evaluate(() => ({ ...window.attendViewer.state }));
  assert.equal(s.view, 'head');
  assert.equal(s.layer, 2);
  assert.equal(s.head, 7);
  assert.ok(await page.locator('#av-head').isVisible());
  const c = await page.evaluate(() => window.attendViewer.cell(10, 2));
  await page.mouse.move(c.x, c.y);
  const text = await page.locator('#av-hover').textContent();
  assert.match(text, /"it" → "animal"/);
  assert.match(text, /query "it" attends to:/);
  await screenshot(page, 'head-view.png');
  await context.close();
});

test('a screenshot has the expected colour at a known cell', async () => {
  const { page, context } = await open(fileUrl(files.minilmHtml));
  await page.evaluate(() => window.attendViewer.set({ view: 'head', layer: 5, head: 3, map: 'raw' }));
  const J = files.minilmJson.attention[5][3];
  for (const [q, k] of [[10, 2], [0, 0], [3, 7]]) {
    const c = await page.evaluate(([q, k]) => window.attendViewer.cell(q, k), [q, k]);
    const png = await page.screenshot({ clip: { x: Math.floor(c.x), y: Math.floor(c.y), width: 1, height: 1 } });
    const got = pixel(png), want = expected(J[q][k]);
    got.forEach((v, i) => assert.ok(Math.abs(v - want[i]) <= 2, `cell (${q}, ${k}) weight ${J[q][k]}: ${got} vs ${want}`));
  }
  await context.close();
});

test('the sink toggle renormalises rows without the sinks', async () => {
  const { page, context } = await open(fileUrl(files.minilmHtml));
  const sinks = await page.evaluate(() => window.attendViewer.sinks);
  assert.deepEqual(sinks, [0], 'MiniLM pours its weight into [CLS]');
  await page.evaluate(() => window.attendViewer.set({ view: 'head', layer: 4, head: 1, map: 'raw' }));
  const before = await page.evaluate(() => window.attendViewer.displayed(4, 1, 10));
  await page.locator('#av-sinks').check();
  const afterRow = await page.evaluate(() => window.attendViewer.displayed(4, 1, 10));
  const raw = files.minilmJson.attention[4][1][10];
  assert.ok(Math.abs(before[0] - raw[0]) < 1e-4, 'before the toggle the sink column is shown as it is');
  assert.equal(afterRow[0], 0);
  const rest = raw.slice(1).reduce((a, b) => a + b, 0);
  raw.forEach((w, k) => { if (k > 0) assert.ok(Math.abs(afterRow[k] - w / rest) < 1e-4, `key ${k}`); });
  assert.ok(Math.abs(afterRow.reduce((a, b) => a + b, 0) - 1) < 1e-5);
  await screenshot(page, 'head-view-sinks-hidden.png');
  await context.close();
});

test('token, compare and atlas views, aggregations and words', async () => {
  const { page, context, seen } = await open(fileUrl(files.minilmHtml));
  // token view: the --token query preselected, click another
  await page.evaluate(() => window.attendViewer.show('token'));
  assert.equal(await page.locator('#av-token-text span.tk').count(), 14);
  assert.match(await page.locator('#av-token-list').textContent(), /query "it"/);
  await screenshot(page, 'token-view.png');
  await page.locator('#av-token-text span.tk', { hasText: 'road' }).click();
  assert.match(await page.locator('#av-token-list').textContent(), /query "road"/);
  // compare: the --compare question, sortable, a row opens its head
  await page.evaluate(() => window.attendViewer.show('compare'));
  const rows = page.locator('#av-compare-table tbody tr');
  assert.equal(await rows.count(), 72);
  const first = (await rows.first().locator('td').allTextContents()).map(Number);
  const cmp = files.minilmJson.attention[first[0]][first[1]][10];
  assert.ok(Math.abs(cmp[2] - first[2]) < 1e-3 && Math.abs(cmp[8] - first[3]) < 1e-3);
  await screenshot(page, 'compare-view.png');
  await page.locator('#av-compare-table th', { hasText: 'layer' }).click();
  await rows.nth(3).click();
  assert.equal(await page.evaluate(() => window.attendViewer.state.view), 'head');
  // atlas: one row per head, sorted by a click
  await page.evaluate(() => window.attendViewer.show('atlas'));
  assert.equal(await page.locator('#av-atlas-table tbody tr').count(), 72);
  await page.locator('#av-atlas-table th', { hasText: 'previous token' }).click();
  const prev = await page.locator('#av-atlas-table tbody tr td:nth-child(6)').allTextContents();
  const nums = prev.map(Number);
  assert.deepEqual(nums, [...nums].sort((a, b) => b - a), 'sorted by previous-token score, largest first');
  await screenshot(page, 'atlas-view.png');
  // every aggregation draws; rollout rows sum to 1; words merge "didn ' t"
  for (const map of ['mean', 'rollout', 'value']) {
    await page.evaluate((m) => window.attendViewer.set({ view: 'model', map: m }), map);
    assert.ok(await page.locator('canvas.thumb').count() >= 6, map);
  }
  await page.evaluate(() => window.attendViewer.set({ map: 'rollout' }));
  const roll = await page.evaluate(() => window.attendViewer.displayed(5, 'mean', 3));
  assert.ok(Math.abs(roll.reduce((a, b) => a + b, 0) - 1) < 1e-3);
  assert.deepEqual(seen.errors, []);
  assert.deepEqual(seen.requests, []);
  await context.close();
});

test('words: sub-word pieces merge (keys summed, queries averaged)', async () => {
  const { page, context, seen } = await open(fileUrl(files.wordsHtml));
  await page.evaluate(() => window.attendViewer.set({ view: 'token', map: 'raw', words: true, layer: 3, head: 2 }));
  const words = await page.locator('#av-token-text span.tk').allTextContents();
  assert.deepEqual(words, ['[CLS]', 'tokenization', 'splits', 'unbelievably', 'long', 'words', '[SEP]']);
  // the query "long" (token 9) over the word "unbelievably" (tokens 4..8): the sum of its keys
  const merged = await page.evaluate(() => window.attendViewer.displayed(3, 2, 9));
  const raw = files.wordsJson.attention[3][2][9];
  const sum = raw.slice(4, 9).reduce((a, b) => a + b, 0);
  assert.ok(Math.abs(merged[3] - sum) < 1e-4, `${merged[3]} vs ${sum}`);
  // the query word "tokenization" (tokens 1, 2): the mean of its two rows
  const m1 = await page.evaluate(() => window.attendViewer.displayed(3, 2, 1));
  const J = files.wordsJson.attention[3][2];
  assert.ok(Math.abs(m1[0] - (J[1][0] + J[2][0]) / 2) < 1e-4);
  assert.deepEqual(seen.errors, []);
  await context.close();
});

test('a page opens on what was asked: --compare on the comparison, --words with words on; the atlas shades its numbers', async () => {
  const wordsPage = join(dir, 'words-on.html');
  attend(['explain', '--words', WORDS, '-o', wordsPage]);
  const { page, context, seen } = await open(fileUrl(wordsPage));
  const s = await page.evaluate(() => ({ view: window.attendViewer.state.view, words: window.attendViewer.state.words,
    box: document.getElementById('av-words').checked }));
  assert.deepEqual(s, { view: 'model', words: true, box: true });
  await context.close();
  const c = await open(fileUrl(files.minilmHtml));
  const v = await c.page.evaluate(() => ({ view: window.attendViewer.state.view,
    rows: document.querySelectorAll('#av-compare-table tbody tr').length }));
  assert.deepEqual(v, { view: 'compare', rows: 72 });
  await c.page.evaluate(() => window.attendViewer.show('atlas'));
  const shaded = await c.page.evaluate(() => [...document.querySelectorAll('#av-atlas-table tbody td')]
    .filter((td) => td.style.background.includes('linear-gradient')).length);
  assert.equal(shaded, 72 * 4, 'entropy, sink share, previous token and distance cells carry a bar');
  assert.deepEqual(seen.requests.concat(c.seen.requests), []);
  assert.deepEqual(seen.errors.concat(c.seen.errors), []);
  await c.context.close();
});

test('a SmolLM2 generation: rows and generated tokens equal generate --format json', async () => {
  const { page, context, seen } = await open(fileUrl(files.genHtml));
  assert.deepEqual(seen.requests, []);
  assert.deepEqual(seen.errors, []);
  const J = files.genJson;
  const v = await page.evaluate(() => {
    const a = window.attendViewer;
    return { kind: a.kind, layers: a.layers, heads: a.heads, tokens: a.tokens,
      gen: a.generated.map((g) => ({ text: g.text, position: g.position, rows: [...Array(a.layers).keys()].map((l) => [...Array(a.heads).keys()].map((h) => g.row(l, h))) })),
      prec: a.generated.map((g) => a.precision(0, 0, g.position)) };
  });
  assert.equal(v.kind, 'generation');
  assert.equal(v.layers, 30);
  assert.equal(v.heads, 9);
  assert.deepEqual(v.tokens.slice(0, J.prompt_tokens.length), J.prompt_tokens);
  assert.equal(v.gen.length, J.tokens.length);
  v.gen.forEach((g, i) => {
    assert.equal(g.text, J.tokens[i].text);
    assert.equal(g.position, J.prompt_tokens.length - 1 + i);
    for (let l = 0; l < 30; l++) for (let h = 0; h < 9; h++) {
      const want = J.tokens[i].attention[l][h], got = g.rows[l][h];
      assert.equal(got.length, want.length);
      const max = Math.max(...want);
      got.forEach((w, k) => assert.ok(Math.abs(w - want[k]) <= max / 65535 / 2 + 1e-7, `token ${i} layer ${l} head ${h} key ${k}`));
    }
  });
  // the scrubber walks the generated tokens
  await page.locator('#av-step').fill('3');
  assert.match(await page.locator('#av-step-label').textContent(), /token 4 of 6/);
  assert.match(await page.locator('#av-gen-list').textContent(), new RegExp('predicted'));
  await screenshot(page, 'generation-view.png');
  await context.close();
});

test('a page over its budget keeps each row\'s largest weights and the rest\'s sum', async () => {
  const file = join(dir, 'small-budget.html');
  attend(['explain', '--page-mib', '0.02', TEXT, '-o', file]);
  const { page, context, seen } = await open(fileUrl(file));
  assert.deepEqual(seen.errors, []);
  const v = await page.evaluate(() => ({ enc: window.attendViewer.encoding, notes: document.getElementById('av-notes').textContent }));
  assert.equal(v.enc, 'top');
  assert.match(v.notes, /keeps its \d+ largest weights of 14/);
  const J = files.minilmJson.attention;
  const got = await page.evaluate(() => {
    const a = window.attendViewer, out = [];
    for (let l = 0; l < a.layers; l++) for (let h = 0; h < a.heads; h++) for (let q = 0; q < a.tokens.length; q++) out.push([a.row(l, h, q), a.rest(l, h, q), a.precision(l, h, q)]);
    return out;
  });
  let i = 0;
  for (let l = 0; l < 6; l++) for (let h = 0; h < 12; h++) for (let q = 0; q < 14; q++) {
    const [row, rest, prec] = got[i++], want = J[l][h][q];
    let kept = 0;
    row.forEach((w, k) => { if (w > 0) { kept += want[k]; assert.ok(Math.abs(w - want[k]) <= prec + 1e-7); } });
    // what was kept plus the rest is the whole row (a kept weight under half a step reads 0)
    assert.ok(Math.abs(kept + rest - want.reduce((a, b) => a + b, 0)) <= 14 * prec + 1e-5, `${l} ${h} ${q}`);
    // and what was kept are the largest
    const dropped = want.filter((w, k) => row[k] === 0 && w > prec * 2);
    const smallestKept = Math.min(...want.filter((w, k) => row[k] > 0));
    assert.ok(dropped.every((w) => w <= smallestKept + 1e-6));
  }
  await page.evaluate(() => window.attendViewer.open(5, 0));
  const c = await page.evaluate(() => window.attendViewer.cell(10, 2));
  await page.mouse.move(c.x, c.y);
  assert.match(await page.locator('#av-hover').textContent(), /not stored: the other keys, together/);
  await context.close();
});

test('a toy model page (causal, with value norms) and a narrow viewport', async () => {
  const { page, context, seen } = await open(fileUrl(files.toyHtml), { width: 700, height: 700 });
  assert.deepEqual(seen.errors, []);
  const maps = await page.evaluate(() => window.attendViewer.maps);
  assert.ok(maps.includes('value') && maps.includes('rollout'));
  const r = await page.evaluate(() => window.attendViewer.row(0, 0, 3));
  assert.equal(r.length, await page.evaluate(() => window.attendViewer.tokens.length));
  assert.ok(r.slice(4).every((w) => w === 0), 'causal: nothing after the query');
  await context.close();
});

// python/attend/_models.py `_frame`, as a notebook shows a page: the sandboxed iframe (the page
// html.escape'd into srcdoc) and, beside it, the script that sizes it, whose text and numbers
// are read from that file (python/tests/test_models.py checks that `_frame` writes this markup).
const framePy = readFileSync(join(here, '../../python/attend/_models.py'), 'utf8');
const FRAME = {
  script: framePy.match(/_FRAME_SCRIPT = """([\s\S]*?)"""/)[1],
  height: +framePy.match(/_FRAME_HEIGHT = (\d+)/)[1],
  min: +framePy.match(/_FRAME_MIN, _FRAME_MAX = (\d+), (\d+)/)[1],
  max: +framePy.match(/_FRAME_MIN, _FRAME_MAX = (\d+), (\d+)/)[2],
};
function notebookFrame(page, id) {
  const esc = page.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&#x27;');
  const script = FRAME.script.replace('__ID__', id).replace('__MIN__', String(FRAME.min)).replace('__MAX__', String(FRAME.max));
  return `<iframe id='${id}' name='${id}' sandbox='allow-scripts' srcdoc="${esc}" ` +
    `style='width:100%;height:${FRAME.height}px;border:1px solid #ddd' title='attend viewer'></iframe><script>${script}</script>`;
}
// A host page (a notebook) with the given cells, every request but its own file counted.
async function notebook(name, body, viewport = { width: 1300, height: 900 }) {
  const host = join(dir, name);
  writeFileSync(host, `<!doctype html><html><body>${body}</body></html>`);
  const context = await browser.newContext({ viewport });
  const tab = await context.newPage();
  const errors = [], requests = [];
  tab.on('pageerror', (e) => errors.push(e.message));
  tab.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  tab.on('request', (r) => { if (r.url() !== fileUrl(host) && !r.url().startsWith('about:')) requests.push(r.url()); });
  await tab.goto(fileUrl(host));
  return { tab, context, errors, requests };
}
// the viewer's frame by its iframe's name (`_frame` names it as its id)
const viewerFrame = (tab, id) => tab.frames().find((f) => f.name() === id);
// the iframe's height, and the height of the page inside it (its root's bottom and the body's margin)
async function heights(tab, id) {
  const frame = await tab.evaluate((id) => document.getElementById(id).clientHeight, id);
  const inner = await viewerFrame(tab, id).evaluate(() => ({
    content: Math.ceil(document.getElementById('attend-root').getBoundingClientRect().bottom + window.scrollY +
      parseFloat(getComputedStyle(document.body).marginBottom)),
    scroll: document.documentElement.scrollHeight, viewport: window.innerHeight,
  }));
  return { frame, ...inner };
}
// waits until the iframe holds its page (within the frame's bounds), and returns the heights
async function settled(tab, id) {
  let h;
  for (let i = 0; i < 100; i++) {
    h = await heights(tab, id);
    if (h.frame !== FRAME.height && h.frame === Math.min(FRAME.max, Math.max(FRAME.min, h.content))) return h;
    await tab.waitForTimeout(50);
  }
  assert.fail(`frame ${id} never took its page's height: ${JSON.stringify(h)}`);
}

test('the page in a sandboxed iframe srcdoc, as attend\'s Python package shows it in a notebook', async () => {
  const { tab, context, errors, requests } = await notebook('notebook.html',
    '<p>a notebook cell</p>' + notebookFrame(readFileSync(files.wordsHtml, 'utf8'), 'attend-0-0a1b2c3d'));
  const frame = tab.frameLocator('#attend-0-0a1b2c3d');
  await frame.locator('canvas.thumb').first().waitFor();
  assert.equal(await frame.locator('canvas.thumb').count(), 72);
  const h = await settled(tab, 'attend-0-0a1b2c3d');
  assert.ok(h.scroll <= h.viewport, `nothing scrolls inside the frame: ${JSON.stringify(h)}`);
  assert.deepEqual(errors, []);
  assert.deepEqual(requests, []);
  await context.close();
});

// The lesson notebooks as `scripts/test` executed them (python/tests/test_notebooks.py writes
// the executed copies to $ATTEND_NOTEBOOKS_OUT): every output, in order, as Jupyter's output
// area holds it; each viewer frame draws its page, with no request and no error.
const notebooksOut = process.env.ATTEND_NOTEBOOKS_OUT;
const executed = notebooksOut && existsSync(join(notebooksOut, '2-attention-in-a-real-model.ipynb'))
  ? join(notebooksOut, '2-attention-in-a-real-model.ipynb') : null;
test('an executed lesson notebook: its viewer draws inside the output frame', {
  skip: executed ? false : 'no executed notebook: run through scripts/test (ATTEND_NOTEBOOKS_OUT)',
}, async () => {
  const nb = JSON.parse(readFileSync(executed, 'utf8'));
  const text = (v) => (Array.isArray(v) ? v.join('') : v || '');
  const escape = (t) => t.replace(/&/g, '&amp;').replace(/</g, '&lt;');
  let body = '', ids = [];
  for (const cell of nb.cells) {
    if (cell.cell_type !== 'code') continue;
    body += `<pre class="input">${escape(text(cell.source))}</pre>`;
    for (const out of cell.outputs) {
      const data = out.data || {};
      if (data['text/html']) {
        const h = text(data['text/html']);
        const m = h.match(/<iframe id='([^']+)'/);
        if (m) ids.push(m[1]);
        body += `<div class="output">${h}</div>`;
      } else if (data['text/plain'] || out.text) {
        body += `<pre class="output">${escape(text(data['text/plain'] || out.text))}</pre>`;
      }
    }
  }
  assert.ok(ids.length >= 1, 'the notebook shows a viewer');
  const { tab, context, errors, requests } = await notebook('executed-notebook.html', body);
  for (const id of ids) {
    const frame = tab.frameLocator('#' + id);
    await frame.locator('canvas.thumb').first().waitFor();
    assert.equal(await frame.locator('canvas.thumb').count(), 72, 'MiniLM: 6 layers × 12 heads');
  }
  await screenshot(tab, 'notebook.png');
  assert.deepEqual(errors, []);
  assert.deepEqual(requests, []);
  await context.close();
});

test('a notebook frame sizes itself to its page: a generation shorter, a 30-layer model view taller, each by its own messages', async () => {
  const gen = 'attend-1-00000001', dec = 'attend-2-00000002';
  // a frame that is not a viewer, to post a height of its own
  const other = '<iframe id="other" name="other" sandbox="allow-scripts" srcdoc="&lt;p&gt;not a viewer&lt;/p&gt;" style="height:60px"></iframe>';
  const { tab, context, errors, requests } = await notebook('notebook-sized.html',
    '<p>In [1]: lm.generate(…, explain=True)</p>' + notebookFrame(readFileSync(files.genHtml, 'utf8'), gen) +
    '<p>In [2]: lm.explain(…)</p>' + notebookFrame(readFileSync(files.decPlainHtml, 'utf8'), dec) +
    '<p>In [3]:</p>' + other);
  await tab.frameLocator('#' + dec).locator('canvas.thumb').first().waitFor();
  // the generation: the text, its scrubber and the notes, no blank under them
  const g = await settled(tab, gen);
  assert.ok(g.frame < 780 && g.frame >= FRAME.min, `generation frame ${g.frame}px`);
  assert.ok(g.scroll <= g.viewport, `nothing scrolls inside: ${JSON.stringify(g)}`);
  assert.equal(await viewerFrame(tab, gen).evaluate(() => window.attendViewer.state.view), 'gen');
  // SmolLM2's model view: 30 rows of 9 heads, all shown
  const d = await settled(tab, dec);
  assert.ok(d.frame > 780, `model view frame ${d.frame}px`);
  assert.ok(d.scroll <= d.viewport, `nothing scrolls inside: ${JSON.stringify(d)}`);
  // the frame follows the view: 270 atlas rows (up to the bound), then one head
  const f = viewerFrame(tab, dec);
  await f.evaluate(() => window.attendViewer.show('atlas'));
  const atlas = await settled(tab, dec);
  assert.equal(atlas.frame, FRAME.max, `the atlas is taller than the bound: ${JSON.stringify(atlas)}`);
  await f.evaluate(() => window.attendViewer.open(3, 4));
  const head = await settled(tab, dec);
  assert.ok(head.frame < atlas.frame && head.scroll <= head.viewport, JSON.stringify(head));
  // a message from another frame moves neither; the generation's frame kept its height throughout
  await viewerFrame(tab, 'other').evaluate(() => parent.postMessage({ attendViewer: 'height', id: 'attend-1-00000001', height: 3210 }, '*'));
  await tab.waitForTimeout(300);
  assert.equal((await heights(tab, gen)).frame, g.frame);
  assert.equal((await heights(tab, dec)).frame, head.frame);
  if (shots) await tab.screenshot({ path: join(shots, 'notebook-frames.png'), fullPage: true });
  assert.deepEqual(errors, []);
  assert.deepEqual(requests, []);
  await context.close();
});

test('a generation opens on layer "all", head "mean": each row is the mean of every layer × head, as generate --explain prints', async () => {
  const { page, context, seen } = await open(fileUrl(files.genHtml));
  const J = files.genJson;
  const v = await page.evaluate(() => {
    const a = window.attendViewer;
    return { state: { ...a.state }, select: document.getElementById('av-layersel').value,
      options: [...document.querySelectorAll('#av-layersel option')].map((o) => [o.value, o.textContent]),
      rows: a.generated.map((g) => a.displayed('all', 'mean', g.position)),
      head4: a.generated.map((g) => a.displayed('all', 4, g.position)),
      list: document.getElementById('av-gen-list').textContent };
  });
  assert.deepEqual([v.state.view, v.state.layer, v.state.head, v.select], ['gen', 'all', 'mean', 'all']);
  assert.deepEqual(v.options[0], ['all', 'all (mean of layers)']);
  assert.equal(v.options.length, 31);
  const mean = (rows) => rows[0].map((_, k) => rows.reduce((s, r) => s + r[k], 0) / rows.length);
  let worst = 0;
  J.tokens.forEach((t, i) => {
    const want = mean(t.attention.flat()), got = v.rows[i];
    want.forEach((w, k) => { worst = Math.max(worst, Math.abs(got[k] - w)); });
    got.slice(want.length).forEach((w) => assert.equal(w, 0, 'causal: nothing after the query'));
    // what the CLI prints: its top weights, the same numbers
    t.attended.forEach((x) => assert.ok(Math.abs(got[x.pos] - x.weight) <= 1e-4, `token ${i} ${x.text}@${x.pos}: ${got[x.pos]} vs ${x.weight}`));
    // one head in every layer
    const want4 = mean(t.attention.map((l) => l[4]));
    want4.forEach((w, k) => assert.ok(Math.abs(v.head4[i][k] - w) <= 1e-4, `token ${i} head 4 key ${k}`));
  });
  assert.ok(worst <= 1e-4, `rows within ${worst}`);
  // and the page says it: the first token's list, the CLI's first weight to 3 decimals
  assert.match(v.list, /mean of all 30 layers, mean of heads/);
  const first = J.tokens[0].attended[0];
  const quoted = JSON.stringify(first.text).replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const shown = +v.list.match(new RegExp('\\n\\s*' + quoted + '\\s+([0-9.]+)'))[1];
  assert.ok(Math.abs(shown - first.weight) <= 0.0005 + 1e-4, `${shown} vs ${first.weight}`);
  await screenshot(page, 'generation-all-layers.png');
  // the scrubber walks the tokens on the same layer
  await page.locator('#av-step').fill('3');
  assert.match(await page.locator('#av-gen-list').textContent(), /mean of all 30 layers/);
  await page.evaluate(() => window.attendViewer.show('head'));
  assert.match(await page.locator('#av-hover').textContent(), /^mean of all 30 layers, mean of heads/);
  assert.deepEqual(seen.errors, []);
  assert.deepEqual(seen.requests, []);
  await context.close();
});

test('layer "all" on a trace page: the head, token and rollout views; a trace still opens on its last layer', async () => {
  const { page, context, seen } = await open(fileUrl(files.decHtml));
  const J = files.decJson.attention, L = 30, H = 9, Q = files.decJson.tokens.length;
  assert.equal(await page.evaluate(() => window.attendViewer.state.layer), L - 1);
  await page.evaluate(() => window.attendViewer.set({ view: 'head', head: 'mean' }));
  await page.locator('#av-layersel').selectOption('all');
  assert.equal(await page.evaluate(() => window.attendViewer.state.layer), 'all');
  assert.match(await page.locator('#av-hover').textContent(), /^mean of all 30 layers, mean of heads/);
  const got = await page.evaluate((Q) => [...Array(Q).keys()].map((q) => window.attendViewer.displayed('all', 'mean', q)), Q);
  for (let q = 0; q < Q; q++) for (let k = 0; k < Q; k++) {
    let want = 0;
    for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) want += J[l][h][q][k];
    want /= L * H;
    assert.ok(Math.abs(got[q][k] - want) <= 1e-4, `query ${q} key ${k}: ${got[q][k]} vs ${want}`);
  }
  await screenshot(page, 'head-view-all-layers.png');
  // hidden sinks: the mean of the layers' renormalised rows
  await page.evaluate(() => window.attendViewer.set({ sinks: true, head: 2 }));
  const s = await page.evaluate((L) => ({ all: window.attendViewer.displayed('all', 2, 9),
    per: [...Array(L).keys()].map((l) => window.attendViewer.displayed(l, 2, 9)) }), L);
  s.all.forEach((w, k) => assert.ok(Math.abs(w - s.per.reduce((a, r) => a + r[k], 0) / L) < 1e-6, `key ${k}`));
  assert.equal(s.all[0], 0);
  assert.ok(Math.abs(s.all.reduce((a, b) => a + b, 0) - 1) < 1e-4);
  // the token view reads the same layer
  await page.evaluate(() => window.attendViewer.set({ view: 'token', sinks: false }));
  assert.match(await page.locator('#av-token-list').textContent(), /mean of all 30 layers, head 2/);
  // rollout composes the layers already: its "all" is the last layer's
  await page.evaluate(() => window.attendViewer.set({ view: 'head', map: 'rollout' }));
  const r = await page.evaluate(() => [window.attendViewer.displayed('all', 'mean', 9), window.attendViewer.displayed(29, 'mean', 9)]);
  assert.deepEqual(r[0], r[1]);
  assert.equal(await page.locator('#av-layersel option[value="all"]').textContent(), 'all (rollout to the last layer)');
  assert.match(await page.locator('#av-hover').textContent(), /rollout through all 30 layers \(layer 29\)/);
  assert.match(await page.locator('#av-notes').textContent(), /its “all” is the rollout at the last layer/);
  // a thumbnail opens its own layer
  await page.evaluate(() => window.attendViewer.set({ view: 'model', map: 'raw' }));
  await page.locator('canvas.thumb[data-layer="7"][data-head="1"]').click();
  assert.deepEqual(await page.evaluate(() => [window.attendViewer.state.layer, document.getElementById('av-layersel').value]), [7, '7']);
  assert.deepEqual(seen.errors, []);
  assert.deepEqual(seen.requests, []);
  await context.close();
});

// ---- the effect view (attend effect) ----------------------------------------------------------

const close = (a, b, tol = 1e-6) => Math.abs(a - b) <= tol;

test('an effect page opens on its effect view; window.attendViewer.effect equals effect --format json', async () => {
  const { page, context, seen } = await open(fileUrl(files.effectHtml));
  assert.deepEqual(seen.requests, []);
  assert.deepEqual(seen.errors, []);
  const J = files.effectJson;
  const v = await page.evaluate(() => {
    const a = window.attendViewer;
    const heads = [];
    for (let l = 0; l < a.layers; l++) for (let h = 0; h < a.heads; h++) heads.push(a.effectHead(l, h));
    return { view: a.state.view, effect: a.effect, heads, tokens: a.tokens,
      options: [...document.querySelectorAll('#av-view option')].map((o) => o.value) };
  });
  assert.equal(v.view, 'effect');
  assert.ok(v.options.includes('effect'));
  assert.ok(await page.locator('#av-effect').isVisible());
  assert.ok(!(await page.locator('#av-model').isVisible()));
  // the page is the trace of the prompt; the effect is the JSON without model and tokens
  assert.deepEqual(v.tokens, J.tokens.map((t) => (typeof t === 'string' ? t : t.text)));
  const E = v.effect;
  for (const k of Object.keys(J)) if (k !== 'model' && k !== 'tokens') assert.ok(k in E, `effect.${k}`);
  assert.deepEqual(E.target, J.target);
  assert.deepEqual(E.target_ids, J.target_ids);
  assert.equal(E.target_is_top, J.target_is_top);
  assert.ok(close(E.logp, J.logp));
  assert.equal(E.predicting_position, J.predicting_position);
  assert.equal(E.predicting_position, v.tokens.length - 1);
  assert.equal(E.knockout, J.knockout);
  assert.deepEqual(E.knockout_layers, J.knockout_layers);
  assert.equal(E.sources.length, J.sources.length);
  E.sources.forEach((s, i) => {
    const w = J.sources[i];
    assert.equal(s.label, w.label);
    assert.deepEqual(s.positions, w.positions);
    assert.equal(s.removes_edges, w.removes_edges);
    assert.equal(s.top, w.top);
    assert.ok(close(s.delta_logp, w.delta_logp), `source ${i} Δ ${s.delta_logp} vs ${w.delta_logp}`);
    assert.ok(close(s.attention, w.attention) && close(s.rollout, w.rollout), `source ${i} attention`);
    s.layer_attention.forEach((x, l) => assert.ok(close(x, w.layer_attention[l]), `source ${i} layer ${l}`));
  });
  assert.ok(J.sources.some((s) => s.removes_edges && s.delta_logp !== 0), 'some knockout changes the prediction');
  // the ablation grid: every head, through effectHead too
  assert.equal(J.head_delta_logp.length, J.layers * J.heads);
  assert.equal(E.head_delta_logp.length, J.head_delta_logp.length);
  J.head_delta_logp.forEach((d, i) => {
    assert.ok(close(E.head_delta_logp[i], d), `head ${i}`);
    assert.ok(close(v.heads[i], d), `effectHead ${i}`);
  });
  assert.deepEqual(E.heads_by_effect.map((x) => [x.layer, x.head]), J.heads_by_effect.map((x) => [x.layer, x.head]));
  for (const k of ['attention', 'rollout']) {
    assert.ok(J.spearman[k] === null ? E.spearman[k] === null : close(E.spearman[k], J.spearman[k]), `spearman ${k}`);
  }
  // what is shown: the header names the prediction, a row per source with its Δ, "—" where
  // the knockout removes no edge, the grid and the top heads
  const head = await page.locator('#av-e-head').textContent();
  assert.ok(head.includes('tired'));
  assert.ok(head.includes(Math.abs(J.logp).toFixed(3)));
  assert.match(head, /Spearman/);
  const rows = page.locator('#av-e-sources tbody tr');
  assert.equal(await rows.count(), J.sources.length);
  for (let i = 0; i < J.sources.length; i++) {
    const s = J.sources[i], text = await rows.nth(i).textContent();
    if (s.removes_edges) assert.ok(text.includes(Math.abs(s.delta_logp).toFixed(3)), `row ${i}: ${text}`);
    else assert.match(text, /—/, `row ${i}`);
  }
  assert.ok(await page.locator('#av-e-grid').isVisible());
  assert.ok(await page.locator('#av-e-heads tbody tr').count() > 0);
  // sorted by |Δ|: largest first, the sources whose knockout changes nothing last
  await page.locator('#av-e-sources th', { hasText: 'Δ log p' }).click();
  const order = await page.locator('#av-e-sources tbody tr').evaluateAll((trs) => trs.map((t) => +t.dataset.source));
  const want = J.sources.map((s, i) => i).sort((a, b) => {
    const x = J.sources[a], y = J.sources[b];
    return (y.removes_edges - x.removes_edges) || Math.abs(y.delta_logp) - Math.abs(x.delta_logp) || a - b;
  });
  assert.deepEqual(order, want);
  // one layer's attention instead of the mean over layers
  await page.locator('#av-e-layer').selectOption('12');
  const shown = await page.evaluate(() => window.attendViewer.effectAttention());
  shown.forEach((x, i) => assert.ok(close(x, J.sources[i].layer_attention[12])));
  assert.match(await page.locator('#av-e-sources th').allTextContents().then((t) => t.join(' ')), /layer 12/);
  await page.locator('#av-e-layer').selectOption('mean');
  await page.locator('#av-e-sources th', { hasText: 'pos' }).click();
  await screenshot(page, 'effect-view.png');
  assert.deepEqual(seen.errors, []);
  assert.deepEqual(seen.requests, []);
  await context.close();
});

test('effect view: hovering an ablation-grid cell names it; clicking it opens that head', async () => {
  const { page, context, seen } = await open(fileUrl(files.effectHtml));
  const J = files.effectJson;
  const c = await page.evaluate(() => window.attendViewer.effectCell(3, 4));
  await page.mouse.move(c.x, c.y);
  const hover = await page.locator('#av-e-hover').textContent();
  assert.match(hover, /layer 3, head 4: Δ log p/);
  assert.ok(hover.includes(Math.abs(J.head_delta_logp[3 * J.heads + 4]).toFixed(3)), hover);
  await page.mouse.click(c.x, c.y);
  let s = await page.evaluate(() => ({ ...window.attendViewer.state }));
  assert.equal(s.view, 'head');
  assert.equal(s.layer, 3);
  assert.equal(s.head, 4);
  assert.equal(s.map, 'raw');
  assert.ok(await page.locator('#av-head').isVisible());
  assert.ok(!(await page.locator('#av-effect').isVisible()));
  // back, and a row of the largest effects opens its head
  await page.locator('#av-view').selectOption('effect');
  assert.ok(await page.locator('#av-effect').isVisible());
  const first = (await page.locator('#av-e-heads tbody tr').first().locator('td').allTextContents()).map((t) => t.trim());
  assert.deepEqual(first.slice(0, 2).map(Number), [J.heads_by_effect[0].layer, J.heads_by_effect[0].head]);
  await page.locator('#av-e-heads tbody tr').first().click();
  s = await page.evaluate(() => ({ ...window.attendViewer.state }));
  assert.deepEqual([s.view, s.layer, s.head], ['head', J.heads_by_effect[0].layer, J.heads_by_effect[0].head]);
  assert.deepEqual(seen.errors, []);
  assert.deepEqual(seen.requests, []);
  await context.close();
});

test('effect view: words, no head ablation, markup tokens shown as text', async () => {
  const { page, context, seen } = await open(fileUrl(files.effectWordsHtml), { width: 900, height: 800 });
  assert.deepEqual(seen.requests, []);
  assert.deepEqual(seen.errors, []);
  const E = await page.evaluate(() => window.attendViewer.effect);
  assert.equal(E.unit, 'word');
  assert.equal(E.knockout, 'predicting');
  assert.deepEqual(E.knockout_layers, [5, 20]);
  assert.deepEqual(E.head_delta_logp, []);
  assert.equal(await page.evaluate(() => window.attendViewer.effectHead(0, 0)), null);
  assert.match(await page.locator('#av-e-gridnote').textContent(), /not ablated/);
  assert.ok(!(await page.locator('#av-e-grid').isVisible()));
  const head = await page.locator('#av-e-head').textContent();
  assert.match(head, /layers 5–19/);
  assert.match(head, /predicting position only/);
  // the tokens are text: no element came from them, and the prompt reads back whole
  assert.equal(await page.locator('#av-e-text b, #av-e-sources b, #av-e-text script, #av-e-sources script').count(), 0);
  const text = await page.locator('#av-e-text').textContent();
  assert.equal(text, HOSTILE + E.target.join(''));
  assert.equal(await page.locator('#av-e-sources tbody tr').count(), E.sources.length);
  assert.deepEqual(seen.errors, []);
  await context.close();
});

test('an encoder\'s effect page (MiniLM): 1 − cos on the sentence embedding, equal to effect --format json', async () => {
  const { page, context, seen } = await open(fileUrl(files.effectEncHtml));
  assert.deepEqual(seen.requests, []);
  assert.deepEqual(seen.errors, []);
  const J = files.effectEncJson;
  assert.equal(J.measure, 'embedding');
  assert.deepEqual(J.target, []);
  const v = await page.evaluate(() => {
    const a = window.attendViewer;
    const heads = [];
    for (let l = 0; l < a.layers; l++) for (let h = 0; h < a.heads; h++) heads.push(a.effectHead(l, h));
    return { view: a.state.view, effect: a.effect, heads, tokens: a.tokens, layers: a.layers, heads_: a.heads };
  });
  assert.equal(v.view, 'effect');
  assert.ok(await page.locator('#av-effect').isVisible());
  assert.ok(!(await page.locator('#av-model').isVisible()));
  assert.deepEqual(v.tokens, J.tokens);
  assert.deepEqual([v.layers, v.heads_], [6, 12]);
  const E = v.effect;
  for (const k of Object.keys(J)) if (k !== 'model' && k !== 'tokens') assert.ok(k in E, `effect.${k}`);
  assert.equal(E.measure, 'embedding');
  assert.equal(E.delta_name, J.delta_name);
  assert.equal(E.sources.length, J.sources.length);
  E.sources.forEach((s, i) => {
    const w = J.sources[i];
    assert.equal(s.label, w.label);
    assert.deepEqual(s.positions, w.positions);
    assert.equal(s.removes_edges, w.removes_edges);
    assert.ok(close(s.delta, w.delta), `source ${i} 1 − cos ${s.delta} vs ${w.delta}`);
    assert.ok(s.delta >= 0, `source ${i}`);
    assert.ok(close(s.attention, w.attention) && close(s.rollout, w.rollout), `source ${i} attention`);
  });
  assert.ok(J.sources.some((s) => s.delta > 0), 'some knockout moves the embedding');
  assert.equal(J.head_delta.length, J.layers * J.heads);
  assert.equal(E.head_delta.length, J.head_delta.length);
  J.head_delta.forEach((d, i) => {
    assert.ok(close(E.head_delta[i], d), `head ${i}`);
    assert.ok(close(v.heads[i], d), `effectHead ${i}`);
  });
  // what is shown: 1 − cos on the embedding, never a log p, a target or a top-1
  const text = await page.locator('#av-effect').innerText();
  assert.ok(text.includes('1 − cos'), text);
  assert.ok(!/log p/.test(text), text);
  assert.ok(!/top-1/.test(text));
  assert.match(await page.locator('#av-e-head').textContent(), /sentence embedding/);
  assert.match(await page.locator('#av-e-head').textContent(), /every position \(its own included\)/);
  assert.equal(await page.locator('#av-e-text').textContent(), J.tokens.join(''));
  assert.equal(await page.locator('#av-e-text .next, #av-e-text .q').count(), 0);
  const titles = await page.locator('#av-e-sources th').allTextContents();
  assert.ok(titles.some((t) => t.startsWith(J.delta_name)), titles.join(' | '));
  const rows = page.locator('#av-e-sources tbody tr');
  assert.equal(await rows.count(), J.sources.length);
  for (let i = 0; i < J.sources.length; i++) {
    assert.ok((await rows.nth(i).textContent()).includes(J.sources[i].delta.toFixed(4)), `row ${i}`);
  }
  // sorted by 1 − cos: largest first
  await page.locator('#av-e-sources th', { hasText: '1 − cos' }).click();
  const order = await page.locator('#av-e-sources tbody tr').evaluateAll((trs) => trs.map((t) => +t.dataset.source));
  assert.deepEqual(order, J.sources.map((s, i) => i).sort((a, b) => J.sources[b].delta - J.sources[a].delta || a - b));
  await page.locator('#av-e-sources th', { hasText: 'pos' }).click();
  // the largest head effects, by size
  const first = (await page.locator('#av-e-heads tbody tr').first().locator('td').allTextContents()).map((t) => t.trim());
  assert.deepEqual(first, [String(J.heads_by_effect[0].layer), String(J.heads_by_effect[0].head), J.heads_by_effect[0].delta.toFixed(4)]);
  await screenshot(page, 'effect-minilm.png');
  assert.deepEqual(seen.errors, []);
  assert.deepEqual(seen.requests, []);
  await context.close();
});

test('an encoder\'s effect view: a grid cell names its 1 − cos and rank; clicking it opens that head', async () => {
  const { page, context, seen } = await open(fileUrl(files.effectEncHtml));
  const J = files.effectEncJson;
  const d = J.head_delta[2 * J.heads + 7];
  const rank = J.head_delta.filter((x) => x > d).length + 1;
  const c = await page.evaluate(() => window.attendViewer.effectCell(2, 7));
  await page.mouse.move(c.x, c.y);
  const hover = await page.locator('#av-e-hover').textContent();
  assert.ok(hover.startsWith(`layer 2, head 7: 1 − cos ${d.toFixed(4)} · #${rank} of ${J.head_delta.length} by size`), hover);
  await page.mouse.click(c.x, c.y);
  const s = await page.evaluate(() => ({ ...window.attendViewer.state }));
  assert.deepEqual([s.view, s.layer, s.head, s.map], ['head', 2, 7, 'raw']);
  assert.ok(await page.locator('#av-head').isVisible());
  assert.ok(!(await page.locator('#av-effect').isVisible()));
  assert.deepEqual(seen.errors, []);
  assert.deepEqual(seen.requests, []);
  await context.close();
});

test('ordinary pages have no effect view, and attendViewer.effect is null', async () => {
  for (const f of [files.minilmHtml, files.decHtml, files.genHtml]) {
    const { page, context, seen } = await open(fileUrl(f));
    const v = await page.evaluate(() => ({ effect: window.attendViewer.effect, head: window.attendViewer.effectHead(0, 0),
      view: window.attendViewer.state.view, options: [...document.querySelectorAll('#av-view option')].map((o) => o.value) }));
    assert.equal(v.effect ?? null, null, f);
    assert.equal(v.head, null);
    assert.ok(!v.options.includes('effect'), f);
    assert.notEqual(v.view, 'effect');
    await assert.rejects(page.evaluate(() => window.attendViewer.show('effect')), /no effect view/);
    assert.ok(!(await page.locator('#av-effect').isVisible()));
    assert.deepEqual(seen.errors, []);
    assert.deepEqual(seen.requests, []);
    await context.close();
  }
});

test('the training page: the probe\'s attention at each snapshot, scrubbed and played; the last equals the saved model\'s', async () => {
  const { page, context, seen } = await open(fileUrl(join(files.trainDir, 'training.html')));
  const t = await page.evaluate(() => window.attendViewer.training.steps);
  assert.deepEqual(t, [0, 10, 20, 30]);
  const J = files.trainJson;
  for (let l = 0; l < J.layers; l++) {
    for (let h = 0; h < J.heads; h++) {
      const rows = await page.evaluate(([l, h]) => window.attendViewer.training.map(3, l, h), [l, h]);
      rows.forEach((row, q) => row.forEach((w, k) => assert.ok(Math.abs(w - J.attention[l][h][q][k]) <= 0.6 / 65535, `${l} ${h} ${q} ${k}`)));
    }
  }
  // scrub to the first snapshot, then play to the end
  await page.locator('#av-step').fill('0');
  assert.match(await page.locator('#av-step-label').textContent(), /^step 0 of 30/);
  await page.locator('#av-play').click();
  await page.waitForFunction(() => document.getElementById('av-step-label').textContent.startsWith('step 30 of 30'), null, { timeout: 10000 });
  assert.equal((await page.evaluate(() => window.attendViewer.training.shown())).snap, 3);
  await screenshot(page, 'training-view.png');
  assert.deepEqual(seen.requests, []);
  assert.deepEqual(seen.errors, []);
  await context.close();
});

// ---- attend serve -----------------------------------------------------------------------------

async function startServer() {
  const child = spawn(bin, ['serve', '--port', '0', '--model', 'minilm', '--model', 'toy-winograd', '--model', 'smollm2', '--queue', '1', '--max-tokens', '8'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let log = '';
  const url = await new Promise((ok, fail) => {
    const timer = setTimeout(() => fail(new Error('serve did not start: ' + log)), 60000);
    child.stderr.on('data', (d) => {
      log += d;
      const m = log.match(/listening on (http:\/\/[^ ]+\/)/);
      if (m) { clearTimeout(timer); ok(m[1]); }
    });
    child.on('exit', (c) => fail(new Error('serve exited ' + c + ': ' + log)));
  });
  return { child, url, log: () => log };
}

test('attend serve: a text gets the page, bad requests a 4xx JSON error, concurrency survives', async () => {
  const { child, url } = await startServer();
  try {
    const index = await fetch(url);
    assert.equal(index.status, 200);
    assert.match(await index.text(), /<select id="model">/);
    const post = (body) => fetch(url + 'api/view', { method: 'POST', headers: { 'content-type': 'application/json' }, body });
    const ok = await post(JSON.stringify({ model: 'minilm', text: TEXT }));
    assert.equal(ok.status, 200);
    const html = await ok.text();
    assert.match(html, /window\.attendViewer/);
    for (const [body, status] of [['{not json', 400], [JSON.stringify({ model: 'minilm' }), 400], [JSON.stringify({ model: 'nope', text: 'x' }), 404],
      [JSON.stringify({ model: 'minilm', text: 'x'.repeat(5000) }), 413], [JSON.stringify({ model: 'minilm', text: '   ' }), 400],
      [JSON.stringify({ model: 7, text: 'x' }), 400], ['x'.repeat(300000), 413]]) {
      const r = await post(body);
      assert.equal(r.status, status, body.slice(0, 40));
      const e = await r.json();
      assert.equal(typeof e.error, 'string');
    }
    assert.equal((await fetch(url + 'nothing')).status, 404);
    // a decoder: explained by default (every layer × head over the text), continued on request
    const data = (h) => JSON.parse(h.slice(h.indexOf('id="attend-data">') + 17, h.indexOf('</script>', h.indexOf('id="attend-data">'))));
    const ex = await post(JSON.stringify({ model: 'smollm2', text: TEXT }));
    assert.equal(ex.status, 200);
    const exd = data(await ex.text());
    assert.equal(exd.kind, 'trace');
    assert.equal(exd.layers, 30);
    assert.match(exd.subtitle, /next token/);
    const gen = await post(JSON.stringify({ model: 'smollm2', text: PROMPT, mode: 'generate', max_tokens: 3 }));
    assert.equal(gen.status, 200);
    const gd = data(await gen.text());
    assert.equal(gd.kind, 'generation');
    assert.ok(gd.generated.length >= 1 && gd.generated.length <= 3);
    for (const [body, status] of [[{ model: 'smollm2', text: 'x', mode: 'dance' }, 400], [{ model: 'smollm2', text: 'x', mode: 'generate', max_tokens: 99 }, 400],
      [{ model: 'smollm2', text: 'x', mode: 'generate', max_tokens: 0 }, 400]]) {
      assert.equal((await post(JSON.stringify(body))).status, status, JSON.stringify(body));
    }
    // concurrent requests: each is answered, 200 or 503 (queue of 1), and the server lives on
    const all = await Promise.all([...Array(10).keys()].map((i) => post(JSON.stringify(i % 2 ? { model: 'minilm', text: TEXT + ' ' + i } : { model: 'toy-winograd', text: TOY }))));
    const codes = all.map((r) => r.status);
    assert.ok(codes.every((c) => c === 200 || c === 503), String(codes));
    assert.ok(codes.includes(200));
    // the app page in the browser: type, pick, see the viewer
    const context = await browser.newContext({ viewport: { width: 1300, height: 900 } });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(url);
    await page.locator('#text').fill('The trophy did not fit in the suitcase because it was too big');
    await page.locator('#model').selectOption('minilm');
    await page.locator('button[type=submit]').click();
    const frame = page.frameLocator('#out');
    await frame.locator('canvas.thumb').first().waitFor();
    assert.equal(await frame.locator('canvas.thumb').count(), 72);
    await screenshot(page, 'serve.png');
    assert.deepEqual(errors, []);
    await context.close();
    assert.equal((await fetch(url + 'api/models')).status, 200);
  } finally {
    child.kill('SIGINT');
  }
  const code = await new Promise((ok) => child.on('exit', (c, s) => ok(c ?? s)));
  assert.equal(code, 0, 'Ctrl-C stops the server cleanly');
});
