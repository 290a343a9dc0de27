// The dashboard's shell: sign-in, the live connection, and the two views chosen by the fragment
// (`#stream=<uuid>&window=1h` for a stream page, anything else for the overview).

import { el } from './format.js';
import { Live } from './live.js';
import { Overview } from './overview.js';
import * as session from './session.js';
import { StreamPage } from './stream.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const STATUS_TEXT = {
  connecting: 'Connecting…',
  live: 'Live',
  reconnecting: 'Reconnecting…',
  degraded: 'Live, with errors',
};

const view = document.getElementById('view');
const sessionBar = document.getElementById('session');
const conn = document.getElementById('conn');
const who = document.getElementById('who');
const crumbs = document.getElementById('crumbs');

let live = null;
let current = null;
let expiry = 0;

function start() {
  session.adoptFragmentToken();
  const token = session.storedToken();
  if (!token) {
    signIn();
    return;
  }
  const refusal = session.refusal(token);
  if (refusal) {
    session.forget();
    signIn(refusal);
    return;
  }
  connect(token);
}

function connect(token) {
  const claims = session.claims(token) || {};
  live = new Live(token);
  live.addEventListener('status', showStatus);
  live.addEventListener('signout', (e) => {
    const { message, code } = e.detail;
    const role = code === 'forbidden' && claims.role ? session.roleRefusal(claims.role) : null;
    signOut(role || explain(message));
  });
  live.start();
  sessionBar.hidden = false;
  who.textContent = `${claims.sub || '?'} · ${claims.role || '?'}`;
  who.title = claims.exp ? `token valid until ${new Date(claims.exp * 1000).toLocaleString()}` : '';
  clearTimeout(expiry);
  if (claims.exp) {
    // The server would refuse the next event; leave before that, saying why.
    const left = claims.exp * 1000 - Date.now();
    expiry = setTimeout(() => signOut('Your token has expired: sign in with a fresh one.'), Math.max(0, left));
  }
  showStatus();
  route();
}

function explain(message) {
  if (/expired/i.test(message || '')) return 'Your token has expired: sign in with a fresh one.';
  return `The server refused this token: ${message}`;
}

function signOut(message) {
  clearTimeout(expiry);
  if (live) live.stop();
  live = null;
  session.forget();
  signIn(message);
}

function showStatus() {
  if (!live) return;
  conn.textContent = STATUS_TEXT[live.status] || live.status;
  conn.dataset.status = live.status;
  conn.title = live.statusDetail || '';
}

function route() {
  if (!live) return;
  if (current) current.unmount();
  const params = session.fragment();
  const stream = params.get('stream');
  if (stream && UUID.test(stream)) {
    current = new StreamPage(live, stream.toLowerCase(), params.get('window'));
    crumbs.replaceChildren(
      el('a', { href: '#' }, 'Overview'),
      el('span', { 'aria-hidden': 'true' }, ' / '),
      el('span', { class: 'mono' }, stream.slice(0, 8)),
    );
    document.title = `${stream.slice(0, 8)} · stream-stats`;
  } else {
    current = new Overview(live);
    crumbs.replaceChildren(el('span', {}, 'Overview'));
    document.title = 'stream-stats · live';
  }
  current.mount(view);
}

function signIn(message = '') {
  if (current) current.unmount();
  current = null;
  sessionBar.hidden = true;
  crumbs.replaceChildren();
  const input = el('textarea', {
    id: 'token',
    rows: 4,
    spellcheck: 'false',
    autocomplete: 'off',
    placeholder: 'eyJhbGciOiJIUzI1NiIs…',
    'aria-describedby': 'token-help',
    required: true,
  });
  const error = el('p', { class: 'signin-error', id: 'signin-error', role: 'alert' }, message);
  error.hidden = !message;
  const form = el(
    'form',
    {
      class: 'signin panel',
      onsubmit: (e) => {
        e.preventDefault();
        const token = input.value.trim();
        const refusal = session.refusal(token);
        if (refusal) {
          error.textContent = refusal;
          error.hidden = false;
          return;
        }
        session.store(token);
        connect(token);
      },
    },
    el('h1', {}, 'Sign in to the live dashboard'),
    el('label', { for: 'token' }, 'Access token'),
    input,
    el(
      'p',
      { class: 'muted', id: 'token-help' },
      'A moderator, analyst or admin token. Print a ready link with ',
      el('code', {}, 'streamstats token --role moderator --dashboard'),
      ', or open the link ',
      el('code', {}, 'streamstats run'),
      ' prints. The token stays in this tab and is never put in a URL sent to the server.',
    ),
    error,
    el('button', { type: 'submit', class: 'primary' }, 'Open dashboard'),
  );
  view.replaceChildren(el('div', { class: 'signin-wrap' }, form));
  input.focus();
}

window.addEventListener('hashchange', () => {
  const fresh = session.fragment().get('token');
  if (fresh && live && live.token !== fresh.trim()) {
    // A new link was opened in this tab: sign in with its token instead.
    live.stop();
    live = null;
  }
  if (!live) start();
  else route();
});

start();
