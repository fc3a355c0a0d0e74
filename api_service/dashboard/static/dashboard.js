// payrun dashboard: log in with an employer's API key, list payrolls, run them, watch them progress.
// Plain browser JavaScript, no build step. Data from the API only ever reaches the page as text
// (textContent / Text nodes), never as HTML.
"use strict";

(() => {
  const { ApiError, el } = window.payrunPage;
  const STORAGE_KEY = "payrun.apiKey";
  const PAGE_SIZE = 50;
  const ITEM_PAGE_SIZE = 100; // items of an opened payroll, a page at a time (GET /payrolls/{id}/items)
  const LIST_MS = 5000; // the list refreshes itself: GET /payrolls with If-None-Match, a 304 while unchanged
  const POLL_MS = 1500; // when the API sends no Retry-After
  const MIN_POLL_MS = 1000;
  const MAX_POLL_MS = 30000;
  const ERROR_POLL_MS = 5000;
  const LABELS = {
    DRAFT: "Draft", PROCESSING: "Processing", COMPLETED: "Completed", PARTIALLY_FAILED: "Partially failed",
    FAILED: "Failed", NEEDS_REVIEW: "Needs review",
    PENDING: "Pending", SUBMITTED: "Submitted", PAID: "Paid", CANCELLED: "Cancelled",
  };
  // Progress is what is settled: paid, or final and not paid. NEEDS_REVIEW is not settled: it is counted apart.
  const NOT_PAID = ["FAILED", "CANCELLED"];
  const amount = new Intl.NumberFormat("en-KE", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const whole = new Intl.NumberFormat("en-KE");

  const $ = (id) => document.getElementById(id);
  const rows = new Map(); // payroll id -> row state
  let nextCursor = null;
  let listEtag = null;
  let listTimer = null;
  let generation = 0; // bumped on log-out and reload, so that late answers of stale requests are dropped


  // ---- small helpers --------------------------------------------------------------------------------


  const label = (status) => LABELS[status] || String(status);
  const money = (currency, value) => `${currency} ${amount.format(Number(value))}`;

  function when(iso) {
    const at = new Date(iso);
    return Number.isNaN(at.getTime()) ? String(iso) : at.toLocaleString();
  }

  function newIdempotencyKey() {
    if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
    const b = crypto.getRandomValues(new Uint8Array(16)); // randomUUID needs a secure context
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  // Retry-After: delay-seconds or an HTTP date; null when absent or unreadable.
  function retryAfterMs(response) {
    const value = response && response.headers.get("Retry-After");
    if (!value) return null;
    let ms = /^\d+$/.test(value.trim()) ? Number(value) * 1000 : Date.parse(value) - Date.now();
    if (Number.isNaN(ms)) return null;
    return Math.min(MAX_POLL_MS, Math.max(MIN_POLL_MS, ms));
  }

  // ---- the API --------------------------------------------------------------------------------------

  async function api(path, { method = "GET", headers = {}, etag = null } = {}) {
    const all = { Accept: "application/json", Authorization: `Bearer ${sessionStorage.getItem(STORAGE_KEY)}` };
    if (etag) all["If-None-Match"] = etag;
    let response;
    try {
      response = await fetch(path, {
        method, headers: { ...all, ...headers }, cache: "no-store", credentials: "omit",
      });
    } catch (err) {
      throw new ApiError(0, { title: "Network error", detail: "the API could not be reached" });
    }
    if (response.status === 304) return { response, body: null };
    const text = await response.text();
    let body = null;
    try {
      body = text ? JSON.parse(text) : null;
    } catch (err) {
      body = null;
    }
    if (!response.ok) throw new ApiError(response.status, body, response);
    return { response, body };
  }

  // ---- errors ---------------------------------------------------------------------------------------

  function describe(err) {
    if (!(err instanceof ApiError)) return String((err && err.message) || err);
    const p = err.problem;
    let text = p.title || `HTTP ${err.status}`;
    if (err.status) text += ` (${err.status})`;
    if (p.detail && p.detail !== p.title) text += `: ${p.detail}`;
    return text;
  }

  function showError(err, context) {
    const box = $("error");
    box.replaceChildren();
    if (context) box.append(el("strong", { text: `${context}: ` }));
    box.append(describe(err));
    const details = err instanceof ApiError && Array.isArray(err.problem.errors) ? err.problem.errors : [];
    if (details.length) {
      box.append(el("ul", {}, ...details.map((e) => el("li", { text: `${e.field}: ${e.message}` }))));
    }
    box.hidden = false;
  }

  function clearError() {
    $("error").hidden = true;
    $("error").replaceChildren();
  }

  // ---- screens --------------------------------------------------------------------------------------

  function stopAll() {
    generation += 1;
    clearTimeout(listTimer);
    listEtag = null;
    for (const row of rows.values()) clearTimeout(row.timer);
    rows.clear();
    $("payroll-rows").replaceChildren();
  }

  function showLogin() {
    stopAll();
    sessionStorage.removeItem(STORAGE_KEY);
    $("payrolls").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    $("api-key").value = "";
    $("api-key").focus();
  }

  function unauthorized(err) {
    showLogin();
    showError(err, "The API key was not accepted");
  }

  function handle(err, context) {
    if (err instanceof ApiError && err.status === 401) unauthorized(err);
    else showError(err, context);
  }

  async function logIn(key) {
    sessionStorage.setItem(STORAGE_KEY, key);
    $("login-button").disabled = true;
    try {
      await loadPayrolls(true);
      clearError();
      $("login").hidden = true;
      $("payrolls").hidden = false;
      $("logout").hidden = false;
    } catch (err) {
      $("login").hidden = false;
      handle(err, "Could not load payrolls");
    } finally {
      $("login-button").disabled = false;
    }
  }

  // ---- the payroll list -----------------------------------------------------------------------------

  async function loadPayrolls(reset) {
    const open = reset ? new Set([...rows.values()].filter((r) => r.open).map((r) => r.id)) : new Set();
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (!reset && nextCursor) query.set("cursor", nextCursor);
    const gen = reset ? generation + 1 : generation;
    const { response, body } = await api(`/payrolls?${query}`);
    if (reset) stopAll();
    if (gen !== generation) return; // logged out, or reloaded, meanwhile
    for (const payroll of body.items) {
      if (!rows.has(payroll.id)) addRow(payroll, open.has(payroll.id));
    }
    if (reset) {
      listEtag = response.headers.get("ETag");
      scheduleList();
    }
    nextCursor = body.next_cursor;
    $("more").hidden = !nextCursor;
    $("empty").hidden = rows.size > 0;
    $("payroll-table").hidden = rows.size === 0;
  }

  // ---- the list refreshes itself: the first page, If-None-Match, so an unchanged list costs a 304 ------

  function scheduleList() {
    clearTimeout(listTimer);
    listTimer = setTimeout(refreshList, LIST_MS);
  }

  async function refreshList() {
    const gen = generation;
    try {
      const { response, body } = await api(`/payrolls?limit=${PAGE_SIZE}`, { etag: listEtag });
      if (gen !== generation) return;
      listEtag = response.headers.get("ETag") || listEtag;
      if (response.status !== 304) {
        const fresh = body.items.filter((p) => !rows.has(p.id)).reverse();
        for (const payroll of fresh) addRow(payroll, false, true); // newer than any shown: on top
        for (const payroll of body.items) {
          const row = rows.get(payroll.id);
          if (row && (row.payroll.status !== payroll.status || row.payroll.updated_at !== payroll.updated_at)) {
            changed(row, payroll);
          }
        }
        $("empty").hidden = rows.size > 0;
        $("payroll-table").hidden = rows.size === 0;
      }
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof ApiError && err.status === 401) return unauthorized(err);
    }
    if (gen === generation) scheduleList();
  }

  // A payroll changed elsewhere (run through the API, finished by the dispatchers): show it, and watch it.
  function changed(row, payroll) {
    const was = row.payroll.status;
    row.payroll = { ...row.payroll, ...payroll };
    update(row);
    if (payroll.status === "PROCESSING" && !row.timer) schedulePoll(row, 0);
    else if (payroll.status !== "DRAFT" && was !== payroll.status && !row.timer) schedulePoll(row, 0);
  }

  function addRow(payroll, open, onTop) {
    const els = {
      toggle: el("button", { type: "button", class: "link toggle", text: payroll.reference, "aria-expanded": "false" }),
      status: el("span", { class: "status" }),
      wait: el("div", { class: "funds-wait", hidden: true }),
      paid: el("td", { class: "num paid" }),
      progress: el("progress", { max: Math.max(1, payroll.item_count), value: 0 }),
      progressText: el("span", { class: "progress-text" }),
      run: el("button", { type: "button", class: "run", text: "Run" }),
      retry: el("button", { type: "button", class: "secondary retry", text: "Retry failed" }),
      cancel: el("button", { type: "button", class: "secondary cancel", text: "Cancel" }),
      csv: el("button", { type: "button", class: "link csv", text: "CSV" }),
      detail: el("td", { colSpan: 8, class: "detail-cell" }),
    };
    els.progress.setAttribute("aria-label", `Progress of ${payroll.reference}`);
    els.tr = el("tr", { class: "payroll", dataset: { payrollId: payroll.id } },
      el("td", { class: "reference" }, els.toggle),
      el("td", {}, els.status, els.wait),
      el("td", { class: "num", text: whole.format(payroll.item_count) }),
      el("td", { class: "num", text: money(payroll.currency, payroll.total_amount) }),
      els.paid,
      el("td", { class: "progress" }, els.progress, els.progressText),
      el("td", { class: "created", text: when(payroll.created_at) }),
      el("td", { class: "actions" }, els.run, els.retry, els.cancel, els.csv));
    els.detailRow = el("tr", { class: "detail", hidden: true, dataset: { payrollId: payroll.id } }, els.detail);
    if (onTop) $("payroll-rows").prepend(els.tr, els.detailRow);
    else $("payroll-rows").append(els.tr, els.detailRow);

    const row = {
      id: payroll.id, payroll, els, open: false, etag: null, timer: null, runKey: null, detailSeq: 0,
      // Counted from the status counts: a COMPLETED payroll has every item paid and a draft none; any
      // other is asked (GET /payrolls/{id}/status) once, or polled while PROCESSING.
      paid: payroll.status === "COMPLETED" ? payroll.item_count : 0,
      notPaid: payroll.status === "FAILED" ? payroll.item_count : 0, review: 0,
      itemsCursor: null, itemsEtag: null, retryKey: null,
    };
    rows.set(row.id, row);
    els.toggle.addEventListener("click", () => toggleDetail(row));
    els.run.addEventListener("click", () => run(row));
    els.retry.addEventListener("click", () => retry(row));
    els.cancel.addEventListener("click", () => cancel(row));
    els.csv.addEventListener("click", () => downloadCsv(row));
    update(row);
    if (!["DRAFT", "COMPLETED", "FAILED"].includes(payroll.status)) schedulePoll(row, 0);
    if (open) toggleDetail(row);
  }

  function update(row) {
    const p = row.payroll;
    row.els.tr.dataset.status = p.status;
    row.els.status.textContent = label(p.status);
    row.els.status.dataset.status = p.status;
    const wait = p.status === "PROCESSING" ? p.status_detail : null; // waiting for funds: how much, and when
    row.els.wait.hidden = !wait;
    row.els.wait.textContent = wait
      ? `Waiting for funds: KES ${amount.format(Number(wait.short_by))} short (needs KES ` +
        `${amount.format(Number(wait.required))}, wallet has KES ${amount.format(Number(wait.available_balance))}); ` +
        `next check ${when(wait.next_check_at)}. Top up the wallet, or cancel.`
      : "";
    row.els.wait.title = wait ? wait.message : "";
    row.els.paid.textContent = money(p.currency, p.paid_amount);
    row.els.progress.max = Math.max(1, p.item_count);
    const settled = row.paid + row.notPaid;
    row.els.progress.value = settled;
    const pct = p.item_count ? Math.round((100 * settled) / p.item_count) : 0;
    let text = `${row.paid} paid · ${row.notPaid} not paid of ${p.item_count} (${pct}%)`;
    if (row.review) text += ` · ${row.review} need review`;
    row.els.progressText.textContent = text;
    row.els.run.hidden = p.status !== "DRAFT";
    row.els.retry.hidden = !["PARTIALLY_FAILED", "FAILED"].includes(p.status) || row.notPaid === 0 || !!row.retriedBy;
    row.els.cancel.hidden = p.status !== "PROCESSING";
    row.els.csv.hidden = p.status === "DRAFT";
  }

  // ---- polling: GET /payrolls/{id}/status with If-None-Match, every Retry-After while PROCESSING -------

  function schedulePoll(row, delayMs) {
    clearTimeout(row.timer);
    row.timer = setTimeout(() => poll(row), delayMs);
  }

  async function poll(row) {
    const gen = generation;
    row.timer = null;
    let delay = POLL_MS;
    try {
      const { response, body } = await api(`/payrolls/${encodeURIComponent(row.id)}/status`, { etag: row.etag });
      if (gen !== generation) return;
      row.etag = response.headers.get("ETag") || row.etag;
      if (response.status !== 304) {
        row.payroll = { ...row.payroll, status: body.status, item_count: body.item_count,
          paid_amount: body.paid_amount, total_amount: body.total_amount, updated_at: body.updated_at,
          status_detail: body.status_detail || null };
        counted(row, body.counts);
        update(row);
        if (row.open) loadDetail(row);
      }
      if (row.payroll.status !== "PROCESSING") return; // final (or, oddly, a draft): nothing more to watch
      delay = retryAfterMs(response) ?? POLL_MS;
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof ApiError && err.status === 401) return unauthorized(err);
      showError(err, `Checking ${row.payroll.reference}`);
      if (err instanceof ApiError && err.status === 404) return; // gone: stop asking
      delay = retryAfterMs(err instanceof ApiError ? err.response : null) ?? ERROR_POLL_MS;
    }
    if (gen === generation && rows.get(row.id) === row) schedulePoll(row, delay);
  }

  function counted(row, counts) {
    row.paid = counts.PAID || 0;
    row.notPaid = NOT_PAID.reduce((sum, s) => sum + (counts[s] || 0), 0);
    row.review = counts.NEEDS_REVIEW || 0;
  }

  // ---- Run: POST /payrolls/{id}/process with an Idempotency-Key, after a confirmation --------------

  async function run(row) {
    const p = row.payroll;
    const workers = p.item_count === 1 ? "1 worker" : `${whole.format(p.item_count)} workers`;
    if (!window.confirm(`Pay ${workers} ${money(p.currency, p.total_amount)} in all (${p.reference})? ` +
      "Money moves as soon as you confirm.")) return;
    const gen = generation;
    row.els.run.disabled = true;
    row.runKey = row.runKey || newIdempotencyKey(); // kept for a retry after a network error
    try {
      const { body } = await api(`/payrolls/${encodeURIComponent(row.id)}/process`, {
        method: "POST", headers: { "Idempotency-Key": row.runKey },
      });
      row.runKey = null;
      if (gen !== generation) return;
      clearError();
      row.payroll = { ...row.payroll, status: (body && body.status) || "PROCESSING" };
      row.etag = null;
      update(row);
      schedulePoll(row, 0);
    } catch (err) {
      if (err instanceof ApiError && err.status) row.runKey = null; // answered: a new click is a new request
      if (gen !== generation) return;
      handle(err, `Could not run ${row.payroll.reference}`);
      if (err instanceof ApiError && err.status === 409) schedulePoll(row, 0); // already finished: show it
    } finally {
      row.els.run.disabled = false;
    }
  }

  // ---- after Run: retry the FAILED items, cancel, export -------------------------------------------

  async function retry(row) {
    if (!window.confirm(`Make a new draft payroll of the ${row.notPaid} unpaid item(s) of ${row.payroll.reference}? ` +
      "You run it like any payroll.")) return;
    row.retryKey = row.retryKey || newIdempotencyKey();
    row.els.retry.disabled = true;
    try {
      const { body } = await api(`/payrolls/${encodeURIComponent(row.id)}/retry`, {
        method: "POST", headers: { "Idempotency-Key": row.retryKey },
      });
      row.retriedBy = body.id;
      update(row);
      clearError();
      if (!rows.has(body.id)) addRow(body, false, true);
    } catch (err) {
      if (err instanceof ApiError && err.status) row.retryKey = null;
      if (err instanceof ApiError && err.status === 409 && err.problem.retry_id) {
        row.retriedBy = err.problem.retry_id;
        update(row);
      }
      handle(err, `Could not retry ${row.payroll.reference}`);
    } finally {
      row.els.retry.disabled = false;
    }
  }

  // POST /payrolls/{id}/cancel, after a confirmation: the workers whose payment is not yet approved are not paid.
  async function cancel(row) {
    const p = row.payroll;
    const open = Math.max(0, p.item_count - row.paid - row.notPaid - row.review);
    const waiting = p.status_detail ? " It is waiting for funds: none of it is approved yet." : "";
    if (!window.confirm(`Cancel ${p.reference}? Of its ${whole.format(p.item_count)} workers, ${whole.format(open)} ` +
      `are not paid yet: those whose payment is not yet approved will not be paid; the others still finish.${waiting}`)) return;
    row.els.cancel.disabled = true;
    try {
      const { body } = await api(`/payrolls/${encodeURIComponent(row.id)}/cancel`, { method: "POST" });
      clearError();
      row.payroll = { ...row.payroll, status: body.status, status_detail: null };
      row.etag = null;
      update(row);
      schedulePoll(row, 0);
    } catch (err) {
      handle(err, `Could not cancel ${row.payroll.reference}`);
      if (err instanceof ApiError && err.status === 409) schedulePoll(row, 0); // it ended meanwhile: show it
    } finally {
      row.els.cancel.disabled = false;
    }
  }

  // GET /payrolls/{id}/items.csv needs the key in a header, so no plain link: fetched, then saved.
  async function downloadCsv(row) {
    try {
      const response = await fetch(`/payrolls/${encodeURIComponent(row.id)}/items.csv`, {
        headers: { Authorization: `Bearer ${sessionStorage.getItem(STORAGE_KEY)}` }, cache: "no-store", credentials: "omit",
      });
      if (!response.ok) throw new ApiError(response.status, await response.json().catch(() => null), response);
      const url = URL.createObjectURL(await response.blob());
      const link = el("a", { href: url, download: `payroll-${row.payroll.reference}.csv` });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (err) {
      handle(err, `Could not export ${row.payroll.reference}`);
    }
  }

  // ---- detail: GET /payrolls/{id}/items, a page at a time, the first page refreshed by its ETag ----------

  function toggleDetail(row) {
    row.open = !row.open;
    row.els.detailRow.hidden = !row.open;
    row.els.toggle.setAttribute("aria-expanded", String(row.open));
    if (row.open) loadDetail(row);
  }

  // The first page again (a 304 when it has not changed), or the next page (`more`) appended.
  async function loadDetail(row, more) {
    const gen = generation;
    const seq = ++row.detailSeq;
    if (!row.els.detail.firstChild) row.els.detail.append(el("p", { class: "muted", text: "Loading items…" }));
    const query = new URLSearchParams({ limit: String(ITEM_PAGE_SIZE) });
    if (more && row.itemsCursor) query.set("cursor", row.itemsCursor);
    try {
      const { response, body } = await api(`/payrolls/${encodeURIComponent(row.id)}/items?${query}`,
        { etag: more ? null : row.itemsEtag });
      if (gen !== generation || seq !== row.detailSeq) return; // a newer load is on its way
      if (response.status === 304) return;
      if (!more) {
        row.itemsEtag = response.headers.get("ETag");
        row.els.itemRows = el("tbody", {});
        row.els.moreItems = el("button", { type: "button", class: "secondary more-items", text: "More items" });
        row.els.moreItems.addEventListener("click", () => loadDetail(row, true));
        row.els.detail.replaceChildren(itemsTable(row.els.itemRows), row.els.moreItems);
      }
      row.els.itemRows.append(...body.items.map(itemRow));
      row.itemsCursor = body.next_cursor;
      row.els.moreItems.hidden = !body.next_cursor;
    } catch (err) {
      if (gen !== generation || seq !== row.detailSeq) return;
      handle(err, `Could not load the items of ${row.payroll.reference}`);
    }
  }

  function itemsTable(body) {
    const head = ["Name", "Account", "Amount", "Provider", "State", "Failure reason", "Provider reference"];
    return el("div", { class: "scroll" }, el("table", { class: "items" },
      el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))), body));
  }

  // A NEEDS_REVIEW item shows what IntaSend's support asks for: the batch's tracking id, the request reference.
  function itemRow(i) {
    const refs = i.status === "NEEDS_REVIEW"
      ? el("div", { class: "refs", text: `tracking id ${i.tracking_id || "—"} · request reference ${i.request_reference_id || "—"}` })
      : null;
    const reference = el("td", { class: "provider-ref", text: i.provider_reference || "" });
    if (refs) reference.append(refs);
    return el("tr", { class: "item", dataset: { itemId: i.id, status: i.status } },
      el("td", { text: i.name }),
      el("td", { text: i.account }),
      el("td", { class: "num", text: amount.format(Number(i.amount)) }),
      el("td", { text: i.provider }),
      el("td", {}, el("span", { class: "status", dataset: { status: i.status }, text: label(i.status) })),
      el("td", { class: "reason", text: i.failure_reason || "" }),
      reference);
  }

  // ---- wiring ---------------------------------------------------------------------------------------

  function start() {
    $("login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("api-key").value.trim();
      if (!/^[\x21-\x7e]+$/.test(key)) {
        showError(new Error("an API key is printable ASCII without spaces"), "Log in");
        return;
      }
      logIn(key);
    });
    $("logout").addEventListener("click", () => { clearError(); showLogin(); });
    $("refresh").addEventListener("click", () => loadPayrolls(true).then(clearError, (e) => handle(e, "Refresh")));
    $("more").addEventListener("click", () => loadPayrolls(false).catch((e) => handle(e, "Load more")));
    const key = sessionStorage.getItem(STORAGE_KEY);
    if (key) {
      $("login").hidden = true;
      logIn(key);
    } else {
      showLogin();
    }
  }

  start();
})();
