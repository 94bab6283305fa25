// The viewer's budgets (issue 13), measured, not asserted:
//   - MiniLM on a 256-token text, all 72 heads: page ≤ 8 MiB;
//   - SmolLM2 `generate --explain` on a 1 024-token prompt plus 64 tokens, all 270 heads:
//     page ≤ 48 MiB;
//   - first paint of either in headless Chromium ≤ 3 s (navigation start → the model or
//     generation view drawn: `attendViewer.paintedAt`, which follows the weights' decoding).
//
//   (cd tests/browser && npm ci) && node bench/viewer_budget.mjs [--repeat 3]
//
// Needs the release binary (cargo build --release) and Chromium (/usr/bin/chromium or
// $CHROMIUM).
import { execFileSync } from 'node:child_process';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(here, '../tests/browser/package.json'));
const { chromium } = require('playwright-core');
const bin = resolve(process.env.ATTEND_BIN || join(here, '../target/release/attend'));
const repeat = Number(process.argv[process.argv.indexOf('--repeat') + 1]) || 3;
const dir = mkdtempSync(join(tmpdir(), 'attend-budget-'));
const MiB = 1 << 20;

// a varied English text of about `words` words (deterministic)
function text(words) {
  const subj = ['The animal', 'A trophy', 'The council', 'My neighbour', 'The river', 'A small robot', 'The old map', 'Her brother'];
  const verb = ['did not cross', 'would not fit in', 'refused', 'followed', 'could not lift', 'painted', 'remembered', 'ignored'];
  const obj = ['the road', 'the suitcase', 'the demonstrators', 'the letter', 'the bridge', 'the garden', 'the last train', 'the storm'];
  const why = ['was tired', 'was too big', 'feared violence', 'was late', 'was heavy', 'looked new', 'was far away', 'was loud'];
  const out = [];
  for (let i = 0; out.join(' ').split(' ').length < words; i++) {
    out.push(`${subj[i % 8]} ${verb[(i * 3) % 8]} ${obj[(i * 5) % 8]} because it ${why[(i * 7) % 8]}.`);
  }
  return out.join(' ').split(' ').slice(0, words).join(' ');
}
const run = (args) => execFileSync(bin, args, { maxBuffer: 1 << 30, stdio: ['ignore', 'pipe', 'ignore'] });

// MiniLM reads 256 tokens at most: a longer text is cut there
const minilmText = text(400);
const minilm = join(dir, 'minilm-256.html');
run(['explain', minilmText, '-o', minilm]);
const minilmTokens = JSON.parse(run(['explain', '--format', 'json', minilmText])).tokens.length;

// the prompt: as many words as make 1 024 SmolLM2 tokens
let words = 700, prompt, promptTokens;
for (let i = 0; i < 8; i++) {
  prompt = text(words);
  promptTokens = JSON.parse(run(['generate', '--max-tokens', '1', '--format', 'json', prompt])).prompt_ids.length;
  if (promptTokens === 1024) break;
  words += promptTokens < 1024 ? Math.max(1, Math.round((1024 - promptTokens) * 0.7)) : -Math.max(1, Math.round((promptTokens - 1024) * 0.7));
}
const smollm = join(dir, 'smollm2-1024+64.html');
// --temperature 0 and 64 tokens; a text this long rarely ends at once
run(['generate', '--max-tokens', '64', prompt, '-o', smollm]);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
});
async function paint(file) {
  const times = [];
  for (let i = 0; i < repeat; i++) {
    const context = await browser.newContext({ viewport: { width: 1300, height: 900 } });
    const page = await context.newPage();
    await page.goto('file://' + file, { waitUntil: 'commit' });
    await page.waitForFunction(() => window.attendViewer && window.attendViewer.paintedAt, null, { timeout: 60000, polling: 20 });
    times.push(await page.evaluate(() => window.attendViewer.paintedAt));
    await context.close();
  }
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}
const rows = [];
for (const [name, file, budget, detail] of [
  ['minilm, 72 heads', minilm, 8, `${minilmTokens} tokens`],
  ['smollm2 generate --explain, 270 heads', smollm, 48, `${promptTokens} prompt tokens + 64 generated`],
]) {
  const size = statSync(file).size / MiB;
  const ms = await paint(file);
  rows.push({ name, detail, size_mib: +size.toFixed(2), budget_mib: budget, first_paint_ms: Math.round(ms), paint_budget_ms: 3000 });
}
await browser.close();
console.log('| page | input | size | budget | first paint (median of ' + repeat + ') | budget |');
console.log('|---|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.name} | ${r.detail} | ${r.size_mib} MiB | ${r.budget_mib} MiB | ${r.first_paint_ms} ms | 3000 ms |`);
}
writeFileSync(join(dir, 'budget.json'), JSON.stringify(rows, null, 1));
console.log(`(pages and budget.json in ${dir})`);
