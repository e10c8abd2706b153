// The Firefox driver's node side (tests/browsers/firefox.py starts one per Engine).
//
// Launches /usr/bin/firefox-esr (or argv[2]) headless through WebDriver BiDi with
// puppeteer-core, then speaks line-delimited JSON on stdin/stdout:
//   first line out: {"ready": true, "version": "...", "pid": <firefox pid>}
//                   or {"ready": false, "error": "..."}
//   in:  {"id": n, "cmd": "open", "origin": "http://..."}            -> result: tab id
//        {"id": n, "cmd": "evaluate", "tab": t, "script": "(x) => ...", "arg": ..., "timeout": s}
//        {"id": n, "cmd": "logs", "tab": t, "quiet": s, "max": s}    -> result: [text, ...]
//        {"id": n, "cmd": "close", "tab": t}
//        {"id": n, "cmd": "quit"}
//   out: {"id": n, "ok": true, "result": ...} or {"id": n, "ok": false, "kind": k, "message": m}
//        with kind "script" (the page script threw), "timeout" or "driver".
// Commands run concurrently (each answers when done, in any order). stdin closing quits.
import puppeteer from 'puppeteer-core';
import readline from 'node:readline';

const executablePath = process.argv[2] || '/usr/bin/firefox-esr';
const userDataDir = process.argv[3] || undefined;
const TIMEOUT_MARK = '__corsproxy_evaluate_timeout__';

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

let browser;
try {
  browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath,
    userDataDir,
    headless: true,
    protocol: 'webDriverBiDi',
    timeout: 60000,
    // The browser is this process's to end: Python kills both process groups at close.
    handleSIGINT: false,
    handleSIGTERM: false,
    handleSIGHUP: false,
  });
} catch (err) {
  send({ ready: false, error: String(err && err.stack || err) });
  process.exit(1);
}

const tabs = new Map(); // id -> {context, page, logs: [text], last: ms}
let nextTab = 1;

async function open({ origin }) {
  const context = await browser.createBrowserContext();
  try {
    const page = await context.newPage();
    const tab = { context, page, logs: [], last: 0 };
    // Firefox's CORS messages are BiDi log.entryAdded entries of type "javascript", which
    // puppeteer surfaces as "pageerror"; console.* calls arrive as "console".
    page.on('pageerror', (error) => { tab.logs.push(error.message); tab.last = Date.now(); });
    page.on('console', (msg) => { tab.logs.push(msg.text()); tab.last = Date.now(); });
    await page.goto(origin.replace(/\/$/, '') + '/', { waitUntil: 'load', timeout: 30000 });
    const id = nextTab++;
    tabs.set(id, tab);
    return id;
  } catch (err) {
    await context.close().catch(() => {});
    throw err;
  }
}

function tabOf(msg) {
  const tab = tabs.get(msg.tab);
  if (!tab) throw Object.assign(new Error(`no tab ${msg.tab}`), { kind: 'driver' });
  return tab;
}

async function evaluate(msg) {
  const tab = tabOf(msg);
  const ms = Math.max(1, Math.round((msg.timeout ?? 15) * 1000));
  // In the page: the script raced against a timer, so a script that never settles frees
  // its BiDi command (and the tab) when the timer fires.
  const source = `Promise.race([
    Promise.resolve().then(() => (${msg.script})(${JSON.stringify(msg.arg ?? null)})),
    new Promise((_, reject) => setTimeout(() => reject(${JSON.stringify(TIMEOUT_MARK)}), ${ms})),
  ])`;
  let guard;
  // Outside the page too (a page stuck in a synchronous loop never runs its timer).
  const outer = new Promise((_, reject) => {
    guard = setTimeout(() => reject(TIMEOUT_MARK), ms + 5000);
  });
  try {
    return await Promise.race([tab.page.evaluate(source), outer]);
  } catch (err) {
    const text = String(err && err.message !== undefined ? err.message : err);
    if (err === TIMEOUT_MARK || text.includes(TIMEOUT_MARK)) {
      throw Object.assign(new Error(`script did not settle within ${ms} ms`), { kind: 'timeout' });
    }
    throw Object.assign(new Error(text), { kind: 'script' });
  } finally {
    clearTimeout(guard);
  }
}

async function logs(msg) {
  // Messages can arrive after the fetch settled: wait until the tab has been quiet for
  // `quiet` seconds (counting from now or its last message), at most `max` seconds.
  const tab = tabOf(msg);
  const quiet = (msg.quiet ?? 0.3) * 1000;
  const start = Date.now();
  const deadline = start + (msg.max ?? 3) * 1000;
  for (;;) {
    const now = Date.now();
    if (now - Math.max(start, tab.last) >= quiet || now >= deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  return [...tab.logs];
}

async function close(msg) {
  const tab = tabOf(msg);
  tabs.delete(msg.tab);
  await tab.context.close();
  return null;
}

async function quit() {
  await Promise.race([browser.close(), new Promise((resolve) => setTimeout(resolve, 10000))]);
  process.exit(0);
}

const COMMANDS = { open, evaluate, logs, close, quit };

async function handle(line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (err) {
    send({ id: null, ok: false, kind: 'driver', message: `bad command line: ${err}` });
    return;
  }
  const run = COMMANDS[msg.cmd];
  try {
    if (!run) throw Object.assign(new Error(`unknown command ${msg.cmd}`), { kind: 'driver' });
    send({ id: msg.id, ok: true, result: (await run(msg)) ?? null });
  } catch (err) {
    send({ id: msg.id, ok: false, kind: err.kind || 'driver', message: String(err.message ?? err) });
  }
}

send({ ready: true, version: await browser.version(), pid: browser.process()?.pid ?? null });
const input = readline.createInterface({ input: process.stdin });
input.on('line', (line) => { if (line.trim()) handle(line); });
input.on('close', () => { quit(); });
