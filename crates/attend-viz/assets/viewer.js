// attend's viewer. Everything it shows comes from the data element above (written by
// attend-viz from the kernel's probabilities); it fetches nothing. See the README for
// window.attendViewer.
(function () {
  'use strict';
  var root = document.getElementById('attend-root');
  var D = JSON.parse(document.getElementById('attend-data').textContent);
  var L = D.layers, H = D.heads, K = D.keys, R = D.query_pos.length;
  var $ = function (id) { return document.getElementById(id); };
  // the effect of knocking out each source and ablating each head (`attend effect` pages only)
  var E = D.effect || null;
  // layer: a number, or 'all' (the mean over the layers of what each shows). A generation opens
  // on the mean of every layer × head, the number `attend generate --explain` prints per token.
  // the page opens on what was asked: the effect, a comparison (`--compare A B`), a generation
  var state = { view: E ? 'effect' : D.compare ? 'compare' : D.kind === 'generation' ? 'gen' : 'model', map: 'raw',
    layer: D.kind === 'generation' ? 'all' : L - 1, head: 'mean',
    sinks: false, words: !!D.open_words, query: null, step: 0, sortC: null, sortA: null,
    elayer: 'mean', erollout: true, sortE: null, sortEH: null };
  var rowOf = {};
  D.query_pos.forEach(function (p, r) { rowOf[p] = r; });
  if (D.compare && rowOf[D.compare.query] !== undefined) state.query = rowOf[D.compare.query];
  var isSink = {};
  D.sinks.forEach(function (s) { isSink[s] = true; });
  var maps = {};
  D.maps.forEach(function (m) { maps[m.id] = m; });

  // ---- decoding --------------------------------------------------------------------------
  function b64(s) {
    var bin = atob(s), u = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) u[i] = bin.charCodeAt(i);
    return u;
  }
  function inflate(u8) {
    if (typeof DecompressionStream === 'undefined') {
      return Promise.reject(new Error('this browser has no DecompressionStream (Chrome 80+, Firefox 113+, Safari 16.4+ do)'));
    }
    var stream = new Blob([u8]).stream().pipeThrough(new DecompressionStream('deflate'));
    return new Response(stream).arrayBuffer();
  }
  function decode(m) {
    if (m.ready) return m.ready;
    var count = (m.per_head ? L * H : L) * R;
    m.ready = Promise.all([inflate(b64(m.head)), inflate(b64(m.data))]).then(function (bufs) {
      var head = bufs[0], buf = bufs[1], off = 0;
      m.scales = new Float32Array(head, off, count); off += 4 * count;
      if (m.encoding === 'top') {
        m.rest = new Float32Array(head, off, count); off += 4 * count;
        m.index = new Uint32Array(head, off, count * m.top);
      }
      var n = count * (m.encoding === 'top' ? m.top : K);
      m.values = m.bits === 16 ? new Uint16Array(buf, 0, n) : new Uint8Array(buf, 0, n);
      return m;
    });
    return m.ready;
  }
  // one stored row as floats (keys K), matrix index mi, row r
  function storedRow(m, mi, r) {
    var out = new Float32Array(K), at = mi * R + r, s = m.scales[at], i;
    if (m.encoding === 'top') {
      for (i = 0; i < m.top; i++) out[m.index[at * m.top + i]] = m.values[at * m.top + i] * s;
    } else {
      var v = m.values, base = at * K;
      for (i = 0; i < K; i++) out[i] = v[base + i] * s;
    }
    return out;
  }
  // the weight a stored row dropped (top encoding), or 0
  function restOf(m, mi, r) { return m.encoding === 'top' ? m.rest[mi * R + r] : 0; }
  // the same for a shown layer (a number, or 'all': the mean over the layers)
  function restAt(m, l, h, r) {
    if (l !== 'all') return restOf(m, matrixIndex(m, l, h), r);
    if (m.id === 'rollout') return restOf(m, matrixIndex(m, L - 1, h), r);
    var s = 0;
    for (var ll = 0; ll < L; ll++) s += restOf(m, matrixIndex(m, ll, h), r);
    return s / L;
  }
  function restNote(mx, a, l, h) {
    var m = mx.m;
    if (m.encoding !== 'top' || state.words) return '';
    var r = mx.g.rows[a][0];
    return '\n  (not stored: the other keys, together ' + fmt(restAt(m, l, h, r)) + ')';
  }
  function visible(r) { return D.kind === 'generation' ? D.query_pos[r] + 1 : K; }

  // ---- what is shown -------------------------------------------------------------------------
  // the map actually read for (map, head): a per-head map with head "mean" reads its mean
  function effective(mapId, head) {
    var m = maps[mapId];
    if (m.per_head && head === 'mean') {
      return maps[mapId === 'value' ? 'value-mean' : 'mean'];
    }
    return m;
  }
  function matrixIndex(m, l, h) { return m.per_head ? l * H + (h === 'mean' ? 0 : h) : l; }
  // layer 'all': the mean over the layers of the row each layer shows (sinks hidden per layer,
  // as each layer's row is shown). Rollout already composes the layers: its 'all' is the last layer.
  function shownRow(m, l, h, r) {
    if (l === 'all') {
      if (m.id === 'rollout') return shownRow(m, L - 1, h, r);
      var acc = new Float64Array(K), ll, j;
      for (ll = 0; ll < L; ll++) {
        var x = shownRow(m, ll, h, r);
        for (j = 0; j < K; j++) acc[j] += x[j];
      }
      for (j = 0; j < K; j++) acc[j] /= L;
      return acc;
    }
    var row = storedRow(m, matrixIndex(m, l, h), r);
    if (state.sinks && D.sinks.length) {
      D.sinks.forEach(function (s) { if (s < K) row[s] = 0; });
      if (m.probabilities) {
        var sum = 0, i;
        for (i = 0; i < K; i++) sum += row[i];
        var f = sum > 0 ? 1 / sum : 0;
        for (i = 0; i < K; i++) row[i] *= f;
      }
    }
    return row;
  }
  function wordLabel(ps) {
    return ps.map(function (p, i) {
      var t = D.tokens[p];
      return i > 0 && t.indexOf('##') === 0 ? t.slice(2) : t;
    }).join('');
  }
  // key and row groups of the display: tokens, or words (keys summed, rows averaged)
  function groups() {
    var keys = [], rows = [], byWord = {}, i;
    if (!state.words) {
      for (i = 0; i < K; i++) keys.push([i]);
      for (i = 0; i < R; i++) rows.push([i]);
      return { keys: keys, rows: rows };
    }
    for (i = 0; i < K; i++) {
      var w = D.words[i];
      if (!byWord[w]) { byWord[w] = []; keys.push(byWord[w]); }
      byWord[w].push(i);
    }
    if (D.kind === 'generation') {
      for (i = 0; i < R; i++) rows.push([i]);
    } else {
      var rw = {};
      for (i = 0; i < R; i++) {
        var g = D.words[D.query_pos[i]];
        if (!rw[g]) { rw[g] = []; rows.push(rw[g]); }
        rw[g].push(i);
      }
    }
    return { keys: keys, rows: rows };
  }
  function matrix(mapId, l, h) {
    var m = effective(mapId, h), g = groups(), nr = g.rows.length, nk = g.keys.length;
    var data = new Float32Array(nr * nk), vmax = 0;
    g.rows.forEach(function (rs, a) {
      rs.forEach(function (r) {
        var row = shownRow(m, l, h, r);
        g.keys.forEach(function (ks, b) {
          var s = 0;
          for (var j = 0; j < ks.length; j++) s += row[ks[j]];
          data[a * nk + b] += s / rs.length;
        });
      });
    });
    for (var i = 0; i < data.length; i++) if (data[i] > vmax) vmax = data[i];
    return { rows: nr, keys: nk, data: data, vmax: m.probabilities ? 1 : (vmax || 1), g: g, m: m };
  }
  function labelOf(ps) { return state.words ? wordLabel(ps) : D.tokens[ps[0]]; }
  function rowLabel(g, a) {
    var ps = g.rows[a].map(function (r) { return D.query_pos[r]; });
    if (D.kind === 'generation') {
      var r = g.rows[a][0];
      return D.tokens[D.query_pos[r]] + ' → ' + D.generated[r].text;
    }
    return labelOf(ps);
  }

  // ---- colour -------------------------------------------------------------------------------
  // white → deep blue; the square root keeps small weights visible (as the SVG/PNG renderer)
  function colour(w, vmax) {
    var t = Math.sqrt(Math.min(1, Math.max(0, w / (vmax || 1))));
    return [Math.round(255 + (8 - 255) * t), Math.round(255 + (48 - 255) * t), Math.round(255 + (107 - 255) * t)];
  }
  function css(c) { return 'rgb(' + c[0] + ',' + c[1] + ',' + c[2] + ')'; }
  function fmt(w) { return w >= 0.001 || w === 0 ? w.toFixed(3) : w.toExponential(1); }
  function esc(s) { return String(s).replace(/[&<>"]/g, function (c) { return { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' }[c]; }); }
  function show(s) { return JSON.stringify(String(s)); }
  // the shown layer in words
  function layerText(l) {
    if (l !== 'all') return 'layer ' + l;
    return state.map === 'rollout' ? 'rollout through all ' + L + ' layers (layer ' + (L - 1) + ')' : 'mean of all ' + L + ' layers';
  }

  // ---- controls -----------------------------------------------------------------------------
  function option(sel, value, text) {
    var o = document.createElement('option');
    o.value = value; o.textContent = text; sel.appendChild(o);
  }
  var views = [['model', 'model: every head'], ['head', 'head'], ['token', 'token']];
  if (E) views.unshift(['effect', 'effect: knockouts and ablations']);
  if (D.kind === 'generation') views.push(['gen', 'generation']);
  views.push(['compare', 'compare'], ['atlas', 'head atlas']);
  views.forEach(function (v) { option($('av-view'), v[0], v[1]); });
  D.maps.forEach(function (m) { if (m.id !== 'value-mean') option($('av-map'), m.id, m.label); });
  option($('av-layersel'), 'all', 'all (mean of layers)');
  for (var l = 0; l < L; l++) option($('av-layersel'), l, String(l));
  option($('av-headsel'), 'mean', 'mean');
  for (var h = 0; h < H; h++) option($('av-headsel'), h, String(h));
  $('av-title').textContent = D.model + ' · ' + D.tokens.length + ' tokens · ' + L + ' layers × ' + H + ' heads' +
    (D.kv_heads < H ? ' (' + D.kv_heads + ' key/value head' + (D.kv_heads > 1 ? 's' : '') + ')' : '');
  $('av-subtitle').textContent = D.subtitle || '';
  $('av-sink-list').textContent = D.sinks.length
    ? '(' + D.sinks.map(function (s) { return show(D.tokens[s]) + '@' + s; }).join(', ') + '; rows renormalised)'
    : '(none found)';
  $('av-sinks').disabled = !D.sinks.length;
  var notes = D.notes.slice();
  notes.unshift('Sinks: ' + D.sink_rule + '. Hiding them zeroes their columns and renormalises each row over the other keys; nothing is hidden unless you ask.');
  notes.push('Layer “all”: the mean over the ' + L + ' layers of what each layer shows; with head “mean”, the mean of every layer × head' +
    (D.kind === 'generation' ? ' (the weights `attend generate --explain` prints per token, which this page opens on)' : '') +
    (maps.rollout ? '. Rollout already composes the layers, so its “all” is the rollout at the last layer' : '') + '.');
  notes.push('Words: sub-word pieces are merged into words by summing the weights over a word\'s keys and averaging over its queries.');
  notes.push('Weights are stored in ' + maps.raw.bits + ' bits per weight, each row scaled by its largest weight; ' +
    'row() gives them back to within half a step (the row maximum / ' + (maps.raw.bits === 16 ? 65535 : 255) + ' / 2).');
  $('av-notes').innerHTML = notes.map(function (n) { return '<p>' + esc(n) + '</p>'; }).join('');

  function syncControls() {
    $('av-view').value = state.view;
    $('av-map').value = state.map;
    $('av-layersel').options[0].textContent = state.map === 'rollout' ? 'all (rollout to the last layer)' : 'all (mean of layers)';
    $('av-layersel').value = String(state.layer);
    $('av-headsel').value = String(state.head);
    $('av-headsel').disabled = !maps[state.map].per_head || state.view === 'effect';
    $('av-layersel').disabled = state.view === 'model' || state.view === 'atlas' || state.view === 'compare' || state.view === 'effect';
    // the effect view reads only the effect's numbers: the aggregation, sinks and words do not apply
    $('av-map').disabled = state.view === 'effect';
    $('av-sinks').disabled = !D.sinks.length || state.view === 'effect';
    $('av-words').disabled = state.view === 'effect';
    if (E) {
      $('av-e-layer').value = String(state.elayer);
      $('av-e-rollout').checked = state.erollout;
    }
    $('av-sinks').checked = state.sinks;
    $('av-words').checked = state.words;
  }
  $('av-view').onchange = function () { set({ view: this.value }); };
  $('av-map').onchange = function () { set({ map: this.value }); };
  $('av-layersel').onchange = function () { set({ layer: this.value === 'all' ? 'all' : +this.value }); };
  $('av-headsel').onchange = function () { set({ head: this.value === 'mean' ? 'mean' : +this.value }); };
  $('av-sinks').onchange = function () { set({ sinks: this.checked }); };
  $('av-words').onchange = function () { set({ words: this.checked }); };

  // ---- model view ---------------------------------------------------------------------------
  var THUMB = 56;
  function thumb(mx, title, l, h) {
    var c = document.createElement('canvas');
    var w = Math.min(THUMB, mx.keys), hh = Math.max(1, Math.min(THUMB, mx.rows));
    c.width = w; c.height = hh; c.className = 'thumb';
    c.style.width = THUMB + 'px'; c.style.height = Math.round(THUMB * hh / w) + 'px';
    c.title = title; c.dataset.layer = l; c.dataset.head = h;
    var ctx = c.getContext('2d'), img = ctx.createImageData(w, hh);
    // max-pool blocks, so that a thin diagonal stays visible
    for (var y = 0; y < hh; y++) {
      var r0 = Math.floor(y * mx.rows / hh), r1 = Math.max(r0 + 1, Math.floor((y + 1) * mx.rows / hh));
      for (var x = 0; x < w; x++) {
        var k0 = Math.floor(x * mx.keys / w), k1 = Math.max(k0 + 1, Math.floor((x + 1) * mx.keys / w)), v = 0;
        for (var r = r0; r < r1; r++) for (var k = k0; k < k1; k++) { var z = mx.data[r * mx.keys + k]; if (z > v) v = z; }
        var col = colour(v, mx.vmax), p = 4 * (y * w + x);
        img.data[p] = col[0]; img.data[p + 1] = col[1]; img.data[p + 2] = col[2]; img.data[p + 3] = 255;
      }
    }
    ctx.putImageData(img, 0, 0);
    c.onclick = function () { set({ view: 'head', layer: l, head: h === 'layer' ? state.head : h }); };
    return c;
  }
  function drawModel() {
    var el = $('av-model'), m = maps[state.map];
    el.innerHTML = '';
    var hint = document.createElement('p');
    hint.className = 'hint';
    hint.textContent = (m.per_head ? 'Every layer × head' : 'Every layer') + ' (' + m.label + '). Click one to open it.';
    el.appendChild(hint);
    for (var l = 0; l < L; l++) {
      var row = document.createElement('div');
      row.className = 'layerrow';
      var lab = document.createElement('span');
      lab.className = 'lab'; lab.textContent = 'layer ' + l;
      row.appendChild(lab);
      if (m.per_head) {
        for (var h = 0; h < H; h++) row.appendChild(thumb(matrix(state.map, l, h), 'layer ' + l + ' head ' + h, l, h));
      } else {
        row.appendChild(thumb(matrix(state.map, l, 'mean'), 'layer ' + l + ' · ' + m.label, l, 'layer'));
      }
      el.appendChild(row);
    }
  }

  // ---- head view ----------------------------------------------------------------------------
  var geo = null;
  function drawScale(vmax) {
    var c = $('av-scale'), ctx = c.getContext('2d');
    ctx.clearRect(0, 0, c.width, c.height);
    for (var x = 0; x < 200; x++) { ctx.fillStyle = css(colour(x / 199 * vmax, vmax)); ctx.fillRect(16 + x, 4, 1, 16); }
    ctx.strokeStyle = '#999'; ctx.strokeRect(16, 4, 200, 16);
    ctx.fillStyle = '#333'; ctx.font = '11px sans-serif'; ctx.textAlign = 'center';
    [0, 0.25, 0.5, 0.75, 1].forEach(function (t) { ctx.fillText(fmt(t * vmax), 16 + 200 * t, 36); });
  }
  function drawHead() {
    var mx = matrix(state.map, state.layer, state.head), m = mx.m;
    // square cells where the matrix is square; a few long rows (a generation) get taller cells
    var cw = Math.max(1, Math.min(28, Math.floor(760 / Math.max(mx.keys, mx.rows))));
    var ch = Math.max(cw, Math.min(28, Math.floor(520 / mx.rows)));
    var labels = ch >= 9, keyLabels = cw >= 9, font = Math.min(12, ch - 1, keyLabels ? cw - 1 : 12);
    var canvas = $('av-head-canvas'), ctx = canvas.getContext('2d');
    ctx.font = font + 'px sans-serif';
    var widest = 0, a;
    var widestKey = 0;
    if (labels) for (a = 0; a < mx.rows; a++) widest = Math.max(widest, ctx.measureText(rowLabel(mx.g, a)).width);
    if (keyLabels) for (a = 0; a < mx.keys; a++) widestKey = Math.max(widestKey, ctx.measureText(labelOf(mx.g.keys[a])).width);
    var left = labels ? Math.ceil(widest) + 8 : 0, top = keyLabels ? Math.min(Math.ceil(widestKey) + 8, 140) : 0;
    canvas.width = left + mx.keys * cw; canvas.height = top + mx.rows * ch;
    var ov = $('av-head-overlay');
    ov.width = canvas.width; ov.height = canvas.height;
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, canvas.width, canvas.height);
    var img = ctx.createImageData(mx.keys * cw, mx.rows * ch), W = mx.keys * cw;
    for (var q = 0; q < mx.rows; q++) for (var k = 0; k < mx.keys; k++) {
      var col = colour(mx.data[q * mx.keys + k], mx.vmax);
      for (var dy = 0; dy < ch; dy++) for (var dx = 0; dx < cw; dx++) {
        var p = 4 * ((q * ch + dy) * W + k * cw + dx);
        img.data[p] = col[0]; img.data[p + 1] = col[1]; img.data[p + 2] = col[2]; img.data[p + 3] = 255;
      }
    }
    ctx.putImageData(img, left, top);
    ctx.font = font + 'px sans-serif'; ctx.fillStyle = '#222'; ctx.textBaseline = 'middle';
    if (labels) {
      ctx.textAlign = 'right';
      for (a = 0; a < mx.rows; a++) ctx.fillText(rowLabel(mx.g, a), left - 4, top + a * ch + ch / 2);
    }
    if (keyLabels) {
      for (a = 0; a < mx.keys; a++) {
        ctx.save(); ctx.translate(left + a * cw + cw / 2, top - 4); ctx.rotate(-Math.PI / 2);
        ctx.textAlign = 'left'; ctx.fillText(labelOf(mx.g.keys[a]), 0, 0); ctx.restore();
      }
    }
    geo = { mx: mx, cw: cw, ch: ch, left: left, top: top };
    drawScale(mx.vmax);
    $('av-hover').textContent = layerText(state.layer) + ', ' + (m.per_head ? 'head ' + state.head : m.label) +
      (state.sinks ? ' · sinks hidden' : '') + '\nHover a cell or a token label.';
  }
  function topList(vals, labelFn, n) {
    var idx = [];
    for (var i = 0; i < vals.length; i++) idx.push(i);
    idx.sort(function (a, b) { return vals[b] - vals[a] || a - b; });
    return idx.slice(0, n).map(function (i) { return '  ' + show(labelFn(i)) + '  ' + fmt(vals[i]); }).join('\n');
  }
  function hover(q, k) {
    var ov = $('av-head-overlay'), ctx = ov.getContext('2d'), g = geo, mx = g.mx;
    ctx.clearRect(0, 0, ov.width, ov.height);
    ctx.fillStyle = 'rgba(220,40,40,0.18)'; ctx.strokeStyle = 'rgba(200,30,30,0.9)';
    var lines = [];
    if (q !== null) {
      ctx.fillRect(0, g.top + q * g.ch, ov.width, g.ch);
      var row = mx.data.subarray(q * mx.keys, (q + 1) * mx.keys);
      lines.push('query ' + show(rowLabel(mx.g, q)) + ' attends to:\n' + topList(row, function (i) { return labelOf(mx.g.keys[i]); }, 8) +
        restNote(mx, q, state.layer, state.head));
    }
    if (k !== null) {
      ctx.fillRect(g.left + k * g.cw, 0, g.cw, ov.height);
      var col = new Float32Array(mx.rows);
      for (var r = 0; r < mx.rows; r++) col[r] = mx.data[r * mx.keys + k];
      lines.push('key ' + show(labelOf(mx.g.keys[k])) + ' is attended by:\n' + topList(col, function (i) { return rowLabel(mx.g, i); }, 8));
    }
    if (q !== null && k !== null) {
      ctx.strokeRect(g.left + k * g.cw + 0.5, g.top + q * g.ch + 0.5, g.cw - 1, g.ch - 1);
      lines.unshift(show(rowLabel(mx.g, q)) + ' → ' + show(labelOf(mx.g.keys[k])) + ': ' + fmt(mx.data[q * mx.keys + k]));
    }
    $('av-hover').textContent = lines.join('\n\n');
  }
  $('av-head-canvas').addEventListener('mousemove', function (e) {
    if (!geo) return;
    var b = this.getBoundingClientRect(), x = e.clientX - b.left, y = e.clientY - b.top;
    var k = x >= geo.left ? Math.floor((x - geo.left) / geo.cw) : null;
    var q = y >= geo.top ? Math.floor((y - geo.top) / geo.ch) : null;
    if (k !== null && k >= geo.mx.keys) k = null;
    if (q !== null && q >= geo.mx.rows) q = null;
    hover(q, k);
  });

  // ---- token and generation views -----------------------------------------------------------
  function spans(el, upto, weights, vmax, queryPos, nextPos) {
    el.innerHTML = '';
    var g = groups();
    g.keys.concat(upto > K ? [[K]] : []).forEach(function (ps, b) {
      if (ps[0] >= upto) return;
      var s = document.createElement('span');
      s.className = 'tk';
      s.textContent = state.words ? wordLabel(ps) : D.tokens[ps[0]];
      if (isSink[ps[0]]) s.className += ' sink';
      if (ps.indexOf(queryPos) >= 0) s.className += ' q';
      if (ps[0] === nextPos) s.className += ' next';
      var w = b < weights.length ? weights[b] : null;
      if (w !== null && ps[0] < K) {
        var c = colour(w, vmax);
        s.style.background = css(c);
        if (Math.sqrt(w / vmax) > 0.55) s.style.color = '#fff';
        s.title = fmt(w);
      }
      s.dataset.pos = ps[0];
      el.appendChild(s);
    });
  }
  function shownKeys(mx, a) { return mx.data.subarray(a * mx.keys, (a + 1) * mx.keys); }
  function rowGroupOf(mx, r) {
    for (var a = 0; a < mx.g.rows.length; a++) if (mx.g.rows[a].indexOf(r) >= 0) return a;
    return 0;
  }
  function drawToken() {
    var mx = matrix(state.map, state.layer, state.head);
    var r = state.query === null ? R - 1 : state.query, a = rowGroupOf(mx, r), w = shownKeys(mx, a);
    spans($('av-token-text'), D.tokens.length, w, mx.vmax, D.query_pos[r], null);
    $('av-token-list').textContent = 'query ' + show(rowLabel(mx.g, a)) + ' · ' + layerText(state.layer) + ', ' +
      (mx.m.per_head ? 'head ' + state.head : mx.m.label) + ':\n' + topList(w, function (i) { return labelOf(mx.g.keys[i]); }, 8) +
      restNote(mx, a, state.layer, state.head);
  }
  $('av-token-text').addEventListener('click', function (e) {
    var p = e.target.dataset && e.target.dataset.pos;
    if (p === undefined) return;
    var r = rowOf[+p];
    if (r === undefined) {
      $('av-token-list').textContent = 'position ' + p + ' has no row: only the positions that predicted a generated token were kept.';
      return;
    }
    set({ query: r });
  });
  function drawGen() {
    var s = Math.min(state.step, R - 1), mx = matrix(state.map, state.layer, state.head);
    var a = rowGroupOf(mx, s), w = shownKeys(mx, a), pos = D.query_pos[s], gt = D.generated[s];
    $('av-step').max = R - 1; $('av-step').value = s;
    $('av-step-label').textContent = 'token ' + (s + 1) + ' of ' + R + ': ' + show(gt.text) +
      (gt.logprob !== null && gt.logprob !== undefined ? ' (log p ' + gt.logprob.toFixed(2) + ')' : '');
    spans($('av-gen-text'), pos + 2, w, mx.vmax, pos, pos + 1);
    $('av-gen-list').textContent = 'position ' + pos + ' (' + show(D.tokens[pos]) + ') predicted ' + show(gt.text) +
      ', attending to (' + layerText(state.layer) + ', ' + (mx.m.per_head ? 'head ' + state.head : mx.m.label) + '):\n' +
      topList(Array.prototype.slice.call(w, 0, state.words ? w.length : pos + 1), function (i) { return labelOf(mx.g.keys[i]); }, 8);
  }
  $('av-step').oninput = function () { set({ step: +this.value }); };
  var timer = null;
  $('av-play').onclick = function () {
    if (timer) { clearInterval(timer); timer = null; this.textContent = '▶'; return; }
    this.textContent = '❚❚';
    timer = setInterval(function () { set({ step: (state.step + 1) % R }); }, 500);
  };

  // ---- compare and atlas --------------------------------------------------------------------
  function sortable(table, cols, rows, sortKey, onRow) {
    var s = state[sortKey] || { col: cols[0].sort || 0, desc: !!cols[0].desc };
    var sorted = rows.slice().sort(function (x, y) {
      var a = x[s.col], b = y[s.col];
      return (a < b ? -1 : a > b ? 1 : 0) * (s.desc ? -1 : 1);
    });
    var html = '<thead><tr>' + cols.map(function (c, i) {
      return '<th data-col="' + i + '">' + esc(c.name) + (s.col === i ? (s.desc ? ' ▾' : ' ▴') : '') + '</th>';
    }).join('') + '</tr></thead><tbody>' + sorted.map(function (r, i) {
      return '<tr data-i="' + rows.indexOf(r) + '">' + cols.map(function (c, j) {
        // a column with `bar` shades its cell by the value's share of the column's largest
        var style = '';
        if (c.bar) {
          var pct = Math.max(0, Math.min(100, 100 * r[j] / (c.bar || 1)));
          style = ' style="background:linear-gradient(90deg,#cddff4 ' + pct.toFixed(1) + '%,transparent ' + pct.toFixed(1) + '%)"';
        }
        return '<td' + style + '>' + esc(c.fmt ? c.fmt(r[j], i) : r[j]) + '</td>';
      }).join('') + '</tr>';
    }).join('') + '</tbody>';
    table.innerHTML = html;
    table.querySelectorAll('th').forEach(function (th) {
      th.onclick = function () {
        var c = +th.dataset.col, o = {};
        o[sortKey] = { col: c, desc: s.col === c ? !s.desc : true };
        set(o);
      };
    });
    table.querySelectorAll('tbody tr').forEach(function (tr) { tr.onclick = function () { onRow(rows[+tr.dataset.i]); }; });
  }
  function fillSelect(sel, items, value) {
    if (sel.options.length !== items.length) {
      sel.innerHTML = '';
      items.forEach(function (it) { option(sel, it[0], it[1]); });
    }
    sel.value = String(value);
  }
  var cmp = null;
  function drawCompare() {
    var raw = maps.raw;
    if (!cmp) {
      var c = D.compare;
      cmp = c ? { r: rowOf[c.query] !== undefined ? rowOf[c.query] : R - 1, a: c.a, b: c.b } : { r: R - 1, a: 0, b: Math.min(1, K - 1) };
    }
    fillSelect($('av-cq'), D.query_pos.map(function (p, r) { return [r, p + ': ' + show(D.tokens[p])]; }), cmp.r);
    var keys = [];
    for (var i = 0; i < K; i++) keys.push([i, i + ': ' + show(D.tokens[i])]);
    fillSelect($('av-ca'), keys, cmp.a); fillSelect($('av-cb'), keys, cmp.b);
    var rows = [];
    for (var l = 0; l < L; l++) for (var h = 0; h < H; h++) {
      var row = storedRow(raw, l * H + h, cmp.r);
      rows.push([l, h, row[cmp.a], row[cmp.b], row[cmp.a] - row[cmp.b], Math.abs(row[cmp.a] - row[cmp.b])]);
    }
    var f = function (v) { return fmt(v); };
    sortable($('av-compare-table'), [
      { name: 'layer', sort: 5, desc: true }, { name: 'head' },
      { name: show(D.tokens[cmp.a]) + ' (A)', fmt: f }, { name: show(D.tokens[cmp.b]) + ' (B)', fmt: f },
      { name: 'A − B', fmt: function (v) { return (v >= 0 ? '+' : '') + v.toFixed(4); } }, { name: '|A − B|', fmt: f }
    ], rows, 'sortC', function (r) { set({ view: 'head', layer: r[0], head: r[1], map: 'raw' }); });
  }
  ['av-cq', 'av-ca', 'av-cb'].forEach(function (id, i) {
    $(id).onchange = function () { cmp[['r', 'a', 'b'][i]] = +this.value; draw(); };
  });
  function drawAtlas() {
    var gqa = D.kv_heads < H;
    var rows = D.atlas.map(function (s) { return [s.layer, s.head, s.kv_head, s.entropy, s.sink_share, s.prev_token, s.distance]; });
    var f = function (v) { return v.toFixed(3); };
    var most = function (i) { return rows.reduce(function (m, r) { return Math.max(m, r[i]); }, 0) || 1; };
    var cols = [{ name: 'layer' }, { name: 'head' }, { name: gqa ? 'kv head (shared)' : 'kv head' },
      { name: 'entropy (bits)', fmt: f, bar: most(3) }, { name: 'sink share', fmt: f, bar: 1 },
      { name: 'previous token', fmt: f, bar: 1 },
      { name: 'mean distance', fmt: function (v) { return v.toFixed(2); }, bar: most(6) }];
    sortable($('av-atlas-table'), cols, rows, 'sortA', function (r) { set({ view: 'head', layer: r[0], head: r[1], map: 'raw' }); });
  }

  // ---- effect view --------------------------------------------------------------------------
  // Every number comes from D.effect (what `attend effect --format json` prints); the page's
  // maps are only used by the other views.
  var egeo = null, ehover = null;
  var NEG = [178, 24, 43], POS = [27, 120, 55];
  // what the interventions change: a decoder's log p of the target ("logp": Δ log p, signed) or
  // an encoder's sentence embedding ("embedding": 1 − cos, ≥ 0, no target, no prediction)
  var ENC = !!E && E.measure === 'embedding';
  // whose attention an encoder's sources show: [CLS]'s (CLS pooling) or the mean over every query
  var QS = E && E.attention_from === 'cls' ? 'from [CLS]' : 'mean of queries';
  var DNAME = E ? E.delta_name || (ENC ? '1 − cos' : 'Δ log p') : '';
  // decoders: white → red (Δ < 0: the source or head supported the target) or → green (Δ > 0);
  // encoders: white → red (1 − cos has no sign, larger = mattered more); by the square root of
  // |Δ| / dmax, as the attention colours
  function dcolour(d, dmax) {
    var t = Math.sqrt(Math.min(1, Math.abs(d) / (dmax || 1))), e = ENC || d < 0 ? NEG : POS;
    return [Math.round(255 + (e[0] - 255) * t), Math.round(255 + (e[1] - 255) * t), Math.round(255 + (e[2] - 255) * t)];
  }
  function signed(d, n) { return (d > 0 ? '+' : d < 0 ? '−' : '±') + Math.abs(d).toFixed(n === undefined ? 3 : n); }
  // a Δ as the page writes it: signed to 3 decimals (log p), or 4 decimals (1 − cos: 0.003–0.5)
  function dtext(d) { return ENC ? d.toFixed(4) : signed(d); }
  function prob(p) { return p >= 0.001 ? p.toFixed(3) : p.toExponential(1); }
  // a token as a chip's text: whitespace kept, line breaks and tabs made visible
  function chipText(s) { return String(s).replace(/\r?\n/g, '↵').replace(/\t/g, '⇥'); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function chip(s, cls) { return el('span', 'chip' + (cls ? ' ' + cls : ''), chipText(s)); }
  function targetText() { return E.target.join(''); }
  function layersText() {
    var k = E.knockout_layers;
    if (!k) return 'all ' + E.layers + ' layers';
    return k[1] - k[0] === 1 ? 'layer ' + k[0] : 'layers ' + k[0] + '–' + (k[1] - 1);
  }
  function shownAttention(s) { return state.elayer === 'mean' ? s.attention : s.layer_attention[state.elayer]; }
  // Spearman's rank correlation, ties at their mean rank (as attend's Rust code); null with
  // fewer than three pairs or no spread
  function ranks(x) {
    var order = x.map(function (_, i) { return i; }).sort(function (i, j) { return x[i] - x[j]; });
    var r = new Array(x.length), i = 0;
    while (i < order.length) {
      var j = i;
      while (j + 1 < order.length && x[order[j + 1]] === x[order[i]]) j++;
      for (var k = i; k <= j; k++) r[order[k]] = (i + j) / 2 + 1;
      i = j + 1;
    }
    return r;
  }
  function spearman(a, b) {
    if (a.length !== b.length || a.length < 3) return null;
    var ra = ranks(a), rb = ranks(b), m = (a.length + 1) / 2, sab = 0, saa = 0, sbb = 0;
    for (var i = 0; i < a.length; i++) {
      var x = ra[i] - m, y = rb[i] - m;
      sab += x * y; saa += x * x; sbb += y * y;
    }
    return saa > 0 && sbb > 0 ? sab / Math.sqrt(saa * sbb) : null;
  }
  function rho(v) { return v === null || v === undefined ? 'n/a' : signed(v, 2); }

  function effectHeader() {
    var h = $('av-e-head');
    h.innerHTML = '';
    if (ENC) { encoderHeader(h); return; }
    var p1 = el('div', 'pred');
    p1.appendChild(document.createTextNode('After '));
    p1.appendChild(chip(D.tokens[E.predicting_position]));
    p1.appendChild(document.createTextNode(' (position ' + E.predicting_position + ') the target '));
    p1.appendChild(chip(targetText(), 'target'));
    p1.appendChild(el('b', null, '  log p = ' + signed(E.logp).replace('+', '')));
    p1.appendChild(document.createTextNode(' (p = ' + prob(Math.exp(E.logp)) + ')' +
      (E.target.length > 1 ? ', the sum over its ' + E.target.length + ' tokens' : '') + ' · '));
    if (E.target_is_top) {
      p1.appendChild(el('span', 'tag', "the model's own top token"));
    } else {
      p1.appendChild(document.createTextNode('not the model\'s top token, which is '));
      p1.appendChild(chip(E.top.token));
      p1.appendChild(document.createTextNode(' (p = ' + prob(E.top.p) + ')'));
    }
    h.appendChild(p1);
    var live = E.sources.filter(function (s) { return s.removes_edges; });
    h.appendChild(el('div', 'how', 'Knockout of each ' + E.unit + ': its attention edges from ' +
      (E.knockout === 'predicting' ? 'the predicting position only' : 'every later position') + ', in ' + layersText() +
      ' · heads: ' + (E.head_delta.length ? E.ablation + ' ablation, one at a time' : 'not ablated')));
    var p3 = el('div', 'how');
    p3.appendChild(document.createTextNode('Spearman rank correlation with |' + DNAME + '| (the ' + live.length + ' ' + E.unit +
      's whose knockout removes edges): '));
    p3.appendChild(el('b', null, 'attention ' + rho(E.spearman.attention)));
    p3.appendChild(document.createTextNode(' (mean of layers) · '));
    p3.appendChild(el('b', null, 'rollout ' + rho(E.spearman.rollout)));
    if (state.elayer !== 'mean') {
      p3.appendChild(document.createTextNode(' · '));
      p3.appendChild(el('b', null, 'layer ' + state.elayer + '\'s attention ' +
        rho(spearman(live.map(shownAttention), live.map(function (s) { return Math.abs(s.delta); })))));
    }
    h.appendChild(p3);
  }
  // an encoder predicts nothing: the interventions are measured on its sentence embedding
  function encoderHeader(h) {
    var p1 = el('div', 'pred');
    p1.appendChild(document.createTextNode('Effect on the sentence embedding: '));
    p1.appendChild(el('b', 'plain', DNAME));
    p1.appendChild(document.createTextNode(' between the edited and the unedited embedding'));
    p1.appendChild(el('span', 'sub2', ' · 0: unchanged, larger: the ' + E.unit + ' or head mattered more'));
    h.appendChild(p1);
    var live = E.sources.filter(function (s) { return s.removes_edges; });
    h.appendChild(el('div', 'how', 'Knockout of each ' + E.unit + ': its key' + (E.unit === 'word' ? 's' : '') +
      ' hidden from every position (its own included), in ' + layersText() +
      ' · heads: ' + (E.head_delta.length ? E.ablation + ' ablation, one at a time' : 'not ablated')));
    var p3 = el('div', 'how');
    p3.appendChild(document.createTextNode('Spearman rank correlation with |' + DNAME + '| (the ' + live.length + ' ' + E.unit +
      's whose knockout removes edges): '));
    p3.appendChild(el('b', null, 'attention ' + rho(E.spearman.attention)));
    p3.appendChild(document.createTextNode(' (' + QS + ', layers and heads) · '));
    p3.appendChild(el('b', null, 'rollout ' + rho(E.spearman.rollout)));
    if (state.elayer !== 'mean') {
      p3.appendChild(document.createTextNode(' · '));
      p3.appendChild(el('b', null, 'layer ' + state.elayer + '\'s attention ' +
        rho(spearman(live.map(shownAttention), live.map(function (s) { return Math.abs(s.delta); })))));
    }
    h.appendChild(p3);
  }
  // the prompt, each token shaded by its source's Δ, the target after it (decoders; an
  // encoder's text has no predicting position and no target)
  function effectText(dmax) {
    var t = $('av-e-text'), of = {};
    t.innerHTML = '';
    E.sources.forEach(function (s, i) { s.positions.forEach(function (p) { of[p] = i; }); });
    D.tokens.forEach(function (tok, p) {
      var sp = el('span', 'tk', tok), i = of[p];
      sp.dataset.pos = p;
      if (!ENC && p === E.predicting_position) sp.className += ' q';
      if (i !== undefined) {
        var s = E.sources[i];
        sp.dataset.source = i;
        if (s.removes_edges) {
          var c = dcolour(s.delta, dmax);
          sp.style.background = css(c);
          if (Math.sqrt(Math.abs(s.delta) / dmax) > 0.6) sp.style.color = '#fff';
          sp.title = show(s.label) + ' knocked out: ' + DNAME + ' ' + dtext(s.delta);
        } else {
          sp.title = show(s.label) + (ENC ? ': the whole text, its knockout would leave nothing to read'
            : ': read by no later position, its knockout changes nothing');
        }
      }
      t.appendChild(sp);
    });
    if (!ENC) t.appendChild(el('span', 'tk next', targetText()));
  }
  function highlightSource(i, on) {
    document.querySelectorAll('#av-e-text span[data-source="' + i + '"], #av-e-sources tr[data-source="' + i + '"]')
      .forEach(function (e) { e.classList.toggle('hl', on); });
  }
  function bar(frac, colourCss, text, cls) {
    var td = el('td', 'barcell' + (cls ? ' ' + cls : '')), bc = el('div', 'bc');
    var wrap = el('div', 'bar');
    var f = el('div', 'fill');
    f.style.width = Math.max(0, Math.min(100, 100 * frac)).toFixed(1) + '%';
    f.style.background = colourCss;
    wrap.appendChild(f);
    bc.appendChild(el('span', 'num', text));
    bc.appendChild(wrap);
    td.appendChild(bc);
    return td;
  }
  function dbar(d, dmax) {
    // 1 − cos: a bar from 0, in the one hue
    if (ENC) return bar(Math.abs(d) / (dmax || 1), css(NEG), dtext(d), 'enc');
    var td = el('td', 'barcell'), bc = el('div', 'bc');
    var wrap = el('div', 'dbar'), f = el('div', 'fill');
    var w = Math.min(50, 50 * Math.abs(d) / (dmax || 1));
    f.style.width = w.toFixed(1) + '%';
    f.style.left = (d < 0 ? 50 - w : 50).toFixed(1) + '%';
    f.style.background = css(d < 0 ? NEG : POS);
    wrap.appendChild(el('div', 'axis'));
    wrap.appendChild(f);
    bc.appendChild(el('span', 'num ' + (d < 0 ? 'neg' : d > 0 ? 'pos' : ''), signed(d)));
    bc.appendChild(wrap);
    td.appendChild(bc);
    return td;
  }
  function sourceTable(dmax) {
    var table = $('av-e-sources'), s = state.sortE || { key: 'pos', desc: false };
    var amax = 0, rmax = 0;
    E.sources.forEach(function (x) { amax = Math.max(amax, shownAttention(x)); rmax = Math.max(rmax, x.rollout); });
    var key = {
      pos: function (x) { return x.positions[0]; },
      attention: shownAttention,
      rollout: function (x) { return x.rollout; },
      // the sources whose knockout changes nothing go last either way
      delta: function (x) { return x.removes_edges ? Math.abs(x.delta) : (s.desc ? -1 : Infinity); }
    };
    var idx = E.sources.map(function (_, i) { return i; });
    idx.sort(function (i, j) {
      var a = key[s.key](E.sources[i]), b = key[s.key](E.sources[j]);
      return (a < b ? -1 : a > b ? 1 : 0) * (s.desc ? -1 : 1) || i - j;
    });
    var cols = [['pos', E.unit === 'word' ? 'positions' : 'pos', true], [null, E.unit, false],
      ['attention', ENC
        ? (state.elayer === 'mean' ? 'attention (' + QS + ' × layers × heads)' : 'attention (layer ' + state.elayer + ', ' + QS + ' × heads)')
        : (state.elayer === 'mean' ? 'attention (mean of layers × heads)' : 'attention (layer ' + state.elayer + ', mean of heads)'), true]];
    if (state.erollout) cols.push(['rollout', ENC ? 'rollout (' + QS + ')' : 'rollout', true]);
    if (ENC) cols.push(['delta', DNAME + ' knocked out', true]);
    else cols.push(['delta', 'Δ log p(' + show(targetText()) + ') knocked out', true], [null, 'top-1 after', false]);
    table.innerHTML = '';
    table.classList.toggle('enc', ENC);
    var thead = el('thead'), tr = el('tr');
    cols.forEach(function (c, ci) {
      var th = el('th', c[0] ? 'sort' : null, c[1]);
      if (c[0] && c[0] === s.key && (c[0] !== 'pos' || ci === 0)) th.textContent += s.desc ? ' ▾' : ' ▴';
      if (c[0]) {
        th.onclick = function () {
          set({ sortE: { key: c[0], desc: s.key === c[0] ? !s.desc : c[0] !== 'pos' } });
        };
      }
      tr.appendChild(th);
    });
    thead.appendChild(tr);
    table.appendChild(thead);
    var tbody = el('tbody');
    idx.forEach(function (i) {
      var x = E.sources[i], row = el('tr', x.removes_edges ? null : 'dead');
      row.dataset.source = i;
      var pos = x.positions.length > 1 ? x.positions[0] + '–' + x.positions[x.positions.length - 1] : String(x.positions[0]);
      row.appendChild(el('td', 'pos', pos));
      var lab = el('td', 'lab');
      lab.appendChild(chip(x.label));
      row.appendChild(lab);
      var a = shownAttention(x);
      row.appendChild(bar(amax ? a / amax : 0, '#3f6fb0', a.toFixed(3)));
      if (state.erollout) row.appendChild(bar(rmax ? x.rollout / rmax : 0, '#8a7bbf', x.rollout.toFixed(3)));
      if (x.removes_edges && ENC) {
        row.appendChild(dbar(x.delta, dmax));
      } else if (x.removes_edges) {
        row.appendChild(dbar(x.delta, dmax));
        var top = el('td', 'lab');
        top.appendChild(chip(x.top, x.top === E.top.token ? 'same' : 'changed'));
        top.title = x.top === E.top.token ? 'the same top-1 as without the knockout' : 'a different top-1 than without the knockout (' + show(E.top.token) + ')';
        row.appendChild(top);
      } else {
        var none = el('td', 'barcell none', '—');
        none.title = ENC ? 'the whole text: its knockout would hide every key, leaving nothing to read'
          : 'read by no later position: the knockout removes no attention edge and changes nothing';
        row.appendChild(none);
        if (!ENC) row.appendChild(el('td', 'lab none', '—'));
      }
      row.onmouseenter = function () { highlightSource(i, true); };
      row.onmouseleave = function () { highlightSource(i, false); };
      tbody.appendChild(row);
    });
    table.appendChild(tbody);
  }
  function gridMax() {
    var m = 0;
    E.head_delta.forEach(function (d) { m = Math.max(m, Math.abs(d)); });
    return m || 1;
  }
  function drawGrid() {
    var c = $('av-e-grid'), dpr = window.devicePixelRatio || 1, dmax = gridMax();
    var cw = Math.max(10, Math.min(30, Math.floor(300 / E.heads))), ch = Math.max(6, Math.min(18, Math.floor(560 / E.layers)));
    var left = 52, top = 18, w = left + E.heads * cw + 1, hgt = top + E.layers * ch + 1;
    c.width = Math.round(w * dpr); c.height = Math.round(hgt * dpr);
    c.style.width = w + 'px'; c.style.height = hgt + 'px';
    var ctx = c.getContext('2d');
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, w, hgt);
    for (var l = 0; l < E.layers; l++) for (var h = 0; h < E.heads; h++) {
      ctx.fillStyle = css(dcolour(E.head_delta[l * E.heads + h], dmax));
      ctx.fillRect(left + h * cw, top + l * ch, cw, ch);
    }
    ctx.strokeStyle = '#ccd'; ctx.lineWidth = 1;
    ctx.strokeRect(left + 0.5, top + 0.5, E.heads * cw, E.layers * ch);
    ctx.fillStyle = '#555'; ctx.font = '11px sans-serif'; ctx.textBaseline = 'middle';
    var every = ch >= 11 ? 1 : ch >= 6 ? 2 : 5;
    ctx.textAlign = 'right';
    for (l = 0; l < E.layers; l += every) ctx.fillText((l === 0 ? 'layer ' : '') + l, left - 4, top + l * ch + ch / 2);
    ctx.textAlign = 'center';
    var hevery = cw >= 16 ? 1 : 2;
    for (h = 0; h < E.heads; h += hevery) ctx.fillText(String(h), left + h * cw + cw / 2, top / 2 + 1);
    ctx.textAlign = 'right';
    ctx.fillText('head', left - 4, top / 2 + 1);
    if (ehover) {
      ctx.strokeStyle = '#111'; ctx.lineWidth = 2;
      ctx.strokeRect(left + ehover.h * cw + 1, top + ehover.l * ch + 1, cw - 2, ch - 2);
    }
    egeo = { left: left, top: top, cw: cw, ch: ch };
    var s = $('av-e-scale'), sx = s.getContext('2d');
    sx.clearRect(0, 0, s.width, s.height);
    if (ENC) { encoderScale(sx, dmax); return; }
    // the scale: −max … 0 … +max
    for (var x = 0; x < 220; x++) {
      sx.fillStyle = css(dcolour((x / 219 * 2 - 1) * dmax, dmax));
      sx.fillRect(20 + x, 4, 1, 14);
    }
    sx.strokeStyle = '#999'; sx.strokeRect(20.5, 4.5, 219, 13);
    sx.fillStyle = '#333'; sx.font = '11px sans-serif'; sx.textAlign = 'center';
    [-1, -0.5, 0, 0.5, 1].forEach(function (t) { sx.fillText(t === 0 ? '0' : signed(t * dmax, 2), 20 + 110 * (t + 1), 30); });
    sx.fillStyle = '#777'; sx.font = '10px sans-serif';
    sx.textAlign = 'left'; sx.fillText('supported the target', 20, 42);
    sx.textAlign = 'right'; sx.fillText('worked against it', 240, 42);
  }
  // an encoder's scale: 0 … max in the one hue
  function encoderScale(sx, dmax) {
    for (var x = 0; x < 220; x++) {
      sx.fillStyle = css(dcolour(x / 219 * dmax, dmax));
      sx.fillRect(20 + x, 4, 1, 14);
    }
    sx.strokeStyle = '#999'; sx.strokeRect(20.5, 4.5, 219, 13);
    sx.fillStyle = '#333'; sx.font = '11px sans-serif'; sx.textAlign = 'center';
    [0, 0.25, 0.5, 0.75, 1].forEach(function (t) { sx.fillText(t === 0 ? '0' : (t * dmax).toFixed(4), 20 + 219 * t, 30); });
    sx.fillStyle = '#777'; sx.font = '10px sans-serif';
    sx.textAlign = 'left'; sx.fillText('unchanged', 20, 42);
    sx.textAlign = 'right'; sx.fillText('changed the embedding most', 240, 42);
  }
  function gridAt(e) {
    if (!egeo) return null;
    var b = $('av-e-grid').getBoundingClientRect(), x = e.clientX - b.left - egeo.left, y = e.clientY - b.top - egeo.top;
    var h = Math.floor(x / egeo.cw), l = Math.floor(y / egeo.ch);
    return x >= 0 && y >= 0 && h < E.heads && l < E.layers ? { l: l, h: h } : null;
  }
  function gridHoverText(at) {
    if (!at) return 'Hover a cell; click it to open that head.';
    var d = E.head_delta[at.l * E.heads + at.h];
    var rank = 0;
    E.head_delta.forEach(function (v) { if (Math.abs(v) > Math.abs(d)) rank++; });
    if (ENC) {
      return 'layer ' + at.l + ', head ' + at.h + ': ' + DNAME + ' ' + dtext(d) + ' · #' + (rank + 1) + ' of ' +
        E.head_delta.length + ' by size\nclick to open the head';
    }
    return 'layer ' + at.l + ', head ' + at.h + ': Δ log p ' + signed(d) + '\n' +
      (d < 0 ? 'ablating it lowers' : d > 0 ? 'ablating it raises' : 'ablating it leaves') + ' log p(' + show(targetText()) + ')' +
      ' · #' + (rank + 1) + ' of ' + E.head_delta.length + ' by |Δ|\nclick to open the head';
  }
  if (E) {
    $('av-e-grid').addEventListener('mousemove', function (e) {
      var at = gridAt(e);
      if ((at && ehover && at.l === ehover.l && at.h === ehover.h) || (!at && !ehover)) return;
      ehover = at;
      $('av-e-hover').textContent = gridHoverText(at);
      drawGrid();
    });
    $('av-e-grid').addEventListener('mouseleave', function () { ehover = null; $('av-e-hover').textContent = gridHoverText(null); drawGrid(); });
    $('av-e-grid').addEventListener('click', function (e) {
      var at = gridAt(e);
      if (at) set({ view: 'head', layer: at.l, head: at.h, map: 'raw' });
    });
    option($('av-e-layer'), 'mean', 'mean of all layers');
    for (var el0 = 0; el0 < E.layers; el0++) option($('av-e-layer'), el0, 'layer ' + el0);
    $('av-e-layer').onchange = function () { set({ elayer: this.value === 'mean' ? 'mean' : +this.value }); };
    $('av-e-rollout').onchange = function () { set({ erollout: this.checked }); };
  }
  function effectNotes() {
    if (ENC) { encoderNotes(); return; }
    var target = show(targetText()), n = [];
    n.push('Δ log p is log p(' + target + ') with the intervention minus without it (natural log). Negative: the prediction needed that ' +
      E.unit + ' or head (red); positive: it was working against ' + target + ' (green).');
    n.push('A knockout removes the attention edges into the ' + (E.unit === 'word' ? 'word\'s tokens' : 'token') + ' from ' +
      (E.knockout === 'predicting' ? 'the predicting position only (Geva et al. 2023)' : 'every later position, so nothing after it reads it') +
      ', in ' + layersText() + ' (the keys are masked, so each softmax spreads over the rest). A source read by no later position ' +
      'removes no edge: shown “—”.');
    if (E.head_delta.length) {
      n.push('Head ablation replaces one head\'s output by ' + (E.ablation === 'mean' ? 'its mean over the text\'s positions' : 'zeros') +
        ' before the output projection, at every position, one head at a time.');
    }
    n.push('Attention: the weight the predicting position gives the ' + E.unit + ' (mean over heads' +
      (E.unit === 'word' ? ', summed over the word\'s tokens' : '') + '), averaged over layers or in the layer chosen; ' +
      'rollout (Abnar & Zuidema) at the last layer. Bars are scaled to their column\'s largest value, Δ to the largest |Δ| of the sources; ' +
      'the head grid has its own scale. Spearman: the rank correlation of each with |Δ log p| over the sources whose knockout removes edges.');
    if (E.work) {
      n.push('The sweep ran ' + E.work.token_layers + ' token × layer passes (recomputing the whole text for every intervention: ' +
        E.work.naive_token_layers + ').');
    }
    $('av-e-notes').innerHTML = '';
    n.forEach(function (t) { $('av-e-notes').appendChild(el('p', null, t)); });
  }
  function encoderNotes() {
    var n = [], words = E.unit === 'word';
    n.push('1 − cos is one minus the cosine similarity between the sentence embedding with the intervention and without it: ' +
      '0 when the embedding is unchanged, larger when the ' + E.unit + ' or head mattered more to it. It has no sign, so one colour: ' +
      'white at 0, red at the largest.');
    n.push('A knockout hides the ' + (words ? 'word\'s tokens\' keys' : 'token\'s key') + ' from every query, ' +
      (words ? 'the word\'s own rows' : 'its own row') + ' included, in ' + layersText() +
      ' (the keys are masked, so each softmax spreads over the rest). ' +
      'Only a source covering the whole text would leave nothing to read: shown “—”.');
    if (E.head_delta.length) {
      n.push('Head ablation replaces one head\'s output by ' + (E.ablation === 'mean' ? 'its mean over the text\'s positions' : 'zeros') +
        ' before the output projection, at every position, one head at a time.');
    }
    n.push('Attention: the weight the ' + E.unit + ' receives, ' + (E.attention_from === 'cls' ? 'from [CLS] (the embedding pools [CLS]), the mean over' : 'the mean over every query (its own included) and') + ' the heads' +
      (words ? ', summed over the word\'s tokens' : '') + ', averaged over layers or in the layer chosen; ' +
      'rollout (Abnar & Zuidema) at the last layer, averaged over the queries likewise. Bars are scaled to their column\'s largest value, ' +
      '1 − cos to the largest of the sources; the head grid has its own scale. Spearman: the rank correlation of each with 1 − cos ' +
      'over the sources whose knockout removes edges.');
    if (E.work) {
      n.push('The sweep ran ' + E.work.token_layers + ' token × layer passes: an encoder reuses nothing, since every position reads ' +
        'every key, so each intervention recomputes the whole text.');
    }
    $('av-e-notes').innerHTML = '';
    n.forEach(function (t) { $('av-e-notes').appendChild(el('p', null, t)); });
  }
  function drawEffect() {
    var dmax = 0;
    E.sources.forEach(function (s) { if (s.removes_edges) dmax = Math.max(dmax, Math.abs(s.delta)); });
    dmax = dmax || 1;
    effectHeader();
    effectText(dmax);
    sourceTable(dmax);
    var heads = E.head_delta.length > 0;
    $('av-e-gridwrap').style.display = heads ? '' : 'none';
    $('av-e-top').style.display = heads ? '' : 'none';
    $('av-e-gridnote').textContent = heads
      ? (ENC ? DNAME : 'Δ log p(' + show(targetText()) + ')') + ' with one head ' + (E.ablation === 'mean' ? 'mean-' : 'zero-') + 'ablated: layers down, heads across.'
      : 'The heads were not ablated for this page (attend effect --no-heads): only the knockouts were run.';
    if (heads) {
      drawGrid();
      var list = E.heads_by_effect.slice(0, 12);
      $('av-e-topt').textContent = 'Largest head effects (' + list.length + ' of ' + E.head_delta.length + ')';
      var open = function (r) { set({ view: 'head', layer: r[0], head: r[1], map: 'raw' }); };
      if (ENC) {
        // 1 − cos is its own size: no |Δ| column
        sortable($('av-e-heads'), [{ name: 'layer', sort: 2, desc: true }, { name: 'head' }, { name: DNAME, fmt: dtext }],
          list.map(function (x) { return [x.layer, x.head, x.delta]; }), 'sortEH', open);
      } else {
        sortable($('av-e-heads'), [{ name: 'layer', sort: 3, desc: true }, { name: 'head' },
          { name: 'Δ log p', fmt: function (v) { return signed(v); } }, { name: '|Δ|', fmt: function (v) { return v.toFixed(3); } }],
        list.map(function (x) { return [x.layer, x.head, x.delta, Math.abs(x.delta)]; }), 'sortEH', open);
      }
    }
    effectNotes();
  }

  // ---- inside a frame (attend's notebook view) ----------------------------------------------
  // The page tells its host how tall it is, after each draw and whenever it changes size; the
  // host (python/attend/_models.py `_frame`) sets the frame's height from the messages of that
  // frame only, and answers {attendViewer: 'sizing'}. The frame is sandboxed without
  // same-origin: messages are all that cross. Other hosts (attend serve) ignore them.
  var framed = window.parent !== window, postedHeight = 0;
  function contentHeight() {
    var b = root.getBoundingClientRect(), cs = window.getComputedStyle(document.body);
    // the root's bottom in the document, and the body's margin under it (not the viewport:
    // documentElement.scrollHeight never goes below the frame's own height, so it could not shrink)
    var h = b.bottom + window.pageYOffset + (parseFloat(cs.marginBottom) || 0);
    // and a horizontal scrollbar's height, where the page is wider than the frame
    return Math.ceil(h + Math.max(0, window.innerHeight - document.documentElement.clientHeight));
  }
  function postHeight() {
    if (!framed) return;
    var h = contentHeight();
    if (h === postedHeight) return;
    postedHeight = h;
    try {
      window.parent.postMessage({ attendViewer: 'height', id: window.name || null, height: h }, '*');
    } catch (e) { /* a host that takes no messages keeps its own height */ }
  }
  if (framed) {
    if (typeof ResizeObserver !== 'undefined') new ResizeObserver(postHeight).observe(root);
    window.addEventListener('resize', postHeight);
    window.addEventListener('message', function (e) {
      // a host that follows the page's height: a canvas capped at 82vh of the frame would grow
      // with the frame that grows with it, so the cap goes
      if (e.source === window.parent && e.data && e.data.attendViewer === 'sizing') root.classList.add('sized');
    });
  }

  // ---- state --------------------------------------------------------------------------------
  var ready = false;
  function draw() {
    syncControls();
    if (!ready) { postHeight(); return; }
    ['effect', 'model', 'head', 'token', 'gen', 'compare', 'atlas'].forEach(function (v) {
      $('av-' + v).classList.toggle('on', v === state.view);
    });
    var f = { effect: drawEffect, model: drawModel, head: drawHead, token: drawToken, gen: drawGen, compare: drawCompare, atlas: drawAtlas }[state.view];
    f();
    postHeight();
  }
  function set(o) {
    if (o.view === 'effect' && !E) return Promise.reject(new Error('this page has no effect view (it is made by `attend effect`)'));
    if (o.map !== undefined && !maps[o.map]) {
      return Promise.reject(new Error('no aggregation `' + o.map + '` in this page; it has ' + D.maps.map(function (m) { return m.id; }).join(', ')));
    }
    for (var k in o) if (Object.prototype.hasOwnProperty.call(o, k)) state[k] = o[k];
    if (o.map && !maps[state.map].per_head) state.head = 'mean';
    var need = [maps[state.map], effective(state.map, 'mean')].filter(function (m) { return !m.ready; });
    if (need.length) {
      $('av-status').textContent = 'decoding ' + maps[state.map].label + '…';
      $('av-status').style.display = '';
      return Promise.all(need.map(decode)).then(function () { $('av-status').style.display = 'none'; draw(); });
    }
    draw();
    return Promise.resolve();
  }

  var api = {
    version: D.version, kind: D.kind, model: D.model, tokens: D.tokens.slice(), layers: L, heads: H,
    kvHeads: D.kv_heads, sinks: D.sinks.slice(), words: D.words.slice(), bits: maps.raw.bits,
    encoding: maps.raw.encoding, maps: D.maps.map(function (m) { return m.id; }), state: state,
    // the query's stored raw weights, as the kernel gave them (to the stored precision)
    row: function (layer, head, query) {
      var r = rowOf[query];
      if (r === undefined || layer < 0 || layer >= L || head < 0 || head >= H) return null;
      return Array.prototype.slice.call(storedRow(maps.raw, layer * H + head, r), 0, visible(r));
    },
    // half a quantisation step of that row: row() is within this of the kernel's weights
    precision: function (layer, head, query) {
      var r = rowOf[query];
      return r === undefined ? null : maps.raw.scales[(layer * H + head) * R + r] / 2;
    },
    // what a row kept to its largest weights left out (0 for dense pages)
    rest: function (layer, head, query) {
      var r = rowOf[query];
      return r === undefined ? null : restOf(maps.raw, layer * H + head, r);
    },
    // the row as the page shows it now (aggregation, sinks and words applied)
    displayed: function (layer, head, query) {
      var mx = matrix(state.map, layer, head), a = rowGroupOf(mx, rowOf[query]);
      return Array.prototype.slice.call(shownKeys(mx, a));
    },
    generated: D.generated.map(function (g, i) {
      return { text: g.text, position: g.position, logprob: g.logprob,
        row: function (layer, head) { return api.row(layer, head, g.position); } };
    }),
    open: function (layer, head) { return set({ view: 'head', layer: layer, head: head }); },
    show: function (view) { return set({ view: view }); },
    set: set,
    // viewport coordinates of the centre of head-view cell (query row, key column)
    cell: function (q, k) {
      if (!geo) return null;
      var b = $('av-head-canvas').getBoundingClientRect();
      return { x: b.left + geo.left + (k + 0.5) * geo.cw, y: b.top + geo.top + (q + 0.5) * geo.ch };
    },
    colour: colour,
    // `attend effect`'s numbers (null on other pages): the JSON of `attend effect --format json`
    // without `model` and `tokens`
    effect: E,
    // the Δ with head (layer, head) ablated (Δ log p, or 1 − cos on encoders); null when heads were not ablated
    effectHead: function (layer, head) {
      if (!E || !E.head_delta.length || layer < 0 || layer >= E.layers || head < 0 || head >= E.heads) return null;
      return E.head_delta[layer * E.heads + head];
    },
    // the attention each source is shown with now (the layer mean, or the selected layer's)
    effectAttention: function () { return E ? E.sources.map(shownAttention) : null; },
    // viewport coordinates of the centre of the ablation grid's cell (layer, head)
    effectCell: function (layer, head) {
      if (!egeo) return null;
      var b = $('av-e-grid').getBoundingClientRect();
      return { x: b.left + egeo.left + (head + 0.5) * egeo.cw, y: b.top + egeo.top + (layer + 0.5) * egeo.ch };
    },
    paintedAt: null
  };
  api.ready = decode(maps.raw).then(function () {
    return Promise.all(D.maps.filter(function (m) { return m.id === 'mean'; }).map(decode));
  }).then(function () {
    ready = true;
    $('av-status').style.display = 'none';
    draw();
    api.paintedAt = performance.now();
    return api;
  }, function (e) {
    $('av-status').textContent = 'The weights could not be decoded: ' + e.message;
    throw e;
  });
  window.attendViewer = api;
  syncControls();
})();
