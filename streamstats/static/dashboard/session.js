// The sign-in token: taken from the URL fragment (`#token=…`, which browsers never send to the
// server) or pasted, kept in this tab's sessionStorage, and removed from the address bar at once.

const KEY = 'streamstats.token';
export const MONITOR_ROLES = ['moderator', 'analyst', 'admin'];

/** The fragment's `key=value&…` pairs. */
export function fragment() {
  return new URLSearchParams(location.hash.replace(/^#/, ''));
}

/** Move a `#token=` from the address bar into sessionStorage; the rest of the fragment stays. */
export function adoptFragmentToken() {
  const params = fragment();
  const token = params.get('token');
  if (!token) return;
  sessionStorage.setItem(KEY, token.trim());
  params.delete('token');
  const rest = params.toString();
  history.replaceState(null, '', location.pathname + (rest ? `#${rest}` : ''));
}

export function storedToken() {
  return sessionStorage.getItem(KEY);
}

export function store(token) {
  sessionStorage.setItem(KEY, token.trim());
}

export function forget() {
  sessionStorage.removeItem(KEY);
}

/** The token's claims, read without verifying (the server verifies); null if unreadable. */
export function claims(token) {
  try {
    const part = token.split('.')[1];
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const value = JSON.parse(json);
    return value && typeof value === 'object' ? value : null;
  } catch {
    return null;
  }
}

/** Why this token cannot open the dashboard, or null if it may try. */
export function refusal(token) {
  const c = claims(token);
  if (!c) return 'That is not a token: paste the whole JWT printed by `streamstats token`.';
  if (typeof c.exp === 'number' && c.exp * 1000 <= Date.now()) {
    return 'This token has expired: mint a fresh one.';
  }
  if (c.role && !MONITOR_ROLES.includes(c.role)) return roleRefusal(c.role);
  return null;
}

export function roleRefusal(role) {
  return (
    `A ${role} token cannot open the dashboard: it shows every stream's health, so it needs a ` +
    'moderator, analyst or admin token (streamstats token --role moderator --dashboard).'
  );
}
