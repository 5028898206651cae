// EWPM web app: plain DOM, no framework, no build step. Served by the REST edge at `/`.
// The token lives in this tab's sessionStorage only; it reaches the server in the
// Authorization header (and, for the quiz room's WebSocket, in the subprotocol list).
'use strict';

const TOKEN_KEY = 'ewpm.token';
const main = document.getElementById('main');
const notice = document.getElementById('notice');
let token = sessionStorage.getItem(TOKEN_KEY);
let me = null;
let current = null; // the open view's AbortController

// ---------------------------------------------------------------------------------------
// Small helpers

/** Builds an element: h('a', {href: '#/x', class: 'y', onclick: f}, 'text', child…). */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith('on')) el.addEventListener(name.slice(2), value);
    else if (name === 'text') el.textContent = value;
    else if (name === 'style') Object.assign(el.style, value); // CSSOM: allowed by the page's CSP
    else el.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

const enc = encodeURIComponent;
const fmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const num = (n) => fmt.format(Number(n) || 0);
const sleep = (ms, signal) => new Promise((resolve) => {
  const done = () => { clearTimeout(t); signal?.removeEventListener('abort', done); resolve(); };
  const t = setTimeout(done, ms);
  signal?.addEventListener('abort', done, { once: true });
});
const aborted = (e) => e?.name === 'AbortError';
/** Decodes a URI component, or answers null when it is malformed. */
const decode = (s) => { try { return decodeURIComponent(s); } catch { return null; } };

/** A random id for idempotency keys; works on plain http origins too. */
function randomId() {
  const b = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

function say(text, kind) {
  notice.textContent = text;
  notice.className = kind === 'info' ? 'notice info' : 'notice';
  notice.hidden = !text;
}

// ---------------------------------------------------------------------------------------
// Identity

/** The token's claims (not verified here: the server verifies every call). */
function claimsOf(t) {
  const parts = t.split('.');
  if (parts.length !== 3) throw new Error('not a JWT (three dot-separated parts)');
  const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/');
  const json = decodeURIComponent(Array.from(atob(b64), (c) => '%' + c.charCodeAt(0).toString(16).padStart(2, '0')).join(''));
  const c = JSON.parse(json);
  if (!c.sub || !c.role) throw new Error('the token has no sub or role');
  return { sub: c.sub, role: c.role, employerId: c.employer_id || null, exp: c.exp || 0 };
}

function signIn(t) {
  const claims = claimsOf(t.trim());
  if (claims.exp && claims.exp * 1000 < Date.now()) throw new Error('the token has expired');
  token = t.trim();
  me = claims;
  sessionStorage.setItem(TOKEN_KEY, token);
}

function signOut(message) {
  token = null;
  me = null;
  sessionStorage.removeItem(TOKEN_KEY);
  if (message) say(message);
  render();
}

const isHost = () => me && (me.role === 'admin' || me.role === 'employer_admin');

// ---------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  constructor(status, problem) {
    const p = problem && typeof problem === 'object' ? problem : {};
    const fields = (p.errors || []).map((e) => `${e.field}: ${e.description}`).join('; ');
    super([p.detail || p.title || `HTTP ${status}`, fields].filter(Boolean).join(' — '));
    this.status = status;
    this.reason = p.reason || '';
  }
}

async function api(method, path, body, signal) {
  const headers = { authorization: `Bearer ${token}`, accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch(path, { method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  let data = null;
  if (text) { try { data = JSON.parse(text); } catch { data = text; } }
  if (r.status === 401) {
    signOut('The server refused the token (expired, or signed for another server). Paste a new one.');
  }
  if (!r.ok) throw new ApiError(r.status, data);
  return data;
}

/**
 * Reads a Server-Sent Events route with the Authorization header (EventSource cannot send
 * one), calling onEvent(name, data) per event, and reconnects with backoff until `signal`
 * aborts. onState('live' | 'reconnecting' | 'failed') tells the page how the stream is.
 */
async function sse(path, onEvent, signal, onState) {
  let delay = 500;
  while (!signal.aborted) {
    try {
      const r = await fetch(path, { headers: { authorization: `Bearer ${token}`, accept: 'text/event-stream' }, signal });
      if (r.status === 401) { signOut('The server refused the token. Paste a new one.'); return; }
      if (!r.ok) {
        const p = await r.json().catch(() => null);
        throw new ApiError(r.status, p);
      }
      onState?.('live');
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value.replace(/\r\n?/g, '\n');
        let end;
        while ((end = buf.indexOf('\n\n')) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let name = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith('event:')) name = line.slice(6).trim();
            else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
          }
          // A page bug must show (on the console), not pass for a dropped stream.
          delay = 500; // reset only once the stream delivered something
          if (data.length) {
            try { onEvent(name, JSON.parse(data.join('\n'))); } catch (e) { console.error(e); }
          }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
      if (e instanceof ApiError && e.status !== 429 && e.status < 500) {
        onState?.('failed');
        say(e.message);
        return;
      }
    }
    if (signal.aborted) return;
    onState?.('reconnecting');
    await sleep(delay, signal);
    delay = Math.min(delay * 2, 10000);
  }
}

function streamBadge() {
  const el = h('span', { class: 'muted', id: 'stream-state', role: 'status' }, 'connecting…');
  el.set = (state) => {
    el.textContent = { live: '● live', reconnecting: 'reconnecting…', failed: 'stream closed' }[state] || state;
    el.dataset.state = state;
  };
  return el;
}

/** Renders leaderboard entries ({rank, userId, score}) into `list`, highlighting the caller. */
function renderBoard(list, entries, unit) {
  list.replaceChildren(...entries.map((e) => {
    const mine = me && e.userId === me.sub;
    return h('li', {
      class: mine ? 'me' : null, 'aria-current': mine ? 'true' : null,
      'data-user-id': e.userId, 'data-rank': e.rank, 'data-score': e.score,
    },
    h('span', { class: 'rank' }, `#${e.rank}`),
    h('span', {}, e.userId, mine ? ' (you)' : ''),
    h('span', {}, num(e.score), unit ? ` ${unit}` : ''));
  }));
  if (!entries.length) list.append(h('li', { class: 'muted empty' }, 'No scores yet.'));
}

function bars(list, rows) {
  const max = Math.max(1, ...rows.map((r) => r.value));
  list.replaceChildren(...rows.map((r) => h('li', { 'data-key': r.key, class: r.class || null },
    h('span', {}, r.label),
    h('span', { class: 'fill', style: { width: `${(100 * r.value) / max}%` }, 'aria-hidden': 'true' }),
    h('span', { class: 'num' }, num(r.value)))));
}

function field(labelText, input) {
  return h('div', {}, h('label', { for: input.id }, labelText), input);
}

// ---------------------------------------------------------------------------------------
// Views

function signInView() {
  document.title = 'Sign in · EWPM';
  const area = h('textarea', { id: 'token', name: 'token', required: true, autocomplete: 'off', spellcheck: 'false' });
  const form = h('form', { class: 'card', id: 'sign-in' },
    field('Bearer token (JWT)', area),
    h('p', { class: 'muted' }, h('code', {}, 'ewpm dev'), ' prints a link that signs you in, and ', h('code', {}, 'ewpm token'),
      ' mints tokens. The token stays in this tab and is sent only to this server.'),
    h('button', { type: 'submit' }, 'Sign in'));
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    try { signIn(area.value); say(''); location.hash = '#/challenges'; render(); } catch (e) { say(`That token cannot be used: ${e.message}.`); }
  });
  main.append(h('h1', {}, 'Sign in'), form);
}

async function challengesView(signal) {
  document.title = 'Challenges · EWPM';
  const list = h('ul', { class: 'grid', id: 'challenges' });
  main.append(h('h1', {}, 'Your active challenges'), list);
  if (isHost()) main.append(createChallengeForm());
  const page = await api('GET', `/api/users/${enc(me.sub)}/challenges/active?pageSize=50`, undefined, signal);
  const items = page.challenges || [];
  list.replaceChildren(...items.map((c) => {
    const s = c.standing;
    const total = s ? s.total : 0;
    const pct = s ? s.percentOfGoal : 0;
    return h('li', { class: 'card', 'data-challenge-id': c.id },
      h('h2', {}, h('a', { href: `#/challenges/${enc(c.id)}` }, c.name)),
      c.description ? h('p', { class: 'muted' }, c.description) : null,
      h('progress', { max: 100, value: Math.min(100, pct), 'aria-label': `${c.name}: ${num(pct)}% of the goal` }),
      h('p', {}, h('span', { class: 'total' }, `${num(total)} / ${num(c.goal.target)} ${c.goal.unit}`),
        ` · ${num(pct)}% · `, h('span', { class: 'rank' }, s && s.rank ? `rank #${s.rank}` : 'not ranked yet')));
  }));
  if (!items.length) list.append(h('li', { class: 'muted' }, 'No active challenges for you right now.'));
}

function createChallengeForm() {
  const name = h('input', { id: 'new-name', required: true, maxlength: 200 });
  const target = h('input', { id: 'new-target', type: 'number', min: '1', step: 'any', required: true, value: '100000' });
  const unit = h('input', { id: 'new-unit', required: true, value: 'steps', maxlength: 32 });
  const days = h('input', { id: 'new-days', type: 'number', min: '1', max: '366', required: true, value: '30' });
  const status = h('p', { class: 'status', role: 'status' });
  const form = h('form', { class: 'card', id: 'create-challenge' },
    h('h2', {}, 'New challenge'),
    h('div', { class: 'row' }, field('Name', name), field('Goal', target), field('Unit', unit), field('Days', days),
      h('button', { type: 'submit' }, 'Create')), status);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const start = new Date();
    start.setUTCMinutes(0, 0, 0);
    const end = new Date(start.getTime() + Number(days.value) * 86400000);
    const body = { name: name.value, startTime: start.toISOString(), endTime: end.toISOString(), goal: { target: Number(target.value), unit: unit.value } };
    if (me.role === 'employer_admin') body.employerId = me.employerId;
    const button = form.querySelector('button');
    button.disabled = true;
    try {
      const c = await api('POST', '/api/challenges', body);
      location.hash = `#/challenges/${enc(c.id)}`;
    } catch (e) { status.textContent = e.message; }
    button.disabled = false;
  });
  return form;
}

async function challengeView(signal, id) {
  const c = await api('GET', `/api/challenges/${enc(id)}`, undefined, signal);
  document.title = `${c.name} · EWPM`;
  const unit = c.goal.unit;
  const place = h('p', { id: 'my-place', 'aria-live': 'polite' }, '…');
  const bar = h('progress', { max: 100, value: 0, id: 'my-progress', 'aria-label': 'Your progress towards the goal' });
  const value = h('input', { id: 'progress-value', type: 'number', min: '0.001', max: '1000000', step: 'any', required: true, inputmode: 'decimal' });
  const status = h('p', { class: 'status', id: 'progress-status', role: 'status' });
  const form = h('form', { class: 'card', id: 'progress-form' },
    h('div', { class: 'row' }, field(`Add progress (${unit})`, value), h('button', { type: 'submit' }, 'Submit')), status);
  const list = h('ol', { class: 'board', id: 'leaderboard', 'aria-label': 'Leaderboard' });
  const badge = streamBadge();
  main.append(h('h1', {}, c.name), c.description ? h('p', { class: 'muted' }, c.description) : null,
    h('div', { class: 'card' }, h('h2', {}, 'You'), bar, place), form,
    h('div', { class: 'card' }, h('h2', {}, 'Leaderboard ', badge), list));

  // The "You" card follows the board: at most one read in flight and one a second; a snapshot
  // that arrives meanwhile is read once more after it.
  let refreshing = null;
  let again = false;
  const refreshMe = () => {
    if (refreshing) { again = true; return; }
    refreshing = api('GET', `/api/challenges/${enc(id)}/leaderboard/me`, undefined, signal).then((r) => {
      const total = r.me ? r.me.score : 0;
      const pct = c.goal.target > 0 ? (100 * total) / c.goal.target : 0;
      bar.value = Math.min(100, pct);
      place.textContent = r.me
        ? `${num(total)} / ${num(c.goal.target)} ${unit} (${num(pct)}%) · rank #${r.me.rank} of ${r.totalMembers}${r.topPercent ? ` · top ${r.topPercent}%` : ''}`
        : `No progress yet · goal ${num(c.goal.target)} ${unit}`;
      place.dataset.total = total;
    }).catch((e) => { if (!signal.aborted) place.textContent = e.message; })
      .then(() => sleep(1000, signal))
      .finally(() => {
        refreshing = null;
        if (again && !signal.aborted) { again = false; refreshMe(); }
      });
  };
  refreshMe();
  // One key per entry: a retry of a failed send (same value) cannot count twice.
  let entry = null;
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const amount = Number(value.value);
    if (entry?.value !== amount) entry = { value: amount, key: randomId() };
    const button = form.querySelector('button');
    button.disabled = true;
    status.textContent = 'Sending…';
    try {
      await api('POST', `/api/challenges/${enc(id)}/progress`, { value: amount, idempotencyKey: entry.key });
      status.textContent = `Queued ${num(amount)} ${unit}: the board shows it within seconds.`;
      value.value = '';
      entry = null;
    } catch (e) { status.textContent = e.message; }
    button.disabled = false;
  });
  sse(`/api/challenges/${enc(id)}/leaderboard/stream?limit=20`, (name, data) => {
    if (name === 'snapshot') { renderBoard(list, data.entries || [], unit); list.dataset.members = data.totalMembers; refreshMe(); }
    if (name === 'error') say(new ApiError(data.status || 503, data).message);
  }, signal, badge.set);
}

async function quizHome(signal) {
  document.title = 'Quiz · EWPM';
  const code = h('input', { id: 'session-id', required: true, autocomplete: 'off', placeholder: 'session id' });
  const join = h('form', { class: 'card', id: 'join-form' },
    h('div', { class: 'row' }, field('Session', code), h('button', { type: 'submit' }, 'Go to the session')));
  join.addEventListener('submit', (ev) => { ev.preventDefault(); location.hash = `#/quiz/${enc(code.value.trim())}`; });
  main.append(h('h1', {}, 'Live quiz'), join);
  if (!isHost()) return;
  const list = h('ul', { class: 'grid', id: 'quizzes' });
  const sample = h('button', { type: 'button', class: 'secondary', id: 'sample-quiz' }, 'Create a sample quiz');
  main.append(h('h2', {}, 'Host a quiz'), h('p', {}, sample), list);
  const host = async (quizId) => {
    const s = await api('POST', '/api/quiz-sessions', { quizId, idempotencyKey: randomId() });
    location.hash = `#/quiz/${enc(s.id)}/host`;
  };
  const load = async () => {
    const page = await api('GET', '/api/quizzes?pageSize=50', undefined, signal);
    list.replaceChildren(...(page.quizzes || []).map((q) => h('li', { class: 'card', 'data-quiz-id': q.id },
      h('h3', {}, q.title), h('p', { class: 'muted' }, q.employerId ? `for ${q.employerId}` : 'for everyone'),
      h('button', { type: 'button', onclick: (ev) => {
        ev.currentTarget.disabled = true;
        host(q.id).catch((e) => { if (!aborted(e)) say(e.message); });
      } }, 'Host a session'))));
    if (!list.children.length) list.append(h('li', { class: 'muted' }, 'No quizzes yet.'));
  };
  sample.addEventListener('click', async () => {
    const body = {
      title: 'Wellness trivia', employerId: me.role === 'employer_admin' ? me.employerId : undefined,
      questions: [
        { text: 'Steps a day for good health?', kind: 'single_choice', choices: ['1,000', '10,000', '100,000'], correctChoices: [1], timeLimitSecs: 30 },
        { text: 'Fruit and vegetable portions a day?', kind: 'single_choice', choices: ['2', '5', '9'], correctChoices: [1], timeLimitSecs: 30 },
        { text: 'Which helps sleep most?', kind: 'poll', choices: ['No screens', 'Reading', 'A walk'], timeLimitSecs: 20 },
      ],
    };
    sample.disabled = true;
    try { await api('POST', '/api/quizzes', body, signal); await load(); } catch (e) { if (!aborted(e)) say(e.message); }
    sample.disabled = false;
  });
  await load();
}

/**
 * The session's room over WebSocket, reconnecting until `signal` aborts or the session
 * finishes. Returns {send(obj)}.
 */
function room(sessionId, onMessage, signal, onState) {
  let socket = null;
  let delay = 500;
  let finished = false;
  let failures = 0;
  const open = () => {
    if (signal.aborted || finished) return;
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let heard = false;
    // The token rides in the subprotocol list, never in the URL.
    socket = new WebSocket(`${scheme}//${location.host}/api/quiz-sessions/${enc(sessionId)}/ws?top=10`,
      ['ewpm.room.v1', `ewpm.bearer.${token}`]);
    socket.onopen = () => onState('live');
    socket.onmessage = (ev) => {
      if (!heard) { heard = true; delay = 500; failures = 0; }
      let m;
      try { m = JSON.parse(ev.data); } catch (e) { console.error(e); return; }
      if (m.type === 'finished') finished = true;
      try { onMessage(m); } catch (e) { console.error(e); }
    };
    socket.onclose = async () => {
      if (signal.aborted || finished) { onState(finished ? 'finished' : 'closed'); return; }
      onState('reconnecting');
      if (!heard && ++failures >= 2) {
        // Refused before a word twice: ask over HTTP why (a 401 signs the tab out; any other
        // refusal ends the room with its message).
        try {
          await api('GET', `/api/quiz-sessions/${enc(sessionId)}`, undefined, signal);
        } catch (e) {
          if (signal.aborted || aborted(e)) return;
          if (e instanceof ApiError && e.status < 500 && e.status !== 429) { onState('failed'); say(e.message); return; }
        }
      }
      await sleep(delay, signal);
      delay = Math.min(delay * 2, 10000);
      open();
    };
  };
  signal.addEventListener('abort', () => socket?.close(1000), { once: true });
  open();
  /** Sends `obj`; false when the room is not connected right now. */
  return { send: (obj) => Boolean(socket && socket.readyState === WebSocket.OPEN && (socket.send(JSON.stringify(obj)), true)) };
}

/** Seconds left until `end` (ms), shown in `el` and ticking until 0 or `signal`. */
let clockTimer = null;
function countdown(el, end, signal) {
  clearInterval(clockTimer);
  const tick = () => {
    const left = Math.max(0, Math.ceil((end - Date.now()) / 1000));
    el.textContent = `${left}s`;
    el.dataset.left = left;
    if (left === 0 || signal.aborted || !el.isConnected) clearInterval(timer);
  };
  tick();
  const timer = setInterval(tick, 250);
  clockTimer = timer;
  el.stop = () => clearInterval(timer);
  signal.addEventListener('abort', () => clearInterval(timer), { once: true });
}

/**
 * The end of a question by this browser's clock. Just revealed (by the server's clock): the
 * whole limit from now, which no clock skew can bend; revealed earlier (a reload, a late
 * join, a reconnect): its deadline, kept within [now, now + limit].
 */
function questionEnd(q) {
  const limit = q.timeLimitSecs * 1000;
  const sinceReveal = Date.now() - Date.parse(q.revealTime);
  if (!(sinceReveal > 2000)) return Date.now() + limit;
  const deadline = Date.parse(q.deadline);
  return Math.min(Date.now() + limit, Math.max(Date.now(), deadline || 0));
}

function sessionLine(el, s, count) {
  el.textContent = `${s.title} · ${s.state} · question ${s.revealedCount} of ${s.questionCount} · ${count ?? s.participantCount} participants`;
  el.dataset.state = s.state;
}

async function quizPlay(signal, sessionId) {
  let view = await api('GET', `/api/quiz-sessions/${enc(sessionId)}`, undefined, signal);
  document.title = `${view.session.title} · Quiz · EWPM`;
  const line = h('p', { id: 'quiz-state' });
  const badge = streamBadge();
  // Announcements (a new question, the verdict) go through `status`; the stage itself is not
  // a live region, so the ticking countdown is not read out every second.
  const status = h('p', { class: 'visually-hidden', role: 'status', id: 'quiz-announce' });
  const stage = h('section', { class: 'card', id: 'stage' });
  const score = h('p', { id: 'my-score' }, view.me ? `Your score: ${num(view.me.score)}` : '');
  const board = h('ol', { class: 'board', id: 'quiz-board', 'aria-label': 'Quiz leaderboard' });
  main.append(h('h1', {}, view.session.title), line, status, stage, score,
    h('div', { class: 'card' }, h('h2', {}, 'Leaderboard ', badge), board));
  let count = view.session.participantCount;
  sessionLine(line, view.session);
  renderBoard(board, view.standings || []);

  const connect = () => {
    let question = null;
    const r = room(sessionId, (m) => {
      switch (m.type) {
        case 'session': view.session = m.session; sessionLine(line, m.session, count); if (m.session.state !== 'running' && !question) waiting(m.session); break;
        case 'participant_count': count = m.count; sessionLine(line, view.session, count); break;
        // A reconnect replays the open question first: one already on screen stays as it is.
        case 'question_revealed': if (question?.id !== m.question.id) { question = m.question; ask(m.question); } break;
        case 'question_closed': closed(m.question, m.result); break;
        case 'answer_receipt': receipt(m.receipt); break;
        case 'score_update': score.textContent = `Your score: ${num(m.update.score)}`; break;
        case 'leaderboard': renderBoard(board, m.entries); break;
        case 'finished':
          sessionLine(line, m.session, count); renderBoard(board, m.standings);
          stage.replaceChildren(h('h2', { id: 'finished' }, 'The quiz is over'), h('p', {}, 'Final standings below.'));
          status.textContent = 'The quiz is over.';
          break;
        case 'error': refused(m); break;
        default: break;
      }
    }, signal, badge.set);
    /** Sends an answer; when the room is not connected, gives the controls back. */
    const send = (q, answer, controls) => {
      controls.forEach((c) => { c.disabled = true; });
      if (r.send({ type: 'answer', questionId: q.id, answer })) return;
      controls.forEach((c) => { c.disabled = false; });
      say('Not connected to the room right now; answer again in a moment.');
    };
    const ask = (q) => {
      const result = h('p', { id: 'answer-result' });
      const clock = h('p', { class: 'countdown', id: 'countdown', role: 'timer', 'aria-live': 'off' });
      let input;
      if (q.kind === 'short_text') {
        const text = h('input', { id: 'answer-text', autocomplete: 'off', maxlength: 200 });
        const submit = h('button', { type: 'submit' }, 'Answer');
        input = h('form', { class: 'row', id: 'answer-form' }, field('Your answer', text), submit);
        input.addEventListener('submit', (ev) => { ev.preventDefault(); send(q, text.value, [text, submit]); });
      } else {
        const picked = new Set();
        input = h('div', { class: 'choices', role: 'group', 'aria-label': 'Choices' },
          q.choices.map((choice, i) => h('button', {
            type: 'button', 'data-choice': i, 'aria-pressed': 'false',
            onclick: (ev) => {
              const button = ev.currentTarget;
              if (q.kind === 'multiple_choice') {
                if (picked.has(i)) picked.delete(i); else picked.add(i);
                button.setAttribute('aria-pressed', String(picked.has(i)));
                return;
              }
              input.querySelectorAll('button').forEach((b) => b.setAttribute('aria-pressed', String(b === button)));
              send(q, i, [...input.querySelectorAll('button')]);
            },
          }, choice)));
        if (q.kind === 'multiple_choice') {
          input.append(h('button', { type: 'button', id: 'submit-choices', onclick: () => {
            send(q, [...picked].sort((a, b) => a - b), [...input.querySelectorAll('button')]);
          } }, 'Answer'));
        }
      }
      const heading = h('h2', { id: 'question', 'data-question-id': q.id, tabindex: '-1' }, q.text);
      stage.replaceChildren(h('p', { class: 'muted' }, `Question ${q.index + 1} · ${q.points} points`),
        heading, clock, input, result, h('ul', { class: 'bars', id: 'distribution', 'aria-label': 'Answers' }));
      countdown(clock, questionEnd(q), signal);
      status.textContent = `Question ${q.index + 1}: ${q.text}`;
      heading.focus({ preventScroll: true });
    };
    const receipt = (rc) => {
      const el = document.getElementById('answer-result');
      if (!el) return;
      el.className = rc.correct === true ? 'good' : rc.correct === false ? 'bad' : '';
      el.dataset.correct = rc.correct === null || rc.correct === undefined ? 'poll' : String(rc.correct);
      el.textContent = rc.correct === true ? `Correct! +${num(rc.points)} points` : rc.correct === false ? 'Not this time.' : 'Thanks, your vote counts.';
      status.textContent = el.textContent;
      score.textContent = `Your score: ${num(rc.score)}`;
    };
    const refused = (m) => {
      const el = document.getElementById('answer-result');
      if (m.problem?.reason === 'ALREADY_ANSWERED' && el) {
        el.dataset.correct = 'answered';
        el.textContent = 'You have answered this question already.';
        stage.querySelectorAll('#stage button, #stage input').forEach((c) => { c.disabled = true; });
        return;
      }
      // The answer did not count: the controls come back (while the question is open).
      if (m.questionId && m.questionId === question?.id && !question.closed) {
        stage.querySelectorAll('#stage button, #stage input').forEach((c) => { c.disabled = false; });
      }
      say(new ApiError(m.problem?.status || 400, m.problem).message);
    };
    const closed = (q, result) => {
      if (document.getElementById('question')?.dataset.questionId !== q.id) ask(q);
      question = { ...q, closed: true };
      const clock = document.getElementById('countdown');
      clock.stop?.();
      clock.textContent = 'closed';
      clock.dataset.left = 0;
      stage.querySelectorAll('#stage button, #stage input').forEach((c) => { c.disabled = true; });
      if (!result) return;
      for (const i of result.correctChoices || []) {
        const b = stage.querySelector(`.choices button[data-choice="${i}"]`);
        if (b) { b.classList.add('correct'); b.append(h('span', { class: 'tag' }, ' ✓ correct')); }
      }
      stage.querySelectorAll('.choices button[aria-pressed="true"]').forEach((b) => b.append(h('span', { class: 'tag' }, ' · your answer')));
      bars(document.getElementById('distribution'), q.choices.map((choice, i) => ({
        key: i, label: choice, value: (result.choiceCounts || [])[i] || 0, class: (result.correctChoices || []).includes(i) ? 'correct' : null,
      })));
      if (result.acceptedAnswers?.length) stage.append(h('p', {}, `Accepted: ${result.acceptedAnswers.join(', ')}`));
    };
    const waiting = (s) => {
      stage.replaceChildren(h('h2', { id: 'waiting' }, s.state === 'finished' ? 'The quiz is over' : 'Waiting for the host…'),
        h('p', { class: 'muted' }, 'Questions appear here as the host reveals them.'));
    };
    const open = (view.questions || []).find((x) => !x.question.closed);
    if (open) { question = open.question; ask(open.question); } else waiting(view.session);
  };

  if (view.me || view.session.state === 'finished') { connect(); return; }
  const joinable = (s) => s.state === 'open' || (s.state === 'running' && s.lateJoin);
  const team = h('input', { id: 'team', autocomplete: 'off', maxlength: 64 });
  const button = h('button', { type: 'button', id: 'join', disabled: !joinable(view.session) }, 'Join the quiz');
  const why = h('p', { class: 'muted', id: 'join-state', role: 'status' });
  stage.replaceChildren(view.session.teamMode ? field('Team', team) : '', button, why);
  // Until the host opens the session, look again every 2 s.
  (async () => {
    while (!signal.aborted && view.session.state === 'scheduled') {
      why.textContent = 'The host has not opened this session yet; the button wakes up when they do.';
      await sleep(2000, signal);
      if (signal.aborted) return;
      try { view = await api('GET', `/api/quiz-sessions/${enc(sessionId)}`, undefined, signal); } catch { /* looked at again */ }
      sessionLine(line, view.session);
    }
    button.disabled = !joinable(view.session);
    why.textContent = joinable(view.session) ? ''
      : view.session.state === 'finished' ? 'This session is over.' : 'This session has started and takes no late joiners.';
  })();
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await api('POST', `/api/quiz-sessions/${enc(sessionId)}/join`, view.session.teamMode ? { team: team.value } : {});
      view = await api('GET', `/api/quiz-sessions/${enc(sessionId)}`, undefined, signal);
      score.textContent = 'Your score: 0';
      connect();
    } catch (e) {
      if (aborted(e) || signal.aborted) return;
      button.disabled = false;
      say(e.message);
    }
  });
}

async function quizHost(signal, sessionId) {
  const view = await api('GET', `/api/quiz-sessions/${enc(sessionId)}`, undefined, signal);
  document.title = `Host: ${view.session.title} · EWPM`;
  const line = h('p', { id: 'quiz-state' });
  const badge = streamBadge();
  const link = `${location.origin}/#/quiz/${enc(sessionId)}`;
  const stage = h('section', { class: 'card', id: 'host-question' }, h('p', { class: 'muted' }, 'No question revealed yet.'));
  const dist = h('ul', { class: 'bars', id: 'distribution', 'aria-label': 'Answer distribution' });
  const board = h('ol', { class: 'board', id: 'quiz-board', 'aria-label': 'Quiz leaderboard' });
  const buttons = {};
  const act = (id, label, path) => {
    buttons[id] = h('button', { type: 'button', id, onclick: async () => {
      // One click, one request: every control waits for the answer (a double click on
      // Reveal would reveal two questions).
      Object.values(buttons).forEach((b) => { b.disabled = true; });
      try {
        const r = await api('POST', `/api/quiz-sessions/${enc(sessionId)}/${path}`, undefined, signal);
        update(r?.session ?? r);
        if (r?.question) show(r.question.question ?? r.question);
      } catch (e) {
        if (aborted(e) || signal.aborted) return;
        update(session);
        say(e.message);
      }
    } }, label);
    return buttons[id];
  };
  main.append(h('h1', {}, `Host: ${view.session.title}`),
    h('p', {}, 'Participants join at ', h('a', { href: link, id: 'join-link' }, link)), line,
    h('div', { class: 'row card', role: 'toolbar', 'aria-label': 'Session controls' },
      act('open', 'Open for joining', 'open'), act('start', 'Start', 'start'), act('reveal', 'Reveal next question', 'reveal'),
      act('close-question', 'Close question', 'close-question'), act('finish', 'Finish', 'finish')),
    stage, h('div', { class: 'card' }, h('h2', {}, 'Answers'), dist),
    h('div', { class: 'card' }, h('h2', {}, 'Leaderboard ', badge), board));
  let session = view.session;
  let count = session.participantCount;
  const update = (s) => {
    if (!s?.state) return;
    session = s;
    sessionLine(line, s, count);
    buttons.open.disabled = s.state !== 'scheduled';
    buttons.start.disabled = s.state !== 'open';
    buttons.reveal.disabled = s.state !== 'running' || s.revealedCount >= s.questionCount;
    buttons['close-question'].disabled = s.state !== 'running';
    buttons.finish.disabled = s.state === 'finished' || s.state === 'scheduled';
  };
  const show = (q) => {
    if (document.getElementById('question')?.dataset.questionId === q.id) return;
    const full = (view.hostQuestions || []).find((x) => x.id === q.id);
    const clock = h('p', { class: 'countdown', id: 'countdown' });
    stage.replaceChildren(h('p', { class: 'muted' }, `Question ${q.index + 1} of ${session.questionCount}`),
      h('h2', { id: 'question', 'data-question-id': q.id }, q.text),
      h('ol', { class: 'muted' }, q.choices.map((c, i) => h('li', {}, c, full?.correctChoices?.includes(i) ? ' ✓ (correct)' : ''))),
      clock);
    if (q.closed) clock.textContent = 'closed'; else countdown(clock, questionEnd(q), signal);
    dist.replaceChildren(h('li', { class: 'muted' }, 'The distribution shows when the question closes.'));
  };
  update(session);
  renderBoard(board, view.standings || []);
  const last = (view.questions || []).at(-1);
  if (last) { show(last.question); if (last.result) closedResult(last.question, last.result); }
  function closedResult(q, result) {
    const clock = document.getElementById('countdown');
    if (clock) { clock.stop?.(); clock.textContent = 'closed'; }
    bars(dist, q.choices.map((choice, i) => ({ key: i, label: choice, value: (result.choiceCounts || [])[i] || 0 })));
    dist.dataset.answered = result.answered;
    stage.querySelector('.summary')?.remove();
    stage.append(h('p', { class: 'summary' }, `${result.answered} answered, ${result.correct} correct`));
  }
  room(sessionId, (m) => {
    switch (m.type) {
      case 'session': update(m.session); break;
      case 'participant_count': count = m.count; sessionLine(line, session, count); break;
      case 'question_revealed': show(m.question); break;
      case 'question_closed': show(m.question); if (m.result) closedResult(m.question, m.result); break;
      case 'leaderboard': renderBoard(board, m.entries); break;
      case 'finished': update(m.session); renderBoard(board, m.standings); break;
      case 'error': say(new ApiError(m.problem.status, m.problem).message); break;
      default: break;
    }
  }, signal, badge.set);
}

function matchesHome() {
  document.title = 'Match · EWPM';
  const id = h('input', { id: 'match-id', required: true, autocomplete: 'off', placeholder: 'match_001', pattern: '[A-Za-z0-9_.:-]{1,64}' });
  const form = h('form', { class: 'card', id: 'match-form' },
    h('div', { class: 'row' }, field('Match', id), h('button', { type: 'submit' }, 'Open the dashboard')));
  form.addEventListener('submit', (ev) => { ev.preventDefault(); location.hash = `#/matches/${enc(id.value.trim())}`; });
  main.append(h('h1', {}, 'Match dashboard'), form);
}

function matchView(signal, matchId) {
  document.title = `${matchId} · Match · EWPM`;
  const total = h('p', { class: 'stat', id: 'total-events' }, '–');
  const lag = h('p', { class: 'muted', id: 'watermark' });
  const byType = h('ul', { class: 'bars', id: 'by-type', 'aria-label': 'Events by type' });
  const chart = h('div', { id: 'per-minute' });
  const badge = streamBadge();
  main.append(h('h1', {}, `Match ${matchId} `, badge),
    h('div', { class: 'card' }, h('h2', {}, 'Events'), total, lag),
    h('div', { class: 'card' }, h('h2', {}, 'By type'), byType),
    h('div', { class: 'card' }, h('h2', {}, 'Per minute (last 30)'), chart));
  sse(`/api/matches/${enc(matchId)}/stream`, (name, data) => {
    if (name !== 'metrics') { if (name === 'error') say(new ApiError(data.status || 503, data).message); return; }
    const m = data;
    total.textContent = num(m.totalEvents);
    total.dataset.total = m.totalEvents;
    lag.textContent = m.watermark?.maxEventTime
      ? `Latest event ${new Date(m.watermark.maxEventTime).toLocaleTimeString()} · ingest lag ${num(m.watermark.ingestLagMs)} ms · ${num(m.lateEvents)} late`
      : 'No events yet.';
    bars(byType, Object.entries(m.eventsByType || {}).sort((a, b) => b[1] - a[1]).map(([k, v]) => ({ key: k, label: k, value: v })));
    if (!byType.children.length) byType.append(h('li', { class: 'muted' }, 'No events yet.'));
    drawMinutes(chart, (m.minutes || []).slice(-30));
  }, signal, badge.set);
}

const SVG = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  el.append(...children);
  return el;
}

/** The last 30 minutes up to the newest bucket, a bar each (minutes without events are 0). */
function drawMinutes(box, minutes) {
  const SLOTS = 30;
  const w = 600; const hgt = 160; const bw = w / SLOTS;
  const counts = new Map(minutes.map((m) => [Date.parse(m.start), m]));
  const last = minutes.length ? Math.max(...counts.keys()) : Math.floor(Date.now() / 60000) * 60000;
  const slots = Array.from({ length: SLOTS }, (_, i) => {
    const start = last - (SLOTS - 1 - i) * 60000;
    const m = counts.get(start);
    return { start, count: m ? m.count : 0, final: m ? m.final : true };
  });
  const max = Math.max(1, ...slots.map((m) => m.count));
  const time = (t) => new Date(t).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${w} ${hgt + 20}`, role: 'img', 'aria-label': `Events per minute for the last ${SLOTS} minutes; peak ${max}` },
    ...slots.map((m, i) => {
      const bh = (hgt * m.count) / max;
      const rect = svg('rect', { x: i * bw + 1, y: hgt - bh, width: bw - 2, height: bh, class: m.final ? 'final' : 'open', 'data-count': m.count });
      rect.append(svg('title', {}, `${time(m.start)}: ${m.count}${m.final ? '' : ' (still counting)'}`));
      return rect;
    }),
    svg('line', { x1: 0, x2: w, y1: hgt + 0.5, y2: hgt + 0.5, stroke: '#8a949e' }),
    svg('text', { x: 0, y: hgt + 14 }, time(slots[0].start)),
    svg('text', { x: w, y: hgt + 14, 'text-anchor': 'end' }, `${time(last)} · peak ${max}/min`));
  box.replaceChildren(chart);
  box.dataset.minutes = minutes.length;
}

async function awardsView(signal) {
  document.title = 'Awards · EWPM';
  const list = h('ul', { class: 'grid', id: 'awards', 'aria-live': 'polite' });
  const badge = streamBadge();
  main.append(h('h1', {}, 'Your awards ', badge), list);
  const seen = new Set();
  const card = (a) => h('li', { class: 'card', 'data-award-id': a.id },
    h('h2', {}, a.reward || a.incentiveSlug), h('p', { class: 'muted' }, `${a.incentiveSlug} · ${a.awardDay || ''}${a.programId ? ` · ${a.programId}` : ''}`));
  const add = (a, first) => {
    if (seen.has(a.id)) return;
    seen.add(a.id);
    list.querySelector('.empty')?.remove();
    if (first) list.prepend(card(a)); else list.append(card(a));
  };
  sse('/api/me/awards/stream', (name, a) => { if (name === 'award') add(a, true); }, signal, badge.set);
  const page = await api('GET', `/api/users/${enc(me.sub)}/awards?pageSize=50`, undefined, signal);
  (page.awards || []).forEach((a) => add(a, false));
  if (!list.children.length) list.append(h('li', { class: 'muted empty' }, 'No awards yet. They appear here the moment you earn one.'));
}

// ---------------------------------------------------------------------------------------
// Routing

const routes = [
  [/^\/challenges$/, challengesView, 'challenges'],
  [/^\/challenges\/([^/]+)$/, challengeView, 'challenges'],
  [/^\/quiz$/, quizHome, 'quiz'],
  [/^\/quiz\/([^/]+)$/, quizPlay, 'quiz'],
  [/^\/quiz\/([^/]+)\/host$/, quizHost, 'quiz'],
  [/^\/matches$/, matchesHome, 'matches'],
  [/^\/matches\/([^/]+)$/, matchView, 'matches'],
  [/^\/awards$/, awardsView, 'awards'],
];

function render() {
  current?.abort();
  current = new AbortController();
  const { signal } = current;
  main.replaceChildren();
  const who = document.getElementById('who');
  who.replaceChildren();
  if (!token) { signInView(); return; }
  who.append(h('span', { id: 'signed-in-as' }, `${me.sub} · ${me.role.replace('_', ' ')}${me.employerId ? ` · ${me.employerId}` : ''}`),
    h('button', { type: 'button', class: 'secondary', onclick: () => { say(''); signOut(); } }, 'Sign out'));
  const path = location.hash.replace(/^#/, '') || '/challenges';
  for (const [pattern, view, nav] of routes) {
    const m = path.match(pattern);
    if (!m) continue;
    document.querySelectorAll('[data-nav]').forEach((a) => {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    });
    const params = m.slice(1).map(decode);
    if (params.includes(null)) break;
    Promise.resolve(view(signal, ...params)).catch((e) => {
      if (signal.aborted || aborted(e)) return;
      main.append(h('p', { class: 'bad', id: 'view-error' }, e.message));
    });
    return;
  }
  main.append(h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/challenges' }, 'Go to your challenges')));
}

/** `#token=<jwt>[&to=<path>]`: sign in from the link `ewpm dev` prints, then forget the token in the URL. */
function takeTokenFromFragment() {
  const m = location.hash.match(/^#token=([^&]*)(?:&to=(.*))?$/);
  if (!m) return;
  const to = (m[2] && decode(m[2])) || '/challenges';
  history.replaceState(null, '', `${location.pathname}${location.search}#${to.startsWith('/') ? to : '/challenges'}`);
  try { signIn(decode(m[1]) || ''); } catch (e) { say(`The link's token cannot be used: ${e.message}.`); }
}

takeTokenFromFragment();
if (token && !me) {
  try { me = claimsOf(token); } catch { signOut(); }
}
window.addEventListener('hashchange', () => {
  say('');
  takeTokenFromFragment(); // a sign-in link pasted into an open tab
  render();
  main.focus({ preventScroll: true });
});
// The skip link moves focus; it must not change the route.
document.querySelector('.skip').addEventListener('click', (ev) => { ev.preventDefault(); main.focus(); });
render();
