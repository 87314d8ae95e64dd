// HTTP API client: JSON in and out, problem documents as ApiError, tokens refreshed before
// they expire (and once more on a 401), kept in localStorage so a reload stays signed in.

const STORE = "fechatter.session";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export class Api {
  constructor(onSignedOut) {
    this.onSignedOut = onSignedOut;
    this.session = JSON.parse(localStorage.getItem(STORE) || "null");
    this.refreshTimer = null;
    this.refreshing = null;
    if (this.session) this.scheduleRefresh();
  }

  get token() { return this.session?.token ?? null; }
  get user() { return this.session?.user ?? null; }

  save(data) {
    const expiresAt = Date.now() + data.expires_in * 1000;
    this.session = { token: data.token, refresh: data.refresh_token, user: data.user, expiresAt };
    localStorage.setItem(STORE, JSON.stringify(this.session));
    this.scheduleRefresh();
  }

  scheduleRefresh() {
    clearTimeout(this.refreshTimer);
    const due = Math.max(5_000, (this.session.expiresAt ?? 0) - Date.now() - 60_000);
    this.refreshTimer = setTimeout(() => this.refresh().catch(() => {}), due);
  }

  async refresh() {
    if (!this.session) throw new ApiError(401, { detail: "signed out" });
    this.refreshing ??= (async () => {
      try {
        const data = await this.raw("POST", "/api/auth/refresh", { refresh_token: this.session.refresh }, false);
        this.save(data);
      } catch (err) {
        if (err.status === 401) this.forget();
        throw err;
      } finally {
        this.refreshing = null;
      }
    })();
    return this.refreshing;
  }

  forget() {
    clearTimeout(this.refreshTimer);
    this.session = null;
    localStorage.removeItem(STORE);
    this.onSignedOut();
  }

  async raw(method, path, body, auth = true) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (auth && this.token) headers.Authorization = `Bearer ${this.token}`;
    let response;
    try {
      response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiError(0, { detail: "network error", code: "network" });
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  async call(method, path, body) {
    try {
      return await this.raw(method, path, body);
    } catch (err) {
      if (err.status !== 401 || !this.session) throw err;
      await this.refresh();
      return this.raw(method, path, body);
    }
  }

  get(path) { return this.call("GET", path); }
  post(path, body = {}) { return this.call("POST", path, body); }
  put(path, body) { return this.call("PUT", path, body); }
  del(path) { return this.call("DELETE", path); }

  async signIn(email, password) {
    this.save(await this.raw("POST", "/api/auth/signin", { email, password }, false));
  }

  async signUp(fields) {
    this.save(await this.raw("POST", "/api/auth/signup", fields, false));
  }

  async signOut() {
    if (this.session) {
      await this.raw("POST", "/api/auth/logout", { refresh_token: this.session.refresh }).catch(() => {});
    }
    this.forget();
  }
}
