// The corsproxy console. Every value comes from the proxy's JSON API and may be a
// client's choice (origins, header names): it is only ever written with textContent.
'use strict';

// Controls, bidirectional overrides and isolates (U+202E reverses what follows), zero-width
// and line-separator characters: shown escaped (\u202e), never applied to the page.
const INVISIBLE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u061c\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]/g;

function visible(text) {
  return String(text).replace(INVISIBLE,
    (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = visible(text);
  if (className) node.className = className;
  return node;
}

async function getJSON(url) {
  const response = await fetch(url, {headers: {Accept: 'application/json'}});
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || ('HTTP ' + response.status));
  return data;
}

function showProcess(data) {
  document.getElementById('process').textContent =
    'Answered by process ' + data.pid + (data.worker ? ' (a worker).' : '.');
}

function list(values) {
  return values.length ? values.join(', ') : '(none)';
}

async function loadPolicy() {
  const data = await getJSON('/console/api/policy');
  showProcess(data);
  document.getElementById('source').textContent = visible(data.source);
  const root = document.getElementById('policy');
  root.replaceChildren();
  for (const route of data.routes) {
    const box = el('div', null, 'route');
    box.appendChild(el('h3', 'route ' + route.name + ' (path_prefix ' + route.path_prefix + ', ' + route.where + ')'));
    const table = el('table');
    const cors = route.cors;
    const rows = [['upstream', route.upstream || '(none)']];
    if (!cors.enabled) {
      rows.push(['cors', 'false: no cross-origin access']);
    } else {
      rows.push(
        ['mode', cors.mode],
        ['allow_origins', list(cors.allow_origins)],
        ['allow_methods', list(cors.allow_methods)],
        ['allow_headers', list(cors.allow_headers)],
        ['expose_headers', list(cors.expose_headers)],
        ['allow_credentials', String(cors.allow_credentials)],
        ['max_age', String(cors.max_age)],
        ['allow_private_network', String(cors.allow_private_network)],
        ['on_disallowed', cors.on_disallowed],
      );
    }
    for (const [key, value] of rows) {
      const tr = el('tr');
      tr.appendChild(el('th', key));
      tr.appendChild(el('td', value));
      table.appendChild(tr);
    }
    box.appendChild(table);
    root.appendChild(box);
  }
}

async function loadRefusals() {
  const data = await getJSON('/console/api/refusals');
  showProcess(data);
  document.getElementById('refusals-summary').textContent =
    data.total + ' refusal(s) recorded by process ' + data.pid + ' since it started; ' +
    'the latest ' + data.capacity + ' distinct (origin, route, reason) kept, ' +
    data.evicted + ' older one(s) pushed out.' +
    (data.stale ? ' ' + data.stale + ' entry(ies) of routes no longer in the config ' +
      '(renamed or removed by a reload) not shown, nor in the suggestion.' : '');
  const body = document.querySelector('#refusals tbody');
  body.replaceChildren();
  if (!data.entries.length) {
    const tr = el('tr');
    const td = el('td', 'No refusals yet.', 'muted');
    td.colSpan = 8;
    tr.appendChild(td);
    body.appendChild(tr);
  }
  for (const entry of data.entries) {
    const tr = el('tr');
    tr.className = 'refusal';
    tr.appendChild(el('td', entry.origin, 'origin'));
    tr.appendChild(el('td', entry.truncated ? 'cut (too long), malformed'
      : entry.malformed ? 'malformed: no browser sends it' : '', 'muted'));
    tr.appendChild(el('td', entry.route));
    tr.appendChild(el('td', entry.reasons.join('; ')));
    tr.appendChild(el('td', entry.verdict === 'would_refuse' ? 'would refuse (report-only)' : 'refused'));
    tr.appendChild(el('td', entry.kind));
    tr.appendChild(el('td', entry.count));
    tr.appendChild(el('td', new Date(entry.last_seen * 1000).toLocaleTimeString()));
    body.appendChild(tr);
  }
}

async function loadSuggestion() {
  const data = await getJSON('/console/api/suggest');
  document.getElementById('suggestion').textContent = visible(data.yaml);
}

async function explain(event) {
  event.preventDefault();
  const form = document.getElementById('explain-form');
  const params = new URLSearchParams();
  params.set('origin', form.elements.origin.value);
  params.set('method', form.elements.method.value);
  params.set('path', form.elements.path.value);
  params.set('header', form.elements.header.value);
  if (form.elements.credentials.checked) params.set('credentials', '1');
  const verdict = document.getElementById('explain-verdict');
  const output = document.getElementById('explain-output');
  try {
    const data = await getJSON('/console/api/explain?' + params.toString());
    const enforce = data.enforce_verdict === 'allowed' ? 'ALLOWED' : 'BLOCKED (' + data.reason + ')';
    verdict.textContent = visible(data.verdict === 'upstream_decides'
      ? 'REPORT-ONLY: the upstream\'s own CORS headers decide; with mode: enforce: ' + enforce
      : enforce);
    verdict.className = 'verdict ' + data.verdict;
    output.textContent = visible(data.text);
  } catch (error) {
    verdict.textContent = visible('Error: ' + error.message);
    verdict.className = 'verdict blocked';
    output.textContent = '';
  }
}

function refresh() {
  return Promise.all([loadRefusals(), loadSuggestion()]).catch((error) => {
    document.getElementById('refusals-summary').textContent = 'Error: ' + error.message;
  });
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('explain-form').addEventListener('submit', explain);
  document.getElementById('refresh').addEventListener('click', refresh);
  loadPolicy().catch((error) => {
    document.getElementById('policy').textContent = 'Error: ' + error.message;
  });
  refresh().then(() => { document.body.dataset.loaded = '1'; });
  setInterval(refresh, 5000);
});
