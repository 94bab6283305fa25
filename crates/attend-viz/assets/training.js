// attend's training page: the probe's attention, snapshot by snapshot, beside the loss curve.
// Everything comes from the data element above; it fetches nothing. window.attendViewer.training
// gives the stored weights back (map(snapshot, layer, head) → rows).
(function () {
  'use strict';
  var D = JSON.parse(document.getElementById('attend-data').textContent);
  var $ = function (id) { return document.getElementById(id); };
  var N = D.tokens.length, L = D.layers, H = D.heads, S = D.steps.length;
  var raw = atob(D.maps), u16 = new Uint16Array(raw.length / 2);
  for (var i = 0; i < u16.length; i++) u16[i] = raw.charCodeAt(2 * i) | (raw.charCodeAt(2 * i + 1) << 8);
  var state = { snap: S - 1, layer: D.head[0], head: D.head[1], timer: null };
  // a space or a line break as a visible mark (byte-level probes)
  function shown(t) { return t.replace(/ /g, '␣').replace(/\n/g, '↵').replace(/\t/g, '⇥'); }

  function map(s, l, h) {
    var at = ((s * L + l) * H + h) * N * N, out = new Float32Array(N * N);
    for (var i = 0; i < N * N; i++) out[i] = u16[at + i] / 65535;
    return out;
  }
  // white → deep blue by the square root of the weight, as the viewer draws it
  function colour(w) {
    var t = Math.sqrt(Math.min(1, Math.max(0, w)));
    return 'rgb(' + Math.round(255 + (8 - 255) * t) + ',' + Math.round(255 + (48 - 255) * t) + ',' + Math.round(255 + (107 - 255) * t) + ')';
  }
  function option(sel, value, text) {
    var o = document.createElement('option'); o.value = value; o.textContent = text; sel.appendChild(o);
  }
  for (var l = 0; l < L; l++) option($('av-t-layer'), l, String(l));
  for (var h = 0; h < H; h++) option($('av-t-head'), h, String(h));
  $('av-t-layer').value = state.layer; $('av-t-head').value = state.head;
  $('av-step').max = S - 1; $('av-step').value = state.snap;
  $('av-title').textContent = D.model + ' · attention being learned';
  $('av-subtitle').textContent = (D.subtitle ? D.subtitle + ' · ' : '') + 'probe: ' + D.tokens.join(' ').slice(0, 160);
  $('av-notes').innerHTML = '<p class="note">Each snapshot is the probe\'s attention after that many training steps, ' +
    'computed by the model as it was then (the checkpoint of that step gives the same rows). ' +
    (D.decisive ? 'The page opens on the task\'s decisive head (the best single head over the held-out sentences). ' : '') +
    'Weights are stored in 16 bits (within 1/65535).</p>';

  var geo = null;
  function drawMap() {
    var m = map(state.snap, state.layer, state.head), c = $('av-t-map');
    var cell = Math.max(6, Math.min(36, Math.floor(520 / N))), left = 110, top = 100;
    c.width = left + N * cell + 10; c.height = top + N * cell + 10;
    var g = c.getContext('2d');
    g.fillStyle = '#fff'; g.fillRect(0, 0, c.width, c.height);
    g.font = '11px system-ui, sans-serif'; g.fillStyle = '#222';
    for (var i = 0; i < N; i++) {
      g.textAlign = 'right'; g.textBaseline = 'middle';
      g.fillText(shown(D.tokens[i]).slice(0, 14), left - 4, top + (i + 0.5) * cell);
      g.save(); g.translate(left + (i + 0.5) * cell, top - 4); g.rotate(-Math.PI / 3);
      g.textAlign = 'left'; g.fillText(shown(D.tokens[i]).slice(0, 14), 0, 0); g.restore();
      for (var k = 0; k < N; k++) {
        g.fillStyle = colour(m[i * N + k]);
        g.fillRect(left + k * cell, top + i * cell, cell, cell);
      }
      g.fillStyle = '#222';
    }
    geo = { left: left, top: top, cell: cell, m: m };
  }
  function drawLoss() {
    var c = $('av-t-loss'), g = c.getContext('2d'), W = c.width, Hh = c.height;
    var pad = { l: 44, r: 10, t: 18, b: 28 };
    var n = D.losses.length, ymax = 0, ymin = 0;
    D.losses.forEach(function (v) { if (v !== null && isFinite(v) && v > ymax) ymax = v; });
    D.evals.forEach(function (e) { if (e[1] !== null && isFinite(e[1]) && e[1] > ymax) ymax = e[1]; });
    if (!(ymax > 0)) ymax = 1;
    var x = function (s) { return pad.l + (W - pad.l - pad.r) * s / Math.max(1, n); };
    var y = function (v) { return Hh - pad.b - (Hh - pad.t - pad.b) * (v - ymin) / Math.max(1e-9, ymax - ymin); };
    g.fillStyle = '#fff'; g.fillRect(0, 0, W, Hh);
    g.strokeStyle = '#999'; g.beginPath(); g.moveTo(pad.l, pad.t); g.lineTo(pad.l, Hh - pad.b); g.lineTo(W - pad.r, Hh - pad.b); g.stroke();
    g.fillStyle = '#444'; g.font = '11px system-ui, sans-serif'; g.textAlign = 'right'; g.textBaseline = 'middle';
    g.fillText(ymax.toFixed(2), pad.l - 4, pad.t); g.fillText('0', pad.l - 4, Hh - pad.b);
    g.textAlign = 'center'; g.textBaseline = 'top';
    g.fillText('step ' + n, W - pad.r - 20, Hh - pad.b + 4);
    g.textAlign = 'left'; g.fillStyle = '#6b8fc7'; g.fillText('training loss', pad.l + 8, 0);
    g.fillStyle = '#c0392b'; g.fillText('● held-out loss', pad.l + 96, 0); g.fillStyle = '#444';
    g.strokeStyle = '#6b8fc7'; g.beginPath();
    var started = false;
    D.losses.forEach(function (v, i) {
      if (v === null || !isFinite(v)) { started = false; return; }
      if (!started) { g.moveTo(x(i + 1), y(v)); started = true; } else g.lineTo(x(i + 1), y(v));
    });
    g.stroke();
    g.fillStyle = '#c0392b';
    D.evals.forEach(function (e) { if (e[1] === null || !isFinite(e[1])) return; g.beginPath(); g.arc(x(e[0]), y(e[1]), 3, 0, 2 * Math.PI); g.fill(); });
    var at = D.steps[state.snap];
    g.strokeStyle = '#08306b'; g.lineWidth = 2; g.beginPath(); g.moveTo(x(at), pad.t); g.lineTo(x(at), Hh - pad.b); g.stroke(); g.lineWidth = 1;
    g.textAlign = 'left'; g.fillStyle = '#08306b'; g.fillText('step ' + at, Math.min(x(at) + 4, W - 60), pad.t);
  }
  function label() {
    var at = D.steps[state.snap], ev = null;
    D.evals.forEach(function (e) { if (e[0] <= at && e[1] !== null) ev = e; });
    $('av-step-label').textContent = 'step ' + at + ' of ' + D.losses.length + (ev ? ' · held-out loss ' + ev[1].toFixed(3) +
      (ev[2] === null ? '' : ', accuracy ' + (100 * ev[2]).toFixed(1) + '%') + ' (step ' + ev[0] + ')' : '') +
      (D.decisive && state.layer === D.head[0] && state.head === D.head[1] ? ' · layer ' + D.head[0] + ' head ' + D.head[1] + ': the decisive head' : '');
  }
  function draw() { drawMap(); drawLoss(); label(); }
  function set(o) {
    for (var k in o) state[k] = o[k];
    $('av-step').value = state.snap; $('av-t-layer').value = state.layer; $('av-t-head').value = state.head;
    draw();
    return api;
  }
  $('av-step').oninput = function () { set({ snap: Number(this.value) }); };
  $('av-t-layer').onchange = function () { set({ layer: Number(this.value) }); };
  $('av-t-head').onchange = function () { set({ head: Number(this.value) }); };
  $('av-play').onclick = function () {
    if (state.timer) { clearInterval(state.timer); state.timer = null; this.textContent = '▶'; return; }
    this.textContent = '❚❚';
    if (state.snap === S - 1) set({ snap: 0 });
    var btn = this;
    state.timer = setInterval(function () {
      set({ snap: Math.min(S - 1, state.snap + 1) });
      if (state.snap >= S - 1) { clearInterval(state.timer); state.timer = null; btn.textContent = '▶'; }
    }, 400);
  };
  $('av-t-map').onmousemove = function (e) {
    if (!geo) return;
    var b = this.getBoundingClientRect();
    var k = Math.floor((e.clientX - b.left - geo.left) / geo.cell), q = Math.floor((e.clientY - b.top - geo.top) / geo.cell);
    if (q < 0 || k < 0 || q >= N || k >= N) return;
    $('av-hover').textContent = JSON.stringify(D.tokens[q]) + ' → ' + JSON.stringify(D.tokens[k]) + ': ' + geo.m[q * N + k].toFixed(4) +
      ' (layer ' + state.layer + ', head ' + state.head + ', step ' + D.steps[state.snap] + ')';
  };
  // in a notebook's frame (python/attend/_models.py `_frame`): the page's height, so that the
  // frame takes it, as the viewer does
  var root = document.getElementById('attend-root'), framed = window.parent !== window, posted = -1;
  function postHeight() {
    if (!framed) return;
    var b = root.getBoundingClientRect(), cs = window.getComputedStyle(document.body);
    var h = Math.ceil(b.bottom + window.pageYOffset + (parseFloat(cs.marginBottom) || 0) +
      Math.max(0, window.innerHeight - document.documentElement.clientHeight));
    if (h === posted) return;
    posted = h;
    try { window.parent.postMessage({ attendViewer: 'height', id: window.name || null, height: h }, '*'); } catch (e) { /* kept */ }
  }
  if (framed) {
    if (typeof ResizeObserver !== 'undefined') new ResizeObserver(postHeight).observe(root);
    window.addEventListener('resize', postHeight);
  }
  var api = {
    training: {
      steps: D.steps.slice(),
      // the stored weights of one head at one snapshot: rows [query][key]
      map: function (snap, layer, head) {
        var m = map(snap, layer, head), rows = [];
        for (var q = 0; q < N; q++) rows.push(Array.prototype.slice.call(m.subarray(q * N, (q + 1) * N)));
        return rows;
      },
      shown: function () { return { snap: state.snap, layer: state.layer, head: state.head }; }
    },
    set: set
  };
  draw();
  postHeight();
  api.ready = Promise.resolve(api);
  window.attendViewer = api;
})();
