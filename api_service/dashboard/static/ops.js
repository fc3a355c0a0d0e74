// payrun operator console: log in with an operator's key; every employer's payrolls, items and outbox rows
// from the read-only GET /ops/... routes; resolve, re-check, retry and cancel with a confirmation each.
// Plain browser JavaScript, no build step. API data reaches the page as text only, never as HTML.
"use strict";

(() => {
  const { ApiError, el } = window.payrunPage;
  const STORAGE_KEY = "payrun.operatorKey";
  const REFRESH_MS = 10000;
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);
  const amount = new Intl.NumberFormat("en-KE", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  const count = new Intl.NumberFormat("en-KE");
  let timer = null;
  let itemCursor = null;
  let payrollCursor = null;



  function svg(tag, attrs, ...children) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
    node.append(...children);
    return node;
  }

  const money = (value) => `KES ${amount.format(Number(value))}`;
  const when = (iso) => (iso ? new Date(iso).toLocaleString() : "");
  const status = (s) => el("span", { class: "status", dataset: { status: s }, text: s });

  async function api(path, { method = "GET", body } = {}) {
    const headers = { Accept: "application/json", Authorization: `Bearer ${sessionStorage.getItem(STORAGE_KEY)}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store", credentials: "omit",
      });
    } catch (err) {
      throw new ApiError(0, { title: "Network error", detail: "the API could not be reached" });
    }
    const text = await response.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch (err) { parsed = null; }
    if (!response.ok) throw new ApiError(response.status, parsed);
    return parsed;
  }

  function describe(err) {
    if (!(err instanceof ApiError)) return String((err && err.message) || err);
    const p = err.problem;
    let text = `${p.title || "HTTP"} (${err.status})`;
    if (p.detail && p.detail !== p.title) text += `: ${p.detail}`;
    return text;
  }

  function showError(err, context) {
    const box = $("error");
    box.replaceChildren(el("strong", { text: `${context}: ` }), describe(err));
    const details = err instanceof ApiError && Array.isArray(err.problem.errors) ? err.problem.errors : [];
    if (details.length) box.append(el("ul", {}, ...details.map((e) => el("li", { text: `${e.field}: ${e.message}` }))));
    box.hidden = false;
  }

  function notify(text) {
    $("notice").textContent = text;
    $("notice").hidden = false;
  }

  function handle(err, context) {
    if (err instanceof ApiError && err.status === 401) {
      showLogin();
      showError(err, "The operator key was not accepted");
    } else {
      showError(err, context);
    }
  }

  // ---- the actions: each one small function calling one route ------------------------------------------

  // POST /ops/items/resolve: PAID needs the provider's reference, FAILED a reason.
  function resolveItem(itemId, outcome, evidence, note) {
    const item = outcome === "PAID"
      ? { item_id: itemId, status: "PAID", provider_reference: evidence }
      : { item_id: itemId, status: "FAILED", reason: evidence };
    return api("/ops/items/resolve", { method: "POST", body: note ? { items: [item], note } : { items: [item] } });
  }

  // POST /ops/items/recheck: a dispatcher asks IntaSend again about the items' batches, now.
  function recheck(body) {
    return api("/ops/items/recheck", { method: "POST", body });
  }

  // POST /ops/payrolls/{id}/retry: a DRAFT of the FAILED items, the payroll's employer's (they run it).
  function retryPayroll(payrollId) {
    return api(`/ops/payrolls/${encodeURIComponent(payrollId)}/retry`, { method: "POST" });
  }

  // POST /ops/payrolls/{id}/cancel: the employer's cancel, on the employer's behalf; the operator is recorded.
  function cancelPayroll(payrollId, note) {
    return api(`/ops/payrolls/${encodeURIComponent(payrollId)}/cancel`, { method: "POST", body: note ? { note } : {} });
  }

  async function act(button, question, action, done) {
    if (!window.confirm(question)) return;
    button.disabled = true;
    try {
      const said = done(await action());
      $("error").hidden = true;
      await refresh(); // the lists as they are now, then the notice (a test waits for it)
      notify(said);
    } catch (err) {
      handle(err, button.textContent);
    } finally {
      button.disabled = false;
    }
  }

  // ---- overview: cards, rate limit, two small charts ------------------------------------------------------

  function card(label, value, kind) {
    return el("div", { class: "card", dataset: { kind: kind || "" } },
      el("span", { class: "card-value", text: count.format(value) }), el("span", { class: "card-label", text: label }));
  }

  function bars(minutes, series) {
    const width = 600, height = 120, step = width / minutes.length;
    const max = Math.max(1, ...minutes.map((m) => series.reduce((sum, s) => sum + m[s.key], 0)));
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 14}`, role: "img", class: "bars" });
    minutes.forEach((m, i) => {
      let y = height;
      for (const s of series) {
        const h = (m[s.key] / max) * height;
        if (h > 0) {
          y -= h;
          chart.append(svg("rect", { x: i * step + 1, y, width: Math.max(1, step - 2), height: h, class: s.cls },
            svg("title", {}, `${new Date(m.minute).toLocaleTimeString()}: ${m[s.key]} ${s.label}`)));
        }
      }
    });
    chart.append(svg("text", { x: 0, y: height + 12, class: "axis" }, "−60 min"),
      svg("text", { x: width, y: height + 12, class: "axis", "text-anchor": "end" }, `now · max ${max}`));
    chart.setAttribute("aria-label", series.map((s) => `${s.label}: ${minutes.reduce((a, m) => a + m[s.key], 0)}`).join(", "));
    return chart;
  }

  function renderOverview(o) {
    const review = el("a", { href: "#review" });
    review.append(card("items need review", o.review_items, o.review_items ? "warn" : ""));
    $("cards").replaceChildren(
      ...Object.entries(o.payrolls).map(([s, n]) => card(`payrolls ${s.toLowerCase().replace("_", " ")}`, n)),
      review,
      card("rows due", o.outbox.due), card("rows in progress", o.outbox.in_progress),
      card("rows stuck", o.outbox.stuck, o.outbox.stuck ? "bad" : ""),
      card("rows dead", o.outbox.dead, o.outbox.dead ? "bad" : ""));
    $("chart-throughput").replaceChildren(bars(o.last_hour, [
      { key: "paid", cls: "paid", label: "paid" }, { key: "failed", cls: "failed", label: "failed" },
      { key: "review", cls: "review", label: "need review" }]));
    $("chart-backlog").replaceChildren(bars(o.last_hour, [{ key: "waiting", cls: "waiting", label: "rows waiting" }]));
    const r = o.rate;
    const pause = r.paused
      ? el("strong", { class: "paused", text: `Paused by a 429 until ${when(r.paused_until)}` })
      : el("span", { text: r.pauses ? `No 429 pause now (last ended ${when(r.paused_until)})` : "No 429 pause so far" });
    $("rate").replaceChildren(`Rate limit ${r.max_rps}/s · in use ${r.recent_rps}/s · ${r.unanswered} unanswered · `,
      pause, ` · ${r.pauses} pause(s) in all`);
    const select = $("employer");
    const chosen = select.value;
    select.replaceChildren(el("option", { value: "", text: "Every employer" }),
      ...o.employers.map((e) => el("option", { value: e.id, text: e.name })));
    select.value = chosen;
  }

  // ---- items (NEEDS_REVIEW by default, or a search) ---------------------------------------------------------

  function resolveForm(item) {
    const outcome = el("select", { "aria-label": "Outcome" },
      el("option", { value: "PAID", text: "Paid" }), el("option", { value: "FAILED", text: "Failed" }));
    const evidence = el("input", { type: "text", placeholder: "provider reference", required: true, class: "evidence",
      "aria-label": "Provider reference or reason" });
    const note = el("input", { type: "text", placeholder: "note (ticket)", class: "note", "aria-label": "Note" });
    outcome.addEventListener("change", () => {
      evidence.placeholder = outcome.value === "PAID" ? "provider reference" : "reason";
    });
    const button = el("button", { type: "submit", class: "resolve", text: "Resolve" });
    const form = el("form", { class: "resolve-form" }, outcome, evidence, note, button);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = evidence.value.trim();
      if (!text) { evidence.focus(); return; }
      const what = outcome.value === "PAID" ? `PAID with provider reference ${text}` : `FAILED: ${text}`;
      act(button, `Resolve item ${item.id} (${item.name}, ${item.account}, ${money(item.amount)}) of ` +
        `${item.employer_name} as ${what}? This is recorded and cannot be undone.`,
      () => resolveItem(item.id, outcome.value, text, note.value.trim()),
      (answer) => `Item ${item.id} resolved ${answer.resolutions[0].to_status}; payroll now ${answer.payrolls[0].status}.`);
    });
    const again = el("button", { type: "button", class: "secondary recheck", text: "Re-check" });
    again.addEventListener("click", () => act(again, `Ask IntaSend again for item ${item.id} (tracking id ${item.tracking_id})?`,
      () => recheck({ item_ids: [item.id] }),
      (answer) => `Re-check of item ${item.id} asked: IntaSend is asked about ` +
        `${answer.batches.map((b) => b.tracking_id).join(", ") || "no batch"} now.`));
    return el("div", { class: "item-actions" }, form, again);
  }

  function itemRow(i) {
    const error = i.last_error ? `${i.attempts} · ${i.last_error}` : (i.attempts ? `${i.attempts}` : "");
    return el("tr", { class: "item", dataset: { itemId: i.id, status: i.status } },
      el("td", { text: i.employer_name }),
      el("td", { text: i.payroll_reference }),
      el("td", { text: i.name }),
      el("td", { class: "account", text: i.account }),
      el("td", { class: "num", text: money(i.amount) }),
      el("td", {}, status(i.status), i.failure_reason ? el("div", { class: "reason", text: i.failure_reason }) : null),
      el("td", { class: "tracking", text: i.tracking_id || "" }),
      el("td", { class: "request-ref", text: i.request_reference_id || "" }),
      el("td", { class: "last-error", text: error }),
      el("td", {}, i.status === "NEEDS_REVIEW" ? resolveForm(i) : null));
  }

  async function loadItems(reset) {
    const query = new URLSearchParams({ limit: "50" });
    const q = $("search").value.trim();
    if (q) query.set("q", q);
    if ($("item-status").value) query.set("status", $("item-status").value);
    if (!reset && itemCursor) query.set("cursor", itemCursor);
    const page = await api(`/ops/items?${query}`);
    if (reset) $("item-rows").replaceChildren();
    $("item-rows").append(...page.items.map(itemRow));
    itemCursor = page.next_cursor;
    $("items-more").hidden = !itemCursor;
    $("items-empty").hidden = $("item-rows").children.length > 0;
  }

  // ---- stuck and dead outbox rows ---------------------------------------------------------------------------

  function outboxRow(r, kind) {
    return el("tr", { class: "outbox-row", dataset: { rowId: r.id, kind } },
      el("td", { class: "num", text: String(r.id) }),
      el("td", {}, el("span", { class: "status", dataset: { status: kind === "dead" ? "FAILED" : "NEEDS_REVIEW" }, text: kind })),
      el("td", { text: r.employer_name }),
      el("td", { text: r.payroll_reference }),
      el("td", { class: "num", text: `${r.attempts} (${r.errors} errors)` }),
      el("td", { text: r.status === "dead" ? "never" : when(r.next_attempt_at) }),
      el("td", { class: "tracking", text: r.tracking_id || "" }),
      el("td", { class: "last-error", text: r.last_error || "" }));
  }

  async function loadRows() {
    const [stuck, dead] = await Promise.all([api("/ops/outbox?view=stuck&limit=100"), api("/ops/outbox?view=dead&limit=100")]);
    $("outbox-rows").replaceChildren(...stuck.items.map((r) => outboxRow(r, "stuck")), ...dead.items.map((r) => outboxRow(r, "dead")));
    $("rows-empty").hidden = stuck.items.length + dead.items.length > 0;
  }

  // ---- payrolls of every employer -----------------------------------------------------------------------------

  function payrollActions(p) {
    const buttons = [];
    if ((p.status === "PARTIALLY_FAILED" || p.status === "FAILED") && !p.retried_by) {
      const retry = el("button", { type: "button", class: "secondary retry", text: "Retry failed" });
      retry.addEventListener("click", () => act(retry,
        `Make a new DRAFT of the FAILED items of ${p.reference} (${p.employer_name})? The employer runs it.`,
        () => retryPayroll(p.id), (answer) => `Retry ${answer.reference} created as a DRAFT for ${p.employer_name}.`));
      buttons.push(retry);
    }
    if (p.status === "PROCESSING") {
      const note = el("input", { type: "text", class: "note", placeholder: "note (ticket)", maxLength: 2000,
        "aria-label": `Note for cancelling ${p.reference}` });
      const cancel = el("button", { type: "button", class: "secondary cancel", text: "Cancel" });
      cancel.addEventListener("click", () => act(cancel,
        `Cancel, for ${p.employer_name}, every item of ${p.reference} not yet approved for payment? ` +
        "Items already being approved still finish. You are recorded as the one who asked.",
        () => cancelPayroll(p.id, note.value.trim()),
        (answer) => `${p.reference}: ${answer.cancelled_now} item(s) cancelled now, ${answer.not_cancellable} ` +
          `already on their way; payroll ${answer.status}.`));
      buttons.push(note, cancel);
    }
    if (p.retried_by) buttons.push(el("span", { class: "muted", text: "retried" }));
    return buttons;
  }

  // A PROCESSING payroll whose batches wait for funds (status_detail of GET /ops/payrolls): how much is missing.
  function fundsWait(d) {
    return el("div", { class: "funds-wait", title: d.message },
      `Waiting for funds: ${money(d.short_by)} short (wallet ${d.wallet_id || "default"}); next check ${when(d.next_check_at)}`);
  }

  function payrollRow(p) {
    const rows = Object.entries(p.outbox).map(([s, n]) => `${n} ${s}`).join(", ");
    return el("tr", { class: "payroll", dataset: { payrollId: p.id, status: p.status } },
      el("td", { text: p.employer_name }),
      el("td", { text: p.reference }),
      el("td", {}, status(p.status),
        p.review_items ? el("div", { class: "reason", text: `${p.review_items} need review` }) : null,
        p.status_detail ? fundsWait(p.status_detail) : null),
      el("td", { class: "num", text: count.format(p.item_count) }),
      el("td", { class: "num", text: money(p.total_amount) }),
      el("td", { class: "num", text: money(p.paid_amount) }),
      el("td", { class: "muted", text: rows }),
      el("td", { class: "created", text: when(p.created_at) }),
      el("td", { class: "actions" }, ...payrollActions(p)));
  }

  async function loadPayrolls(reset) {
    const query = new URLSearchParams({ limit: "50" });
    if ($("employer").value) query.set("employer_id", $("employer").value);
    if ($("payroll-status").value) query.set("status", $("payroll-status").value);
    if ($("payroll-search").value.trim()) query.set("q", $("payroll-search").value.trim());
    if (!reset && payrollCursor) query.set("cursor", payrollCursor);
    const page = await api(`/ops/payrolls?${query}`);
    if (reset) $("payroll-rows").replaceChildren();
    $("payroll-rows").append(...page.items.map(payrollRow));
    payrollCursor = page.next_cursor;
    $("payrolls-more").hidden = !payrollCursor;
  }

  // ---- the action log ---------------------------------------------------------------------------------------------

  function actionEntry(a) {
    const note = a.note ? ` — ${a.note}` : "";
    let text;
    if (a.kind === "resolution") {
      text = `${a.operator_name} resolved item ${a.item_id} of ${a.payroll_reference} (${a.employer_name}) as ${a.status}` +
        (a.provider_reference ? `, provider reference ${a.provider_reference}` : `: ${a.reason}`) + note;
    } else if (a.kind === "cancel") {
      text = `${a.operator_name ? `${a.operator_name} cancelled` : "The employer cancelled"} ${a.payroll_reference} ` +
        `(${a.employer_name}): ${a.cancelled_now} item(s) cancelled, ${a.not_cancellable} already on their way; ` +
        `now ${a.status}${note}`;
    } else {
      text = `${a.payroll_reference} (${a.employer_name}) retried as ${a.retry_reference}, now ${a.status}`;
    }
    return el("li", { dataset: { kind: a.kind } }, el("time", { text: when(a.created_at) }), ` ${text}`);
  }

  async function loadActions() {
    const log = await api("/ops/actions?limit=50");
    $("action-log").replaceChildren(...log.items.map(actionEntry));
    if (!log.items.length) $("action-log").append(el("li", { class: "muted", text: "No action yet." }));
  }

  // ---- screens ------------------------------------------------------------------------------------------------------

  async function refresh() {
    renderOverview(await api("/ops/overview"));
    await Promise.all([loadItems(true), loadRows(), loadPayrolls(true), loadActions()]);
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      try {
        renderOverview(await api("/ops/overview"));
        await Promise.all([loadRows(), loadActions()]);
        schedule();
      } catch (err) {
        handle(err, "Refresh");
      }
    }, REFRESH_MS);
  }

  function showLogin() {
    clearTimeout(timer);
    sessionStorage.removeItem(STORAGE_KEY);
    $("console").hidden = true;
    $("logout").hidden = true;
    $("refresh").hidden = true;
    $("login").hidden = false;
    $("operator-key").value = "";
  }

  async function logIn(key) {
    sessionStorage.setItem(STORAGE_KEY, key);
    $("login-button").disabled = true;
    try {
      await refresh();
      $("error").hidden = true;
      $("login").hidden = true;
      $("console").hidden = false;
      $("logout").hidden = false;
      $("refresh").hidden = false;
      schedule();
    } catch (err) {
      handle(err, "Could not load the console");
    } finally {
      $("login-button").disabled = false;
    }
  }

  function on(id, event, run) {
    $(id).addEventListener(event, (e) => {
      if (event === "submit") e.preventDefault();
      run().catch((err) => handle(err, "Load"));
    });
  }

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("operator-key").value.trim();
    if (key) logIn(key);
  });
  $("logout").addEventListener("click", showLogin);
  on("refresh", "click", refresh);
  on("search-form", "submit", () => loadItems(true));
  on("items-more", "click", () => loadItems(false));
  on("payroll-filters", "submit", () => loadPayrolls(true));
  on("employer", "change", () => loadPayrolls(true));
  on("payrolls-more", "click", () => loadPayrolls(false));
  const key = sessionStorage.getItem(STORAGE_KEY);
  if (key) logIn(key); else showLogin();
})();
